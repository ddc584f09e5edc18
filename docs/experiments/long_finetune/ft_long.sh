set -e
cd "$(dirname "$0")/../../.."
. .venv/bin/activate
t0=$(date +%s)
dpm-synth --out runs/corpus/flair_train_wide --subjects 20 --contrasts AXFLAIR --matrix 128 --coils 8 --slices 8 --seed 2 --variety wide --quiet
dpm-synth --out runs/corpus/flair_val --subjects 4 --contrasts AXFLAIR --matrix 128 --coils 8 --slices 8 --seed 3 --quiet
echo "corpora $(( $(date +%s) - t0 )) s"
dpm-finetune --init dpm_core/models/foundation_default.json --data runs/corpus/flair_train_wide --contrasts AXFLAIR --subjects 20 --cache runs/cache --val-data runs/corpus/flair_val --val-slices 4 --accelerations 2 4 --eval-zeta 8 --sampler fast --lr 1e-3 --lr-rampup 50 --epochs 300 --eval-every 25 --batch 8 --flip --threads 2 --out runs/ft_long --max-minutes 60 --no-progress > runs/ft_long.log 2>&1
echo "finetune done $(( $(date +%s) - t0 )) s"
