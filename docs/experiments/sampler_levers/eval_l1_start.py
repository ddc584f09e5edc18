"""The DPM started from our L1-wavelet image instead of the SENSE image (CCDF, Chung et al. 2022: start the reverse
diffusion from a good estimate at a low noise level), on the real cases of bench_real.py and one held-out synthetic
case, scored as bench_real.py scores them.

    OMP_NUM_THREADS=1 python docs/experiments/sampler_levers/eval_l1_start.py START:SIGMA [...]

START is "sense" (the shipped warm start) or "l1" (baselines.l1_wavelet with the Reconstructor's per-scan λ rule),
SIGMA the warm-start σ (shipped 0.2); the schedule is the shipped one cut at SIGMA. Everything else is the production
path (coil maps, num_maps auto, card ζ or GCV, seed 0) but the output guard, whose least-squares floor is the start.
"""
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(ROOT / "benchmarks"))
sys.path.insert(0, str(ROOT))
from bench_real import real_cases, scores, synthetic_cases  # noqa: E402

from dpm_core import baselines, reconstruct  # noqa: E402
from dpm_core.combine import rss  # noqa: E402
from dpm_core.fft import ifft2c  # noqa: E402
from dpm_core.noise import kspace_edge_level  # noqa: E402
from dpm_core.reconstruct import Reconstructor  # noqa: E402

CASES = tuple(os.environ.get("CASES", "real_R4,real_R6,real_R4_random,real_folded_R3,synth0_R4").split(","))
MODEL = os.environ.get("MODEL") or None          # a model card to test instead of the shipped choice
sense_cg = baselines.sense_cg


def l1_start(y, sampling, maps, *args, **kwargs):
    """The warm start's image from the L1-wavelet baseline (λ by its per-scan rule) in place of SENSE-CG."""
    return baselines.l1_wavelet(y, sampling, maps, edge_level=kspace_edge_level(y, sampling.mask))


torch.set_num_threads(1)
cases = real_cases(lambda n: n in CASES) + synthetic_cases(lambda n: n in CASES, 1, 2)[0]
for variant in sys.argv[1:]:
    start, sigma = variant.split(":")
    reconstruct.baselines.sense_cg = l1_start if start == "l1" else sense_cg
    rec = Reconstructor(method="dpm", num_maps="auto", progress=None, model=MODEL, warm_start=float(sigma),
                        output_guard=False)
    nrmse, t0, zetas = {}, time.perf_counter(), {}
    for case in cases:
        H = case.kspace.shape[2]
        under = case.kspace * torch.from_numpy(case.mask).view(1, 1, H, 1)
        res = rec.reconstruct(under, case.mask)
        nrmse[case.name] = round(scores(np.abs(res.images), rss(ifft2c(case.kspace)).numpy())["NRMSE"], 5)
        zetas[case.name] = res.info.get("zeta")
    print(variant, nrmse, "ζ", zetas, f"{time.perf_counter() - t0:.0f} s", flush=True)
