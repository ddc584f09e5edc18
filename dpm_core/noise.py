"""The measurement noise level of a scan, from its own k-space (no noise scan needed), and the k-space edge level that
scales L1-wavelet's λ.

Convention: σ is the noise std per real channel of a k-space sample (complex noise with E|n|² = 2σ²), in the units of
the k-space given (normalized k-space in the Reconstructor). Prewhitened k-space has equal noise in every coil.
"""
from __future__ import annotations

import math
from functools import lru_cache

import numpy as np
import torch

from .masks import Sampling, acs_of

__all__ = ["estimate_noise_std", "kspace_edge_level", "marchenko_pastur_quantile", "CALIBRATION_KERNEL",
           "NOISE_QUANTILE", "PREWHITENED_NOISE_STD"]

CALIBRATION_KERNEL = 6      # k-space patch width of the calibration matrix (ESPIRiT's kernel, dpm_core.coils)
MAX_CALIBRATION_LINES = 32  # ACS lines used at most (the central ones): enough patches, a bounded SVD
# The singular values' lower quartile, not their median, is matched to the Marchenko–Pastur law: anatomy adds
# singular values above the noise bulk and lifts the bulk's upper part, and multi-coil calibration matrices can have
# a signal rank near half their columns. Against the independent references of benchmarks/results/noise.md (pure noise,
# synthetic scans with known noise, a phantom with signal at the k-space edges, the real slice's coil-image corners):
# quartile 0.99-1.00 / 1.02-1.04 / 1.12 / 1.08 x; median 0.99-1.00 / 1.02-1.04 / 1.16 / 1.49 x.
NOISE_QUANTILE = 0.25
# Prewhitening with a noise scan's covariance leaves unit complex variance per sample: 1/√2 per real channel, known
# exactly, so the transports pass it to the Reconstructor instead of estimating it.
PREWHITENED_NOISE_STD = 0.5 ** 0.5


@lru_cache(maxsize=64)
def marchenko_pastur_quantile(beta: float, q: float, points: int = 200001) -> float:
    """The q-quantile of the Marchenko–Pastur law with aspect ratio beta = columns / rows <= 1 and unit entry
    variance: of the eigenvalues of XᴴX / rows for an i.i.d. rows × columns matrix X with E|x|² = 1 (real or complex
    alike). Integrated on x = a + (b − a)(1 − cos πt) / 2, which removes the density's endpoint singularities."""
    if not 0.0 < beta <= 1.0 or not 0.0 < q < 1.0:
        raise ValueError(f"marchenko_pastur_quantile: beta={beta} must be in (0, 1] and q={q} in (0, 1)")
    lo, hi = (1.0 - math.sqrt(beta)) ** 2, (1.0 + math.sqrt(beta)) ** 2
    t = np.linspace(0.0, 1.0, points)
    x = lo + (hi - lo) * (1.0 - np.cos(np.pi * t)) / 2.0
    dx_dt = (hi - lo) * np.pi / 2.0 * np.sin(np.pi * t)
    density = np.sqrt(np.maximum((hi - x) * (x - lo), 0.0)) / (2.0 * math.pi * beta * np.maximum(x, 1e-300)) * dx_dt
    cdf = np.concatenate([[0.0], np.cumsum((density[1:] + density[:-1]) / 2.0 * np.diff(t))])
    return float(np.interp(q, cdf / cdf[-1], x))


