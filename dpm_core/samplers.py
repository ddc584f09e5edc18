"""Posterior samplers for SENSE MRI with a diffusion denoiser: ALD (reference A), EDM-DPS (reference B), DDS (fast).

Layouts (DESIGN.md §2): image x [S, M, H, W] complex64 (S slices, M soft-SENSE map sets), k-space y [S, C, H, W]
complex64, operator :class:`dpm_core.operators.SenseOp`. The denoiser is any callable
``denoiser(x: complex64 [B, H, W], sigma: float32 [B]) -> complex64 [B, H, W]`` (an EDM-preconditioned network, or
:class:`dpm_core.gaussian.GaussianDenoiser`); each map image is its own batch item (B = S * M).

Conventions (see :mod:`dpm_core.gaussian` for the derivation):
- sigma is the noise std per *real channel*: x_sigma = x_0 + sigma (z_re + i z_im), z ~ N(0, 1). The score is the real
  gradient s = (D - x) / sigma^2, and ``torch.autograd`` of a real loss w.r.t. a complex tensor returns that same
  real gradient (d/dRe + i d/dIm), so g = grad ||y - A x||^2 = 2 A^H (A x - y).
- Measurement noise ``noise_std`` is also per real channel.

Every sampler has one signature, so :data:`SAMPLERS` can pick one by name::

    sample(denoiser, y, op, sigmas, generators, *, x_init=None, callback=None, **options) -> x [S, M, H, W] complex64

- ``sigmas``: the schedule from :mod:`dpm_core.schedules` (Karras, ending in 0, for ``dps``/``dds``; geometric levels,
  all > 0, for ``ald``).
- ``generators``: one ``torch.Generator`` per slice; all randomness of slice s comes from ``generators[s]`` and every
  norm, scale and step size is per slice, so a slice's result never depends on its batch-mates. The global RNG is
  never used.
- ``x_init``: [S, M, H, W]; the start is x_init + sigmas[0] * z (default x_init = 0, pure noise).
- ``callback``: called after every step with a dict ``{"i", "sigma", "x", "denoised"}``.
The samplers are not wrapped in ``torch.no_grad`` (DPS differentiates through the denoiser); the parts that need no
graph run under ``torch.no_grad``.

References:
    Jalal et al., "Robust compressed sensing MRI with deep generative priors", NeurIPS 2021 (csgm-mri-langevin).
    Chung et al., "Diffusion posterior sampling for general noisy inverse problems", ICLR 2023; Karras et al., "EDM",
    NeurIPS 2022 (the schedule and Euler step); utcsilab/ambient-diffusion-mri (the ζ-weighted DPS step).
    Chung, Lee, Ye, "Decomposed diffusion sampling for accelerated inverse problem solving", ICLR 2024 (DDS).
"""
from __future__ import annotations

import hashlib
import math
from typing import Callable, NamedTuple, Sequence

import torch

from .baselines import conjugate_gradient
from .gaussian import randn_complex
from .operators import SenseOp
from .schedules import CSGM_SIGMA_MIN, geometric_sigmas, karras_sigmas

__all__ = ["ald", "dps", "dds", "SAMPLERS", "get_sampler", "default_sigmas", "num_evaluations", "posterior_samples",
           "PosteriorSamples", "slice_seed", "make_generators", "repeat_operator"]

Denoiser = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]

CSGM_EPS = 5e-5          # csgm-mri-langevin step size at their last level sigma_L = 0.0066


# ----------------------------------------------------------------------------------------------------------------------
# Shared helpers.

