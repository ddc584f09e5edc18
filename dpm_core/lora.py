"""Low-rank adapters (LoRA) on a private copy of a denoiser, for test-time adaptation to one scan.

The shipped network is never touched: :func:`lora_copy` deep-copies it, freezes every copied weight and adds a
low-rank update to each convolution and linear weight of the copy,

    W' = W + (U @ V).view_as(W),    U [out, rank] = 0 at the start, V [rank, in * k * k] ~ N(0, 1 / (in * k * k)),

so the copy computes exactly the shipped denoiser until ``U`` is trained (Hu et al., "LoRA", ICLR 2022; applied to a
diffusion denoiser at test time by Barbano, Denker, Chung et al., "Steerable conditional diffusion", 2023). The copy
lives as long as the caller keeps it: one scan, one slice; nothing of it reaches the next scan.
"""
from __future__ import annotations

import copy
import math

import torch
from torch import nn
from torch.nn.utils import parametrize

from .seeding import stable_seed

__all__ = ["LowRankUpdate", "lora_copy"]


class LowRankUpdate(nn.Module):
    """Parametrization W -> W + (U @ V).view_as(W) for a weight of shape [out, ...] (LoRA with alpha = rank)."""

    def __init__(self, weight: torch.Tensor, rank: int, generator: torch.Generator):
        super().__init__()
        fan_out, fan_in = weight.shape[0], weight[0].numel()
        down = torch.randn(rank, fan_in, generator=generator) / math.sqrt(fan_in)
        self.down = nn.Parameter(down.to(device=weight.device, dtype=weight.dtype))                         # V
        self.up = nn.Parameter(torch.zeros(fan_out, rank, device=weight.device, dtype=weight.dtype))     # U

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        return weight + (self.up @ self.down).view_as(weight)


def lora_copy(denoiser: nn.Module, rank: int, seed: int = 0) -> tuple[nn.Module, list[nn.Parameter]]:
    """A private copy of ``denoiser`` with a rank-``rank`` update on every Conv2d / Linear weight.

    Args:
        denoiser: any ``nn.Module`` (e.g. :class:`dpm_core.networks.ComplexDenoiser`); it is not modified.
        rank: LoRA rank r >= 1 (capped per layer at min(out, in * k * k)).
        seed: seed of the random V factors (the start is the shipped denoiser whatever the seed, since U = 0).
    Returns: (the adapted copy, in eval mode, its base weights frozen; the list of trainable LoRA parameters).
    """
    if not isinstance(denoiser, nn.Module):
        raise ValueError(f"lora_copy: test-time adaptation needs a torch network denoiser (nn.Module); got "
                         f"{type(denoiser).__name__}")
    if int(rank) < 1:
        raise ValueError(f"lora_copy: rank={rank} must be >= 1")
    adapted = copy.deepcopy(denoiser)
    adapted.eval()
    adapted.requires_grad_(False)
    generator = torch.Generator().manual_seed(stable_seed("lora", seed))
    params: list[nn.Parameter] = []
    for module in list(adapted.modules()):
        if isinstance(module, (nn.Conv2d, nn.Linear)):
            weight = module.weight
            r = min(int(rank), weight.shape[0], weight[0].numel())
            update = LowRankUpdate(weight, r, generator)
            parametrize.register_parametrization(module, "weight", update)
            params += [update.up, update.down]
    if not params:
        raise ValueError(f"lora_copy: {type(denoiser).__name__} has no Conv2d or Linear layer to adapt")
    return adapted, params
