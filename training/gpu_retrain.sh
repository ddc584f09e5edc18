#!/usr/bin/env bash
# Retrain both shipped priors on a lent GPU machine in one device call (run from the repository root there):
#   bash training/gpu_retrain.sh OUTDIR
# The device time a task gets is short (15 minutes, start-up included; at most 10 minutes a command), so this is the
# whole retraining as one prepared run, sized by the budgets below (they add up to about 9 minutes with the
# defaults, an estimate for one H200 with 16 CPU cores: the corpus and cache steps were timed on the CPU only).
# What the CPU sessions found (docs/experiments/real_anatomy, docs/experiments/sampler_levers): the shipped
# 1 M-parameter prior, trained on about 47 k images, loses to L1-wavelet even on held-out synthetic FLAIR, and no
# change of the sampler or of the training data moved the DPM on the real cases; a larger network with far more
# training is the lever left. This run changes both at once:
#   - network: the "medium" U-Net preset (2.66 M parameters, one level deeper), from scratch;
#   - pre-training corpus: synthetic wide-variety heads of the five non-FLAIR contrasts at three pixel sizes
#     (96² / 220 mm, 128² / 240 mm, 160² / 230 mm) plus dipy's real anatomy (dpm-real-anatomy), fine phase
#     augmentation (--phase detail), 64² crops and flips, for PRETRAIN_MINUTES on the GPU (bf16 autocast);
#   - FLAIR fine-tune: the shipped recipe's 20 FLAIR subjects (dpm-synth seed 2, wide), validated through the
#     production sampler on the held-out FLAIR subjects (seed 3), for FINETUNE_MINUTES;
#   - then both ζ sweeps of the cards (training.finetune.refresh_validation, the production sampler, nominal R 2-8).
# OUTDIR gets both models with their cards (foundation_default.*, flair_default.*), the training logs as one archive
# (training_logs.tar.gz, refreshed after each stage) and the run's stdout (run.log): 6 files, because a device call
# returns at most 8 files from $OUT (16 MiB each; the medium network's weights are about 11 MB). Back on the
# development machine: copy the models into dpm_core/models/ only after bench_real.py (and the tests) show them
# better on the real cases than the shipped ones, and benchmarks/bench_cpu_path.py has timed them.
# Dependencies: torch with CUDA and most of the rest from the machine's image; what it lacks comes as wheels that
# `bash training/gpu_wheels.sh` downloads into .whl/ here (the device call names ".whl" in its carry). The first step
# checks every module and stops within seconds if one is missing. As one device call:
#   run(command="bash training/gpu_retrain.sh $OUT/retrain", carry=[".whl"], timeout_s=600)
# Checked end to end on the CPU with tiny budgets (DEVICE=cpu JOBS=2 SUBJECTS=1 REAL_HEADS=1 PRETRAIN_MINUTES=0.3
# FINETUNE_MINUTES=0.3 FINETUNE_EPOCHS=1 BATCH=8 WORKERS=0: 146 s, and 826 s with both ζ sweeps; with the log archive
# and SWEEP=0 157 s, OUTDIR holding its 6 files, each model's weights 10.7 MB); not yet run on a GPU.
set -euo pipefail
OUT="${1:?usage: gpu_retrain.sh OUTDIR}"
DEVICE="${DEVICE:-cuda}"
JOBS="${JOBS:-14}"                          # parallel corpus / cache processes
SUBJECTS="${SUBJECTS:-4}"                   # synthetic heads per contrast and corpus job (5 contrasts x 8 slices each)
REAL_HEADS="${REAL_HEADS:-10}"              # augmented heads per real source and real-anatomy job (2 jobs)
PRESET="${PRESET:-medium}"
BATCH="${BATCH:-128}"
WORKERS="${WORKERS:-12}"
PRETRAIN_MINUTES="${PRETRAIN_MINUTES:-3.5}"    # at most; less when the corpus steps leave less of BUDGET_S
FINETUNE_MINUTES="${FINETUNE_MINUTES:-1.5}"
BUDGET_S="${BUDGET_S:-570}"                 # the whole run must end inside one 600-s device command
FINETUNE_RESERVE_S="${FINETUNE_RESERVE_S:-150}"  # kept back for the fine-tune (its minutes, loading, validations)
FINETUNE_EPOCHS="${FINETUNE_EPOCHS:-40}"
SWEEP="${SWEEP:-1}"                         # 1: re-sweep both cards' ζ tables ...
SWEEP_DEADLINE_S="${SWEEP_DEADLINE_S:-510}"  # ... when no more than this many seconds have passed (else later)
WORK="${WORK:-/tmp/dpm_retrain}"
mkdir -p "$OUT" "$WORK"
if [ -z "${DPM_RETRAIN_LOGGED:-}" ]; then              # the run's output also goes to OUTDIR/run.log
    DPM_RETRAIN_LOGGED=1 bash "$0" "$@" 2>&1 | tee "$OUT/run.log"
    exit "${PIPESTATUS[0]}"
