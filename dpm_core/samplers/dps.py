"""Reference B: EDM Euler steps with a diffusion-posterior-sampling data step of size zeta (Chung et al., "Diffusion
posterior sampling for general noisy inverse problems", ICLR 2023; Karras et al., "EDM", NeurIPS 2022; the ζ-weighted
step of utcsilab/ambient-diffusion-mri).
"""
from __future__ import annotations

from typing import Callable, Sequence

import torch

from ..operators import SenseOp
from ._common import Denoiser, check_inputs, denoise_maps, per_slice, start_noise


def dps(denoiser: Denoiser, y: torch.Tensor, op: SenseOp, sigmas: torch.Tensor, generators: Sequence[torch.Generator],
        *, x_init: torch.Tensor | None = None, callback: Callable[[dict], None] | None = None,
        zeta: float = 1.0) -> torch.Tensor:
    """EDM Euler probability-flow steps with a DPS data-consistency step (the paper authors' sampler).

    For i = 0..N-1 on a Karras schedule (sigmas[N] = 0):
        D   = denoiser(x, sigma_i)                           (with autograd)
        sse = ||y - A D||^2 per slice,  g = grad_x sse       (backprop through the denoiser)
        x  <- x + (sigma_{i+1} - sigma_i) (x - D) / sigma_i - zeta * g / sqrt(sse)

    DPS is an approximation of posterior sampling (its step size is not the likelihood's): on a Gaussian prior its
    mean is close to, but not equal to, the posterior mean (see tests/test_samplers.py for what it reaches).

    Args (beyond the common ones): zeta: data-consistency step (1 by default; larger for higher acceleration), a float
        or a tensor [S] (one per slice).
    Returns: [S, M, H, W] complex64. Network evaluations per slice: N forward + N backward (* M map images).
    """
    sigmas = check_inputs("dps", y, op, sigmas, generators, x_init)
    if sigmas.numel() < 2 or float(sigmas[-1]) != 0.0 or torch.any(sigmas[:-1] <= 0):
        raise ValueError("dps: sigmas must be > 0 and end in 0 (use karras_sigmas)")
    device = y.device
    zeta = per_slice(zeta, op.ishape[0], device)
    with torch.no_grad():
        x = start_noise(sigmas, x_init, generators, op, device)
    for i in range(sigmas.numel() - 1):
        sigma, sigma_next = float(sigmas[i]), float(sigmas[i + 1])
        with torch.enable_grad():
            x_in = x.detach().requires_grad_(True)
            D = denoise_maps(denoiser, x_in, sigma)
            residual = y - op.forward(D)
            sse = (residual.abs() ** 2).reshape(residual.shape[0], -1).sum(dim=1)         # [S]
            (g,) = torch.autograd.grad(sse.sum(), x_in)                    # per slice: slices are independent
        with torch.no_grad():
            D = D.detach()
            norm = sse.detach().sqrt().clamp_min(1e-30).view(-1, 1, 1, 1)
            x = x + (sigma_next - sigma) * (x - D) / sigma - zeta * g / norm              # Euler step + DPS step
        if callback is not None:
            callback({"i": i, "sigma": sigma, "x": x, "denoised": D})
    return x.detach()
