"""The one intensity-normalization rule, used identically in training, validation and the scanner.

Rule (DESIGN.md §2): per slice, scale = 99th percentile of the magnitude of the root-sum-of-squares image of the
zero-filled ACS-only k-space (the low-resolution image from the fully sampled centre block), using the central
``min(ACS width, 24)`` lines so that a fully sampled training slice and an accelerated scan (whose ACS block may merge
with neighbouring lattice lines) see exactly the same lines. It needs only data every
accelerated scan has, and a low-pass image keeps the amplitude of the full image (orthonormal FFT), so the same scale
comes out whether it is computed on fully sampled training data or on an accelerated scan with the same ACS block.
The network sees kspace / scale; images are multiplied by scale at the end.
"""
from __future__ import annotations

import numpy as np
import torch

from .combine import rss
from .fft import ifft2c
from .masks import DEFAULT_NUM_ACS, Sampling, acs_of, acs_slice

__all__ = ["NORMALIZATION_RULE", "NORMALIZATION_PERCENTILE", "normalization_scale"]

NORMALIZATION_PERCENTILE = 99.0
NORMALIZATION_RULE = "p99_rss_acs"   # recorded in model cards; a model trained under another rule is refused


def normalization_scale(kspace: torch.Tensor, mask=None, num_acs: int | None = None) -> torch.Tensor:
    """Per-slice normalization scale from the ACS block.

    Args:
        kspace: [S, C, H, W] complex k-space (undersampled and zero-filled, or fully sampled).
        mask: 1-D phase-encode mask [H] (numpy or torch, bool) or a :class:`dpm_core.masks.Sampling`. Its contiguous
            block around H // 2 is the ACS. If None the k-space is taken as fully sampled and the central ``num_acs``
            lines are used.
        num_acs: ACS width when ``mask`` is None (default :data:`dpm_core.masks.DEFAULT_NUM_ACS`).
    Returns: [S] float32 scale (> 0).
    """
    if kspace.ndim != 4 or not kspace.is_complex():
        raise ValueError(f"kspace must be complex [S, C, H, W]; got {tuple(kspace.shape)} {kspace.dtype}")
    H = kspace.shape[2]
    if mask is None:
        rows = acs_slice(H, min(num_acs or DEFAULT_NUM_ACS, DEFAULT_NUM_ACS))
    else:
        if not isinstance(mask, Sampling):
            mask = np.asarray(torch.as_tensor(mask).detach().cpu()).astype(bool).reshape(-1)
            if mask.size != H:
                raise ValueError(f"normalization needs a 1-D phase-encode mask of length H={H}; got {mask.size} "
                                 f"entries")
        acs = acs_of(mask, H)
        rows = acs_slice(H, min(acs.stop - acs.start, DEFAULT_NUM_ACS))
        if rows.start < acs.start or rows.stop > acs.stop:       # ACS block not centred on H // 2: use it as is
            rows = acs
    # In double precision: float32 squares overflow from |k| ~ 1e19 on, and the scale is what brings data to O(1).
    acs_only = torch.zeros_like(kspace, dtype=torch.complex128)
    acs_only[:, :, rows] = kspace[:, :, rows]
    low_res = rss(ifft2c(acs_only))                                          # [S, H, W]
    q = torch.quantile(low_res.flatten(1).float(), NORMALIZATION_PERCENTILE / 100.0, dim=1)
    if not torch.all(q > 0) or not torch.all(torch.isfinite(q)):
        raise ValueError("the ACS block of at least one slice is all zero or not finite: cannot normalize; "
                         "check that calibration lines were acquired and passed in the k-space buffer")
    return q.to(torch.float32)