def _check_inputs(name: str, y: torch.Tensor, op: SenseOp, sigmas: torch.Tensor, generators: Sequence,
                  x_init: torch.Tensor | None) -> torch.Tensor:
    if tuple(y.shape) != op.oshape:
        raise ValueError(f"{name}: y must have the operator's k-space shape {op.oshape}; got {tuple(y.shape)}")
    if not y.is_complex():
        raise ValueError(f"{name}: y must be complex k-space; got {y.dtype}")
    sigmas = torch.as_tensor(sigmas, dtype=torch.float64).reshape(-1)
    if sigmas.numel() < 1 or not torch.all(torch.isfinite(sigmas)) or torch.any(sigmas < 0):
        raise ValueError(f"{name}: sigmas must be a non-empty 1-D tensor of finite levels >= 0; build it with "
                         "dpm_core.schedules")
    if len(generators) != op.ishape[0]:
        raise ValueError(f"{name}: need one torch.Generator per slice ({op.ishape[0]}); got {len(generators)} "
                         "(see make_generators)")
    if x_init is not None and tuple(x_init.shape) != op.ishape:
        raise ValueError(f"{name}: x_init must have the image shape {op.ishape}; got {tuple(x_init.shape)}")
    return sigmas


def _randn(shape: Sequence[int], generators: Sequence[torch.Generator], device) -> torch.Tensor:
    """Per-slice noise, unit variance per real channel: [len(generators), *shape] complex64 on ``device``."""
    return torch.stack([randn_complex(shape, g) for g in generators]).to(device)


