"""Plug-and-play reconstruction with the diffusion denoiser: half-quadratic splitting over a short annealed band of
noise levels, each data step solved to convergence (DPIR: Zhang et al., "Plug-and-play image restoration with deep
denoiser prior", TPAMI 2021; with a diffusion model's denoiser, DiffPIR: Zhu et al., CVPR 2023, without its
re-noising).

Unlike DDS it does not re-noise: the denoiser sees the data-consistent image itself, and every data step is solved,
not early-stopped, so the result is the fixed point of prior and data at the last level rather than the end of a
short trajectory (docs/samplers.md has the measurements that chose it). Deterministic: one result per scan, no
posterior spread.
"""
from __future__ import annotations

from typing import Callable, Sequence

import torch

from ..baselines import l1_wavelet
from ..cg import conjugate_gradient
from ..operators import SenseOp
from ._common import Denoiser, check_inputs, denoise_maps, per_slice

# The band of levels and its length, chosen on bench_real.py's cases (docs/experiments/sampler_levers/run.md §6): the
# last level sets how strongly the prior smooths. 8 levels reach nearly the same fixed point, but GCV's choice of ζ
# from 8-level runs missed on the real folded case (ζ 1: 0.02966 against 0.02532 with 30).
PNP_SIGMA_START = 0.05
PNP_SIGMA_END = 0.01
PNP_LEVELS = 30
PNP_CG_ITERS = 50          # a cap on each data step, which otherwise stops at PNP_CG_TOL
PNP_CG_TOL = 1e-4          # not a full solve: the image still depends on the CG start by up to ~2 % at this
                           # tolerance (the start z keeps the unmeasured directions at the prior's; at 1e-6 the
                           # starts agree, for 2-2.6x the CG work): docs/experiments/pnp_cg/run.md
PNP_ZETA_GRID = (1 / 64, 1 / 16, 1 / 4, 1.0, 4.0)   # zeta="auto" candidates: this sampler's optimum lies lower than
                                                     # DDS's (real slice 1/16-1/4, synthetic FLAIR 2-4; ζ 8 is worse
                                                     # on every bench_real case: docs/experiments/pnp_zeta/run.md)
PNP_TRIAL_LEVELS = 15      # levels of the held-out rule's candidate runs: the same ζ as with 30 on all 11 cases it
                           # can score, at half the cost; 8 missed twice (docs/experiments/pnp_zeta/short.md)


def pnp(denoiser: Denoiser, y: torch.Tensor, op: SenseOp, sigmas: torch.Tensor, generators: Sequence[torch.Generator],
        *, x_init: torch.Tensor | None = None, callback: Callable[[dict], None] | None = None,
        noise_std: float | torch.Tensor = 0.0, zeta: float | torch.Tensor = 1.0, demodulate: bool = True,
        phase_reference: torch.Tensor | None = None, cg_iters: int = PNP_CG_ITERS,
        cg_tol: float = PNP_CG_TOL) -> torch.Tensor:
    """Half-quadratic splitting with the denoiser as the prior's proximal step.

    From x = x_init itself, no noise added (the Reconstructor's warm start: the SENSE image; A^H y when None), for each
    level sigma_i of ``sigmas`` (geometric, all > 0):
        z = e^{i phi} D(e^{-i phi} x, sigma_i)                             (every map-set image)
        x = argmin_u ||A u - y||^2 + mu_i ||u - z||^2,   mu_i = noise_std^2 / (zeta sigma_i^2)
    solved by CG to ||r|| <= cg_tol ||rhs||; returns the last x. mu_i is the Gaussian-consistent weight of a prior
    N(z, sigma_i^2 I) against noise of variance noise_std^2 (DDS's, without its sigma_data term); ζ divides it.

    ``demodulate``: phi is the phase of the L1-wavelet image of the same data (:func:`dpm_core.baselines.l1_wavelet`,
    its per-scan λ rule), so that the prior sees a nearly real image, where it is strongest; a fixed rotation keeps
    white noise white. The shipped priors learnt slowly varying phase only and damage a real scan's pixel-scale phase
    (benchmarks/results/prior_fit.md); the L1 image carries that phase. The output's phase is still the data step's.

    Args (beyond the common ones; ``generators`` are checked but unused: the method is deterministic):
        noise_std: measurement noise std per real channel, a float or a tensor [S].
        zeta: data-consistency weight ζ (> 0), a float or a tensor [S].
        demodulate: demodulate the denoiser's input by the L1 image's phase (True) or not.
        phase_reference: [S, M, H, W] complex, the image whose phase demodulates; None: the L1 image of ``y``. The
            Reconstructor passes the L1 image of the data each run sees (the kept lines for the held-out-lines ζ rule,
            computed once for all its candidates; the whole scan for the final run).
        cg_iters, cg_tol: the data step's CG cap and tolerance.
    Returns: [S, M, H, W] complex64. Network evaluations per slice: len(sigmas) (* M map images).
    """
    sigmas = check_inputs("pnp", y, op, sigmas, generators, x_init)
    if sigmas.numel() < 1 or torch.any(sigmas <= 0):
        raise ValueError("pnp: sigmas must be levels > 0 (use geometric_sigmas)")
    if not bool(torch.all(torch.as_tensor(zeta) > 0)) or bool(torch.any(torch.as_tensor(noise_std) < 0)):
        raise ValueError(f"pnp: zeta={zeta} must be > 0 and noise_std={noise_std} >= 0")
    if cg_iters < 1 or not cg_tol >= 0:
        raise ValueError(f"pnp: cg_iters={cg_iters} must be >= 1 and cg_tol={cg_tol} >= 0")
    S = op.ishape[0]
    noise_std = per_slice(noise_std, S, y.device)
    zeta = per_slice(zeta, S, y.device)
    with torch.no_grad():
        Ahy = op.adjoint(y)
        x = Ahy if x_init is None else x_init.to(device=y.device, dtype=torch.complex64)
        rotation = None
        if demodulate:
            reference = l1_wavelet(y, op.mask, op.maps) if phase_reference is None else phase_reference.to(y.device)
            if tuple(reference.shape) != op.ishape:
                raise ValueError(f"pnp: phase_reference must have the image shape {op.ishape}; got "
                                 f"{tuple(reference.shape)}")
            rotation = torch.where(reference.abs() > 0, torch.sgn(reference), torch.ones_like(reference))
        for i, sigma in enumerate(float(s) for s in sigmas):
            if rotation is None:
                z = denoise_maps(denoiser, x, sigma)
            else:
                z = rotation * denoise_maps(denoiser, x * rotation.conj(), sigma)
            mu = noise_std ** 2 / (zeta * sigma ** 2)
            x = conjugate_gradient(lambda u: op.normal(u) + mu * u, Ahy + mu * z, z, cg_iters, tol=cg_tol)
            if callback is not None:
                callback({"i": i, "sigma": sigma, "x": x, "denoised": z})
    return x

