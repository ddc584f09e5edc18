#!/usr/bin/env bash
# GPU checks and benchmarks on a lent accelerator machine (run from the repository root there):
#   bash benchmarks/gpu_check.sh OUTDIR
# Installs the dependencies the machine's image lacks from ./.whl (`bash training/gpu_wheels.sh` downloads them
# here; the device call carries ".whl"), runs the CUDA tests (the memory budget on the allocator's own peak among
# them), then the shipped-model evaluation, the gadget latency and the clinical-size exam (32 slices of 320², 16 coils:
# issue 14's goal is images out in <= 20 s), the network presets' inference cost on the GPU and the pnp sampler on 8
# clinical slices. Results land in OUTDIR.
set -uo pipefail
OUT="${1:?usage: gpu_check.sh OUTDIR}"
mkdir -p "$OUT"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/dpm_deps \
    .whl/*.whl 2>&1 | tail -2
export PYTHONPATH="$PWD:/tmp/dpm_deps"
python3 - <<'PY' 2>&1 | tee "$OUT/env.txt"
import torch; print(torch.__version__, torch.cuda.get_device_name(0))
PY
# Gadgetron spawns `python`; make sure the one with torch answers.
mkdir -p /tmp/dpm_bin && ln -sf "$(command -v python3)" /tmp/dpm_bin/python && export PATH="/tmp/dpm_bin:$PATH"
python3 -m pytest -q -x tests/test_samplers.py tests/test_reconstruct.py tests/test_networks.py \
    tests/test_checkpoints.py tests/test_default_model.py tests/test_memory.py -p no:cacheprovider 2>&1 | tail -5 | tee "$OUT/tests.txt"
timeout 240 python3 benchmarks/eval_default_model.py --name default_model_gpu 2>&1 | tail -20 | tee "$OUT/eval.txt"
timeout 120 python3 benchmarks/bench_gadget.py --methods dpm --slices 8 2>&1 | tail -4 | tee "$OUT/gadget.txt"
timeout 300 python3 benchmarks/bench_clinical.py --slices 32 --device cuda --name clinical_gpu 2>&1 | tail -8 \
    | tee "$OUT/clinical.txt"
timeout 120 python3 benchmarks/bench_networks.py --device cuda --presets medium base 2>&1 | tail -8 \
    | tee "$OUT/networks.txt"
# The pnp sampler (better than DDS on every bench_real case, many times its CPU time): its GPU seconds on 8 clinical slices
# (the table scales them to 32) decide whether it can become the default.
timeout 240 python3 benchmarks/bench_clinical.py --slices 8 --device cuda --sampler pnp --name clinical_gpu_pnp 2>&1 \
    | tail -8 | tee "$OUT/clinical_pnp.txt"
cp benchmarks/results/networks_gpu.* benchmarks/results/default_model_gpu.* benchmarks/results/gadget.* \
    benchmarks/results/clinical_gpu.* benchmarks/results/clinical_gpu_pnp.* "$OUT/" 2>/dev/null
exit 0
