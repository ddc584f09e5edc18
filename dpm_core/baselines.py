"""Classical reconstructions: zero-filled, SENSE by conjugate gradient, L1-wavelet compressed sensing.

All take undersampled, zero-filled k-space [S, C, H, W] complex64 (torch), a sampling mask (see
:func:`dpm_core.operators.as_mask_tensor`) and, except zero-filled without maps, coil maps [S, M, C, H, W]. They return
map-set images [S, M, H, W] complex64 (collapse with :func:`dpm_core.operators.combine_map_images`), except
:func:`zero_filled`, which returns [S, H, W]. Each slice is solved independently: step sizes and stopping are per slice.
Regularization weights are meant for k-space divided by :func:`dpm_core.normalize.normalization_scale`, which the
Reconstructor does, so one weight fits every scan.
"""
from __future__ import annotations

import numpy as np
import torch

from .cg import batch_dot as _batch_dot, conjugate_gradient
from .combine import rss
from .fft import ifft2c
from .noise import kspace_edge_level
from .operators import SenseOp, combine_map_images

__all__ = ["zero_filled", "sense_cg", "l1_wavelet", "measured_edge_level"]


def zero_filled(kspace: torch.Tensor, mask=None, maps: torch.Tensor | None = None) -> torch.Tensor:
    """Zero-filled reconstruction [S, H, W] complex64.

    Without maps: root-sum-of-squares of the zero-filled coil images (real, as complex). With maps: the map-weighted
    coil combination Aᴴy, collapsed over map sets.
    """
    if maps is None:
        return rss(ifft2c(kspace)).to(kspace.dtype)
    op = SenseOp(maps, mask)
    return combine_map_images(op.adjoint(kspace))


def sense_cg(kspace: torch.Tensor, mask, maps: torch.Tensor, num_iters: int = 30, l2_weight: float = 1e-3,
             tol: float = 1e-6) -> torch.Tensor:
    """SENSE by CG on the Tikhonov-regularized normal equations (AᴴA + λI) x = Aᴴy.

    Args:
        kspace: [S, C, H, W] complex64, zero-filled.
        mask: sampling mask (1-D [H] or [S, 1, H, 1]).
        maps: [S, M, C, H, W] (M ≥ 1; soft-SENSE with M = 2).
        num_iters: CG iterations.
        l2_weight: λ, relative to normalized k-space.
    Returns: [S, M, H, W] complex64.
    """
    op = SenseOp(maps, mask)
    rhs = op.adjoint(kspace)
    return conjugate_gradient(lambda x: op.normal(x) + l2_weight * x, rhs, num_iters=num_iters, tol=tol)


def soft_threshold(c: torch.Tensor, tau) -> torch.Tensor:
    """Complex soft thresholding c * max(|c| - tau, 0) / |c| (the prox of tau * ||c||_1); tau float or broadcastable."""
    magnitude = c.abs()
    return c * (torch.clamp(magnitude - tau, min=0) / magnitude.clamp_min(1e-30))


def operator_norm_sq(op: SenseOp, num_iters: int = 20, seed: int = 0) -> torch.Tensor:
    """Largest eigenvalue of AᴴA per slice, by power iteration from a seeded random start: [S] float32.

    Unit-norm ESPIRiT maps and the orthonormal FFT give <= 1; the estimate makes step sizes safe for any maps. Every
    slice starts from the same draw, so a slice's estimate does not depend on its place in the batch.
    """
    g = torch.Generator().manual_seed(seed)
    start = torch.randn(op.ishape[1:], generator=g, dtype=torch.complex64).to(op.maps.device)
    x = start.expand(op.ishape).clone()
    value = torch.ones(op.ishape[0], device=op.maps.device)
    for _ in range(num_iters):
        x = x / _batch_dot(x, x).sqrt().clamp_min(1e-30).view(-1, 1, 1, 1)
        y = op.normal(x)
        value = _batch_dot(x, y)
        x = y
    return value.clamp_min(1e-12)


