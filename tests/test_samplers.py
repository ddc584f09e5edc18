"""Posterior samplers proven on an exact Gaussian prior (dpm_core.gaussian), plus batching, seeding and shapes.

Multi-coil problems on shortened schedules here; every sampler at its production settings, against laws derived in
closed form, is in tests/test_sampler_laws.py.

Monte-Carlo statistics used below, for K samples of a posterior with per-pixel complex variance v:
- z-scores of the sample mean, per real channel: z = (mean_K - mu) / sqrt(v / (2 K)); under an exact sampler they are
  ~N(0, 1), so over the 512 channel-pixels mean(z^2) = 1 +- 0.06 (1 sd) and max|z| < 4.5 with probability > 99.5 %.
- relative error of the mean ||mean_K - mu|| / ||mu|| against its MC standard error SE = sqrt(sum v / K) / ||mu||.
- variance ratio r = std_K^2 / v per pixel; its MC relative sd is ~1/sqrt(K) (8.8 % at K = 128).
"""
from __future__ import annotations

import math

import pytest
import torch

from dpm_core.baselines import operator_norm_sq
from dpm_core.gaussian import GaussianPrior, gaussian_problem, _dense_forward
from dpm_core.seeding import randn_complex
from dpm_core.samplers import (SAMPLERS, default_sigmas, make_generators, num_evaluations, posterior_samples,
                               slice_seed)
from dpm_core.schedules import csgm_sigmas, geometric_sigmas, karras_sigmas


def _mc_stats(problem, result, K):
    mu, v = problem.posterior.mean, problem.posterior.variance
    m = result.mean.to(torch.complex128)
    se = (v / (2 * K)).sqrt()
    z = torch.cat([((m - mu).real / se).flatten(), ((m - mu).imag / se).flatten()])
    rel = ((m - mu).norm() / mu.norm()).item()
    rel_se = ((v.sum() / K).sqrt() / mu.norm()).item()
    zero_filled = ((problem.op.adjoint(problem.y).to(torch.complex128) - mu).norm() / mu.norm()).item()
    ratio = result.std.double() ** 2 / v
    return dict(z2=(z ** 2).mean().item(), zmax=z.abs().max().item(), rel=rel, rel_se=rel_se, zf=zero_filled,
                ratio_mean=ratio.mean().item(), ratio_q95=(ratio - 1).abs().quantile(0.95).item())


@pytest.fixture(scope="module")
def noisy():       # noise std 0.2 per channel: zero-filled rel. error 0.46 vs the posterior mean
    return gaussian_problem(noise_std=0.2)


# ----------------------------------------------------------------------------------------------------------------------
# Schedules and the Gaussian reference itself.

def test_schedules():
    s = karras_sigmas(10, 0.004, 10.0)
    assert s.shape == (11,) and s.dtype == torch.float64 and s[-1] == 0
    assert math.isclose(s[0].item(), 10.0) and math.isclose(s[-2].item(), 0.004, rel_tol=1e-9)
    assert torch.all(s[1:] < s[:-1])
    g = geometric_sigmas(232.0, 0.0066, 2311)
    assert g.shape == (2311,) and math.isclose(g[0].item(), 232.0) and math.isclose(g[-1].item(), 0.0066)
    ratios = g[1:] / g[:-1]
    assert torch.allclose(ratios, ratios[0])
    c = csgm_sigmas()
    assert c.shape == (1156,) and 1.2 < c[0].item() < 1.3                   # csgm starts part-way, at sigma ~ 1.24
    with pytest.raises(ValueError):
        karras_sigmas(0, 0.1, 1.0)
    with pytest.raises(ValueError):
        geometric_sigmas(1.0, 2.0, 5)


