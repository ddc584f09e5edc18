"""The plug-and-play sampler (dpm_core.samplers.pnp) against its fixed point in closed form on a Gaussian prior, and
its place in the Reconstructor (ζ by GCV over its own grid, deterministic)."""
from __future__ import annotations

import pytest
import torch

from dpm_core.gaussian import _dense_forward, gaussian_problem
from dpm_core.reconstruct import Reconstructor
from dpm_core.samplers import SAMPLERS, default_sigmas, make_generators, posterior_samples
from dpm_core.samplers.pnp import PNP_LEVELS, PNP_SIGMA_END, PNP_SIGMA_START, PNP_ZETA_GRID


def dense_fixed_point(problem, sigma: float, zeta: float) -> torch.Tensor:
    """The x with x = argmin ‖A u − y‖² + μ ‖u − D x‖², μ = noise² / (ζ σ²), D the prior's exact (linear)
    denoiser: (AᴴA + μ (I − D)) x = Aᴴ y, by dense complex128 algebra. [H, W] of slice 0."""
    prior, op = problem.prior, problem.op
    A = _dense_forward(op, 0)
    F = prior.fourier_matrix()
    gain = prior.spectrum / (prior.spectrum + 2 * sigma ** 2)
    D = F.conj().T @ (gain.reshape(-1, 1).to(torch.complex128) * F)
    mu = problem.noise_std ** 2 / (zeta * sigma ** 2)
    n = D.shape[0]
    lhs = A.conj().T @ A + mu * (torch.eye(n, dtype=torch.complex128) - D)
    x = torch.linalg.solve(lhs, A.conj().T @ problem.y[0].reshape(-1).to(torch.complex128))
    return x.reshape(prior.height, prior.width)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("zeta", [0.25, 4.0])
def test_pnp_reaches_the_closed_form_fixed_point_of_a_gaussian_prior(zeta):
    """At a constant level the iteration is a contraction (the Gaussian denoiser's gain is < 1), so 80 levels must land
    on the dense solution of the fixed-point equation, for any ζ."""
    problem = gaussian_problem(noise_std=0.2)
    sigma = 1.0
    x = SAMPLERS["pnp"](problem.prior.denoiser(), problem.y, problem.op, torch.full((80,), sigma, dtype=torch.float64),
                        make_generators(0, [0]), noise_std=problem.noise_std, zeta=zeta, demodulate=False,
                        cg_iters=200, cg_tol=1e-7)
    reference = dense_fixed_point(problem, sigma, zeta)
    zero_filled = problem.op.adjoint(problem.y)[0, 0].to(torch.complex128)
    assert (reference - zero_filled).norm() > 0.05 * reference.norm()                   # the prior acts
    error = (x[0, 0].to(torch.complex128) - reference).norm() / reference.norm()
    assert error < 1e-4, error


@pytest.mark.timeout(60)
def test_demodulation_is_a_rotation_the_white_prior_does_not_see():
    """A white prior's denoiser is a scalar gain, which commutes with any pixel-wise rotation: demodulating by the L1
    image's phase must give the undemodulated result, on one and on two map sets."""
    for num_maps in (1, 2):
        problem = gaussian_problem(noise_std=0.1, length_scale=1e6, num_maps=num_maps, num_slices=2)
        run = [posterior_samples("pnp", problem.prior.denoiser(), problem.y, problem.op, default_sigmas("pnp"),
                                 noise_std=problem.noise_std, zeta=1.0, demodulate=d).mean for d in (True, False)]
        assert torch.allclose(run[0], run[1], atol=1e-5 * float(run[1].abs().max())), num_maps


def test_the_record_schedule_and_errors():
    sigmas = default_sigmas("pnp")
    assert sigmas.numel() == PNP_LEVELS and float(sigmas[0]) == pytest.approx(PNP_SIGMA_START)
    assert float(sigmas[-1]) == pytest.approx(PNP_SIGMA_END) and bool(torch.all(sigmas[1:] < sigmas[:-1]))
    problem = gaussian_problem()
    with pytest.raises(ValueError, match="levels > 0"):
        SAMPLERS["pnp"](problem.prior.denoiser(), problem.y, problem.op, torch.tensor([0.1, 0.0]),
                        make_generators(0, [0]), noise_std=0.1)
    with pytest.raises(ValueError, match="zeta"):
        SAMPLERS["pnp"](problem.prior.denoiser(), problem.y, problem.op, sigmas, make_generators(0, [0]),
                        noise_std=0.1, zeta=0.0)


