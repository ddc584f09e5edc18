"""Diagnostic: can the production sampler use a denoiser that is better than the prior on real images at low σ?

    OMP_NUM_THREADS=1 python docs/experiments/sampler_levers/eval_wavelet_denoiser.py VARIANT [VARIANT ...]

The production DPM path (Reconstructor defaults: DDS warm-started from the SENSE image at σ 0.2, 8 levels, the card's
ζ or GCV, auto map sets) with its denoiser replaced, on the levels a variant names, by translation-invariant wavelet
shrinkage — benchmarks/bench_prior_fit.py's comparator (db2, 16 circular shifts averaged, soft threshold c·σ), which
denoises the real dev slice better than the shipped prior at σ ≤ 0.04 (prior_fit.md: ρ 0.849 against 1.100 at
σ 0.01). If the DPM with it approaches our L1-wavelet, the sampler turns a better low-σ denoiser into a better
reconstruction and the prior's fit is the lever; if it stays at the plain DPM's NRMSE, the sampler is.

VARIANT: "net" (the shipped denoiser: the control), "wavelet:<c>" (shrinkage at every level), or
"hybrid:<sigma_c>:<c>" (the network above sigma_c, shrinkage at and below it). Scores as bench_real.py, seed 0.
CASES= and MODEL= as eval_ensemble.py; ZETA=<z> fixes ζ instead of the default rule. The output guard is off (its
probe would test the shrinkage, which denoises the sampler's smooth output worse than a Gaussian low-pass and is
refused).
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
from bench_prior_fit import wavelet_shrinkage  # noqa: E402
from bench_real import real_cases, scores, synthetic_cases  # noqa: E402

from dpm_core.combine import rss  # noqa: E402
from dpm_core.fft import ifft2c  # noqa: E402
from dpm_core.reconstruct import Reconstructor  # noqa: E402

CASES = tuple(os.environ.get("CASES", "real_R4,real_R6,real_R4_random,real_folded_R3,synth0_R4").split(","))
MODEL = os.environ.get("MODEL") or None
ZETA = float(os.environ["ZETA"]) if os.environ.get("ZETA") else None


class ShrinkBelow(torch.nn.Module):
    """The network above ``sigma_c``, wavelet shrinkage with threshold ``c``·σ at and below it (x [B, H, W])."""

    def __init__(self, inner, sigma_c: float, c: float):
        super().__init__()
        self.inner, self.sigma_c, self.c = inner, sigma_c, c
        for k in ("card", "name", "sigma_min", "sigma_max", "sigma_data"):
            if hasattr(inner, k):
                setattr(self, k, getattr(inner, k))

    def forward(self, x, sigma):
        s = float(torch.as_tensor(sigma).reshape(-1)[0])
        return wavelet_shrinkage(x, self.c * s) if s <= self.sigma_c else self.inner(x, sigma)


torch.set_num_threads(1)
cases = real_cases(lambda n: n in CASES) + synthetic_cases(lambda n: n in CASES, 1, 2)[0]
for variant in sys.argv[1:]:
    rec = Reconstructor(method="dpm", num_maps="auto", progress=None, model=MODEL, zeta=ZETA,
                        output_guard=False)
    kind, *args = variant.split(":")
    if kind == "wavelet":
        rec._denoiser = ShrinkBelow(rec.denoiser(), float("inf"), float(args[0])).eval()
    elif kind == "hybrid":
        rec._denoiser = ShrinkBelow(rec.denoiser(), float(args[0]), float(args[1])).eval()
    elif kind != "net":
        sys.exit(f"unknown variant {variant!r}: use net, wavelet:<c> or hybrid:<sigma_c>:<c>")
    nrmse, t0 = {}, time.perf_counter()
    for case in cases:
        H = case.kspace.shape[2]
        under = case.kspace * torch.from_numpy(case.mask).view(1, 1, H, 1)
        res = rec.reconstruct(under, case.mask)
        nrmse[case.name] = round(scores(np.abs(res.images), rss(ifft2c(case.kspace)).numpy())["NRMSE"], 5)
    print(variant, f"ζ={ZETA or 'default'}", nrmse, f"{time.perf_counter() - t0:.0f} s", flush=True)
