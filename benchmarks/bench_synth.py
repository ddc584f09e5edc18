"""Synthetic corpus throughput: subjects (volumes) per second for a few configurations, in memory and written to disk.

Run: python benchmarks/bench_synth.py [--quick]. Writes benchmarks/results/synth.json and synth.md. Reports wall and
CPU (process) time per volume: on a shared machine the CPU time is the better estimate of the unloaded cost.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import write_results  # noqa: E402

from training import phantom, synth  # noqa: E402

CONFIGS = [   # (name, contrast, matrix, coils, slices)
    ("small", "AXFLAIR", 128, 8, 8),
    ("small-T1", "AXT1", 128, 8, 8),
    ("medium", "AXFLAIR", 256, 16, 16),
    ("fastmri-like", "AXFLAIR", 320, 16, 16),
]


def _time(fn, repeats: int) -> tuple[float, float]:
    walls, cpus = [], []
    for _ in range(repeats):
        w, c = time.perf_counter(), time.process_time()
        fn()
        walls.append(time.perf_counter() - w)
        cpus.append(time.process_time() - c)
    return statistics.median(walls), statistics.median(cpus)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="only the small configurations, 3 repeats")
    a = p.parse_args(argv)
    t = time.perf_counter()
    phantom.load_atlas()
    atlas_s = time.perf_counter() - t
    rows = []
    configs = CONFIGS[:2] if a.quick else CONFIGS
    with tempfile.TemporaryDirectory() as tmp:
        for name, contrast, matrix, coils, slices in configs:
            repeats = 5 if matrix <= 128 else 2
            seeds = iter(range(1000))
            synth.generate_subject(999, contrast, matrix, coils, slices)          # warm-up
            wall, cpu = _time(lambda: synth.generate_subject(next(seeds), contrast, matrix, coils, slices), repeats)
            subj = synth.generate_subject(0, contrast, matrix, coils, slices)
            path = Path(tmp) / f"{name}.h5"
            wwall, _ = _time(lambda: synth.write_fastmri_h5(path, subj), 2)
            rows.append({"config": name, "contrast": contrast, "matrix": matrix, "coils": coils, "slices": slices,
                         "s_per_volume": wall, "cpu_s_per_volume": cpu, "volumes_per_s": 1.0 / wall,
                         "write_s": wwall, "file_MB": path.stat().st_size / 2 ** 20})
    notes = (f"Atlas load + preparation (once per process): {atlas_s:.2f} s. Generation runs with 1 torch thread "
             "(the default of generate_subject). `s_per_volume` is wall time (median), `cpu_s_per_volume` process "
             "CPU time; `write_s` the HDF5 write of one volume.")
    write_results("synth", rows, ["config", "contrast", "matrix", "coils", "slices", "s_per_volume",
                                  "cpu_s_per_volume", "volumes_per_s", "write_s", "file_MB"],
                  "Synthetic corpus generation (training/synth.py)", notes)


if __name__ == "__main__":
    main()
