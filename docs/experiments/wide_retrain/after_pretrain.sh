#!/bin/bash
# After the wide pre-training: FLAIR fine-tune, then both ζ sweeps (warm-start production sampler, R 2-8) in parallel.
set -e
cd /work/main
export OMP_NUM_THREADS=2
.venv/bin/dpm-finetune --init runs/pretrain_wide --data runs/corpus/flair_train_wide --contrasts AXFLAIR --subjects 20 \
  --cache runs/cache --val-data runs/corpus/flair_val --val-slices 4 --accelerations 2 4 --eval-zeta 8 --zetas \
  --sampler fast --lr 1e-4 --epochs 16 --eval-every 2 --batch 8 --flip --threads 2 \
  --out runs/finetune_wide --export runs/new/flair_default --max-minutes 14 --no-progress > runs/finetune_wide.log 2>&1
.venv/bin/python -c "
from dpm_core.checkpoints import load_checkpoint, save_checkpoint
p, c = load_checkpoint('runs/pretrain_wide/model.json')
c.update(serves=['T1', 'T2', 'PD', 'unknown'], training_data=c['training_data'] + '; the foundation prior for scans that are not FLAIR')
save_checkpoint('runs/new/foundation_default', p, c)"
export OMP_NUM_THREADS=1
Z="zetas=(1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0), accelerations=(2.0, 4.0, 6.0, 8.0), sampler_options=None"
.venv/bin/python -c "
import torch; torch.set_num_threads(1)
from training.finetune import refresh_validation
refresh_validation('runs/new/flair_default.json', 'runs/corpus/flair_val', val_slices=4, $Z,
  note='ζ sweep with the production sampler (warm start from the SENSE image at σ 0.2), nominal R 2-8')" > runs/sweep_flair.log 2>&1 &
.venv/bin/python -c "
import torch; torch.set_num_threads(1)
from training.finetune import refresh_validation
refresh_validation('runs/new/foundation_default.json', 'runs/corpus/foundation_val', contrasts=('AXT1', 'AXT2', 'AXPD'), val_slices=6, $Z,
  note='ζ sweep with the production sampler (warm start from the SENSE image at σ 0.2), nominal R 2-8')" > runs/sweep_foundation.log 2>&1 &
wait
echo done > runs/after_pretrain.done
