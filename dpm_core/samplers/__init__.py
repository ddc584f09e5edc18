"""Posterior samplers for SENSE MRI with a diffusion denoiser, as a registry: one file per sampler, one record each.

Layouts (DESIGN.md §2): image x [S, M, H, W] complex64 (S slices, M soft-SENSE map sets), k-space y [S, C, H, W]
complex64, operator :class:`dpm_core.operators.SenseOp`. The denoiser is any callable
``denoiser(x: complex64 [B, H, W], sigma: float32 [B]) -> complex64 [B, H, W]`` (an EDM-preconditioned network, or
:class:`dpm_core.gaussian.GaussianDenoiser`); each map image is its own batch item (B = S * M).

Conventions (see :mod:`dpm_core.gaussian` for the derivation):
- sigma is the noise std per *real channel*: x_sigma = x_0 + sigma (z_re + i z_im), z ~ N(0, 1). The score is the real
  gradient s = (D - x) / sigma^2, and ``torch.autograd`` of a real loss w.r.t. a complex tensor returns that same
  real gradient (d/dRe + i d/dIm), so g = grad ||y - A x||^2 = 2 A^H (A x - y).
- Measurement noise ``noise_std`` is also per real channel.

Every sampler has one signature::

    sample(denoiser, y, op, sigmas, generators, *, x_init=None, callback=None, **options) -> x [S, M, H, W] complex64

- ``sigmas``: the schedule from :mod:`dpm_core.schedules` (Karras, ending in 0, or geometric levels, all > 0; the
  record's ``schedule`` says which).
- ``generators``: one ``torch.Generator`` per slice (:func:`dpm_core.seeding.make_generators`); all randomness of slice
  s comes from ``generators[s]`` and every norm, scale and step size is per slice, so a slice's result never depends
  on its batch-mates. The global RNG is never used.
- ``x_init``: [S, M, H, W]; the start is x_init + sigmas[0] * z (default x_init = 0, pure noise). A warm start
  (:func:`warm_start_sigmas`) gives an estimate here and the tail of the schedule below its error level.
- ``callback``: called after every step with a dict ``{"i", "sigma", "x", "denoised"}``.
The samplers are not wrapped in ``torch.no_grad`` (DPS differentiates through the denoiser); the parts that need no
graph run under ``torch.no_grad``.

Adding a sampler is one file with its function and one :class:`Sampler` line in :data:`SAMPLERS`.
"""
from ..seeding import make_generators, slice_seed
from .ald import ald
from .dds import dds
from .dds_lora import dds_lora
from .dds_ssl import dds_ssl
from .dps import dps
from .pnp import pnp
from .posterior import PosteriorSamples, posterior_samples
from .registry import SAMPLERS, Sampler, default_sigmas, get_sampler, num_evaluations, warm_start_sigmas

__all__ = ["Sampler", "SAMPLERS", "get_sampler", "default_sigmas", "warm_start_sigmas", "num_evaluations", "ald", "dps",
           "dds", "dds_lora", "dds_ssl", "pnp",
           "posterior_samples", "PosteriorSamples", "slice_seed", "make_generators"]
