"""The pnp sampler on the production path (Reconstructor(method="dpm", sampler="pnp", num_maps="auto"): its defaults,
ζ by GCV, the output guard on) on cases of bench_real.py, beside that benchmark's DPM, our L1-wavelet and BART's best
PICS from benchmarks/results/real.json; markdown rows on stdout.

    OMP_NUM_THREADS=1 python docs/experiments/sampler_levers/eval_pnp_production.py CASE[,CASE...]
"""
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(ROOT / "benchmarks"))
sys.path.insert(0, str(ROOT))
from bench_real import real_cases, scores, synthetic_cases  # noqa: E402

from dpm_core.combine import rss  # noqa: E402
from dpm_core.fft import ifft2c  # noqa: E402
from dpm_core.reconstruct import Reconstructor  # noqa: E402

CASES = sys.argv[1].split(",")
rows = json.loads((ROOT / "benchmarks/results/real.json").read_text())["rows"]


def reference(case: str, method: str) -> float:
    return min(r["NRMSE"] for r in rows if r["case"] == case and r["method"] == method)


torch.set_num_threads(1)
cases = real_cases(lambda n: n in CASES) + synthetic_cases(lambda n: n in CASES, 3, 2)[0]
rec = Reconstructor(method="dpm", num_maps="auto", sampler="pnp", progress=None)
for case in cases:
    H = case.kspace.shape[2]
    t0 = time.perf_counter()
    res = rec.reconstruct(case.kspace * torch.from_numpy(case.mask).view(1, 1, H, 1), case.mask)
    seconds = (time.perf_counter() - t0) / case.kspace.shape[0]
    nrmse = scores(np.abs(res.images), rss(ifft2c(case.kspace)).numpy())["NRMSE"]
    dpm, l1, bart = (reference(case.name, m) for m in ("ours DPM", "ours L1-wavelet", "BART PICS l1-wavelet"))
    print(f"| {case.name} | {res.info['num_maps']} | {np.round(res.info['zeta'], 4)} | {nrmse:.5f} | {dpm:.5f} | "
          f"{l1:.5f} | {bart:.5f} | {nrmse / bart:.3f} | {seconds:.1f} |", flush=True)