def test_gaussian_denoiser_is_the_dense_mmse_estimator():
    prior = GaussianPrior(8, 8, length_scale=2.0)
    Sigma = prior.covariance()
    assert torch.allclose(torch.diagonal(Sigma).real, torch.ones(64, dtype=torch.float64))   # per-pixel variance 1
    x = randn_complex((3, 8, 8), torch.Generator().manual_seed(0))
    sigma = torch.tensor([0.1, 0.7, 3.0])
    D = prior.denoiser()(x, sigma)
    for b in range(3):
        gain = Sigma @ torch.linalg.inv(Sigma + 2 * sigma[b].item() ** 2 * torch.eye(64, dtype=torch.complex128))
        ref = (gain @ x[b].reshape(-1).to(torch.complex128)).reshape(8, 8)
        assert torch.allclose(D[b].to(torch.complex128), ref, atol=1e-5)
    score = prior.denoiser().score(x, sigma)
    assert torch.allclose(score, (D - x) / sigma.view(-1, 1, 1) ** 2)
    # Prior draws: complex variance 1 per pixel, half in each real channel (circular).
    draws = prior.sample(make_generators(1, range(4000)))
    assert abs(draws.abs().pow(2).mean().item() - 1.0) < 0.05
    assert abs(draws.real.pow(2).mean().item() - 0.5) < 0.03 and abs((draws * draws).mean().abs().item()) < 0.03


def test_gaussian_posterior_matches_the_covariance_form(noisy):
    """Information-form posterior (gaussian_posterior) == covariance (Kalman) form, computed independently."""
    A = _dense_forward(noisy.op, 0)
    rows = A.abs().sum(dim=1) > 0                                   # sampled k-space entries
    A = A[rows]
    y = noisy.y[0].reshape(-1).to(torch.complex128)[rows]
    Sigma = noisy.prior.covariance()
    G = A @ Sigma @ A.conj().T + 2 * noisy.noise_std ** 2 * torch.eye(A.shape[0], dtype=torch.complex128)
    gain = Sigma @ A.conj().T @ torch.linalg.inv(G)
    mean = gain @ y
    var = torch.diagonal(Sigma - gain @ A @ Sigma).real
    assert torch.allclose(noisy.posterior.mean.reshape(-1), mean, atol=1e-8)
    assert torch.allclose(noisy.posterior.variance.reshape(-1), var, atol=1e-8)


# ----------------------------------------------------------------------------------------------------------------------
# Exact-posterior proofs.

def test_ald_likelihood_samples_the_exact_posterior(noisy):
    """ALD with the annealed likelihood weighting (its default) reproduces the multi-coil posterior mean and per-pixel
    variance on a shortened schedule (tests/test_sampler_laws.py proves the default schedule on a diagonal problem).

    900 Langevin steps (300 geometric levels 5 -> 0.02, 3 per level, eps = sigma_L^2): the remaining annealing lag was
    computed from the exact mean recursion (~0.35 MC standard errors at K = 96), well inside the tolerances below.
    """
    K = 96
    res = posterior_samples("ald", noisy.prior.denoiser(), noisy.y, noisy.op, geometric_sigmas(5.0, 0.02, 300),
                            num_samples=K, steps_per_level=3, eps=0.02 ** 2, weighting="likelihood",
                            noise_std=noisy.noise_std)
    st = _mc_stats(noisy, res, K)
    assert st["z2"] < 1.45, st                  # exact: 1 +- 0.06; a 1-SE bias everywhere would give 2
    assert st["zmax"] < 5.0, st
    assert st["rel"] < 2.0 * st["rel_se"], st   # relative error of the mean within 2 MC standard errors
    assert 0.93 < st["ratio_mean"] < 1.10, st   # mean per-pixel variance within 7-10 % of closed form
    assert st["ratio_q95"] < 0.30, st           # 95 % of pixels within 30 % (MC sd per pixel 10 %)


