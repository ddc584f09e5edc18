"""Seeds and noise: the one way randomness enters dpm_core and training.

Every random stream is a ``torch.Generator`` seeded from stable identifiers (:func:`stable_seed`), never the global
RNG, so a result does not depend on process count, batch composition or Python's hash randomisation (EDM's
StackedRandomGenerator idea, with the seed derived from names instead of positions).
"""
from __future__ import annotations

import hashlib
from typing import Sequence

import torch

__all__ = ["stable_seed", "slice_seed", "make_generators", "randn_complex"]


def stable_seed(*parts) -> int:
    """A 63-bit seed from stable identifiers, e.g. ``stable_seed("noise", step, rank)``."""
    digest = hashlib.sha256("/".join(str(p) for p in parts).encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


def slice_seed(seed: int, slice_id: int, sample_index: int = 0) -> int:
    """The seed of posterior sample ``sample_index`` of slice ``slice_id`` (independent of batch composition)."""
    return stable_seed("dpm-flair", int(seed), int(slice_id), int(sample_index))


def make_generators(seed: int, slice_ids: Sequence[int], sample_index: int | Sequence[int] = 0,
                    device="cpu") -> list[torch.Generator]:
    """One seeded ``torch.Generator`` per slice id; ``sample_index`` is one index for all or one per slice id."""
    indices = [sample_index] * len(slice_ids) if isinstance(sample_index, int) else list(sample_index)
    if len(indices) != len(slice_ids):
        raise ValueError(f"make_generators: {len(indices)} sample indices for {len(slice_ids)} slice ids")
    return [torch.Generator(device=device).manual_seed(slice_seed(seed, s, k)) for s, k in zip(slice_ids, indices)]


def randn_complex(shape: Sequence[int], generator: torch.Generator | None = None, device=None) -> torch.Tensor:
    """Complex64 noise with *unit variance per real channel* (z_re + i z_im, z ~ N(0, 1); complex variance 2).

    Unlike ``torch.randn(dtype=torch.complex64)`` (complex variance 1). Drawn on the generator's device, then moved to
    ``device``.
    """
    gen_device = generator.device if generator is not None else torch.device("cpu")
    z = torch.randn(*shape, 2, generator=generator, device=gen_device, dtype=torch.float32)
    z = torch.view_as_complex(z)
    return z if device is None else z.to(device)
