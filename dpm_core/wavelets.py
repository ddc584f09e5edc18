"""Orthonormal 2-D wavelet transform with periodic boundaries, in torch (CPU or CUDA, batched, complex).

    coefficients = Wavelet2D(shape, "db4").forward(x)      x [..., H, W] complex  ->  [..., H, W] complex
    x            = Wavelet2D(shape, "db4").adjoint(coefficients)                   (= the inverse: W is unitary)

Mallat's pyramid: each level filters the current low-pass block along both axes with the orthonormal filter pair
(h, g) of a Daubechies wavelet (filters from PyWavelets), keeps every second sample, and stores the four sub-bands in
place (LL top-left). Periodic extension makes every level an orthogonal matrix, so the transform is unitary for any
size whose low-pass block stays even: the number of levels is the largest (up to ``max_levels``) for which every
block is even and at least as long as the filter. A circular shift of the image before the transform (``shift``) is
the cycle spinning BART's ``pics`` applies at every iteration (random wavelet shifts), which removes the transform's
blockiness from iterative reconstructions.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["Wavelet2D", "num_levels"]


def _filters(wave_name: str) -> tuple[torch.Tensor, torch.Tensor]:
    import pywt

    wavelet = pywt.Wavelet(wave_name)
    if not wavelet.orthogonal:
        raise ValueError(f"wavelet {wave_name!r} is not orthogonal; use a Daubechies wavelet such as 'db2' or 'db4'")
    lo = torch.tensor(wavelet.rec_lo, dtype=torch.float64)
    hi = torch.tensor(wavelet.rec_hi, dtype=torch.float64)
    return lo, hi


def num_levels(height: int, width: int, filter_length: int, max_levels: int) -> int:
    """Levels of the pyramid for an H x W image: every block must be even and at least ``filter_length`` long."""
    levels, h, w = 0, height, width
    while levels < max_levels and h % 2 == 0 and w % 2 == 0 and h >= filter_length and w >= filter_length:
        levels, h, w = levels + 1, h // 2, w // 2
    return levels


def _analysis(x: torch.Tensor, bank: torch.Tensor) -> torch.Tensor:
    """One level along the last axis: [B, N] real -> [B, N] (N/2 low-pass, then N/2 high-pass), periodic."""
    L = bank.shape[-1]
    padded = torch.cat([x, x[:, :L - 1]], dim=1).unsqueeze(1)                   # [B, 1, N + L - 1]
    out = F.conv1d(padded, bank.unsqueeze(1), stride=2)                          # [B, 2, N/2]
    return out.reshape(x.shape[0], -1)


def _synthesis(c: torch.Tensor, bank: torch.Tensor) -> torch.Tensor:
    """Adjoint (= inverse) of :func:`_analysis`: [B, N] -> [B, N]."""
    B, N = c.shape
    L = bank.shape[-1]
    full = F.conv_transpose1d(c.reshape(B, 2, N // 2), bank.unsqueeze(1), stride=2)[:, 0]   # [B, N + L - 2]
    out = full[:, :N].clone()
    out[:, :L - 2] += full[:, N:]                                                # wrap the periodic overhang
    return out


class Wavelet2D:
    """Unitary periodic 2-D DWT on the last two axes of [..., H, W] complex tensors.

    Args:
        shape: (H, W) of the images.
        wave_name: an orthogonal PyWavelets name ("db1" = Haar, "db2", "db4", ...).
        max_levels: at most this many pyramid levels (see :func:`num_levels`).
    """

    def __init__(self, shape: tuple[int, int], wave_name: str = "db4", max_levels: int = 4):
        self.shape = (int(shape[0]), int(shape[1]))
        self.wave_name = wave_name
        lo, hi = _filters(wave_name)
        self._bank = torch.stack([lo, hi])                                       # [2, L]
        self.levels = num_levels(*self.shape, self._bank.shape[-1], max_levels)

    def _along_last(self, x: torch.Tensor, fn) -> torch.Tensor:
        """Apply a 1-D level ``fn`` to the last axis of a complex [..., n, m] block (real and imaginary parts)."""
        bank = self._bank.to(device=x.device, dtype=x.real.dtype)
        lead, m = x.shape[:-1], x.shape[-1]
        parts = torch.view_as_real(x).movedim(-1, 0).reshape(-1, m)              # [2 * prod(lead), m]
        out = fn(parts, bank).reshape(2, *lead, m).movedim(0, -1)
        return torch.view_as_complex(out.contiguous())

    def forward(self, x: torch.Tensor, shift: tuple[int, int] = (0, 0)) -> torch.Tensor:
        """Coefficients of ``x`` [..., H, W] (circularly shifted by ``shift`` first)."""
        if tuple(x.shape[-2:]) != self.shape:
            raise ValueError(f"Wavelet2D for {self.shape} images got shape {tuple(x.shape)}")
        c = torch.roll(x, shift, dims=(-2, -1)).clone() if shift != (0, 0) else x.clone()
        h, w = self.shape
        for _ in range(self.levels):
            block = self._along_last(c[..., :h, :w], _analysis)                              # rows
            block = self._along_last(block.transpose(-1, -2), _analysis).transpose(-1, -2)   # columns
            c[..., :h, :w] = block
            h, w = h // 2, w // 2
        return c

    def adjoint(self, c: torch.Tensor, shift: tuple[int, int] = (0, 0)) -> torch.Tensor:
        """Image from coefficients (the inverse of :meth:`forward` with the same ``shift``)."""
        if tuple(c.shape[-2:]) != self.shape:
            raise ValueError(f"Wavelet2D for {self.shape} images got shape {tuple(c.shape)}")
        x = c.clone()
        sizes = [(self.shape[0] >> j, self.shape[1] >> j) for j in range(self.levels)]
        for h, w in reversed(sizes):
            block = self._along_last(x[..., :h, :w].transpose(-1, -2), _synthesis).transpose(-1, -2)
            x[..., :h, :w] = self._along_last(block, _synthesis)
        return torch.roll(x, (-shift[0], -shift[1]), dims=(-2, -1)) if shift != (0, 0) else x

    def __repr__(self) -> str:
        return f"Wavelet2D(shape={self.shape}, wave_name={self.wave_name!r}, levels={self.levels})"
