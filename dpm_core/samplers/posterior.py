"""K posterior samples per slice, batched and seeded so that a slice's result never depends on its batch-mates."""
from __future__ import annotations

from typing import Callable, NamedTuple, Sequence

import torch

from ..operators import SenseOp
from ..seeding import make_generators
from ._common import Denoiser
from .registry import Sampler, default_sigmas, get_sampler

__all__ = ["posterior_samples", "PosteriorSamples", "repeat_operator"]


def repeat_operator(op: SenseOp, repeats: int) -> SenseOp:
    """The operator of each slice repeated ``repeats`` times, slice-major: slice s, copy k -> index s * repeats + k."""
    mask = None if op.mask is None else op.mask.repeat_interleave(repeats, dim=0)
    return SenseOp(op.maps.repeat_interleave(repeats, dim=0), mask)


class PosteriorSamples(NamedTuple):
    mean: torch.Tensor       # [S, M, H, W] complex64
    std: torch.Tensor        # [S, M, H, W] float32: per-pixel std sqrt(sum_k |x_k - mean|^2 / (K - 1)); 0 for K = 1
    info: dict               # sampler_algorithm, num_steps, nfe_per_sample, backward_per_sample, sigma_max, sigma_min
                             # (+ "samples" [S, K, M, H, W])


def posterior_samples(sampler: str | Sampler, denoiser: Denoiser, y: torch.Tensor, op: SenseOp,
                      sigmas: torch.Tensor | None = None, *, num_samples: int = 1, seed: int = 0,
                      slice_ids: Sequence[int] | None = None, batch_size: int | None = None,
                      steps: int | None = None, keep_samples: bool = False, x_init: torch.Tensor | None = None,
                      callback: Callable[[dict], None] | None = None, **options) -> PosteriorSamples:
    """K posterior samples per slice, summarised as mean and per-pixel std.

    Samples run as extra slices of batched sampler calls (``batch_size`` slices per call, default all S*K). The
    generator of sample k of slice s is seeded from (seed, slice_ids[s], k), so results do not depend on how slices are
    batched; pass the slices' stable ids (e.g. their index in the volume) as ``slice_ids`` when reconstructing a subset.

    Args:
        sampler: a name of :data:`dpm_core.samplers.SAMPLERS` or a :class:`Sampler` record.
        denoiser, y, op, x_init, callback, options: as for the sampler (y [S, C, H, W], op of S slices). When the
            sampler takes ``sigma_data``, it defaults to ``denoiser.sigma_data`` if the denoiser has one. A tensor
            option of shape [S] (e.g. ``noise_std``) is per slice and follows its slice into every sample and batch.
        sigmas: the schedule; None takes :func:`default_sigmas` (``steps`` sets its length).
        num_samples: K >= 1.
        seed: base seed.
        slice_ids: stable ids of the S slices (default 0..S-1).
        batch_size: slices per sampler call (memory bound), default S*K.
        keep_samples: also return every sample, as ``info["samples"]`` [S, K, M, H, W].
    Returns: :class:`PosteriorSamples` (mean complex64 [S, M, H, W], std float32 [S, M, H, W], info dict).
    """
    spec = get_sampler(sampler)
    spec.check_options(options)
    S, M, H, W = op.ishape
    K = int(num_samples)
    if K < 1:
        raise ValueError(f"posterior_samples: num_samples={num_samples} must be >= 1")
    if tuple(y.shape) != op.oshape:
        raise ValueError(f"posterior_samples: y must have the operator's k-space shape {op.oshape}; got "
                         f"{tuple(y.shape)}")
    if sigmas is None:
        sigmas = default_sigmas(spec, denoiser, steps)
    elif steps is not None:
        raise ValueError("posterior_samples: give either sigmas or steps, not both")
    if "sigma_data" in spec.options and "sigma_data" not in options and hasattr(denoiser, "sigma_data"):
        options["sigma_data"] = float(denoiser.sigma_data)
    slice_ids = list(range(S)) if slice_ids is None else [int(s) for s in slice_ids]
    if len(slice_ids) != S:
        raise ValueError(f"posterior_samples: slice_ids has {len(slice_ids)} entries for {S} slices")
    total = S * K
    batch_size = total if batch_size is None else int(batch_size)
    if batch_size < 1:
        raise ValueError(f"posterior_samples: batch_size={batch_size} must be >= 1")
    gen_device = y.device if y.device.type == "cuda" else torch.device("cpu")
    big_op = repeat_operator(op, K)
    big_y = y.repeat_interleave(K, dim=0)
    big_init = None if x_init is None else x_init.repeat_interleave(K, dim=0)
    # Options given per slice (tensors [S], e.g. noise_std) follow their slice into every sample and batch.
    per_slice = {k: v.repeat_interleave(K, dim=0) for k, v in options.items() if isinstance(v, torch.Tensor)}
    if any(v.shape[0] != total for v in per_slice.values()):
        raise ValueError(f"posterior_samples: per-slice options must have {S} entries: "
                         f"{ {k: tuple(v.shape) for k, v in options.items() if isinstance(v, torch.Tensor)} }")
    out = []
    for start in range(0, total, batch_size):
        stop = min(start + batch_size, total)
        gens = make_generators(seed, [slice_ids[j // K] for j in range(start, stop)],
                               [j % K for j in range(start, stop)], device=gen_device)
        sub_op = SenseOp(big_op.maps[start:stop], None if big_op.mask is None else big_op.mask[start:stop])
        sub_init = None if big_init is None else big_init[start:stop]
        sub_options = {**options, **{k: v[start:stop] for k, v in per_slice.items()}}
        out.append(spec.run(denoiser, big_y[start:stop], sub_op, sigmas, gens, x_init=sub_init, callback=callback,
                            **sub_options).detach())
    samples = torch.cat(out).reshape(S, K, M, H, W)
    mean = samples.mean(dim=1)
    if K > 1:
        std = torch.sqrt(((samples - mean.unsqueeze(1)).abs() ** 2).sum(dim=1) / (K - 1)).to(torch.float32)
    else:
        std = torch.zeros(S, M, H, W, dtype=torch.float32, device=samples.device)
    sig = torch.as_tensor(sigmas, dtype=torch.float64)
    forward, backward = spec.evaluations(int(sig.numel()), options)
    info = {"sampler_algorithm": spec.name, "num_steps": int(sig.numel() - (1 if spec.schedule == "karras" else 0)),
            "nfe_per_sample": forward, "backward_per_sample": backward,
            "sigma_max": float(sig.max()), "sigma_min": float(sig[sig > 0].min())}
    if keep_samples:
        info["samples"] = samples
    return PosteriorSamples(mean, std, info)
