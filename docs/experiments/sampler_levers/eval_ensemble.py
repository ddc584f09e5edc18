"""DPM NRMSE (default settings, seed 0) with the shipped FLAIR denoiser self-ensembled, on the real cases of
bench_real.py and one held-out synthetic case, scored as bench_real.py scores them.

    OMP_NUM_THREADS=1 python docs/experiments/sampler_levers/eval_ensemble.py VARIANT [VARIANT ...]

VARIANT: a group name of rho_ensemble.py (every element averaged at each call: |G| network evaluations per call), or
"random:<group>" (one element of the group drawn per call, seeded: 1 evaluation per call).
"""
import os
import random
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(ROOT / "benchmarks"))
sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(ROOT))
from bench_real import real_cases, scores, synthetic_cases  # noqa: E402
from rho_ensemble import group  # noqa: E402

from dpm_core.combine import rss  # noqa: E402
from dpm_core.fft import ifft2c  # noqa: E402
from dpm_core.reconstruct import Reconstructor  # noqa: E402

CASES = tuple(os.environ.get("CASES", "real_R4,real_R6,real_R4_random,real_folded_R3,synth0_R4").split(","))
MODEL = os.environ.get("MODEL") or None          # a model card to test instead of the shipped choice


class Ensembled(torch.nn.Module):
    def __init__(self, inner, variant):
        super().__init__()
        self.inner, self.random = inner, variant.startswith("random:")
        self.transforms = group(variant.split(":")[-1])
        self.rng = random.Random(0)
        for k in ("card", "name", "sigma_min", "sigma_max", "sigma_data"):
            if hasattr(inner, k):
                setattr(self, k, getattr(inner, k))

    def forward(self, x, sigma):
        if self.random:
            fwd, inv = self.transforms[self.rng.randrange(len(self.transforms))]
            return inv(self.inner(fwd(x), sigma))
        return sum(inv(self.inner(fwd(x), sigma)) for fwd, inv in self.transforms) / len(self.transforms)


torch.set_num_threads(1)
cases = real_cases(lambda n: n in CASES) + synthetic_cases(lambda n: n in CASES, 1, 2)[0]
for variant in sys.argv[1:]:
    rec = Reconstructor(method="dpm", num_maps="auto", progress=None, model=MODEL)
    rec._denoiser = Ensembled(rec.denoiser(), variant).eval()
    nrmse, t0 = {}, time.perf_counter()
    for case in cases:
        H = case.kspace.shape[2]
        under = case.kspace * torch.from_numpy(case.mask).view(1, 1, H, 1)
        res = rec.reconstruct(under, case.mask)
        nrmse[case.name] = round(scores(np.abs(res.images), rss(ifft2c(case.kspace)).numpy())["NRMSE"], 5)
    print(variant, nrmse, f"{time.perf_counter() - t0:.0f} s", flush=True)
