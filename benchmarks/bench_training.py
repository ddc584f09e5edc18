"""Training throughput (slices/s) and target-preprocessing throughput (slices/s) for the small config.

    python benchmarks/bench_training.py [--data runs/corpus/flair_val] [--steps 12] [--threads 1]

Preprocessing: :func:`training.preprocess.build_cache` on fresh cache directories (read + ESPIRiT "fast" + MVUE +
normalization + HDF5 write), slices per second. Training: :func:`training.training_loop.training_loop` with the
small U-Net preset, random 64 x 64 crops, batch 8, one process, slices per second over the timed steps (the first
step is warm-up). Without ``--data`` a 2-subject FLAIR corpus (128 x 128, 8 coils, 8 slices) is synthesized first.
Writes benchmarks/results/training.{json,md}.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import write_results  # noqa: E402

from training.preprocess import CachedSlices, build_cache, find_volumes  # noqa: E402
from training.training_loop import training_loop  # noqa: E402


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", default=None, help="fastMRI-format corpus (default: synthesize 2 FLAIR subjects)")
    p.add_argument("--steps", type=int, default=12, help="timed training steps")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--crop", type=int, default=64)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--device", default="cpu")
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        data = a.data
        if data is None:
            from training.synth import generate_corpus
            data = tmp / "corpus"
            generate_corpus(data, 2, ["AXFLAIR"], seed=11, progress=False, matrix=128, coils=8, slices=8)
        volumes = find_volumes(data)

        # Preprocessing throughput (fresh cache).
        t0 = time.perf_counter()
        index = build_cache(volumes, tmp / "cache", progress=False)
        seconds = time.perf_counter() - t0
        ds = CachedSlices(index, crop=a.crop, flip=True)
        h, w = ds.slices[0].height, ds.slices[0].width
        rows.append({"stage": "preprocess (read, ESPIRiT fast, MVUE, normalize, write)", "slices": len(ds),
                     "matrix": f"{h}x{w}", "seconds": seconds, "slices_per_s": len(ds) / seconds})

        # Training throughput: 1 warm-up step, then the timed steps.
        common = dict(dataset=ds, arch="unet", arch_kwargs={"preset": "small"}, sigma_data=0.26, batch_size=a.batch,
                      lr=2e-4, seed=0, device=a.device, progress=False, tensorboard=False, tick_steps=1000)
        training_loop(run_dir=tmp / "run", total_steps=1, **common)
        t0 = time.perf_counter()
        out = training_loop(run_dir=tmp / "run", total_steps=1 + a.steps, resume=True, **common)
        seconds = time.perf_counter() - t0
        rows.append({"stage": f"train small U-Net, crop {a.crop}, batch {a.batch}", "slices": a.steps * a.batch,
                     "matrix": f"{a.crop}x{a.crop}", "seconds": seconds, "slices_per_s": out["slices_per_second"]})
    write_results("training", rows, ["stage", "slices", "matrix", "seconds", "slices_per_s"],
                  "Training and preprocessing throughput (CPU, small config)",
                  notes=f"torch threads {a.threads}, device {a.device}; training slices/s counts optimizer-step time "
                        f"only (data loading included, checkpointing excluded).")
    return 0


if __name__ == "__main__":
    sys.exit(main())
