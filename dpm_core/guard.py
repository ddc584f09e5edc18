"""The output guard: checks a DPM reconstruction before anyone sees it, from the scan itself (no reference).

Two ways a DPM image can be wrong while looking like an image:
1. It disagrees with the measured lines (a sampler fault, a ζ that let the prior override the data). Check: the data
   misfit beyond what the forward model itself cannot explain, against the measured noise:
   sqrt((‖A x̂ − y‖² − ‖A x_LS − y‖²)₊ / (2σ² N)), with x_LS the least-squares SENSE image of the same data and maps
   (the warm start), N measured samples and σ the noise std per real channel. ‖A x_LS − y‖ is the model's floor
   (data outside the maps' support, which ESPIRiT crops; signal the maps do not span): no image can fit it, and for
   the least-squares x_LS the two parts add (‖A x̂ − y‖² = ‖A(x̂ − x_LS)‖² + ‖A x_LS − y‖²). The excess must stay
   below :data:`MAX_RESIDUAL_OVER_NOISE`, unless it is below :data:`MIN_RELATIVE_MISFIT` of the data, so that nearly
   noise-free data cannot raise a false alarm.
2. The prior itself is broken (damaged weights whose card was re-hashed, a wrong model file): data consistency
   hides it in the measured lines, it shows in the unmeasured ones. Check: the model must denoise the reconstruction
   it produced at least about as well as the best Gaussian low-pass filter does. Noise of std
   σ_p = :data:`PROBE_SIGMA_OVER_SIGMA_DATA` · σ_data is added to x̂ (first map set), and the relative error
   e = ‖D(x̂ + σ_p n) − x̂‖² / ‖σ_p n‖² of the model (one network evaluation) is divided by that of the Gaussian
   low-pass whose width (over a grid, chosen knowing x̂) is best. With the shipped FLAIR model (σ_p = 0.2;
   tests/test_reconstruct.py): 0.46 on synthetic FLAIR at R = 4, 0.76 on a 32² phantom far from any brain, 0.80 on
   the real 16-coil slice; the same model with every weight perturbed by its tensor's standard deviation (FLAIR
   images then at NRMSE 0.075 instead of 0.058): 2.1, 1.44 and 3.1. Limit :data:`MAX_PROBE_RATIO`.
The checks cost one network evaluation per slice (the sampler runs tens) and a few dozen FFTs.
"""
from __future__ import annotations

import math

import torch

from .fft import fft2c, ifft2c
from .operators import SenseOp
from .seeding import randn_complex, stable_seed

__all__ = ["check_output", "MAX_RESIDUAL_OVER_NOISE", "MIN_RELATIVE_MISFIT", "PROBE_SIGMA_OVER_SIGMA_DATA",
           "MAX_PROBE_RATIO"]

MAX_RESIDUAL_OVER_NOISE = 3.0        # data misfit in units of the measured noise
MIN_RELATIVE_MISFIT = 0.05           # ... and at least this fraction of ‖y‖ before it counts
PROBE_SIGMA_OVER_SIGMA_DATA = 0.75   # probe noise level relative to the model's σ_data
MAX_PROBE_RATIO = 1.25               # model's probe error / best Gaussian low-pass's (working models: <= 0.8)
LOWPASS_WIDTHS = 40                  # Gaussian widths tried, geometric from 1 to H cycles