@pytest.mark.timeout(120)
def test_the_reconstructor_chooses_zeta_by_held_out_lines_from_the_samplers_grid_and_refuses_samples():
    from tests.test_reconstruct import TINY_UNET
    from dpm_core.masks import equispaced_mask
    from dpm_core.networks import ComplexDenoiser, build_network
    from tests.conftest import birdcage_phantom
    torch.manual_seed(0)
    den = ComplexDenoiser(build_network("unet", TINY_UNET)).eval()
    den.card = {"zeta": {"1.0": 40.0, "4.0": 40.0}}            # the fast sampler's table must not be used
    kspace, _, maps = birdcage_phantom(32, 32, 4, slices=1)
    rec = Reconstructor(method="dpm", model=den, sampler="pnp", sampler_options={"steps": 3}, device="cpu",
                        output_guard=False, progress=None)
    mask = equispaced_mask(32, 2, num_acs=8)        # 11 lines outside the ACS block: folds of 2 until 8 are held out
    res = rec.reconstruct(kspace * torch.from_numpy(mask).view(1, 1, 32, 1), mask, maps=maps)
    assert res.info["zeta_rule"] == "auto:holdout (the pnp sampler's rule)", res.info
    assert res.info["zeta_grid"] == list(PNP_ZETA_GRID) and res.info["zeta"] in PNP_ZETA_GRID, res.info
    assert res.info["zeta_holdout_lines"] == 8 and res.info["zeta_holdout_folds"] == 4, res.info
    assert len(res.info["zeta_holdout_error"][0]) == len(PNP_ZETA_GRID)
    sparse = equispaced_mask(32, 12, num_acs=8)                 # 2 lines outside the ACS block: too few to hold out
    fallback = rec.reconstruct(kspace * torch.from_numpy(sparse).view(1, 1, 32, 1), sparse, maps=maps)
    assert fallback.info["zeta_rule"].startswith("auto:gcv (fewer than 2 lines"), fallback.info
    assert fallback.info["zeta"] in PNP_ZETA_GRID and "zeta_gcv" in fallback.info, fallback.info
    assert res.info["nfe_per_sample"] == 3 and res.method == "dpm:pnp"
    with pytest.raises(ValueError, match="deterministic"):
        Reconstructor(method="dpm", model=den, sampler="pnp", num_samples=2, device="cpu")
    with pytest.raises(ValueError, match=r"Reconstructor\(zeta=0.5\)"):
        Reconstructor(method="dpm", model=den, sampler="pnp", sampler_options={"zeta": 0.5}, device="cpu")


@pytest.mark.timeout(120)
def test_the_held_out_rule_scores_its_candidates_with_the_records_shorter_schedule():
    from tests.test_reconstruct import TINY_UNET
    from dpm_core.masks import equispaced_mask
    from dpm_core.networks import ComplexDenoiser, build_network
    from dpm_core.samplers.pnp import PNP_TRIAL_LEVELS
    from tests.conftest import birdcage_phantom
    torch.manual_seed(0)
    net = ComplexDenoiser(build_network("unet", TINY_UNET)).eval()
    levels = []

    class CountingDenoiser:                                     # records the σ of every network evaluation
        card = {}

        def __call__(self, x, sigma):
            levels.append(float(sigma.reshape(-1)[0]))
            return net(x, sigma)
    kspace, _, maps = birdcage_phantom(32, 32, 4, slices=1)
    mask = equispaced_mask(32, 2, num_acs=8)
    res = Reconstructor(method="dpm", model=CountingDenoiser(), sampler="pnp", device="cpu", output_guard=False,
                        progress=None).reconstruct(kspace * torch.from_numpy(mask).view(1, 1, 32, 1), mask, maps=maps)
    assert res.info["zeta_rule"].startswith("auto:holdout") and res.info["nfe_per_sample"] == PNP_LEVELS
    folds = res.info["zeta_holdout_folds"]                      # 4 folds on this 32-line matrix
    visited = sum(error is not None for error in res.info["zeta_holdout_error"][0])   # the walk from the middle
    assert 3 <= visited <= len(PNP_ZETA_GRID)
    assert len(levels) == folds * visited * PNP_TRIAL_LEVELS + PNP_LEVELS
    assert levels[-PNP_LEVELS:] == pytest.approx(default_sigmas("pnp").tolist(), rel=1e-6)
    assert levels[:PNP_TRIAL_LEVELS] == pytest.approx(default_sigmas("pnp", steps=PNP_TRIAL_LEVELS).tolist(), rel=1e-6)
    levels.clear()                                              # a schedule the user gives also sets the candidates'
    short = Reconstructor(method="dpm", model=CountingDenoiser(), sampler="pnp", sampler_options={"steps": 4},
                          device="cpu", output_guard=False, progress=None).reconstruct(
        kspace * torch.from_numpy(mask).view(1, 1, 32, 1), mask, maps=maps)
    visited = sum(error is not None for error in short.info["zeta_holdout_error"][0])
    assert len(levels) == (folds * visited + 1) * 4


