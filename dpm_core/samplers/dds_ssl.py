"""DDS with the denoiser adapted to the scan by learning to predict measured lines it never saw (zero-shot
self-supervised adaptation).

``dds_lora`` (steerable conditional diffusion) fits its adapter to the measured lines, which the DDS data step
enforces anyway; on every synthetic case of benchmarks/bench_real.py that made the image worse
(docs/experiments/adapt_significance/run.md). Here the adapter learns what the data step cannot give, the lines
outside the trajectory's data, as zero-shot self-supervised learning does for unrolled networks (Yaman, Hosseini &
Akçakaya, "Zero-shot self-supervised learning for MRI reconstruction", ICLR 2022; SSDU's split of the measured
lines: Yaman et al. 2020). Per slice, two passes of DDS (:func:`dpm_core.samplers.dds.dds`):

1. a seeded ``adapt_fraction`` of the measured lines outside the ACS block (:mod:`dpm_core.holdout`) is withheld;
   DDS runs on the other lines alone (its start, with a warm start, the SENSE image of those lines), and before
   each denoising ``adapt_steps`` Adam steps on low-rank adapters (:mod:`dpm_core.lora`) of a private copy of the
   network minimize

       L(θ) = ||P_h (y - A D_θ(x_i, sigma_i))||^2 / ||P_h y||^2          (P_h: the withheld lines)

2. DDS runs again on every measured line with the adapted network frozen, from the slice's own random stream (so
   ``adapt_steps = 0`` is exactly DDS).

Every slice gets its own adapter, started from the shipped weights and dropped with the slice: nothing of one scan
reaches the next, and the shipped weights are never written. Cost per slice at N levels: pass 1 N (adapt_steps + 1)
forward and N adapt_steps backward network passes, pass 2 N forward.
"""
from __future__ import annotations

from typing import Callable, Sequence

import torch

from ..baselines import sense_cg
from ..lora import lora_copy
from ..operators import SenseOp
from ..seeding import stable_seed
from ._common import Denoiser, check_inputs, denoise_maps, one_slice
from .dds import dds
from .dds_lora import adapter_holdout

__all__ = ["dds_ssl", "HeldOutLineAdapter", "SSL_FRACTION"]

SSL_FRACTION = 0.4          # of the measured non-ACS lines withheld for the adapter's loss: SSDU's split
START_CG_ITERS = 100        # pass 1's SENSE start from the kept lines: the Reconstructor's SENSE settings
START_CG_TOL = 1e-4


