#!/usr/bin/env bash
# GPU checks and benchmarks on a lent accelerator machine (run from the repository root there):
#   bash benchmarks/gpu_check.sh OUTDIR
# Installs the dependencies the machine's image lacks from ./.whl (`bash training/gpu_wheels.sh` downloads them
# here; the device call carries ".whl"), runs the CUDA tests (the memory budget on the allocator's own peak among
# them), then the benchmarks in the order of what they decide: the pnp sampler on 8 clinical slices (its GPU seconds,
# which the table scales to 32, decide whether pnp can become the default: better than DDS on 11 of the 12
# bench_real cases, many times its CPU time), the clinical-size exam with the default sampler (32 slices of 320², 16 coils: issue 14's
# goal is images out in <= 20 s), the gadget latency, the network presets' inference cost and the shipped-model
# evaluation. A device command may run 600 s at most and a session holds 15 minutes of device time, start-up
# included: every step's timeout is capped by what is left of BUDGET_S, a step with under 30 s left is skipped (said in
# steps.txt), and each step's output and result files are packed into OUTDIR/gpu_check.tar.gz as soon as it ends,
# so a cut-off run still returns what it finished (one archive: a device call returns at most 8 files from $OUT).
# One device call: run(command="bash benchmarks/gpu_check.sh $OUT", carry=[".whl"], timeout_s=600); unpack with
# `tar -xzf gpu_check.tar.gz` (a folder gpu_check/).
set -uo pipefail
OUT="${1:?usage: gpu_check.sh OUTDIR}"
BUDGET_S="${BUDGET_S:-560}"
WORK="${WORK:-/tmp/gpu_check_work}"
LOGS="$WORK/gpu_check"                      # what the archive holds
mkdir -p "$OUT" "$LOGS"
start=$(date +%s)
pack() {                                    # OUTDIR/gpu_check.tar.gz from LOGS, replaced only when complete
    tar -czf "$OUT/gpu_check.tar.gz.tmp" -C "$WORK" gpu_check && mv "$OUT/gpu_check.tar.gz.tmp" "$OUT/gpu_check.tar.gz"
}
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/dpm_deps \
    .whl/*.whl 2>&1 | tail -2
export PYTHONPATH="$PWD:/tmp/dpm_deps"
python3 - <<'PY' 2>&1 | tee "$LOGS/env.txt"
import torch; print(torch.__version__, torch.cuda.get_device_name(0))
PY
# Gadgetron spawns `python`; make sure the one with torch answers.
mkdir -p /tmp/dpm_bin && ln -sf "$(command -v python3)" /tmp/dpm_bin/python && export PATH="/tmp/dpm_bin:$PATH"

# step NAME CAP_S RESULT_PREFIX COMMAND...: run COMMAND under min(CAP_S, what is left of BUDGET_S), its output's tail
# into NAME.txt, benchmarks/results/RESULT_PREFIX.* beside it, then pack.
step() {
    local name="$1" cap="$2" results="$3"
    shift 3
    local left=$(( BUDGET_S - $(date +%s) + start ))
    [ "$left" -lt "$cap" ] && cap="$left"
    if [ "$cap" -lt 30 ]; then
        echo "$name: skipped ($left s of the budget left)" | tee -a "$LOGS/steps.txt"
        pack
        return 0
    fi
    local t0=$(date +%s)
    timeout "$cap" "$@" 2>&1 | tail -12 | tee "$LOGS/$name.txt"
    echo "$name: exit ${PIPESTATUS[0]} after $(( $(date +%s) - t0 )) s (timeout $cap s)" | tee -a "$LOGS/steps.txt"
    [ "$results" = "-" ] || cp benchmarks/results/"$results".* "$LOGS/" 2>/dev/null
    pack
    return 0
}
step tests 150 - python3 -m pytest -q -x tests/test_samplers.py tests/test_reconstruct.py tests/test_networks.py \
    tests/test_checkpoints.py tests/test_default_model.py tests/test_memory.py -p no:cacheprovider
step clinical_pnp 200 clinical_gpu_pnp python3 benchmarks/bench_clinical.py --slices 8 --device cuda --sampler pnp \
    --name clinical_gpu_pnp
step clinical 200 clinical_gpu python3 benchmarks/bench_clinical.py --slices 32 --device cuda --name clinical_gpu
step gadget 120 gadget python3 benchmarks/bench_gadget.py --methods dpm --slices 8
step networks 120 networks_gpu python3 benchmarks/bench_networks.py --device cuda --presets medium base
step eval 240 default_model_gpu python3 benchmarks/eval_default_model.py --name default_model_gpu
echo "total $(( $(date +%s) - start )) s of a $BUDGET_S s budget" | tee -a "$LOGS/steps.txt"
pack
exit 0