@pytest.mark.timeout(60)
def test_a_slice_alone_equals_the_slice_in_its_batch_and_runs_repeat_exactly():
    """Per-slice L1 phase, noise level and ζ: a slice's result does not depend on its batch-mates, nor on the seed."""
    problem = gaussian_problem(num_slices=3, noise_std=0.1, seed=3)
    noise = torch.tensor([0.1, 0.05, 0.2])
    zeta = torch.tensor([1.0, 0.25, 4.0])
    run = dict(noise_std=noise, zeta=zeta)
    together = posterior_samples("pnp", problem.prior.denoiser(), problem.y, problem.op, default_sigmas("pnp"), **run)
    other_seed = posterior_samples("pnp", problem.prior.denoiser(), problem.y, problem.op, default_sigmas("pnp"),
                                   seed=9, **run)
    assert torch.equal(together.mean, other_seed.mean)
    for s in range(3):
        op_s = type(problem.op)(problem.op.maps[s:s + 1], problem.op.mask[s:s + 1])
        alone = posterior_samples("pnp", problem.prior.denoiser(), problem.y[s:s + 1], op_s, default_sigmas("pnp"),
                                  noise_std=noise[s:s + 1], zeta=zeta[s:s + 1])
        torch.testing.assert_close(alone.mean[0], together.mean[s], atol=1e-5 * float(together.mean.abs().max()),
                                   rtol=0)


@pytest.mark.timeout(60)
def test_a_phase_reference_given_to_the_reconstructor_serves_every_run_of_the_held_out_rule(monkeypatch):
    """sampler_options["phase_reference"] replaces the scan's L1 image for the final run and for every candidate of
    the held-out ζ rule: no L1 solve runs, and the result is the direct sampler run at the chosen ζ with it."""
    from tests.test_reconstruct import TINY_UNET
    from dpm_core import baselines
    from dpm_core.masks import equispaced_mask
    from dpm_core.networks import ComplexDenoiser, build_network
    from tests.conftest import birdcage_phantom
    torch.manual_seed(0)
    den = ComplexDenoiser(build_network("unet", TINY_UNET)).eval()
    den.card = {}
    kspace, _, maps = birdcage_phantom(32, 32, 4, slices=1)
    mask = equispaced_mask(32, 2, num_acs=8)
    reference = torch.polar(torch.ones(1, 1, 32, 32), torch.linspace(-3, 3, 32 * 32).reshape(1, 1, 32, 32))
    rec = Reconstructor(method="dpm", model=den, sampler="pnp", sampler_options={"steps": 3,
                        "phase_reference": reference}, device="cpu", output_guard=False, progress=None)

    def no_l1(*args, **kwargs):
        raise AssertionError("the L1 image was computed although a phase reference was given")
    monkeypatch.setattr(baselines, "l1_wavelet", no_l1)
    res = rec.reconstruct(kspace * torch.from_numpy(mask).view(1, 1, 32, 1), mask, maps=maps)
    assert res.info["zeta_rule"].startswith("auto:holdout") and res.info["zeta"] in PNP_ZETA_GRID, res.info
    direct = Reconstructor(method="dpm", model=den, sampler="pnp", device="cpu", output_guard=False, progress=None,
                           sampler_options={"steps": 3, "phase_reference": reference}, zeta=res.info["zeta"])
    again = direct.reconstruct(kspace * torch.from_numpy(mask).view(1, 1, 32, 1), mask, maps=maps)
    torch.testing.assert_close(torch.as_tensor(again.images), torch.as_tensor(res.images), rtol=0, atol=1e-6)


@pytest.mark.timeout(60)
def test_a_given_phase_reference_is_the_l1_image_the_sampler_would_compute():
    """The Reconstructor passes the scan's L1 image once (shared by the GCV runs); given it, the result is the one the
    sampler computes by itself, also when it travels through posterior_samples in chunks of one slice."""
    from dpm_core.baselines import l1_wavelet
    problem = gaussian_problem(num_slices=2, noise_std=0.1, seed=4)
    run = dict(noise_std=0.1, zeta=0.5)
    own = posterior_samples("pnp", problem.prior.denoiser(), problem.y, problem.op, default_sigmas("pnp"), **run)
    reference = l1_wavelet(problem.y, problem.op.mask, problem.op.maps)          # the per-scan λ rule
    given = posterior_samples("pnp", problem.prior.denoiser(), problem.y, problem.op, default_sigmas("pnp"),
                              phase_reference=reference, batch_size=1, **run)
    torch.testing.assert_close(given.mean, own.mean, atol=1e-5 * float(own.mean.abs().max()), rtol=0)
    with pytest.raises(ValueError, match="phase_reference"):
        SAMPLERS["pnp"](problem.prior.denoiser(), problem.y, problem.op, default_sigmas("pnp"),
                        make_generators(0, [0, 1]), phase_reference=torch.ones(2, 1, 8, 8, dtype=torch.complex64), **run)
