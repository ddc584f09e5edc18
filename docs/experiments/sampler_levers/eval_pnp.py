"""The shipped network as the denoiser of a converged plug-and-play solver (half-quadratic splitting with an annealed
noise level, as DPIR does: Zhang et al., "Plug-and-play image restoration with deep denoiser prior", TPAMI 2021)
instead of the DDS schedule, on the real cases of bench_real.py and one held-out synthetic case.

    OMP_NUM_THREADS=1 python docs/experiments/sampler_levers/eval_pnp.py \
        SIGMA_START:SIGMA_END:ITERS:ZETA:OUT[:PHASE] [...]

From the SENSE image x (the shipped warm start's image), for k = 0..ITERS-1 with σ_k geometric SIGMA_START ->
SIGMA_END:
    z = D(x, σ_k)                                         (every map-set image)
    x = argmin ‖A x − y‖² + μ_k ‖x − z‖²,  μ_k = noise_std² / (ζ σ_k²)   (CG to ‖r‖ ≤ 1e-4 ‖rhs‖, ≤ 50 iterations)
OUT "x" returns the last data step, "z" the last denoised image. PHASE demodulates the denoiser's input,
D'(x) = e^{iφ} D(e^{−iφ} x, σ): "none" (default), "l1" (φ of our L1-wavelet image, as eval_demod.py), "self" (φ of
the current x, so that the prior sees |x| and the data step alone sets the phase). ZETA "gcv": per slice by
generalized cross-validation over GCV_ZETAS. No re-noising: the denoiser sees the data-consistent image itself (DDS
re-noises around it). μ_k is DDS's Gaussian-consistent weight without its σ_data term. Coil maps,
num_maps auto, the noise level from the calibration matrix and the support crop are the production path's.
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

from dpm_core import baselines  # noqa: E402
from dpm_core.cg import conjugate_gradient  # noqa: E402
from dpm_core.combine import rss  # noqa: E402
from dpm_core.fft import fft2c, ifft2c  # noqa: E402
from dpm_core.masks import sampling_of  # noqa: E402
from dpm_core.noise import estimate_noise_std, kspace_edge_level  # noqa: E402
from dpm_core.normalize import normalization_scale  # noqa: E402
from dpm_core.operators import SenseOp, combine_map_images  # noqa: E402
from dpm_core.reconstruct import Reconstructor  # noqa: E402
from dpm_core.samplers._common import denoise_maps  # noqa: E402
from dpm_core.holdout import holdout_folds  # noqa: E402

CASES = tuple(os.environ.get("CASES", "real_R4,real_R6,real_R4_random,real_folded_R3,synth0_R4").split(","))
MODEL = os.environ.get("MODEL") or None          # a model card to test instead of the shipped choice
DATA_CG_ITERS = 50
DATA_CG_TOL = 1e-4
START = os.environ.get("START", "sense")          # the first x: "sense" (SENSE-CG) or "l1" (our L1-wavelet image)
HOLDOUT = float(os.environ.get("HOLDOUT", "0"))   # > 0: also print the rules' inputs (below)


def prepare(rec, kspace, mask):
    """The production path's normalized k-space [S, C, H, W], sampling, maps [S, M, C, H, W], noise std [S] and scale
    [S]."""
    S, C, H, W = kspace.shape
    sampling = sampling_of(mask, H)
    k = kspace.to(torch.complex64) * torch.from_numpy(sampling.mask).view(1, 1, H, 1)
    scale = normalization_scale(k, sampling)
    kn = k / scale.view(S, 1, 1, 1)
    maps, _ = rec._coil_maps(kn, sampling, None)
    return kn, sampling, maps, estimate_noise_std(kn, sampling), scale


def hqs(denoiser, kn, mask, maps, noise_std, rec, sigma_start, sigma_end, iters, zeta, out, phase, rotation=None):
    """The map-set images [S, M, H, W] complex64 (normalized units) from the lines of the 1-D ``mask`` of ``kn``."""
    S, C, H, W = kn.shape
    y = kn * torch.from_numpy(mask).view(1, 1, H, 1)
    op = SenseOp(maps, mask)
    noise_std = noise_std.view(S, 1, 1, 1)
    Ahy = op.adjoint(y)
    l1 = None
    if START == "l1" or (phase == "l1" and rotation is None):
        l1 = baselines.l1_wavelet(y, mask, maps, edge_level=kspace_edge_level(y, mask))
    if phase == "l1" and rotation is None:
        rotation = torch.sgn(l1)
    x = l1 if START == "l1" else baselines.sense_cg(y, mask, maps, rec.cg_iters, rec.l2_weight, tol=rec.cg_tol)
    sigmas = np.geomspace(sigma_start, sigma_end, iters) if iters > 1 else [sigma_start]
    with torch.no_grad():
        for sigma in sigmas:
            if phase == "self":
                rotation = torch.sgn(x)
            if phase == "none":
                z = denoise_maps(denoiser, x, float(sigma))
            else:
                z = rotation * denoise_maps(denoiser, x * rotation.conj(), float(sigma))
            mu = noise_std ** 2 / (zeta * float(sigma) ** 2)
            x = conjugate_gradient(lambda u: op.normal(u) + mu * u, Ahy + mu * z, z, DATA_CG_ITERS, tol=DATA_CG_TOL)
    return (x if out == "x" else z) * (maps.abs().sum(dim=2) > 0)


GCV_ZETAS = tuple(float(z) for z in os.environ.get("GCV_ZETAS", "0.0625,0.25,1,4").split(","))


def gcv_zeta(denoiser, kn, mask, maps, noise_std, rec, sigma_start, sigma_end, iters, out, phase):
    """ζ [S, 1, 1, 1] per slice from GCV_ZETAS by generalized cross-validation, as dpm_core.zeta_rules.gcv_zeta scores
    the DDS sampler: GCV(ζ) = n ‖y − f(y)‖² / (n − df)², df the Monte-Carlo divergence of f(y) = A x̂(y) along a seeded
    probe b of step ε = 0.1 σ̂ (the L1 phase, when used, is that of y for both runs)."""
    S, C, H, W = kn.shape
    P = torch.from_numpy(mask).view(1, 1, H, 1)
    y = kn * P
    b = torch.complex(*torch.randn((2, S, C, H, W), generator=torch.Generator().manual_seed(1 << 20))) * P
    eps = (0.1 * noise_std).view(S, 1, 1, 1)
    n = 2 * float(P.sum()) * C * W
    rotation = None
    if phase == "l1":
        rotation = torch.sgn(baselines.l1_wavelet(y, mask, maps, edge_level=kspace_edge_level(y, mask)))
    op = SenseOp(maps, mask)
    scores_ = []
    for zeta in GCV_ZETAS:
        settings = (sigma_start, sigma_end, iters, zeta, out, phase)
        f = op.forward(hqs(denoiser, y, mask, maps, noise_std, rec, *settings, rotation=rotation))
        f_probe = op.forward(hqs(denoiser, y + eps * b, mask, maps, noise_std, rec, *settings, rotation=rotation))
        df = (b.conj() * (f_probe - f)).real.flatten(1).sum(1) / eps.view(S)
        residual = (y - f).abs().pow(2).flatten(1).sum(1)
        scores_.append(n * residual / (n - df).clamp_min(1.0) ** 2)
    choice = torch.stack(scores_, 1).argmin(1)
    return torch.tensor(GCV_ZETAS)[choice].view(S, 1, 1, 1)


def line_error(kn, maps, x, lines):
    """‖P (F S x − y)‖² / ‖P y‖² over the phase-encode ``lines`` [H] bool, all slices together."""
    H = kn.shape[2]
    P = torch.from_numpy(lines).view(1, 1, H, 1)
    residual = (fft2c((maps * x.unsqueeze(2)).sum(dim=1)) - kn) * P
    return float((residual.abs() ** 2).sum() / ((kn * P).abs() ** 2).sum())


def discrepancy(kn, mask, maps, x, noise_std):
    """Mean |F S x − y|² over the measured samples divided by its expectation for pure noise, 2 noise_std²."""
    H = kn.shape[2]
    P = torch.from_numpy(mask).view(1, 1, H, 1)
    residual = ((fft2c((maps * x.unsqueeze(2)).sum(dim=1)) - kn) * P).abs() ** 2
    per_slice = residual.sum(dim=(1, 2, 3)) / (P.sum() * kn.shape[1] * kn.shape[3]) / (2 * noise_std ** 2)
    return float(per_slice.mean())


torch.set_num_threads(1)
cases = real_cases(lambda n: n in CASES) + synthetic_cases(lambda n: n in CASES, 3, 2)[0]
rec = Reconstructor(method="dpm", num_maps="auto", progress=None, model=MODEL)
denoiser = rec.denoiser()
prepared = {case.name: prepare(rec, case.kspace * torch.from_numpy(case.mask).view(1, 1, -1, 1), case.mask)
            for case in cases}
for variant in sys.argv[1:]:
    s0, s1, iters, zeta, out, *phase = variant.split(":")
    band = (float(s0), float(s1), int(iters))
    phase = phase[0] if phase else "none"
    nrmse, rules, chosen, t0 = {}, {}, {}, time.perf_counter()
    for case in cases:
        kn, sampling, maps, noise_std, scale = prepared[case.name]
        if zeta == "gcv":
            weight = gcv_zeta(denoiser, kn, sampling.mask, maps, noise_std, rec, *band, out, phase)
            chosen[case.name] = weight.flatten().tolist()
        else:
            weight = float(zeta)
        x = hqs(denoiser, kn, sampling.mask, maps, noise_std, rec, *band, weight, out, phase)
        images = combine_map_images(x) * scale.view(-1, 1, 1)
        nrmse[case.name] = round(scores(np.abs(images.numpy()), rss(ifft2c(case.kspace)).numpy())["NRMSE"], 5)
        if HOLDOUT > 0:
            held = holdout_folds(sampling.mask, HOLDOUT, torch.Generator().manual_seed(0))[0]
            x_fit = hqs(denoiser, kn, sampling.mask & ~held, maps, noise_std, rec, *band, weight, out, phase)
            rules[case.name] = (round(discrepancy(kn, sampling.mask, maps, x, noise_std), 3),
                                round(line_error(kn, maps, x_fit, held), 5))
    print(variant, nrmse, *(["ζ", chosen] if chosen else []), f"{time.perf_counter() - t0:.0f} s", flush=True)
    if rules:
        print("  (discrepancy, held-out line error)", rules, flush=True)