fi
if compgen -G ".whl/*.whl" > /dev/null; then                # training/gpu_wheels.sh, carried as ".whl"
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/dpm_deps \
        .whl/*.whl
    export PYTHONPATH="$PWD:/tmp/dpm_deps"
else
    export PYTHONPATH="$PWD"
fi
PY="${PYTHON:-python3}"
export OMP_NUM_THREADS=1
start=$(date +%s)
stamp() { echo "[$(( $(date +%s) - start )) s] $*"; }
pids=()
wait_all() {                                # wait for the jobs in pids; stop the run if one failed
    for pid in "${pids[@]}"; do wait "$pid" || { echo "a $1 job failed (exit status $?); see above"; exit 1; }; done
    pids=()
}
keep_logs() {        # keep_logs RUN_DIR PREFIX: the run's options and CSV logs into OUTDIR/training_logs.tar.gz
    mkdir -p "$WORK/logs"
    for f in "$1"/*.csv "$1"/*.json; do
        case "$(basename "$f")" in model.json|training-state.json) continue ;; esac
        name=$(basename "$f"); case "$name" in "$2"_*) ;; *) name="$2_$name" ;; esac
        [ -f "$f" ] && cp "$f" "$WORK/logs/$name"
    done
    tar -czf "$OUT/training_logs.tar.gz.tmp" -C "$WORK" logs && mv "$OUT/training_logs.tar.gz.tmp" \
        "$OUT/training_logs.tar.gz"
    return 0
}
# Fail in seconds, not minutes, when the machine lacks a module the run needs.
"$PY" - "$DEVICE" <<'PY'
import importlib.util
import sys
needed = ("torch", "numpy", "scipy", "h5py", "safetensors", "pywt", "ismrmrd", "xsdata", "nilearn", "dipy", "tqdm",
          "skimage", "tensorboard")
missing = [m for m in needed if importlib.util.find_spec(m) is None]
if missing:
    sys.exit(f"gpu_retrain: missing Python modules {missing}; put their wheels (and their dependencies') in .whl/")
import torch
if sys.argv[1] == "cuda" and not torch.cuda.is_available():
    sys.exit("gpu_retrain: DEVICE=cuda but torch sees no GPU; run with DEVICE=cpu only for a tiny check")
print("torch", torch.__version__, torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU")
PY

# 1. Corpora, one process per job; disjoint seeds. Pixel sizes rotate over the synthetic jobs.
SIZES=("96 220" "128 240" "160 230")
stamp "corpora: $JOBS synthetic jobs x $SUBJECTS heads x 5 contrasts," \
      "2 real-anatomy jobs x $REAL_HEADS heads x 2 sources"
for j in $(seq 0 $((JOBS - 1))); do
    read -r matrix fov <<< "${SIZES[$((j % 3))]}"
    "$PY" -m training.synth --out "$WORK/corpus/pre_$j" --subjects "$SUBJECTS" \
        --contrasts AXT1,AXT2,AXT1PRE,AXT1POST,AXPD --matrix "$matrix" --fov "$fov" --coils 8 --slices 8 \
        --seed $((5000 + j)) --variety wide --quiet & pids+=($!)
done
for j in 0 1; do
    "$PY" -m training.real_anatomy --out "$WORK/corpus/real_$j" --heads "$REAL_HEADS" --seed $((7000 + j)) \
        --quiet & pids+=($!)
done
"$PY" -m training.synth --out "$WORK/corpus/flair_train" --subjects 20 --contrasts AXFLAIR --matrix 128 --coils 8 \
    --slices 8 --seed 2 --variety wide --quiet & pids+=($!)
"$PY" -m training.synth --out "$WORK/corpus/flair_val" --subjects 4 --contrasts AXFLAIR --matrix 128 --coils 8 \
    --slices 8 --seed 3 --quiet & pids+=($!)
"$PY" -m training.synth --out "$WORK/corpus/foundation_val" --subjects 2 --contrasts AXT1,AXT2,AXPD --matrix 128 \
    --coils 8 --slices 8 --seed 3 --quiet & pids+=($!)
wait_all corpus

# 2. Training targets (ESPIRiT + MVUE per slice), one process per corpus; the trainers then find every shard cached.
stamp "target caches"
for d in "$WORK"/corpus/*/; do
    name=$(basename "$d")
    "$PY" -m training.preprocess --data "$d" --cache "$WORK/cache" --index-name "part_$name.json" \
        > "$WORK/cache_$name.log" 2>&1 || { cat "$WORK/cache_$name.log"; exit 1; } &
    pids+=($!)
    while [ "$(jobs -rp | wc -l)" -ge "$JOBS" ]; do sleep 0.2; done