def _denoise(denoiser: Denoiser, x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Apply the denoiser to every map image: x [S, M, H, W] -> D [S, M, H, W]."""
    S, M, H, W = x.shape
    sig = torch.full((S * M,), float(sigma), dtype=torch.float32, device=x.device)
    return denoiser(x.reshape(S * M, H, W), sig).reshape(S, M, H, W)


def _per_slice(value, batch: int, device):
    """A sampler option that is a float (same for every slice) or a tensor [B] (one value per slice) -> a float or a
    [B, 1, 1, 1] tensor that broadcasts over image batches [B, M, H, W]."""
    if isinstance(value, torch.Tensor):
        if value.shape != (batch,):
            raise ValueError(f"a per-slice sampler option must have shape [{batch}]; got {tuple(value.shape)}")
        return value.to(device=device, dtype=torch.float32).view(batch, 1, 1, 1)
    return value


def _slice_norm(x: torch.Tensor) -> torch.Tensor:
    """Per-slice l2 norm, shaped to broadcast over [S, ...]: [S, 1, 1, 1] float32."""
    return torch.linalg.vector_norm(x.reshape(x.shape[0], -1), dim=1).view(-1, *([1] * (x.ndim - 1)))


def _slice_dot(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per-slice real inner product Re <a, b> = Re sum conj(a) b: [S, 1, 1, 1] float32."""
    return (a.conj() * b).real.reshape(a.shape[0], -1).sum(dim=1).view(-1, *([1] * (a.ndim - 1)))


def _start(sigmas: torch.Tensor, x_init, generators, op: SenseOp, device) -> torch.Tensor:
    S, M, H, W = op.ishape
    x = float(sigmas[0]) * _randn((M, H, W), generators, device)
    return x if x_init is None else x + x_init.to(device=device, dtype=torch.complex64)


# ----------------------------------------------------------------------------------------------------------------------
# Reference A: annealed Langevin dynamics (Jalal et al. 2021, csgm-mri-langevin).

def ald(denoiser: Denoiser, y: torch.Tensor, op: SenseOp, sigmas: torch.Tensor, generators: Sequence[torch.Generator],
        *, x_init: torch.Tensor | None = None, callback: Callable[[dict], None] | None = None,
        steps_per_level: int = 3, eps: float | None = None, weighting: str = "csgm", noise_std: float = 0.0,
        gamma: float = 1.0, mse_weight: float = 5.0, final_denoise: bool = False) -> torch.Tensor:
    """Annealed Langevin dynamics posterior sampling.

    For each level sigma of ``sigmas`` (geometric, all > 0) and ``steps_per_level`` steps:
        a = eps * (sigma / sigma_L)^2                        (sigma_L = sigmas[-1])
        x <- x + a (s(x, sigma) - g) + sqrt(2 a) z,          s = (D(x, sigma) - x) / sigma^2, z per real channel N(0, 1)
    with the data gradient g (analytic, no autograd) chosen by ``weighting``:
        "likelihood": g = A^H (A x - y) / (noise_std^2 + gamma^2 sigma^2)   the annealed Gaussian likelihood score;
                      exact for sigma -> 0 (this is what the exact-posterior test proves).
        "csgm":       g = A^H (A x - y) rescaled per slice to ||g|| = mse_weight * ||s||   (csgm's "mse" heuristic,
                      computed per slice, not over the batch as csgm does).

    Args (beyond the common ones, see module docstring):
        steps_per_level: Langevin steps per level (csgm: 3).
        eps: step size at the last level. Default: csgm's ratio eps / sigma_L^2 = 5e-5 / 0.0066^2 = 1.15 for "csgm"
            (5e-5 at sigma_L = 0.0066), 0.5 sigma_L^2 for "likelihood" (stable needs eps / sigma_L^2 < 2 / (1 + 1/gamma^2)).
        weighting: "csgm" (reference A as published) or "likelihood".
        noise_std: measurement noise std per real channel (k-space units of y), for "likelihood"; a float or a
            tensor [S] (one per slice).
        gamma: weight of the annealing term gamma^2 sigma^2 (1: the noise of A x_sigma for ||A|| <= 1).
        mse_weight: csgm's data weight w for "csgm" (5).
        final_denoise: return D(x, sigma_L) instead of the last Langevin iterate (off in csgm).
    Returns: [S, M, H, W] complex64. Network evaluations per slice: len(sigmas) * steps_per_level (* M map images).
    """
    sigmas = _check_inputs("ald", y, op, sigmas, generators, x_init)
    if torch.any(sigmas <= 0):
        raise ValueError("ald: every level must be > 0; use geometric_sigmas (not karras_sigmas, which ends in 0)")
    if weighting not in ("likelihood", "csgm"):
        raise ValueError(f"ald: weighting={weighting!r} must be 'likelihood' or 'csgm'")
    if weighting == "likelihood" and not (bool(torch.all(torch.as_tensor(noise_std) > 0)) or gamma > 0):
        raise ValueError("ald: the likelihood weighting needs noise_std > 0 or gamma > 0 (else the weight is infinite "
                         "at small sigma)")
    sigma_last = float(sigmas[-1])
    if eps is None:
        eps = (CSGM_EPS / CSGM_SIGMA_MIN ** 2 if weighting == "csgm" else 0.5) * sigma_last ** 2
    if steps_per_level < 1 or not eps > 0:
        raise ValueError(f"ald: steps_per_level={steps_per_level} must be >= 1 and eps={eps} > 0")
    device = y.device
    S, M, H, W = op.ishape
    noise_std = _per_slice(noise_std, S, device)
    with torch.no_grad():
        x = _start(sigmas, x_init, generators, op, device)
        D = x
        i = 0
        for sigma in sigmas.tolist():
            a = eps * (sigma / sigma_last) ** 2
            for _ in range(steps_per_level):
                D = _denoise(denoiser, x, sigma)
                score = (D - x) / sigma ** 2
                residual_grad = op.adjoint(op.forward(x) - y)                       # A^H (A x - y)
                if weighting == "likelihood":
                    g = residual_grad / (noise_std ** 2 + gamma ** 2 * sigma ** 2)
                else:
                    g = residual_grad * (mse_weight * _slice_norm(score) /
                                         _slice_norm(residual_grad).clamp_min(1e-30))
                z = _randn((M, H, W), generators, device)
                x = x + a * (score - g) + math.sqrt(2 * a) * z
                if callback is not None:
                    callback({"i": i, "sigma": sigma, "x": x, "denoised": D})
                i += 1
        if final_denoise:
            x = _denoise(denoiser, x, sigma_last)
    return x


# ----------------------------------------------------------------------------------------------------------------------
# Reference B: EDM Euler + diffusion posterior sampling with step zeta.

def dps(denoiser: Denoiser, y: torch.Tensor, op: SenseOp, sigmas: torch.Tensor, generators: Sequence[torch.Generator],
        *, x_init: torch.Tensor | None = None, callback: Callable[[dict], None] | None = None,
        zeta: float = 1.0) -> torch.Tensor:
    """EDM Euler probability-flow steps with a DPS data-consistency step (the paper authors' sampler).

    For i = 0..N-1 on a Karras schedule (sigmas[N] = 0):
        D   = denoiser(x, sigma_i)                           (with autograd)
        sse = ||y - A D||^2 per slice,  g = grad_x sse       (backprop through the denoiser)
        x  <- x + (sigma_{i+1} - sigma_i) (x - D) / sigma_i - zeta * g / sqrt(sse)

    DPS is an approximation of posterior sampling (its step size is not the likelihood's): on a Gaussian prior its
    mean is close to, but not equal to, the posterior mean (see tests/test_samplers.py for what it reaches).

    Args (beyond the common ones): zeta: data-consistency step (1 by default; larger for higher acceleration), a float
        or a tensor [S] (one per slice).
    Returns: [S, M, H, W] complex64. Network evaluations per slice: N forward + N backward (* M map images).
    """
    sigmas = _check_inputs("dps", y, op, sigmas, generators, x_init)
    if sigmas.numel() < 2 or float(sigmas[-1]) != 0.0 or torch.any(sigmas[:-1] <= 0):
        raise ValueError("dps: sigmas must be > 0 and end in 0 (use karras_sigmas)")
    device = y.device
    zeta = _per_slice(zeta, op.ishape[0], device)
    with torch.no_grad():
        x = _start(sigmas, x_init, generators, op, device)
    for i in range(sigmas.numel() - 1):
        sigma, sigma_next = float(sigmas[i]), float(sigmas[i + 1])
        with torch.enable_grad():
            x_in = x.detach().requires_grad_(True)
            D = _denoise(denoiser, x_in, sigma)
            residual = y - op.forward(D)
            sse = (residual.abs() ** 2).reshape(residual.shape[0], -1).sum(dim=1)         # [S]
            (g,) = torch.autograd.grad(sse.sum(), x_in)                                    # per slice: slices are independent
        with torch.no_grad():
            D = D.detach()
            norm = sse.detach().sqrt().clamp_min(1e-30).view(-1, 1, 1, 1)
            x = x + (sigma_next - sigma) * (x - D) / sigma - zeta * g / norm              # Euler step + DPS step
        if callback is not None:
            callback({"i": i, "sigma": sigma, "x": x, "denoised": D})
    return x.detach()


# ----------------------------------------------------------------------------------------------------------------------
# Fast sampler: decomposed diffusion sampling (Chung, Lee, Ye 2024).

def dds(denoiser: Denoiser, y: torch.Tensor, op: SenseOp, sigmas: torch.Tensor, generators: Sequence[torch.Generator],
        *, x_init: torch.Tensor | None = None, callback: Callable[[dict], None] | None = None,
        cg_iters: int = 5, noise_std: float | None = None, sigma_data: float | None = 0.5, lamda: float = 0.0,
        eta: float = 1.0, zeta: float = 1.0) -> torch.Tensor:
    """Decomposed diffusion sampling: Tweedie denoise, a few CG steps on the data term, re-noise (DDIM with eta).

    For i = 0..N-1 on a Karras schedule (sigmas[N] = 0), with no backprop through the denoiser:
        D     = denoiser(x, sigma_i)
        x0    = CG_{cg_iters}( (A^H A + lam_i I) u = A^H y + lam_i D,  start u = D )
        eps   = (x - x0) / sigma_i
        s     = eta * sigma_{i+1} * sqrt(1 - sigma_{i+1}^2 / sigma_i^2)
        x    <- x0 + sqrt(sigma_{i+1}^2 - s^2) eps + s z
    lam_i = noise_std^2 / sigma_i^2 if ``noise_std`` is given (the Gaussian-consistent weight: the prior given x is
    approximated by N(D, sigma_i^2 I) and the noise has variance noise_std^2), else the constant ``lamda``
    (0 with few CG iterations is the published early-stopped DDS). eta = 1 is ancestral (DDPM-like) sampling, eta = 0
    the deterministic DDIM / probability-flow step; both use eps from the data-consistent x0, which makes the step's
    conditional mean exact for a Gaussian prior when x0 = E[x_0 | x, y].

    Args (beyond the common ones):
        cg_iters: CG iterations per step (DDS: 5).
        noise_std: measurement noise std per real channel, a float or a tensor [S] (one per slice); switches to the
            annealed weight lam_i.
        lamda: constant proximal weight when ``noise_std`` is None.
        eta: stochasticity in [0, 1].
        zeta: data-consistency weight ζ: the data term is weighted ζ times the Gaussian-consistent weight, i.e. lam_i
            is divided by ζ (ζ = 1 exact for a Gaussian prior; larger ζ trusts the measured lines more, as the paper's
            ζ does for DPS). No effect when lam_i = 0. A float or a tensor [S] (one per slice).
    Returns: [S, M, H, W] complex64. Network evaluations per slice: N (* M map images); default schedules use N <= 50.
    """
    sigmas = _check_inputs("dds", y, op, sigmas, generators, x_init)
    if sigmas.numel() < 2 or float(sigmas[-1]) != 0.0 or torch.any(sigmas[:-1] <= 0):
        raise ValueError("dds: sigmas must be > 0 and end in 0 (use karras_sigmas)")
    if not 0.0 <= eta <= 1.0:
        raise ValueError(f"dds: eta={eta} must be in [0, 1]")
    if cg_iters < 0 or lamda < 0 or (noise_std is not None and bool(torch.any(torch.as_tensor(noise_std) < 0))):
        raise ValueError(f"dds: cg_iters={cg_iters}, lamda={lamda}, noise_std={noise_std} must be >= 0")
    if not bool(torch.all(torch.as_tensor(zeta) > 0)):
        raise ValueError(f"dds: zeta={zeta} must be > 0")
    device = y.device
    S, M, H, W = op.ishape
    noise_std = None if noise_std is None else _per_slice(noise_std, S, device)
    zeta = _per_slice(zeta, S, device)
    with torch.no_grad():
        x = _start(sigmas, x_init, generators, op, device)
        Ahy = op.adjoint(y)
        for i in range(sigmas.numel() - 1):
            sigma, sigma_next = float(sigmas[i]), float(sigmas[i + 1])
            D = _denoise(denoiser, x, sigma)
            if noise_std is None:
                lam = lamda
            else:                                   # noise_std^2 / Var(x_0 | x): 1 / Var = 1 / sigma^2 + 1 / sigma_data^2
                lam = noise_std ** 2 * (1.0 / sigma ** 2 + (0.0 if sigma_data is None else 1.0 / sigma_data ** 2))
            lam = lam / zeta
            x0 = conjugate_gradient(lambda u: op.normal(u) + lam * u, Ahy + lam * D, D, cg_iters, tol=0.0)
            if sigma_next == 0.0:
                x = x0
            else:
                eps_hat = (x - x0) / sigma
                s = eta * sigma_next * math.sqrt(max(1.0 - sigma_next ** 2 / sigma ** 2, 0.0))
                x = x0 + math.sqrt(max(sigma_next ** 2 - s ** 2, 0.0)) * eps_hat
                if s > 0:
                    x = x + s * _randn((M, H, W), generators, device)
            if callback is not None:
                callback({"i": i, "sigma": sigma, "x": x, "denoised": D})
    return x


SAMPLERS: dict[str, Callable[..., torch.Tensor]] = {"ald": ald, "dps": dps, "dds": dds, "fast": dds}
"""Samplers by name. "fast" is the chosen fast sampler (DDS; see docs/samplers.md for the measurements)."""

_DEFAULT_STEPS = {ald: 1156, dps: 300, dds: 50}    # ALD: csgm's levels 1155..2310; DPS: EDM-DPS 300-500; DDS: <= 50


def get_sampler(name: str) -> Callable[..., torch.Tensor]:
    """The sampler called ``name`` (one of :data:`SAMPLERS`)."""
    try:
        return SAMPLERS[name]
    except KeyError:
        raise ValueError(f"unknown sampler {name!r}; choose one of {sorted(SAMPLERS)}") from None


def _resolve(sampler) -> Callable[..., torch.Tensor]:
    return get_sampler(sampler) if isinstance(sampler, str) else sampler


def default_sigmas(sampler: str | Callable[..., torch.Tensor], denoiser=None, steps: int | None = None) -> torch.Tensor:
    """The default schedule of a sampler, over the denoiser's trained range.

    sigma_min / sigma_max come from ``denoiser.sigma_min`` / ``.sigma_max`` (a :class:`ComplexDenoiser` has them) or
    default to the paper's MRI model, 0.004 / 10.
        ald: ``steps`` (default 1156, csgm's count) geometric levels sigma_max -> sigma_min.
        dps: karras_sigmas(steps or 300, sigma_min, sigma_max), ending in 0.
        dds / fast: karras_sigmas(steps or 50, sigma_min, sigma_max), ending in 0.
    Returns: float64 [n] (ald) or [n + 1] (dps, dds).
    """
    fn = _resolve(sampler)
    if fn not in _DEFAULT_STEPS:
        raise ValueError(f"no default schedule for {sampler!r}: pass sigmas explicitly (dpm_core.schedules)")
    n = _DEFAULT_STEPS[fn] if steps is None else int(steps)
    sigma_min = float(getattr(denoiser, "sigma_min", 0.004))
    sigma_max = float(getattr(denoiser, "sigma_max", 10.0))
    if fn is ald:
        return geometric_sigmas(sigma_max, sigma_min, n)
    return karras_sigmas(n, sigma_min, sigma_max)


def num_evaluations(sampler: str | Callable[..., torch.Tensor], sigmas: torch.Tensor, **options) -> int:
    """Denoiser evaluations per slice and sample (per map image) of a sampler on ``sigmas``.

    DPS also backpropagates through each evaluation (roughly 2-3x the cost of a forward pass).
    """
    fn = _resolve(sampler)
    n = int(torch.as_tensor(sigmas).numel())
    if fn is ald:
        return n * int(options.get("steps_per_level", 3)) + int(bool(options.get("final_denoise", False)))
    if fn in (dps, dds):
        return n - 1
    raise ValueError(f"num_evaluations: unknown sampler {sampler!r}")


# ----------------------------------------------------------------------------------------------------------------------
# Seeding and posterior statistics.

def slice_seed(seed: int, slice_id: int, sample_index: int = 0) -> int:
    """A stable 63-bit seed for sample ``sample_index`` of slice ``slice_id`` (independent of batch composition)."""
    digest = hashlib.sha256(f"dpm-flair/{int(seed)}/{int(slice_id)}/{int(sample_index)}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


def make_generators(seed: int, slice_ids: Sequence[int], sample_index: int = 0, device="cpu") -> list[torch.Generator]:
    """One seeded ``torch.Generator`` per slice id (EDM's StackedRandomGenerator idea)."""
    return [torch.Generator(device=device).manual_seed(slice_seed(seed, s, sample_index)) for s in slice_ids]


def repeat_operator(op: SenseOp, repeats: int) -> SenseOp:
    """The operator of each slice repeated ``repeats`` times, slice-major: slice s, copy k -> index s * repeats + k."""
    mask = None if op.mask is None else op.mask.repeat_interleave(repeats, dim=0)
    return SenseOp(op.maps.repeat_interleave(repeats, dim=0), mask)


class PosteriorSamples(NamedTuple):
    mean: torch.Tensor       # [S, M, H, W] complex64
    std: torch.Tensor        # [S, M, H, W] float32: per-pixel std sqrt(sum_k |x_k - mean|^2 / (K - 1)); 0 for K = 1
    info: dict               # sampler, num_steps, nfe_per_sample, sigma_max, sigma_min (+ "samples" [S, K, M, H, W])


def posterior_samples(sampler: str | Callable[..., torch.Tensor], denoiser: Denoiser, y: torch.Tensor, op: SenseOp,
                      sigmas: torch.Tensor | None = None, *, num_samples: int = 1, seed: int = 0,
                      slice_ids: Sequence[int] | None = None, batch_size: int | None = None,
                      steps: int | None = None, keep_samples: bool = False, x_init: torch.Tensor | None = None,
                      callback: Callable[[dict], None] | None = None, **options) -> PosteriorSamples:
    """K posterior samples per slice, summarised as mean and per-pixel std.

    Samples run as extra slices of batched sampler calls (``batch_size`` slices per call, default all S*K). The
    generator of sample k of slice s is seeded from (seed, slice_ids[s], k), so results do not depend on how slices are
    batched; pass the slices' stable ids (e.g. their index in the volume) as ``slice_ids`` when reconstructing a subset.

    Args:
        sampler: a name of :data:`SAMPLERS` or a sampler callable with the common signature.
        denoiser, y, op, x_init, callback, options: as for the sampler (y [S, C, H, W], op of S slices). For DDS,
            ``sigma_data`` defaults to ``denoiser.sigma_data`` when the denoiser has one. A tensor option of shape
            [S] (e.g. ``noise_std``) is per slice and follows its slice into every sample and batch.
        sigmas: the schedule; None takes :func:`default_sigmas` (``steps`` sets its length).
        num_samples: K >= 1.
        seed: base seed.
        slice_ids: stable ids of the S slices (default 0..S-1).
        batch_size: slices per sampler call (memory bound), default S*K.
        keep_samples: also return every sample, as ``info["samples"]`` [S, K, M, H, W].
    Returns: :class:`PosteriorSamples` (mean complex64 [S, M, H, W], std float32 [S, M, H, W], info dict).
    """
    fn = _resolve(sampler)
    S, M, H, W = op.ishape
    K = int(num_samples)
    if K < 1:
        raise ValueError(f"posterior_samples: num_samples={num_samples} must be >= 1")
    if tuple(y.shape) != op.oshape:
        raise ValueError(f"posterior_samples: y must have the operator's k-space shape {op.oshape}; got "
                         f"{tuple(y.shape)}")
    if sigmas is None:
        sigmas = default_sigmas(fn, denoiser, steps)
    elif steps is not None:
        raise ValueError("posterior_samples: give either sigmas or steps, not both")
    if fn is dds and "sigma_data" not in options and hasattr(denoiser, "sigma_data"):
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
        gens = [torch.Generator(device=gen_device).manual_seed(slice_seed(seed, slice_ids[j // K], j % K))
                for j in range(start, stop)]
        sub_op = SenseOp(big_op.maps[start:stop], None if big_op.mask is None else big_op.mask[start:stop])
        sub_init = None if big_init is None else big_init[start:stop]
        sub_options = {**options, **{k: v[start:stop] for k, v in per_slice.items()}}
        out.append(fn(denoiser, big_y[start:stop], sub_op, sigmas, gens, x_init=sub_init, callback=callback,
                      **sub_options).detach())
    samples = torch.cat(out).reshape(S, K, M, H, W)
    mean = samples.mean(dim=1)
    if K > 1:
        std = torch.sqrt(((samples - mean.unsqueeze(1)).abs() ** 2).sum(dim=1) / (K - 1)).to(torch.float32)
    else:
        std = torch.zeros(S, M, H, W, dtype=torch.float32, device=samples.device)
    sig = torch.as_tensor(sigmas, dtype=torch.float64)
    name = next((k for k, v in SAMPLERS.items() if v is fn), getattr(fn, "__name__", "custom"))
    info = {"sampler_algorithm": name, "num_steps": int(sig.numel() - (0 if fn is ald else 1)),
            "nfe_per_sample": num_evaluations(fn, sig, **options) if fn in _DEFAULT_STEPS else None,
            "sigma_max": float(sig.max()), "sigma_min": float(sig[sig > 0].min())}
    if keep_samples:
        info["samples"] = samples
    return PosteriorSamples(mean, std, info)
