"""The multi-coil SENSE forward model A = M F S and its adjoint, for one or more sets of coil maps.

Layouts (DESIGN.md §2):
    image  x : [S, M, H, W] complex64   S slices, M map sets (M = 1: classic SENSE; M = 2: ESPIRiT soft-SENSE)
    maps   S : [S, M, C, H, W] complex64
    k-space y: [S, C, H, W] complex64   ky = H (phase encode), kx = W (readout)
    mask     : real, broadcastable to [S, 1, H, W]; 1-D Cartesian masks are stored as [S, 1, H, 1]

With M map sets the coil image is the *sum* of the M map-weighted images, coil_c = sum_m S_mc x_m (soft-SENSE), so a
second ESPIRiT map can carry anatomy that folds in when the FOV is smaller than the head. Mask and maps are fixed at
construction; calling the operator never changes them.
"""
from __future__ import annotations

import torch

from .fft import fft2c, ifft2c
from .masks import Sampling, samples_of

__all__ = ["SenseOp", "combine_map_images", "as_mask_tensor"]


def as_mask_tensor(mask, num_slices: int, height: int, width: int, device=None) -> torch.Tensor:
    """Bring a sampling mask to the broadcastable float32 layout [S, 1, H, 1] or [S, 1, H, W].

    Args:
        mask: [H] (1-D phase-encode mask, same for every slice), [H, W], [S, 1, H, 1] or [S, 1, H, W];
            bool or real, numpy or torch; or a :class:`dpm_core.masks.Sampling` (its
            :func:`dpm_core.masks.samples_of`: [H, W] with an asymmetric echo).
        num_slices, height, width: S, H, W of the k-space it applies to.
    """
    if isinstance(mask, Sampling):
        mask = samples_of(mask)
    m = torch.as_tensor(mask, device=device)
    m = m.to(torch.float32)
    if m.ndim == 1:
        if m.shape[0] != height:
            raise ValueError(f"1-D mask has {m.shape[0]} entries but k-space has H={height} phase-encode lines")
        return m.view(1, 1, height, 1).expand(num_slices, 1, height, 1)
    if m.ndim == 2 and m.shape == (height, width):
        return m.view(1, 1, height, width).expand(num_slices, 1, height, width)
    if m.ndim == 4 and m.shape[1] == 1 and m.shape[2] == height and m.shape[3] in (1, width):
        if m.shape[0] not in (1, num_slices):
            raise ValueError(f"mask has {m.shape[0]} slices but k-space has S={num_slices}")
        return m.expand(num_slices, 1, height, m.shape[3])
    raise ValueError(
        f"mask shape {tuple(m.shape)} does not fit k-space [S={num_slices}, C, H={height}, W={width}]; "
        "expected [H], [H, W], [S, 1, H, 1] or [S, 1, H, W]")


class SenseOp:
    """A = M F S: image [S, M, H, W] -> undersampled multi-coil k-space [S, C, H, W].

    Args:
        maps: [S, M, C, H, W] complex (or [S, C, H, W] for one map set).
        mask: sampling mask, any layout accepted by :func:`as_mask_tensor`; None means fully sampled.
    """

    def __init__(self, maps: torch.Tensor, mask=None):
        if maps.ndim == 4:
            maps = maps.unsqueeze(1)
        if maps.ndim != 5 or not maps.is_complex():
            raise ValueError(f"maps must be complex [S, M, C, H, W] (or [S, C, H, W]); got {tuple(maps.shape)} "
                             f"{maps.dtype}")
        self.maps = maps
        S, M, C, H, W = maps.shape
        self.mask = None if mask is None else as_mask_tensor(mask, S, H, W, device=maps.device)
        self.ishape = (S, M, H, W)
        self.oshape = (S, C, H, W)
        self._uncentred = None                                       # (maps, mask) for normal(), made on first use

    def select(self, index: torch.Tensor) -> "SenseOp":
        """The operator of the slices ``index`` ([n] int64, repeats allowed: a slice's posterior samples)."""
        index = index.to(self.maps.device)
        return SenseOp(self.maps[index], None if self.mask is None else self.mask[index])

    def _check(self, x: torch.Tensor, shape: tuple, what: str) -> None:
        if tuple(x.shape) != shape:
            raise ValueError(f"SenseOp {what}: expected shape {shape}, got {tuple(x.shape)}")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: [S, M, H, W] -> y: [S, C, H, W]."""
        self._check(x, self.ishape, "forward input")
        coil_images = (self.maps * x.unsqueeze(2)).sum(dim=1)      # [S, C, H, W]
        y = fft2c(coil_images)
        return y if self.mask is None else y * self.mask

    def adjoint(self, y: torch.Tensor) -> torch.Tensor:
        """y: [S, C, H, W] -> x: [S, M, H, W]."""
        self._check(y, self.oshape, "adjoint input")
        if self.mask is not None:
            y = y * self.mask
        coil_images = ifft2c(y).unsqueeze(1)                        # [S, 1, C, H, W]
        return (self.maps.conj() * coil_images).sum(dim=2)          # [S, M, H, W]

    def normal(self, x: torch.Tensor) -> torch.Tensor:
        """AᴴA x, the mask (a projection) applied once, with the centring shifts on the M map images, not the C coils.

        A shift commutes with pointwise products, so with S' = ifftshift(S) and M' = ifftshift(mask) (made once),
        AᴴA x = fftshift( sum_c conj(S'_c) ifft2( M' fft2( sum_m S'_m ifftshift(x_m) ) ) ), orthonormal FFTs: the
        same operator as adjoint(forward(x)) with two shifts of [S, M, H, W] instead of four of [S, C, H, W], which
        cost CG (the SENSE start, every DDS step) more than the FFTs themselves do on the CPU.
        """
        self._check(x, self.ishape, "normal input")
        if self._uncentred is None:
            self._uncentred = (torch.fft.ifftshift(self.maps, dim=(-2, -1)),
                               None if self.mask is None else torch.fft.ifftshift(self.mask, dim=(-2, -1)))
        maps, mask = self._uncentred
        coil_images = (maps * torch.fft.ifftshift(x, dim=(-2, -1)).unsqueeze(2)).sum(dim=1)      # [S, C, H, W]
        if mask is not None:
            coil_images = torch.fft.ifft2(torch.fft.fft2(coil_images, norm="ortho") * mask, norm="ortho")
        return torch.fft.fftshift((maps.conj() * coil_images.unsqueeze(1)).sum(dim=2), dim=(-2, -1))

    __call__ = forward

    def __repr__(self) -> str:
        return f"SenseOp(ishape={self.ishape}, oshape={self.oshape}, masked={self.mask is not None})"


def combine_map_images(x: torch.Tensor) -> torch.Tensor:
    """Collapse M soft-SENSE map images [S, M, H, W] into one complex image [S, H, W].

    Magnitude is the root-sum-of-squares over map sets (what BART reports for ``pics`` with ``-m2``), the phase is
    the first map set's, so M = 1 returns the image unchanged.
    """
    if x.shape[1] == 1:
        return x[:, 0]
    magnitude = torch.sqrt((x.abs() ** 2).sum(dim=1))
    phase = torch.exp(1j * torch.angle(x[:, 0]))
    return magnitude * phase