def estimate_noise_std(kspace: torch.Tensor, mask, kernel_width: int = CALIBRATION_KERNEL,
                       quantile: float = NOISE_QUANTILE) -> torch.Tensor:
    """Measurement noise std per real channel, per slice, from the calibration matrix of the ACS block. [S] float32.

    The calibration matrix (every kernel_width² patch of the fully sampled ACS block, all coils side by side: rows =
    patches, columns = C·kernel_width²) is the signal's low-rank part plus noise: multi-coil k-space patches span few
    dimensions (ESPIRiT's premise), noise fills all of them. Its singular values beyond the signal rank follow the
    Marchenko–Pastur law of the noise, so σ² = Q(s²) / (2 · rows · Q_MP(columns / rows)) with Q the lower quartile
    (:data:`NOISE_QUANTILE`; Gavish & Donoho, "The optimal hard threshold for singular values is 4/√3", IEEE TIT 2014,
    take the median singular value as the noise scale); s² are the eigenvalues of the Gram matrix MᴴM. Unlike the
    k-space corners this needs no part of k-space to be free of signal: on the real 16-coil slice, whose k-space edges
    still hold anatomy (the matrix is a crop of a larger acquisition), the corners gave several times this estimate
    (benchmarks/results/noise.md). It assumes the signal rank is below three quarters
    of the columns (C·kernel_width²); where there are more columns than patches the matrix is used transposed.

    Args: kspace [S, C, H, W] complex (zeros off the measured lines); mask: the measured lines ([H] bool, [S, 1, H, 1]
    or a :class:`dpm_core.masks.Sampling`) with an ACS block around H // 2 (:func:`dpm_core.masks.acs_of`; the central
    :data:`MAX_CALIBRATION_LINES` of it are used; of a Sampling with an asymmetric echo only its measured readout
    samples); kernel_width: patch width; quantile: the matched quantile.
    """
    k = torch.as_tensor(kspace)
    if isinstance(mask, Sampling):                                    # never the unmeasured zeros of the readout
        k = _measured_readout(k, mask.readout)
    S, C, H, W = k.shape
    acs = acs_of(mask, H)
    lo, hi = acs.start, acs.stop
    if hi - lo > MAX_CALIBRATION_LINES:
        lo = (lo + hi) // 2 - MAX_CALIBRATION_LINES // 2
        hi = lo + MAX_CALIBRATION_LINES
    width = min(kernel_width, hi - lo, W)
    sigma = torch.empty(S, dtype=torch.float64)
    for s in range(S):                                  # one slice at a time: the matrix is rows x C·width² complex128
        patches = k[s, :, lo:hi, :].detach().to(torch.complex128).unfold(1, width, 1).unfold(2, width, 1)
        matrix = patches.permute(1, 2, 0, 3, 4).reshape(-1, C * width * width)   # [patches, C·width²]
        if matrix.shape[0] < matrix.shape[1]:
            matrix = matrix.T
        n, m = matrix.shape
        squared = torch.linalg.eigvalsh(matrix.conj().T @ matrix).clamp_min(0.0)  # the singular values², [m]
        power = torch.quantile(squared, quantile) / (n * marchenko_pastur_quantile(m / n, quantile))
        sigma[s] = torch.sqrt(power / 2.0).cpu()
    return sigma.to(torch.float32).to(k.device)


def _measured_readout(kspace: torch.Tensor, readout: np.ndarray | None) -> torch.Tensor:
    """k-space [..., W] cut to the block of measured readout samples of an asymmetric echo (``readout`` [W] bool, one
    block: :func:`dpm_core.masks.readout_block`); unchanged when ``readout`` is None."""
    if readout is None:
        return kspace
    columns = np.flatnonzero(readout)
    return kspace[..., int(columns[0]):int(columns[-1]) + 1]


def kspace_edge_level(kspace: torch.Tensor, mask_1d, edge_fraction: float = 0.125,
                      readout: np.ndarray | None = None) -> torch.Tensor:
    """The k-space edge level per slice: sqrt(median |k|² / (2 ln 2)) over the outer ``edge_fraction`` of ky (measured
    lines; all measured lines if none lie there) and of kx on each side (``readout`` [W] bool: the measured readout
    samples of an asymmetric echo, whose outer ``edge_fraction`` are used on each side; None: all). [S] float32.

    For pure complex Gaussian noise this is its σ per real channel (|k|² is exponential with mean 2σ²); where the
    matrix is a crop of a larger acquisition the edges also hold anatomy and it is larger than σ (several times on
    the real 16-coil slice, benchmarks/results/noise.md). It is the scale of L1-wavelet's λ
    (:data:`dpm_core.baselines.L1_LAMDA_PER_EDGE_LEVEL`, fitted with it): the residual high-frequency content, not
    only the noise, is what the sparsity penalty must hold.
    """
    kspace = _measured_readout(kspace, readout)
    S, C, H, W = kspace.shape
    edge_x, edge_y = max(int(W * edge_fraction), 1), max(int(H * edge_fraction), 1)
    measured = np.flatnonzero(mask_1d)
    outer = measured[(measured < edge_y) | (measured >= H - edge_y)]
    lines = torch.from_numpy(outer if outer.size else measured).to(kspace.device)
    samples = torch.cat([kspace[:, :, lines, :edge_x], kspace[:, :, lines, -edge_x:]], dim=-1)
    power = (samples.abs() ** 2).flatten(1).float()
    return torch.sqrt(power.median(dim=1).values / (2 * np.log(2)))
