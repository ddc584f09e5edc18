#!/bin/bash
# ζ tables re-swept after the noise estimate changed (calibration-matrix estimate instead of the k-space corners).
cd /work/main
export OMP_NUM_THREADS=1
Z="zetas=(0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0), accelerations=(2.0, 4.0, 6.0, 8.0), sampler_options=None"
N="note='ζ sweep with the production sampler (warm start from the SENSE image at σ 0.2), nominal R 2-8, noise level from the calibration matrix (dpm_core.noise)'"
.venv/bin/python -c "
import torch; torch.set_num_threads(1)
from training.finetune import refresh_validation
refresh_validation('dpm_core/models/flair_default.json', 'runs/corpus/flair_val', val_slices=4, $Z, $N)" > runs/sweep_flair.log 2>&1 &
.venv/bin/python -c "
import torch; torch.set_num_threads(1)
from training.finetune import refresh_validation
refresh_validation('dpm_core/models/foundation_default.json', 'runs/corpus/foundation_val', contrasts=('AXT1', 'AXT2', 'AXPD'), val_slices=6, $Z, $N)" > runs/sweep_foundation.log 2>&1 &
wait
echo done > runs/resweep.done
