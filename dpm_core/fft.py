"""Centred, orthonormal Fourier transforms: the one FFT convention of the package.

Convention (DESIGN.md §2): k-space centre at index ``n // 2`` of each transformed axis, and

    fft2c(x)  = fftshift(fft2(ifftshift(x), norm="ortho"))
    ifft2c(k) = fftshift(ifft2(ifftshift(k), norm="ortho"))

over the last two axes by default; ``ifftc`` is the same along one axis (a 3-D slab's kz -> its partitions).
``ifftshift`` comes first so that odd sizes round-trip exactly (the order gadgetron-python's ``cifftn`` gets wrong).
Inputs are complex torch tensors of any leading shape.
"""
from __future__ import annotations

import torch

__all__ = ["fft2c", "ifft2c", "ifftc"]


def fft2c(x: torch.Tensor, dim: tuple[int, int] = (-2, -1)) -> torch.Tensor:
    """Image -> k-space. x: complex tensor [..., H, W] (transformed over ``dim``)."""
    x = torch.fft.ifftshift(x, dim=dim)
    x = torch.fft.fft2(x, dim=dim, norm="ortho")
    return torch.fft.fftshift(x, dim=dim)


def ifft2c(k: torch.Tensor, dim: tuple[int, int] = (-2, -1)) -> torch.Tensor:
    """k-space -> image. k: complex tensor [..., H, W] (transformed over ``dim``)."""
    k = torch.fft.ifftshift(k, dim=dim)
    k = torch.fft.ifft2(k, dim=dim, norm="ortho")
    return torch.fft.fftshift(k, dim=dim)


def ifftc(k: torch.Tensor, dim: int = -1) -> torch.Tensor:
    """k-space -> image along one axis ``dim`` of a complex tensor, same centring and scaling as :func:`ifft2c`."""
    k = torch.fft.ifftshift(k, dim=dim)
    k = torch.fft.ifft(k, dim=dim, norm="ortho")
    return torch.fft.fftshift(k, dim=dim)