def test_dds_mean_is_exact_where_its_isotropic_model_is():
    """With a white prior, Var(x_0 | x_sigma) is isotropic, so DDS's proximal weight lam = noise^2 (1/sigma^2 +
    1/sigma_data^2) is the exact conditional mean given enough CG: the sample mean must match within MC error."""
    white = gaussian_problem(noise_std=0.05, length_scale=1e6)
    K = 96
    res = posterior_samples("dds", white.prior.denoiser(), white.y, white.op, karras_sigmas(20, 0.004, 10.0),
                            num_samples=K, cg_iters=25, noise_std=0.05, sigma_data=math.sqrt(0.5))
    st = _mc_stats(white, res, K)
    assert st["z2"] < 1.35 and st["zmax"] < 5.0, st
    assert st["rel"] < 2.0 * st["rel_se"], st
    # The spread is not checked here: ancestral re-noising ignores Cov(x_0 | x, y), so DDS under-disperses by design;
    # tests/test_sampler_laws.py derives its exact variance at production settings and checks every pixel against it.


# ----------------------------------------------------------------------------------------------------------------------
# Batching, seeding, shapes.

_FAST_SETTINGS = {
    "ald": (lambda: geometric_sigmas(3.0, 0.05, 8), dict(steps_per_level=2)),
    "ald_likelihood": (lambda: geometric_sigmas(3.0, 0.05, 8), dict(weighting="likelihood", noise_std=0.1)),
    "dps": (lambda: karras_sigmas(8, 0.01, 5.0), dict(zeta=1.0)),
    "dds": (lambda: karras_sigmas(8, 0.01, 5.0), dict(cg_iters=3, noise_std=0.1)),
}


def _run(name, problem, **kw):
    make, opts = _FAST_SETTINGS[name]
    sampler = name.split("_")[0]
    return posterior_samples(sampler, problem.prior.denoiser(), problem.y, problem.op, make(), **opts, **kw)


@pytest.fixture(scope="module")
def three_slices():
    return gaussian_problem(num_slices=3, noise_std=0.1, seed=3)


@pytest.mark.parametrize("name", sorted(_FAST_SETTINGS))
def test_batch_independence(name, three_slices):
    """A slice's result is the same whether it is reconstructed with its batch-mates or alone."""
    P = three_slices
    together = _run(name, P, num_samples=2, seed=5)
    chunked = _run(name, P, num_samples=2, seed=5, batch_size=1)
    assert torch.equal(together.mean, chunked.mean)
    for s in range(3):
        op_s = type(P.op)(P.op.maps[s:s + 1], P.op.mask[s:s + 1])
        alone = posterior_samples(name.split("_")[0], P.prior.denoiser(), P.y[s:s + 1], op_s,
                                  _FAST_SETTINGS[name][0](), num_samples=2, seed=5, slice_ids=[s],
                                  **_FAST_SETTINGS[name][1])
        assert torch.equal(alone.mean[0], together.mean[s]), (name, s)
        assert torch.equal(alone.std[0], together.std[s]), (name, s)


@pytest.mark.parametrize("name", ["ald", "dps", "dds"])
def test_seedability(name, three_slices):
    a = _run(name, three_slices, num_samples=1, seed=11)
    b = _run(name, three_slices, num_samples=1, seed=11)
    c = _run(name, three_slices, num_samples=1, seed=12)
    assert torch.equal(a.mean, b.mean)
    assert not torch.allclose(a.mean, c.mean)
    state = torch.get_rng_state()
    _run(name, three_slices, num_samples=1, seed=11)
    assert torch.equal(state, torch.get_rng_state())           # the global RNG is never used
    assert slice_seed(11, 0, 0) != slice_seed(11, 0, 1) != slice_seed(11, 1, 0)


@pytest.mark.parametrize("name", ["ald", "dps", "dds"])
def test_two_map_sets(name):
    P = gaussian_problem(num_slices=2, num_maps=2, noise_std=0.1)
    assert P.posterior.mean.shape == (2, 2, 16, 16)
    res = _run(name, P, num_samples=2, keep_samples=True)
    assert res.mean.shape == (2, 2, 16, 16) and res.mean.dtype == torch.complex64
    assert res.std.shape == (2, 2, 16, 16) and res.std.dtype == torch.float32
    assert res.info["samples"].shape == (2, 2, 2, 16, 16)
    assert torch.isfinite(res.mean).all() and (res.std > 0).all()