def _best_lowpass_error(noisy: torch.Tensor, clean: torch.Tensor, noise_energy: torch.Tensor) -> torch.Tensor:
    """Relative error of the best Gaussian k-space low-pass per image: [B]."""
    B, H, W = clean.shape
    ky = (torch.arange(H, device=clean.device) - H // 2).view(H, 1).float()
    kx = (torch.arange(W, device=clean.device) - W // 2).view(1, W).float()
    spectrum = fft2c(noisy)
    best = torch.full((B,), float("inf"), device=clean.device)
    for width in torch.logspace(0, math.log10(max(H, W)), LOWPASS_WIDTHS).tolist():
        smoothed = ifft2c(spectrum * torch.exp(-(ky ** 2 + kx ** 2) / (2 * width ** 2)))
        best = torch.minimum(best, (smoothed - clean).abs().square().flatten(1).sum(dim=1) / noise_energy)
    return best


def check_output(denoiser, x: torch.Tensor, y: torch.Tensor, op: SenseOp, noise_std: torch.Tensor,
                 sigma_data: float, slice_ids, least_squares: torch.Tensor) -> tuple[list[str], dict]:
    """Both checks of the module docstring, per slice.

    Args:
        denoiser: the model that produced ``x`` (callable [B, H, W] complex, σ [B] -> [B, H, W]).
        x: the DPM estimate [S, M, H, W] complex64, normalized units (what the sampler returned, support applied).
        y: the measured normalized k-space [S, C, H, W] (zero where not measured); ``op`` its operator.
        noise_std: [S] measured noise std per real channel (normalized units).
        sigma_data: the model's σ_data.
        slice_ids: stable slice ids (seed the probe noise).
        least_squares: the SENSE least-squares image x_LS [S, M, H, W] of y with ``op`` (the model's misfit floor).
    Returns: (problems: one message per failing slice, empty when all pass; values {"residual_over_noise": [S] (the
        excess misfit), "model_floor_fraction": [S] (‖A x_LS − y‖ / ‖y‖), "denoiser_probe_ratio": [S]}).
    """
    S, M, H, W = x.shape
    measured = op.mask.expand(S, y.shape[1], H, W) if op.mask is not None else torch.ones_like(y.real, dtype=bool)
    count = measured.flatten(1).sum(dim=1).float()                                  # [S]
    floor = (op.forward(least_squares) - y).abs().square().flatten(1).sum(dim=1)   # [S]
    excess = ((op.forward(x) - y).abs().square().flatten(1).sum(dim=1) - floor).clamp_min(0.0)
    sigma = torch.as_tensor(noise_std, dtype=torch.float32, device=x.device).reshape(-1).expand(S)
    data_energy = y.abs().square().flatten(1).sum(dim=1).clamp_min(1e-30)
    residual = torch.sqrt(excess / (2 * sigma.clamp_min(1e-12) ** 2 * count))
    relative = torch.sqrt(excess / data_energy)

    level = PROBE_SIGMA_OVER_SIGMA_DATA * float(sigma_data)
    images = x[:, 0]                                                               # the first map set carries it
    noise = torch.stack([randn_complex((H, W), torch.Generator().manual_seed(stable_seed("output-guard", int(s))))
                         for s in slice_ids]).to(x.device) * level
    noise_energy = noise.abs().square().flatten(1).sum(dim=1)
    with torch.no_grad():
        denoised = denoiser(images + noise, torch.full((S,), level, device=x.device))
    model_error = (denoised - images).abs().square().flatten(1).sum(dim=1) / noise_energy
    probe = model_error / _best_lowpass_error(images + noise, images, noise_energy).clamp_min(1e-12)

    problems = []
    for i, s in enumerate(slice_ids):
        if residual[i] > MAX_RESIDUAL_OVER_NOISE and relative[i] > MIN_RELATIVE_MISFIT:
            problems.append(f"slice {s}: the image misses the measured data by {float(residual[i]):.2g} x the noise "
                            f"level ({100 * float(relative[i]):.1f} % of the data)")
        if not bool(torch.isfinite(probe[i])) or probe[i] > MAX_PROBE_RATIO:
            problems.append(f"slice {s}: the model denoises its own reconstruction {float(probe[i]):.2f} x worse than "
                            f"a Gaussian low-pass (limit {MAX_PROBE_RATIO}): damaged or wrong model weights, or a "
                            f"scan unlike the model's training images (anatomy, contrast, noise level)")
    return problems, {"residual_over_noise": [round(float(v), 4) for v in residual],
                      "model_floor_fraction": [round(float(v), 4) for v in torch.sqrt(floor / data_energy)],
                      "denoiser_probe_ratio": [round(float(v), 4) for v in probe]}
