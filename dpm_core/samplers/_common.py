"""Helpers shared by the samplers: input checks, per-slice noise, denoising every map-set image, per-slice norms.

Layouts as in :mod:`dpm_core.samplers`: image x [S, M, H, W] complex64, k-space y [S, C, H, W] complex64.
"""
from __future__ import annotations

from typing import Callable, Sequence

import torch

from ..cg import batch_dot
from ..operators import SenseOp
from ..seeding import randn_complex

Denoiser = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
"""``denoiser(x: complex64 [B, H, W], sigma: float32 [B]) -> complex64 [B, H, W]``."""


def one_slice(y: torch.Tensor, op: SenseOp, options: dict, s: int) -> tuple[torch.Tensor, SenseOp, dict]:
    """Slice ``s`` of a batch, for samplers that run slice by slice: (y [1, C, H, W], its operator with a mask
    [1, 1, H, 1] of ones where ``op`` has none, ``options`` with every per-slice tensor option [S] cut to [1])."""
    H = op.ishape[2]
    mask = torch.ones(1, 1, H, 1, device=y.device) if op.mask is None else op.mask[s:s + 1]
    sliced = {k: v[s:s + 1] if isinstance(v, torch.Tensor) else v for k, v in options.items()}
    return y[s:s + 1], SenseOp(op.maps[s:s + 1], mask), sliced


def check_inputs(name: str, y: torch.Tensor, op: SenseOp, sigmas: torch.Tensor, generators: Sequence,
                  x_init: torch.Tensor | None) -> torch.Tensor:
    if tuple(y.shape) != op.oshape:
        raise ValueError(f"{name}: y must have the operator's k-space shape {op.oshape}; got {tuple(y.shape)}")
    if not y.is_complex():
        raise ValueError(f"{name}: y must be complex k-space; got {y.dtype}")
    sigmas = torch.as_tensor(sigmas, dtype=torch.float64).reshape(-1)
    if sigmas.numel() < 1 or not torch.all(torch.isfinite(sigmas)) or torch.any(sigmas < 0):
        raise ValueError(f"{name}: sigmas must be a non-empty 1-D tensor of finite levels >= 0; build it with "
                         "dpm_core.schedules")
    if len(generators) != op.ishape[0]:
        raise ValueError(f"{name}: need one torch.Generator per slice ({op.ishape[0]}); got {len(generators)} "
                         "(see make_generators)")
    if x_init is not None and tuple(x_init.shape) != op.ishape:
        raise ValueError(f"{name}: x_init must have the image shape {op.ishape}; got {tuple(x_init.shape)}")
    return sigmas


def randn_slices(shape: Sequence[int], generators: Sequence[torch.Generator], device) -> torch.Tensor:
    """Per-slice noise, unit variance per real channel: [len(generators), *shape] complex64 on ``device``."""
    return torch.stack([randn_complex(shape, g) for g in generators]).to(device)


def denoise_maps(denoiser: Denoiser, x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Apply the denoiser to every map image: x [S, M, H, W] -> D [S, M, H, W]."""
    S, M, H, W = x.shape
    sig = torch.full((S * M,), float(sigma), dtype=torch.float32, device=x.device)
    return denoiser(x.reshape(S * M, H, W), sig).reshape(S, M, H, W)


def per_slice(value, batch: int, device):
    """A sampler option that is a float (same for every slice) or a tensor [B] (one value per slice) -> a float or a
    [B, 1, 1, 1] tensor that broadcasts over image batches [B, M, H, W]."""
    if isinstance(value, torch.Tensor):
        if value.shape != (batch,):
            raise ValueError(f"a per-slice sampler option must have shape [{batch}]; got {tuple(value.shape)}")
        return value.to(device=device, dtype=torch.float32).view(batch, 1, 1, 1)
    return value


def slice_norm(x: torch.Tensor) -> torch.Tensor:
    """Per-slice l2 norm, shaped to broadcast over [S, ...]: [S, 1, 1, 1] float32."""
    return batch_dot(x, x).sqrt().view(-1, *([1] * (x.ndim - 1)))


def start_noise(sigmas: torch.Tensor, x_init, generators, op: SenseOp, device) -> torch.Tensor:
    """The sampler's start x_init + sigmas[0] * z (x_init = 0 when None): [S, M, H, W] complex64."""
    S, M, H, W = op.ishape
    x = float(sigmas[0]) * randn_slices((M, H, W), generators, device)
    return x if x_init is None else x + x_init.to(device=device, dtype=torch.complex64)
