"""Noise-level schedules for the samplers, kept apart from the samplers (k-diffusion style).

A schedule is a 1-D float64 tensor of noise levels sigma, decreasing. sigma is the standard deviation of the Gaussian
noise added to *each real channel* of a complex image (the EDM convention on the [B, 2, H, W] real view):
x_sigma = x_0 + sigma * (z_re + 1j * z_im), z ~ N(0, 1), i.e. complex noise CN(0, 2 sigma^2).

- :func:`karras_sigmas` (EDM, Karras et al. 2022, eq. 5) ends in an appended 0: the ODE/SDE samplers (``dps``, ``dds``)
  step from sigmas[i] to sigmas[i + 1] and the last step lands on the clean image.
- :func:`geometric_sigmas` (NCSN / csgm-mri-langevin) is the level list of annealed Langevin dynamics (``ald``); every
  level is > 0 and sampling may start part-way (csgm: 2,311 levels from 232 to 0.0066, start at level 1,155).
"""
from __future__ import annotations

import math

import torch

__all__ = ["karras_sigmas", "geometric_sigmas", "csgm_sigmas", "CSGM_SIGMA_MAX", "CSGM_SIGMA_MIN", "CSGM_NUM_LEVELS",
           "CSGM_START_LEVEL"]

# csgm-mri-langevin (Jalal et al. 2021) NCSNv2 brain model: geometric levels and the level sampling starts at.
CSGM_SIGMA_MAX = 232.0
CSGM_SIGMA_MIN = 0.0066
CSGM_NUM_LEVELS = 2311
CSGM_START_LEVEL = 1155


def karras_sigmas(n: int, sigma_min: float, sigma_max: float, rho: float = 7.0) -> torch.Tensor:
    """EDM time discretisation: n levels from sigma_max down to sigma_min, then 0.

    sigma_i = (sigma_max^(1/rho) + i / (n - 1) * (sigma_min^(1/rho) - sigma_max^(1/rho)))^rho, i = 0..n-1.

    Args:
        n: number of noise levels (= network evaluations of a first-order sampler), >= 1.
        sigma_min, sigma_max: 0 < sigma_min <= sigma_max (EDM: 0.002 / 80; the paper's MRI model: 0.004 / 10).
        rho: curvature of the schedule (EDM: 7).
    Returns: float64 tensor [n + 1], the last entry 0.
    """
    if int(n) != n or n < 1:
        raise ValueError(f"karras_sigmas: n={n} must be a positive integer number of noise levels")
    if not 0 < sigma_min <= sigma_max:
        raise ValueError(f"karras_sigmas: need 0 < sigma_min <= sigma_max; got sigma_min={sigma_min}, "
                         f"sigma_max={sigma_max}")
    if not rho > 0:
        raise ValueError(f"karras_sigmas: rho={rho} must be > 0 (EDM uses 7)")
    ramp = torch.linspace(0, 1, int(n), dtype=torch.float64) if n > 1 else torch.zeros(1, dtype=torch.float64)
    min_inv_rho = sigma_min ** (1 / rho)
    max_inv_rho = sigma_max ** (1 / rho)
    sigmas = (max_inv_rho + ramp * (min_inv_rho - max_inv_rho)) ** rho
    return torch.cat([sigmas, sigmas.new_zeros(1)])


def geometric_sigmas(sigma_max: float, sigma_min: float, n_levels: int) -> torch.Tensor:
    """Geometric levels sigma_max -> sigma_min (both included), as NCSN/NCSNv2 and csgm-mri-langevin use.

    Args:
        sigma_max, sigma_min: 0 < sigma_min <= sigma_max.
        n_levels: number of levels, >= 1 (n_levels = 1 gives [sigma_max] and needs sigma_min == sigma_max).
    Returns: float64 tensor [n_levels], all > 0; slice it (``[start:]``) to start part-way.
    """
    if int(n_levels) != n_levels or n_levels < 1:
        raise ValueError(f"geometric_sigmas: n_levels={n_levels} must be a positive integer")
    if not 0 < sigma_min <= sigma_max:
        raise ValueError(f"geometric_sigmas: need 0 < sigma_min <= sigma_max; got sigma_max={sigma_max}, "
                         f"sigma_min={sigma_min}")
    if n_levels == 1:
        if sigma_min != sigma_max:
            raise ValueError("geometric_sigmas: one level needs sigma_min == sigma_max; ask for n_levels >= 2")
        return torch.tensor([float(sigma_max)], dtype=torch.float64)
    return torch.exp(torch.linspace(math.log(sigma_max), math.log(sigma_min), int(n_levels), dtype=torch.float64))


def csgm_sigmas(start_level: int = CSGM_START_LEVEL) -> torch.Tensor:
    """csgm-mri-langevin's schedule: levels ``start_level..2310`` of 2,311 geometric levels 232 -> 0.0066.

    Returns: float64 tensor [2311 - start_level] (1,156 levels for the default start 1,155).
    """
    if not 0 <= start_level < CSGM_NUM_LEVELS:
        raise ValueError(f"csgm_sigmas: start_level={start_level} must be in [0, {CSGM_NUM_LEVELS - 1}]")
    return geometric_sigmas(CSGM_SIGMA_MAX, CSGM_SIGMA_MIN, CSGM_NUM_LEVELS)[start_level:]
