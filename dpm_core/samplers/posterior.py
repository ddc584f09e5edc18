"""K posterior samples per slice, batched and seeded so that a slice's result never depends on its batch-mates."""
from __future__ import annotations

from typing import Callable, NamedTuple, Sequence

import torch

from ..memory import peak_working_bytes, slices_per_call
from ..operators import SenseOp
from ..seeding import make_generators
from ._common import Denoiser
from .registry import Sampler, default_sigmas, get_sampler

__all__ = ["posterior_samples", "PosteriorSamples"]


class PosteriorSamples(NamedTuple):
    mean: torch.Tensor       # [S, M, H, W] complex64
    std: torch.Tensor        # [S, M, H, W] float32: per-pixel std sqrt(sum_k |x_k - mean|^2 / (K - 1)); 0 for K = 1
    info: dict               # sampler_algorithm, num_steps, nfe_per_sample, backward_per_sample, sigma_max, sigma_min,
                             # slices_per_call (+ working_bytes_one_slice with a memory budget,
                             # + "samples" [S, K, M, H, W] with keep_samples)


def posterior_samples(sampler: str | Sampler, denoiser: Denoiser, y: torch.Tensor, op: SenseOp,
                      sigmas: torch.Tensor | None = None, *, num_samples: int = 1, seed: int = 0,
                      slice_ids: Sequence[int] | None = None, batch_size: int | None = None,
                      memory_budget: int | None = None,
                      steps: int | None = None, keep_samples: bool = False, x_init: torch.Tensor | None = None,
                      callback: Callable[[dict], None] | None = None, **options) -> PosteriorSamples:
    """K posterior samples per slice, summarised as mean and per-pixel std.

    Samples run as extra slices of batched sampler calls: ``batch_size`` slices per call, or as many as fit
    ``memory_budget`` (the first call runs one slice and measures its peak working memory, :mod:`dpm_core.memory`),
    default all S*K in one call. The generator of sample k of slice s is seeded from (seed, slice_ids[s], k), so
    results do not depend on how slices are batched; pass the slices' stable ids (e.g. their index in the volume) as
    ``slice_ids`` when reconstructing a subset.

    Args:
        sampler: a name of :data:`dpm_core.samplers.SAMPLERS` or a :class:`Sampler` record.
        denoiser, y, op, x_init, callback, options: as for the sampler (y [S, C, H, W], op of S slices). When the
            sampler takes ``sigma_data``, it defaults to ``denoiser.sigma_data`` if the denoiser has one. A tensor
            option of shape [S, ...] (e.g. ``noise_std`` [S]) is per slice and follows its slice into every sample and
            batch.
        sigmas: the schedule; None takes :func:`default_sigmas` (``steps`` sets its length).
        num_samples: K >= 1.
        seed: base seed.
        slice_ids: stable ids of the S slices (default 0..S-1).
        batch_size: slices per sampler call, default S*K.
        memory_budget: bytes of working memory a sampler call may use (instead of batch_size).
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
    if batch_size is not None and memory_budget is not None:
        raise ValueError("posterior_samples: give batch_size or memory_budget, not both")
    batch_size = total if batch_size is None else int(batch_size)
    if batch_size < 1 or (memory_budget is not None and memory_budget <= 0):
        raise ValueError(f"posterior_samples: batch_size={batch_size} and memory_budget={memory_budget} must be > 0")
    gen_device = y.device if y.device.type == "cuda" else torch.device("cpu")
    # Options given per slice (tensors [S, ...], e.g. noise_std) follow their slice into every sample and batch.
    per_slice = {k: v for k, v in options.items() if isinstance(v, torch.Tensor) and v.ndim > 0}
    if any(v.shape[0] != S for v in per_slice.values()):
        raise ValueError(f"posterior_samples: per-slice options must have {S} entries along their first axis: "
                         f"{ {k: tuple(v.shape) for k, v in per_slice.items()} }")

    def run(start: int, stop: int) -> torch.Tensor:
        """Items start..stop-1 of the S*K (slice-major: slice s, sample k -> s * K + k) in one sampler call."""
        index = torch.arange(start, stop) // K
        gens = make_generators(seed, [slice_ids[int(s)] for s in index], [j % K for j in range(start, stop)],
                               device=gen_device)
        sub = {k: v[index.to(v.device)] for k, v in per_slice.items()}
        return spec.run(denoiser, y[index.to(y.device)], op.select(index), sigmas, gens,
                        x_init=None if x_init is None else x_init[index.to(x_init.device)], callback=callback,
                        **{**options, **sub}).detach()

    out, sizes, peak_one = [], [], None
    start = 0
    while start < total:
        if memory_budget is None:
            stop = min(start + batch_size, total)
        elif peak_one is None:
            stop = start + 1
        else:
            stop = start + slices_per_call(peak_one, int(memory_budget), total - start)
        if memory_budget is not None and peak_one is None and total > 1:
            x, peak_one = peak_working_bytes(lambda: run(start, stop), y.device)
        else:
            x = run(start, stop)
        out.append(x)
        sizes.append(stop - start)
        start = stop
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
            "sigma_max": float(sig.max()), "sigma_min": float(sig[sig > 0].min()), "slices_per_call": max(sizes)}
    if peak_one is not None:
        info["working_bytes_one_slice"] = peak_one
    if keep_samples:
        info["samples"] = samples
    return PosteriorSamples(mean, std, info)
