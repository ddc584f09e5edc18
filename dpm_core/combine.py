"""Coil combination: root-sum-of-squares and MVUE (SENSE-weighted combination with coil maps).

Layouts: coil images [S, C, H, W] complex64; maps [S, M, C, H, W] complex64; combined images [S, H, W].
"""
from __future__ import annotations

import torch

from .operators import SenseOp, combine_map_images

__all__ = ["rss", "mvue"]


def rss(coil_images: torch.Tensor, dim: int = 1) -> torch.Tensor:
    """Root-sum-of-squares magnitude over the coil axis. [S, C, H, W] complex -> [S, H, W] float."""
    return torch.sqrt((coil_images.abs() ** 2).sum(dim=dim))


def mvue(kspace: torch.Tensor, maps: torch.Tensor) -> torch.Tensor:
    """Minimum-variance unbiased combination of fully sampled k-space with coil maps.

    x_m = sum_c conj(S_mc) I_c / sum_c |S_mc|^2 per map set, then collapsed with :func:`combine_map_images`.
    Pixels outside the maps' support (sum |S|^2 == 0) are 0.

    Args:
        kspace: [S, C, H, W] complex64, fully sampled.
        maps: [S, M, C, H, W] or [S, C, H, W] complex64.
    Returns: [S, H, W] complex64.
    """
    op = SenseOp(maps)
    x = op.adjoint(kspace)                                          # [S, M, H, W]
    energy = (op.maps.abs() ** 2).sum(dim=2)                        # [S, M, H, W]
    x = torch.where(energy > 0, x / energy.clamp_min(1e-12), torch.zeros_like(x))
    return combine_map_images(x)