class HeldOutLineAdapter:
    """A LoRA copy of ``denoiser`` that, before every denoising, steps towards predicting the withheld lines.

    Args:
        denoiser: the shipped network (an ``nn.Module``); only copied.
        y: [1, C, H, W] complex64, the slice's measured k-space (all lines).  op: its operator.
        withheld: [1, 1, H, 1] mask of the lines the loss scores (the trajectory never sees them).
        rank, steps, lr, seed: LoRA rank, Adam steps per call, Adam learning rate, seed of the adapter's factors.
    """

    def __init__(self, denoiser: Denoiser, y: torch.Tensor, op: SenseOp, withheld: torch.Tensor, rank: int,
                 steps: int, lr: float, seed: int):
        self.net, self.params = lora_copy(denoiser, rank, seed)
        self.optimizer = torch.optim.Adam(self.params, lr=lr)
        self.y, self.op, self.withheld, self.steps = y, op, withheld, int(steps)
        self.energy = ((withheld * y).abs() ** 2).sum().clamp_min(1e-30)

    def __call__(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        """x [M, H, W] complex64 (the slice's map images), sigma [M] -> D_θ(x, sigma) [M, H, W] after adapting."""
        images = x.detach().unsqueeze(0)                                   # [1, M, H, W]
        level = float(sigma.reshape(-1)[0])
        for _ in range(self.steps):
            with torch.enable_grad():
                D = denoise_maps(self.net, images, level)
                loss = ((self.withheld * (self.y - self.op.forward(D))).abs() ** 2).sum() / self.energy
                self.optimizer.zero_grad(set_to_none=True)
                loss.backward()
            self.optimizer.step()
        with torch.no_grad():
            return denoise_maps(self.net, images, level).reshape(x.shape)

    def frozen(self) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
        """The adapted network as a plain denoiser (no further steps)."""
        net = self.net.eval()

        def denoise(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
            with torch.no_grad():
                return net(x, sigma)
        return denoise


def dds_ssl(denoiser: Denoiser, y: torch.Tensor, op: SenseOp, sigmas: torch.Tensor,
            generators: Sequence[torch.Generator], *, x_init: torch.Tensor | None = None,
            callback: Callable[[dict], None] | None = None, lora_rank: int = 4, adapt_steps: int = 1,
            adapt_lr: float = 1e-3, adapt_fraction: float = SSL_FRACTION, **dds_options) -> torch.Tensor:
    """DDS (:func:`dpm_core.samplers.dds.dds`) with the denoiser adapted per slice to predict withheld lines.

    Args (beyond the common ones, see dpm_core.samplers; ``dds_options`` go to both DDS passes: cg_iters, noise_std,
    sigma_data, lamda, eta, zeta):
        lora_rank: rank of the adapters (4).
        adapt_steps: Adam steps on the adapters before each denoising of pass 1 (1; 0 is plain DDS).
        adapt_lr: Adam learning rate (1e-3).
        adapt_fraction: fraction of the measured non-ACS lines withheld from pass 1 for the loss (0.4).
    Slices run one after another (each has its own network copy); ``callback`` sees pass 2 only, its dicts carry the
    slice index as ``"slice"``. Returns: [S, M, H, W] complex64. Network passes per slice and map image at
    N = len(sigmas) - 1 levels: N (adapt_steps + 2) forward and N adapt_steps backward (N forward when
    adapt_steps = 0 or no line can be withheld).
    """
    check_inputs("dds_ssl", y, op, sigmas, generators, x_init)
    if int(adapt_steps) < 0 or not float(adapt_lr) > 0 or not 0.0 < float(adapt_fraction) < 1.0:
        raise ValueError(f"dds_ssl: adapt_steps={adapt_steps} must be >= 0, adapt_lr={adapt_lr} > 0 and "
                         f"adapt_fraction={adapt_fraction} in (0, 1)")
    out = []
    for s, generator in enumerate(generators):
        one_y, one_op, options = one_slice(y, op, dds_options, s)
        mask, maps = one_op.mask, one_op.maps
        # The withheld lines and pass 1's noise come from the slice's own seed without drawing from its stream.
        seed = generator.initial_seed()
        withheld = adapter_holdout(mask, adapt_fraction, torch.Generator().manual_seed(seed))
        final = denoiser
        if int(adapt_steps) > 0 and bool(withheld.sum() > 0):
            kept = SenseOp(maps, mask * (1 - withheld))
            y_kept = kept.mask * one_y
            start = None if x_init is None else sense_cg(y_kept, kept.mask, maps, START_CG_ITERS, tol=START_CG_TOL)
            adapter = HeldOutLineAdapter(denoiser, one_y, one_op, withheld, lora_rank, adapt_steps, adapt_lr, seed)
            pass_generator = torch.Generator(device=generator.device).manual_seed(stable_seed("dds_ssl", seed))
            dds(adapter, y_kept, kept, sigmas, [pass_generator], x_init=start, **options)
            final = adapter.frozen()
        slice_callback = None if callback is None else (lambda d, s=s: callback({**d, "slice": s}))
        out.append(dds(final, one_y, one_op, sigmas, [generator],
                       x_init=None if x_init is None else x_init[s:s + 1], callback=slice_callback, **options))
    return torch.cat(out)