done
wait_all cache

# 3. Pre-training from scratch on everything but FLAIR.
# The corpus steps' time on the device is an estimate: pre-training gets what is left of the budget, up to its
# minutes, so that the fine-tune still runs inside the device command's limit.
PRETRAIN_MINUTES=$(awk -v m="$PRETRAIN_MINUTES" -v left=$(( BUDGET_S - FINETUNE_RESERVE_S - $(date +%s) + start )) \
    'BEGIN { t = left / 60; if (t > m) t = m; if (t < 0.1) t = 0.1; printf "%.2f", t }')
stamp "pre-training ($PRESET, $PRETRAIN_MINUTES min)"
"$PY" -m training.pretrain --data "$WORK"/corpus/pre_* "$WORK"/corpus/real_* --exclude-contrasts AXFLAIR \
    --cache "$WORK/cache" --out "$WORK/pretrain" --preset "$PRESET" --steps 10000000 --batch "$BATCH" --lr 5e-4 \
    --lr-rampup 500 --ema-halflife 20000 --crop 64 --flip --phase detail --device "$DEVICE" --workers "$WORKERS" \
    --threads 1 --tick 200 --snapshot-ticks 1000 --max-minutes "$PRETRAIN_MINUTES" --no-progress
keep_logs "$WORK/pretrain" pretrain

# 4. The foundation model (non-FLAIR scans) is the pre-trained network; the FLAIR model its fine-tune.
"$PY" - "$WORK" "$OUT" <<'PY'
import sys
from dpm_core.checkpoints import load_checkpoint, save_checkpoint
work, out = sys.argv[1:]
params, card = load_checkpoint(f"{work}/pretrain/model.json")
card.update(serves=["T1", "T2", "PD", "unknown"],
            training_data=card["training_data"] + "; the foundation prior for scans that are not FLAIR")
save_checkpoint(f"{out}/foundation_default", params, card)
PY
stamp "FLAIR fine-tuning ($FINETUNE_MINUTES min)"
"$PY" -m training.finetune --init "$WORK/pretrain" --data "$WORK/corpus/flair_train" --contrasts AXFLAIR \
    --subjects 20 --cache "$WORK/cache" --val-data "$WORK/corpus/flair_val" --val-slices 4 --accelerations 2 4 \
    --eval-zeta 8 --sampler fast --lr 1e-4 --epochs "$FINETUNE_EPOCHS" --eval-every 4 --batch 32 --crop 64 --flip \
    --phase detail --device "$DEVICE" --workers "$WORKERS" --threads 1 --out "$WORK/finetune" \
    --export "$OUT/flair_default" --max-minutes "$FINETUNE_MINUTES" --no-progress
keep_logs "$WORK/finetune" finetune

# 5. The cards' ζ tables, swept with the production sampler.
if [ "$SWEEP" = 1 ] && [ $(( $(date +%s) - start )) -gt "$SWEEP_DEADLINE_S" ]; then
    stamp "no time left for the ζ sweeps: run training.finetune.refresh_validation on both cards afterwards"
elif [ "$SWEEP" = 1 ]; then
    stamp "ζ sweeps"
    "$PY" - "$WORK" "$OUT" "$DEVICE" <<'PY'
import sys
from training.finetune import refresh_validation
work, out, device = sys.argv[1:]
sweep = dict(zetas=(1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0), accelerations=(2.0, 4.0, 6.0, 8.0),
             sampler_options=None, note="ζ sweep with the production sampler (warm start from the SENSE image at "
             "σ 0.2), nominal R 2-8")
refresh_validation(f"{out}/flair_default.json", f"{work}/corpus/flair_val", val_slices=4, device=device, **sweep)
refresh_validation(f"{out}/foundation_default.json", f"{work}/corpus/foundation_val",
                   contrasts=("AXT1", "AXT2", "AXPD"), val_slices=6, device=device, **sweep)
PY
fi
stamp "done"
ls -la "$OUT"
