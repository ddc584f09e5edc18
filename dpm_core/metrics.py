"""Image quality metrics on magnitude images, as DESIGN.md §2 defines them.

NRMSE = ‖|x̂| − |x|‖₂ / ‖|x|‖₂ over the reconstructed FOV (no scale fitting). PSNR and SSIM as fastMRI computes them:
data range = max |x| of the reference, SSIM with a 7×7 window (scikit-image), averaged over slices.
Inputs: numpy or torch, [S, H, W] or [H, W], complex or real.
"""
from __future__ import annotations

import numpy as np

__all__ = ["nrmse", "psnr", "ssim", "magnitude"]


def magnitude(x) -> np.ndarray:
    """|x| as float64 numpy (accepts torch tensors on any device)."""
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    return np.abs(np.asarray(x)).astype(np.float64)


def _pair(x_hat, x) -> tuple[np.ndarray, np.ndarray]:
    a, b = magnitude(x_hat), magnitude(x)
    if a.shape != b.shape:
        raise ValueError(f"reconstruction shape {a.shape} differs from reference shape {b.shape}")
    return a, b


def nrmse(x_hat, x) -> float:
    """‖|x̂| − |x|‖₂ / ‖|x|‖₂ over all pixels (and slices)."""
    a, b = _pair(x_hat, x)
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


def psnr(x_hat, x) -> float:
    """20·log10(max|x|) − 10·log10(MSE), fastMRI's definition."""
    a, b = _pair(x_hat, x)
    mse = np.mean((a - b) ** 2)
    return float(20 * np.log10(b.max()) - 10 * np.log10(mse))


def ssim(x_hat, x, win_size: int = 7) -> float:
    """Mean SSIM over slices, data range max|x| of the whole reference volume (fastMRI)."""
    from skimage.metrics import structural_similarity

    a, b = _pair(x_hat, x)
    if a.ndim == 2:
        a, b = a[None], b[None]
    data_range = b.max()
    return float(np.mean([structural_similarity(b[s], a[s], win_size=win_size, data_range=data_range)
                          for s in range(a.shape[0])]))
