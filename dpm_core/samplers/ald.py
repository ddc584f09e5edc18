"""Reference A: annealed Langevin dynamics (Jalal et al., "Robust compressed sensing MRI with deep generative priors",
NeurIPS 2021; read in utcsilab/csgm-mri-langevin), with every scale and norm computed per slice.
"""
from __future__ import annotations

import math
from typing import Callable, Sequence

import torch

from ..schedules import CSGM_SIGMA_MIN
from ..operators import SenseOp
from ._common import Denoiser, check_inputs, denoise_maps, per_slice, randn_slices, slice_norm, start_noise

CSGM_EPS = 5e-5          # csgm-mri-langevin step size at their last level sigma_L = 0.0066


def ald(denoiser: Denoiser, y: torch.Tensor, op: SenseOp, sigmas: torch.Tensor, generators: Sequence[torch.Generator],
        *, x_init: torch.Tensor | None = None, callback: Callable[[dict], None] | None = None,
        steps_per_level: int = 3, eps: float | None = None, weighting: str = "likelihood", noise_std: float = 0.0,
        gamma: float = 1.0, mse_weight: float = 5.0, final_denoise: bool = False) -> torch.Tensor:
    """Annealed Langevin dynamics posterior sampling.

    For each level sigma of ``sigmas`` (geometric, all > 0) and ``steps_per_level`` steps:
        a = eps * (sigma / sigma_L)^2                        (sigma_L = sigmas[-1])
        x <- x + a (s(x, sigma) - g) + sqrt(2 a) z,          s = (D(x, sigma) - x) / sigma^2, z per real channel N(0, 1)
    with the data gradient g (analytic, no autograd) chosen by ``weighting``:
        "likelihood": g = A^H (A x - y) / (noise_std^2 + gamma^2 sigma^2)   the annealed Gaussian likelihood score;
                      exact for sigma -> 0 (this is what the exact-posterior test proves).
        "csgm":       g = A^H (A x - y) rescaled per slice to ||g|| = mse_weight * ||s||   (csgm's "mse" heuristic,
                      computed per slice, not over the batch as csgm does).

    Args (beyond the common ones, see dpm_core.samplers):
        steps_per_level: Langevin steps per level (csgm: 3).
        eps: step size at the last level. Default: csgm's ratio eps / sigma_L^2 = 5e-5 / 0.0066^2 = 1.15 for "csgm"
            (5e-5 at sigma_L = 0.0066), 0.5 sigma_L^2 for "likelihood" (stable needs
            eps / sigma_L^2 < 2 / (1 + 1/gamma^2)).
        weighting: "likelihood" (the default: the one proven to sample the posterior at these defaults,
            tests/test_sampler_laws.py) or "csgm" (reference A as published; it diverges to non-finite pixels on the
            shipped models, benchmarks/results/fast_vs_ald.md).
        noise_std: measurement noise std per real channel (k-space units of y), for "likelihood"; a float or a
            tensor [S] (one per slice).
        gamma: weight of the annealing term gamma^2 sigma^2 (1: the noise of A x_sigma for ||A|| <= 1).
        mse_weight: csgm's data weight w for "csgm" (5).
        final_denoise: return D(x, sigma_L) instead of the last Langevin iterate (off in csgm).
    Returns: [S, M, H, W] complex64. Network evaluations per slice: len(sigmas) * steps_per_level (* M map images).
    """
    sigmas = check_inputs("ald", y, op, sigmas, generators, x_init)
    if torch.any(sigmas <= 0):
        raise ValueError("ald: every level must be > 0; use geometric_sigmas (not karras_sigmas, which ends in 0)")
    if weighting not in ("likelihood", "csgm"):
        raise ValueError(f"ald: weighting={weighting!r} must be 'likelihood' or 'csgm'")
    if weighting == "likelihood" and not (bool(torch.all(torch.as_tensor(noise_std) > 0)) or gamma > 0):
        raise ValueError("ald: the likelihood weighting needs noise_std > 0 or gamma > 0 (else the weight is infinite "
                         "at small sigma)")
    sigma_last = float(sigmas[-1])
    if eps is None:
        eps = (CSGM_EPS / CSGM_SIGMA_MIN ** 2 if weighting == "csgm" else 0.5) * sigma_last ** 2
    if steps_per_level < 1 or not eps > 0:
        raise ValueError(f"ald: steps_per_level={steps_per_level} must be >= 1 and eps={eps} > 0")
    device = y.device
    S, M, H, W = op.ishape
    noise_std = per_slice(noise_std, S, device)
    with torch.no_grad():
        x = start_noise(sigmas, x_init, generators, op, device)
        D = x
        i = 0
        for sigma in sigmas.tolist():
            a = eps * (sigma / sigma_last) ** 2
            for _ in range(steps_per_level):
                D = denoise_maps(denoiser, x, sigma)
                score = (D - x) / sigma ** 2
                residual_grad = op.adjoint(op.forward(x) - y)                       # A^H (A x - y)
                if weighting == "likelihood":
                    g = residual_grad / (noise_std ** 2 + gamma ** 2 * sigma ** 2)
                else:
                    g = residual_grad * (mse_weight * slice_norm(score) /
                                         slice_norm(residual_grad).clamp_min(1e-30))
                z = randn_slices((M, H, W), generators, device)
                x = x + a * (score - g) + math.sqrt(2 * a) * z
                if callback is not None:
                    callback({"i": i, "sigma": sigma, "x": x, "denoised": D})
                i += 1
        if final_denoise:
            x = denoise_maps(denoiser, x, sigma_last)
    return x
