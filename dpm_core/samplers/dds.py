"""The fast sampler: decomposed diffusion sampling (Chung, Lee, Ye, "Decomposed diffusion sampling for accelerated
inverse problem solving", ICLR 2024): Tweedie denoise, a few CG steps on the data term, re-noise.
"""
from __future__ import annotations

import math
from typing import Callable, Sequence

import torch

from ..cg import conjugate_gradient
from ..operators import SenseOp
from ._common import Denoiser, check_inputs, denoise_maps, per_slice, randn_slices, start_noise


def dds(denoiser: Denoiser, y: torch.Tensor, op: SenseOp, sigmas: torch.Tensor, generators: Sequence[torch.Generator],
        *, x_init: torch.Tensor | None = None, callback: Callable[[dict], None] | None = None,
        cg_iters: int = 5, noise_std: float | None = None, sigma_data: float | None = 0.5, lamda: float = 0.0,
        eta: float = 1.0, zeta: float = 1.0) -> torch.Tensor:
    """Decomposed diffusion sampling: Tweedie denoise, a few CG steps on the data term, re-noise (DDIM with eta).

    For i = 0..N-1 on a Karras schedule (sigmas[N] = 0), with no backprop through the denoiser:
        D     = denoiser(x, sigma_i)
        x0    = CG_{cg_iters}( (A^H A + lam_i I) u = A^H y + lam_i D,  start u = D )
        eps   = (x - x0) / sigma_i
        s     = eta * sigma_{i+1} * sqrt(1 - sigma_{i+1}^2 / sigma_i^2)
        x    <- x0 + sqrt(sigma_{i+1}^2 - s^2) eps + s z
    lam_i = noise_std^2 / sigma_i^2 if ``noise_std`` is given (the Gaussian-consistent weight: the prior given x is
    approximated by N(D, sigma_i^2 I) and the noise has variance noise_std^2), else the constant ``lamda``
    (0 with few CG iterations is the published early-stopped DDS). eta = 1 is ancestral (DDPM-like) sampling, eta = 0
    the deterministic DDIM / probability-flow step; both use eps from the data-consistent x0, which makes the step's
    conditional mean exact for a Gaussian prior when x0 = E[x_0 | x, y].

    Args (beyond the common ones):
        cg_iters: CG iterations per step (DDS: 5).
        noise_std: measurement noise std per real channel, a float or a tensor [S] (one per slice); switches to the
            annealed weight lam_i.
        lamda: constant proximal weight when ``noise_std`` is None.
        eta: stochasticity in [0, 1].
        zeta: data-consistency weight ζ: the data term is weighted ζ times the Gaussian-consistent weight, i.e. lam_i
            is divided by ζ (ζ = 1 exact for a Gaussian prior; larger ζ trusts the measured lines more, as the paper's
            ζ does for DPS). No effect when lam_i = 0. A float or a tensor [S] (one per slice).
    Returns: [S, M, H, W] complex64. Network evaluations per slice: N (* M map images); default schedules use N <= 50.
    """
    sigmas = check_inputs("dds", y, op, sigmas, generators, x_init)
    if sigmas.numel() < 2 or float(sigmas[-1]) != 0.0 or torch.any(sigmas[:-1] <= 0):
        raise ValueError("dds: sigmas must be > 0 and end in 0 (use karras_sigmas)")
    if not 0.0 <= eta <= 1.0:
        raise ValueError(f"dds: eta={eta} must be in [0, 1]")
    if cg_iters < 0 or lamda < 0 or (noise_std is not None and bool(torch.any(torch.as_tensor(noise_std) < 0))):
        raise ValueError(f"dds: cg_iters={cg_iters}, lamda={lamda}, noise_std={noise_std} must be >= 0")
    if not bool(torch.all(torch.as_tensor(zeta) > 0)):
        raise ValueError(f"dds: zeta={zeta} must be > 0")
    device = y.device
    S = op.ishape[0]
    noise_std = None if noise_std is None else per_slice(noise_std, S, device)
    zeta = per_slice(zeta, S, device)
    with torch.no_grad():
        x = start_noise(sigmas, x_init, generators, op, device)
        Ahy = op.adjoint(y)
        for i in range(sigmas.numel() - 1):
            sigma, sigma_next = float(sigmas[i]), float(sigmas[i + 1])
            D = denoise_maps(denoiser, x, sigma)
            if noise_std is None:
                lam = lamda
            else:                       # noise_std^2 / Var(x_0 | x), with 1 / Var = 1 / sigma^2 + 1 / sigma_data^2
                lam = noise_std ** 2 * (1.0 / sigma ** 2 + (0.0 if sigma_data is None else 1.0 / sigma_data ** 2))
            lam = lam / zeta
            x0 = conjugate_gradient(lambda u: op.normal(u) + lam * u, Ahy + lam * D, D, cg_iters, tol=0.0)
            x = renoise(x, x0, sigma, sigma_next, eta, generators)
            if callback is not None:
                callback({"i": i, "sigma": sigma, "x": x, "denoised": D})
    return x


def renoise(x: torch.Tensor, x0: torch.Tensor, sigma: float, sigma_next: float, eta: float,
            generators: Sequence[torch.Generator]) -> torch.Tensor:
    """The DDIM step from level ``sigma`` to ``sigma_next`` around the data-consistent estimate x0 (see :func:`dds`):
    x0 + sqrt(sigma_next^2 - s^2) (x - x0) / sigma + s z, s = eta sigma_next sqrt(1 - sigma_next^2 / sigma^2); x0 itself
    at sigma_next = 0. x, x0: [S, M, H, W] complex64; one generator per slice."""
    if sigma_next == 0.0:
        return x0
    eps_hat = (x - x0) / sigma
    s = eta * sigma_next * math.sqrt(max(1.0 - sigma_next ** 2 / sigma ** 2, 0.0))
    x = x0 + math.sqrt(max(sigma_next ** 2 - s ** 2, 0.0)) * eps_hat
    if s > 0:
        x = x + s * randn_slices(tuple(x.shape[1:]), generators, x.device)
    return x