# λ = L1_LAMDA_PER_EDGE_LEVEL · e (see l1_wavelet), e the k-space edge level (dpm_core.noise.kspace_edge_level).
# Chosen on the real development slice (../shared/data, nominal R = 2/4/6 and its folded variant at R = 2/3): 0.16 is
# within 3 % of BART pics' best λ on each of them (0.08: up to 9 % worse, 0.32: up to 10 % worse). Checked afterwards
# on the held-out synthetic subjects of bench_real.py (R = 4 and folded R = 3, grid 0.04-0.64): 0.16 was the best of
# the grid on 4 of 5, and 2 % behind 0.08 on the fifth. On synthetic data e is 1.05-1.31x the noise estimate
# (dpm_core.noise.estimate_noise_std); on the real slice 6.3-7.3x (its k-space edges hold anatomy,
# benchmarks/results/noise.md), and λ from the noise estimate instead of e was 4-31 % worse there at R 4 / 6 / folded
# R 3: at that SNR the sparsity penalty must hold the residual high-frequency content, not only the noise.
L1_LAMDA_PER_EDGE_LEVEL = 0.16
L1_WINDOW = 10             # iterates averaged per convergence check of l1_wavelet


def measured_edge_level(kspace: torch.Tensor, op: SenseOp) -> torch.Tensor:
    """:func:`dpm_core.noise.kspace_edge_level` of k-space [S, C, H, W] per slice, over the lines that slice
    measured and, with an asymmetric echo (``op.mask`` [S, 1, H, W]), the readout samples it measured (``op.mask``;
    everything when it is None): [S] float32."""
    S, _, H, W = kspace.shape
    if op.mask is None:
        return torch.cat([kspace_edge_level(kspace[s:s + 1], np.ones(H, bool)) for s in range(S)])
    samples = op.mask.expand(S, 1, H, op.mask.shape[-1])[:, 0].cpu() > 0                     # [S, H, 1 or W]
    lines = samples.any(dim=-1)                                                               # [S, H]
    readout = None if samples.shape[-1] == 1 else samples.any(dim=-2)                         # [S, W]
    return torch.cat([kspace_edge_level(kspace[s:s + 1], lines[s].numpy(),
                                        readout=None if readout is None or bool(readout[s].all())
                                        else readout[s].numpy()) for s in range(S)])


