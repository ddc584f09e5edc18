"""DDS with test-time adaptation: the denoiser is steered towards the scan's own measurements by LoRA.

Steerable conditional diffusion (Barbano, Denker, Chung et al. 2023) and Deep Diffusion Image Prior (Chung & Ye 2024)
adapt the denoiser during sampling so that its denoised estimate agrees with the measured k-space: before each
denoising, Adam steps on low-rank adapters (:mod:`dpm_core.lora`) of a private copy of the network minimize

    L(θ) = ||M_fit (y - A D_θ(x_i, sigma_i))||^2 / ||M_fit y||^2          (this slice's samples; no reference image)

and the sampler then takes its ordinary DDS step (:func:`dpm_core.samplers.dds.dds`) with D_θ. An adapter that can
only be checked on the samples it was fitted to can fit noise and aliasing instead of anatomy, so a seeded fraction
of the measured lines outside the calibration block is held out of L (M_fit = the other lines; an SSDU-style split):
a step is kept only when it also lowers the error on the held-out lines, and is undone otherwise. The check costs no
extra network pass (the loss's forward pass before the step and the denoising pass after it give both errors).

Every slice gets its own adapter, started from the shipped weights, so a slice's result never depends on its
batch-mates, and the adapter is dropped when the slice is done: nothing of one scan reaches the next, and the shipped
weights are never written.
"""
from __future__ import annotations

from typing import Callable, Sequence

import torch

from ..holdout import HOLDOUT_FRACTION, holdout_folds
from ..lora import lora_copy
from ..operators import SenseOp
from ._common import Denoiser, check_inputs, denoise_maps, one_slice
from .dds import dds

__all__ = ["dds_lora", "AdaptedDenoiser", "adapter_holdout"]


def adapter_holdout(mask: torch.Tensor, fraction: float, generator: torch.Generator) -> torch.Tensor:
    """The lines the adapter's check holds out: the first fold of :func:`dpm_core.holdout.holdout_folds`.

    mask: [1, 1, H, 1] float, one slice's measured lines. Returns a mask like it (zeros when ``fraction`` is 0 or
    rounds to no line).
    """
    H = mask.shape[-2]
    lines = mask.reshape(H, -1).amax(dim=1).cpu().numpy() > 0                    # [H] measured
    folds = holdout_folds(lines, float(fraction), generator) if fraction > 0 else []
    return mask * (torch.from_numpy(folds[0]).to(mask).view(1, 1, H, 1) if folds else 0)