def test_two_map_sets_sample_the_exact_soft_sense_posterior():
    """Soft-SENSE (M = 2) forward model in the samplers: the prior acts on each map-set image and the data term on
    their sum. ALD (likelihood weighting, as in the M = 1 proof above) reproduces the exact 2-map posterior mean and
    variance; DDS on a white prior its mean, within the same Monte-Carlo bounds as for one map set."""
    noisy2 = gaussian_problem(noise_std=0.2, num_maps=2)
    K = 96
    # The synthetic second map set is not orthogonal to the first (‖AᴴA‖ = 1.25, not 1): the Langevin step that is
    # stable for ‖A‖ <= 1 (eps = sigma_L^2) is divided by it, as any step size must be.
    lipschitz = float(operator_norm_sq(noisy2.op, num_iters=50))
    res = posterior_samples("ald", noisy2.prior.denoiser(), noisy2.y, noisy2.op, geometric_sigmas(5.0, 0.02, 300),
                            num_samples=K, steps_per_level=3, eps=0.02 ** 2 / lipschitz, weighting="likelihood",
                            noise_std=noisy2.noise_std)
    st = _mc_stats(noisy2, res, K)
    assert st["z2"] < 1.45 and st["zmax"] < 5.0, st
    assert st["rel"] < 2.0 * st["rel_se"], st
    assert 0.93 < st["ratio_mean"] < 1.10 and st["ratio_q95"] < 0.30, st
    white2 = gaussian_problem(noise_std=0.05, length_scale=1e6, num_maps=2)
    res = posterior_samples("dds", white2.prior.denoiser(), white2.y, white2.op, karras_sigmas(20, 0.004, 10.0),
                            num_samples=K, cg_iters=25, noise_std=0.05, sigma_data=math.sqrt(0.5))
    st = _mc_stats(white2, res, K)
    assert st["z2"] < 1.35 and st["zmax"] < 5.0 and st["rel"] < 2.0 * st["rel_se"], st


def test_callback_nfe_and_errors(three_slices):
    P = three_slices
    seen = []
    sig = karras_sigmas(6, 0.01, 5.0)
    SAMPLERS["dds"](P.prior.denoiser(), P.y, P.op, sig, make_generators(0, range(3)), callback=seen.append)
    assert [d["i"] for d in seen] == list(range(6)) and set(seen[0]) == {"i", "sigma", "x", "denoised"}
    den = P.prior.denoiser()
    res = posterior_samples("dps", den, P.y, P.op, sig, num_samples=2)
    assert res.info["nfe_per_sample"] == 6 == num_evaluations("dps", sig)
    assert den.num_evaluations == 6 * 3 * 2                        # steps x slices x samples (M = 1)
    assert num_evaluations("ald", csgm_sigmas()) == 3468           # csgm: 1,156 levels x 3
    assert default_sigmas("fast").numel() == 51 and default_sigmas("ald").numel() == 1156
    with pytest.raises(ValueError, match="geometric_sigmas"):
        SAMPLERS["ald"](P.prior.denoiser(), P.y, P.op, sig, make_generators(0, range(3)))
    with pytest.raises(ValueError, match="one torch.Generator per slice"):
        SAMPLERS["dps"](P.prior.denoiser(), P.y, P.op, sig, make_generators(0, range(2)))
    with pytest.raises(ValueError, match="unknown sampler"):
        posterior_samples("heun", den, P.y, P.op, sig)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_shapes_and_runs():
    P = gaussian_problem(num_slices=2, noise_std=0.1, device="cuda")
    for name in ("ald", "dps", "dds"):
        res = _run(name, P, num_samples=2)
        assert res.mean.is_cuda and res.mean.shape == (2, 1, 16, 16) and torch.isfinite(res.mean).all()