def l1_wavelet(kspace: torch.Tensor, mask, maps: torch.Tensor, lamda=None, edge_level=None, max_iter: int = 200,
               tol: float = 1e-3, wave_name: str = "db2", cycle_spinning: bool = True, seed: int = 0,
               return_info: bool = False):
    """L1-wavelet compressed sensing, min_x ½‖Ax − y‖² + λ‖Ψx‖₁ per slice, by FISTA with cycle spinning.

    Ψ is the unitary periodic Daubechies wavelet transform (:class:`dpm_core.wavelets.Wavelet2D`; "db2" is BART's
    default "dau2"), all bands penalized: outside the maps' support only the penalty holds the image (an unpenalized
    low-pass band would drift there, in the objective's null space). At every iteration the
    transform is applied to a circularly shifted image (shifts from a generator seeded with ``seed``, the same for
    every slice: BART ``pics``' random wavelet shifts), which averages out the wavelet grid. FISTA (Beck & Teboulle
    2009) with step 1 / ‖AᴴA‖ (power iteration), started from Aᴴy. The result is the mean of the last
    :data:`L1_WINDOW` iterates (the shifts make single iterates jitter); a slice stops once that mean changes by less
    than ``tol`` (relative) from one window to the next, or after ``max_iter`` iterations. Batched over slices on the
    input's device; slices never affect each other.

    λ per scan, from the measured data alone: λ = :data:`L1_LAMDA_PER_EDGE_LEVEL` · e, e the k-space edge level
    (:func:`dpm_core.noise.kspace_edge_level` of the given k-space over each slice's measured lines, or
    ``edge_level`` when the caller has it): the noise σ where the k-space
    edges hold only noise, more where they hold anatomy too. For an orthonormal transform the soft threshold λ·step
    then sits at a fixed multiple of the image-domain level of that content (Donoho & Johnstone's wavelet shrinkage
    when it is noise); a constant λ is only right for the scan it was tuned on.

    Args:
        kspace: [S, C, H, W] complex64, zero-filled.
        mask: sampling mask (1-D [H] or [S, 1, H, 1]).
        maps: [S, M, C, H, W] (M ≥ 1 soft-SENSE map sets; the map images are penalized jointly).
        lamda: explicit λ (float or [S] tensor); None: the per-scan rule above.
        edge_level: e per slice ([S] tensor or float) for the rule; None: measured from ``kspace`` and ``mask``.
        max_iter, tol: iteration limit and the stopping rule above (fewer than L1_WINDOW iterations: the last iterate).
        wave_name: orthogonal PyWavelets wavelet name.
        cycle_spinning: random circular shifts per iteration (off: the fixed wavelet grid).
        return_info: also return {"lamda": [S] list, "iterations": [S] list}.
    Returns: [S, M, H, W] complex64 (and the info dict).
    """
    from .wavelets import Wavelet2D

    op = SenseOp(maps, mask)
    S, M, H, W = op.ishape
    if lamda is None:
        if edge_level is None:
            edge_level = measured_edge_level(kspace, op)
        lamda = L1_LAMDA_PER_EDGE_LEVEL * torch.as_tensor(edge_level, dtype=torch.float32)
    lam = torch.as_tensor(lamda, dtype=torch.float32, device=kspace.device).reshape(-1)
    if lam.numel() == 1:
        lam = lam.expand(S)
    if lam.numel() != S or not bool(torch.all(lam >= 0)):
        raise ValueError(f"l1_wavelet: lamda must be >= 0, one value or one per slice ({S}); got {lamda}")
    step = 1.0 / operator_norm_sq(op, seed=seed)                                   # [S]
    tau = (lam * step).view(S, 1, 1, 1)
    psi = Wavelet2D((H, W), wave_name)
    shifts = torch.Generator().manual_seed(seed)
    Ahy = op.adjoint(kspace)
    x = Ahy.clone()
    z = x.clone()
    theta = 1.0
    active = torch.ones(S, dtype=torch.bool, device=kspace.device)
    iterations = torch.zeros(S, dtype=torch.long)
    view = (S, 1, 1, 1)
    window_sum, mean = torch.zeros_like(x), None
    for k in range(1, max_iter + 1):
        v = z - step.view(view) * (op.normal(z) - Ahy)
        shift = (int(torch.randint(H, (), generator=shifts)), int(torch.randint(W, (), generator=shifts))) \
            if cycle_spinning else (0, 0)
        x_new = psi.adjoint(soft_threshold(psi.forward(v, shift), tau), shift)
        theta_new = 0.5 * (1.0 + (1.0 + 4.0 * theta ** 2) ** 0.5)
        z_new = x_new + ((theta - 1.0) / theta_new) * (x_new - x)
        a = active.view(view)
        x, z = torch.where(a, x_new, x), torch.where(a, z_new, z)
        theta = theta_new
        iterations += active.cpu().long()
        window_sum = window_sum + x
        if k % L1_WINDOW == 0:
            # Each shift has a slightly different fixed point, so single iterates jitter by ~1 %: the result is the
            # mean of the last window of iterates (a shift-averaged, translation-invariant estimate), and a slice has
            # converged once that mean moves by less than tol from one window to the next.
            window_mean, window_sum = window_sum / L1_WINDOW, torch.zeros_like(x)
            if mean is None:
                mean = window_mean
                continue
            moved = window_mean - mean
            change = _batch_dot(moved, moved).sqrt() / _batch_dot(window_mean, window_mean).sqrt().clamp_min(1e-30)
            mean = torch.where(a, window_mean, mean)
            active = active & (change >= tol)
            if not bool(active.any()):
                break
    result = x if mean is None else mean
    if return_info:
        return result, {"lamda": lam.cpu().tolist(), "iterations": iterations.tolist()}
    return result