class AdaptedDenoiser:
    """A LoRA copy of ``denoiser`` that fits itself to one slice's k-space before every denoising.

    Args:
        denoiser: the shipped network (an ``nn.Module``); only copied.
        y: [1, C, H, W] complex64, the slice's measured k-space.  op: its operator (one slice).
        rank, steps, lr: LoRA rank, Adam steps per call, Adam learning rate.
        holdout: [1, 1, H, 1] mask of the held-out measured lines (zeros: no check, every step is kept).
        seed: seed of the adapter's random factors.  sigma_max: no adaptation above this noise level.
    """

    def __init__(self, denoiser: Denoiser, y: torch.Tensor, op: SenseOp, rank: int, steps: int, lr: float,
                 holdout: torch.Tensor, seed: int, sigma_max: float = float("inf")):
        self.net, self.params = lora_copy(denoiser, rank, seed)
        self.optimizer = torch.optim.Adam(self.params, lr=lr)
        self.y, self.op, self.steps, self.sigma_max = y, op, int(steps), float(sigma_max)
        self.fit = 1.0 - holdout                                           # applied on top of op's own mask
        self.holdout = holdout
        self.checked = bool(holdout.sum() > 0)
        self.fit_energy = ((self.fit * y).abs() ** 2).sum().clamp_min(1e-30)

    def _held_out_error(self, residual: torch.Tensor) -> float:
        return float(((self.holdout * residual).abs() ** 2).sum())

    def __call__(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        """x [M, H, W] complex64 (the slice's map images), sigma [M] -> D_θ(x, sigma) [M, H, W] after adapting."""
        images = x.detach().unsqueeze(0)                                   # [1, M, H, W]
        level = float(sigma.reshape(-1)[0])
        steps = self.steps if level <= self.sigma_max else 0
        with torch.no_grad():
            D = denoise_maps(self.net, images, level) if steps == 0 else None
        for _ in range(steps):
            with torch.enable_grad():
                D_fit = denoise_maps(self.net, images, level)
                residual = self.y - self.op.forward(D_fit)
                loss = ((self.fit * residual).abs() ** 2).sum() / self.fit_energy
                self.optimizer.zero_grad(set_to_none=True)
                loss.backward()
            before = self._held_out_error(residual.detach())
            saved = [p.detach().clone() for p in self.params]
            self.optimizer.step()
            with torch.no_grad():
                D = denoise_maps(self.net, images, level)
                after = self._held_out_error(self.y - self.op.forward(D))
                # The step did not generalize: undo it (the parameters; Adam's moments keep the step's gradient).
                if self.checked and after > before:
                    for p, value in zip(self.params, saved):
                        p.copy_(value)
                    D = D_fit.detach()
        return D.reshape(x.shape)


def dds_lora(denoiser: Denoiser, y: torch.Tensor, op: SenseOp, sigmas: torch.Tensor,
             generators: Sequence[torch.Generator], *, x_init: torch.Tensor | None = None,
             callback: Callable[[dict], None] | None = None, lora_rank: int = 4, adapt_steps: int = 1,
             adapt_lr: float = 1e-3, adapt_holdout: float = HOLDOUT_FRACTION, adapt_sigma_max: float = float("inf"),
             **dds_options) -> torch.Tensor:
    """DDS (:func:`dpm_core.samplers.dds.dds`) with the denoiser adapted to each slice's data by LoRA.

    Args (beyond the common ones, see dpm_core.samplers; ``dds_options`` go to DDS: cg_iters, noise_std, sigma_data,
    lamda, eta, zeta):
        lora_rank: rank of the adapters (4).
        adapt_steps: Adam steps on the adapters before each denoising (1; 0 is plain DDS).
        adapt_lr: Adam learning rate (1e-3).
        adapt_holdout: fraction of the measured non-ACS lines held out to check each step (0.2; 0: no check).
        adapt_sigma_max: adapt only at noise levels sigma <= this (default inf: every level).
    Slices run one after another (each has its own network copy); ``callback`` dicts carry the slice index as
    ``"slice"``. Returns: [S, M, H, W] complex64. Network passes per slice and map image at N = len(sigmas) - 1 levels:
    N (2 adapt_steps) forward (one before and one after each Adam step; N when adapt_steps = 0) and N adapt_steps
    backward (fewer when adapt_sigma_max skips levels: each skipped level costs one forward pass).
    """
    check_inputs("dds_lora", y, op, sigmas, generators, x_init)
    if int(adapt_steps) < 0 or not float(adapt_lr) > 0 or not 0.0 <= float(adapt_holdout) < 1.0:
        raise ValueError(f"dds_lora: adapt_steps={adapt_steps} must be >= 0, adapt_lr={adapt_lr} > 0 and "
                         f"adapt_holdout={adapt_holdout} in [0, 1)")
    out = []
    for s, generator in enumerate(generators):
        one_y, one_op, options = one_slice(y, op, dds_options, s)
        # The adapter's seeds come from the slice's own seed, read without drawing from its stream, so that
        # adapt_steps = 0 is exactly DDS.
        split = torch.Generator().manual_seed(generator.initial_seed())
        holdout = adapter_holdout(one_op.mask, adapt_holdout, split)
        adapted = AdaptedDenoiser(denoiser, one_y, one_op, lora_rank, adapt_steps, adapt_lr, holdout,
                                  generator.initial_seed(), adapt_sigma_max)
        slice_callback = None if callback is None else (lambda d, s=s: callback({**d, "slice": s}))
        out.append(dds(adapted, one_y, one_op, sigmas, [generator],
                       x_init=None if x_init is None else x_init[s:s + 1], callback=slice_callback, **options))
        del adapted                                                      # the adapter ends with its slice
    return torch.cat(out)
