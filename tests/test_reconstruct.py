"""The Reconstructor's DPM path: batch independence, posterior std, ζ, failure reporting (tiny random U-Net)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from dpm_core.masks import equispaced_mask
from dpm_core.networks import ComplexDenoiser, build_network
from dpm_core.reconstruct import Reconstructor, ReconstructionError
from tests.conftest import REAL_BRAIN, birdcage_phantom, load_real_brain

TINY_UNET = {"base_channels": 8, "channel_mults": (1, 2), "num_res_blocks": 1, "attention_levels": (), "emb_dim": 32}


@pytest.fixture(scope="module")
def denoiser():
    torch.manual_seed(0)
    den = ComplexDenoiser(build_network("unet", TINY_UNET)).eval()
    den.card = {"zeta": {"1.6": 1.0}}
    return den


@pytest.fixture(scope="module")
def problem():
    kspace, image, maps = birdcage_phantom(32, 32, 4, slices=3)
    g = torch.Generator().manual_seed(1)
    kspace = kspace + 0.01 * torch.complex(torch.randn(kspace.shape, generator=g), torch.randn(kspace.shape, generator=g))
    mask = equispaced_mask(32, 2, num_acs=8)
    return kspace * torch.from_numpy(mask).view(1, 1, 32, 1), mask, maps


@pytest.mark.parametrize("sampler,steps", [("fast", 4), ("dps", 3), ("ald", 2)])
def test_slice_alone_equals_slice_in_batch(denoiser, problem, sampler, steps):
    kspace, mask, maps = problem
    rec = Reconstructor(method="dpm", model=denoiser, sampler=sampler, sampler_options={"steps": steps}, seed=5,
                        device="cpu", output_guard=False)      # an untrained network: the guard rightly refuses it
    together = rec.reconstruct(kspace, mask, maps=maps, slice_ids=[4, 5, 6])
    alone = rec.reconstruct(kspace[1:2], mask, maps=maps[1:2], slice_ids=[5])
    assert together.method == f"dpm:{sampler}"
    np.testing.assert_allclose(together.images[1], alone.images[0], atol=1e-5 * np.abs(alone.images).max())
    again = rec.reconstruct(kspace, mask, maps=maps, slice_ids=[4, 5, 6])
    np.testing.assert_array_equal(together.images, again.images)


@pytest.mark.timeout(120)
def test_the_card_zeta_table_is_the_fast_samplers_only(problem):
    """The card's ζ table was swept with the fast sampler, where ζ divides DDS's proximal weight; DPS's ζ is a step
    length, so a DPS reconstruction takes its own default (1), not the table's 40, and says so."""
    torch.manual_seed(0)
    den = ComplexDenoiser(build_network("unet", TINY_UNET)).eval()
    den.card = {"zeta": {"1.5": 40.0, "2.5": 40.0}}
    kspace, mask, maps = problem
    common = dict(model=den, sampler_options={"steps": 3}, device="cpu", output_guard=False)
    dps = Reconstructor(sampler="dps", **common).reconstruct(kspace[:1], mask, maps=maps[:1])
    assert dps.info["zeta"] == 1.0 and "default" in dps.info["zeta_rule"], dps.info
    fast = Reconstructor(sampler="fast", **common).reconstruct(kspace[:1], mask, maps=maps[:1])
    assert fast.info["zeta"] == 40.0 and fast.info["zeta_rule"] == "card", fast.info


def test_posterior_std_map_and_seed(denoiser, problem):
    kspace, mask, maps = problem
    rec = Reconstructor(method="dpm", model=denoiser, sampler_options={"steps": 4}, num_samples=3, device="cpu",
                        output_guard=False, warm_start=None)
    res = rec.reconstruct(kspace, mask, maps=maps)
    assert res.std is not None and res.std.shape == (3, 32, 32) and res.std.dtype == np.float32
    assert float(res.std.max()) > 0
    other = Reconstructor(method="dpm", model=denoiser, sampler_options={"steps": 4}, num_samples=3, seed=1,
                          device="cpu", output_guard=False, warm_start=None).reconstruct(kspace, mask, maps=maps)
    assert not np.array_equal(res.images, other.images)
    assert res.info["nfe_per_sample"] == 4 and res.info["zeta"] == 1.0


def test_zeta_changes_the_fast_sampler(denoiser, problem):
    kspace, mask, maps = problem
    runs = [Reconstructor(method="dpm", model=denoiser, sampler_options={"steps": 4}, zeta=z, device="cpu",
                          output_guard=False, warm_start=None).reconstruct(kspace, mask, maps=maps).images
            for z in (0.5, 4.0)]
    assert np.abs(runs[0] - runs[1]).max() > 1e-4


def test_non_finite_network_output_is_a_reconstruction_error(problem):
    kspace, mask, maps = problem

    def broken(x, sigma):
        return torch.full_like(x, float("nan"))

    rec = Reconstructor(method="dpm", model=broken, sampler_options={"steps": 2}, device="cpu")
    with pytest.raises(ReconstructionError, match="non-finite"):
        rec.reconstruct(kspace, mask, maps=maps)


def test_missing_model_file_is_reported(problem, tmp_path):
    kspace, mask, maps = problem
    rec = Reconstructor(method="dpm", model=tmp_path / "nope.json", device="cpu")
    with pytest.raises((FileNotFoundError, ValueError)):
        rec.reconstruct(kspace, mask, maps=maps)


def _damaged_copy(path, out, relative_noise: float = 1.0):
    """The shipped model with every weight perturbed by ``relative_noise`` times its tensor's std, saved with a
    freshly hashed card: the checksum cannot catch it."""
    from dpm_core.checkpoints import load_checkpoint, save_checkpoint
    precond, card = load_checkpoint(path)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in precond.parameters():
            p.add_(torch.randn(p.shape, generator=g) * p.std().clamp_min(1e-8) * relative_noise)
    return save_checkpoint(out / "damaged", precond, card)[0]


@pytest.fixture(scope="module")
def flair_scan_files(tmp_path_factory):
    """The raw file of a generated synthetic FLAIR subject (96², 8 coils, 6 slices, fully sampled)."""
    tmp_path = tmp_path_factory.mktemp("flair")
    from training.synth import generate_corpus
    from training.preprocess import find_volumes
    generate_corpus(tmp_path / "flair", 1, ["AXFLAIR"], seed=17, progress=False, matrix=96, coils=8, slices=6)
    return find_volumes(tmp_path / "flair")[0]


@pytest.fixture(scope="module")
def flair_scan(flair_scan_files):
    """Slices 3-4 of a generated synthetic FLAIR subject (96², 8 coils), nominal R = 4 + 24 ACS."""
    from training.undersampled import read_accelerated
    full = read_accelerated(flair_scan_files)[0].kspace[3:5]
    mask = equispaced_mask(96, 4, num_acs=24)
    return full * torch.from_numpy(mask).view(1, 1, 96, 1), mask


@pytest.fixture(scope="module")
def flair_reference(flair_scan_files):
    """Fully sampled slices 3-4 of the same synthetic FLAIR subject and the nominal R = 4 + 24 ACS mask."""
    from training.undersampled import read_accelerated
    return read_accelerated(flair_scan_files)[0].kspace[3:5], equispaced_mask(96, 4, num_acs=24)


def test_output_guard_passes_the_shipped_model_and_stops_a_damaged_one(flair_scan, tmp_path):
    """On synthetic FLAIR, a 32² phantom unlike any brain and (when present) the real 16-coil slice: the shipped FLAIR
    model passes both checks with a margin; the same weights damaged (card re-hashed) fail the denoiser check, and
    the ReconstructionError names it. Measured: probe ratio 0.46 / 0.76 / 0.80 intact, 2.1 / 1.44 / 3.1 damaged."""
    from dpm_core.checkpoints import DEFAULT_MODEL_PATH
    from dpm_core.guard import MAX_PROBE_RATIO, MAX_RESIDUAL_OVER_NOISE
    damaged = _damaged_copy(DEFAULT_MODEL_PATH, tmp_path)
    kspace, image, maps = birdcage_phantom(32, 32, 4, slices=1)
    phantom_mask = equispaced_mask(32, 2, num_acs=10)
    cases = {"flair": flair_scan, "phantom": (kspace * torch.from_numpy(phantom_mask).view(1, 1, 32, 1),
                                                         phantom_mask)}
    if REAL_BRAIN.exists():                                   # development data; absent on CI
        real_mask = equispaced_mask(96, 4, num_acs=24)
        cases["real"] = (load_real_brain() * torch.from_numpy(real_mask).view(1, 1, 96, 1), real_mask)
    for name, (k, mask) in cases.items():
        good = Reconstructor(sampler_options={"steps": 20}, device="cpu").reconstruct(k, mask)
        guard = good.info["output_guard"]
        assert max(guard["denoiser_probe_ratio"]) < 0.85 * MAX_PROBE_RATIO, (name, guard)
        assert max(guard["residual_over_noise"]) < MAX_RESIDUAL_OVER_NOISE / 2, (name, guard)
        with pytest.raises(ReconstructionError, match="worse than a Gaussian low-pass.*damaged or wrong model"):
            Reconstructor(model=damaged, sampler_options={"steps": 20}, device="cpu").reconstruct(k, mask)


def test_output_guard_sees_a_reconstruction_that_ignores_the_data(flair_scan):
    """A result that does not fit the measured lines (the denoiser returns a constant image and no data consistency
    runs) fails the residual check, although the constant 'denoises itself' perfectly."""
    kspace, mask = flair_scan

    class Constant:
        sigma_data = 0.5

        def __call__(self, x, sigma):
            return torch.full_like(x, 0.3)

    rec = Reconstructor(model=Constant(), sampler_options={"steps": 2, "cg_iters": 0}, device="cpu")
    with pytest.raises(ReconstructionError, match="misses the measured data"):
        rec.reconstruct(kspace, mask)


def test_progress_reports_every_sampler_step(denoiser, problem):
    """progress=callable is called after each of the sampler's steps, in slice-steps with the total known up front,
    also when the volume runs in several sampler calls (the memory budget's first call has one slice)."""
    kspace, mask, maps = problem
    for budget, expected in ((None, [(3, 12), (6, 12), (9, 12), (12, 12)]),             # 4 steps x 3 slices at once
                             ("auto", [(1, 12), (2, 12), (3, 12), (4, 12), (6, 12), (8, 12), (10, 12), (12, 12)])):
        calls = []
        Reconstructor(method="dpm", model=denoiser, sampler_options={"steps": 4}, device="cpu", output_guard=False,
                      warm_start=None, memory_budget=budget,
                      progress=lambda done, total: calls.append((done, total))).reconstruct(kspace, mask, maps=maps)
        assert calls == expected, (budget, calls)
    with pytest.raises(ValueError, match="progress"):
        Reconstructor(progress="yes")


@pytest.mark.parametrize("method", ["sense", "l1_wavelet", "dpm"])
def test_the_sampling_is_derived_once_per_reconstruction(denoiser, problem, method, monkeypatch):
    """One Sampling per reconstruction (issue 13): the ACS search runs once, and normalization, coil maps (both map
    sets and the second-map check), the operator and the noise estimate all receive it instead of re-deriving it."""
    import dpm_core.masks as masks
    kspace, mask, _ = problem
    calls = []
    original = masks.find_acs_lines
    monkeypatch.setattr(masks, "find_acs_lines", lambda m, **kw: calls.append(1) or original(m, **kw))
    rec = Reconstructor(method=method, model=denoiser, sampler_options={"steps": 2}, device="cpu",
                        output_guard=False, num_maps="auto")
    result = rec.reconstruct(kspace, mask)
    assert len(calls) == 1, len(calls)
    assert result.info["effective_acceleration"] == pytest.approx(masks.effective_acceleration(mask))
    sampling = masks.sampling_of(mask, 32)
    assert masks.sampling_of(sampling, 32) is sampling and masks.acs_of(sampling, 32) == sampling.acs
    with pytest.raises(ValueError, match="centre line"):
        masks.sampling_of(np.arange(32) % 2 == 1, 32)


# ---------------------------------------------------------------------------------------------------------------------
# warm start

def test_warm_start_schedule_is_the_tail_of_the_karras_schedule():
    """Levels <= σ_start of the Karras schedule (closed form, Karras et al. 2022 eq. 5) and its final 0."""
    from dpm_core.samplers import warm_start_sigmas
    from dpm_core.schedules import karras_sigmas
    n, lo, hi, rho = 50, 0.002, 80.0, 7.0
    closed = [(hi ** (1 / rho) + i / (n - 1) * (lo ** (1 / rho) - hi ** (1 / rho))) ** rho for i in range(n)]
    tail = warm_start_sigmas(karras_sigmas(n, lo, hi), 0.2)
    expected = [v for v in closed if v <= 0.2] + [0.0]
    np.testing.assert_allclose(tail.numpy(), expected, rtol=1e-9)
    with pytest.raises(ValueError, match="below every level"):
        warm_start_sigmas(karras_sigmas(n, lo, hi), 0.001)
    with pytest.raises(ValueError, match="warm_start"):
        Reconstructor(warm_start=0.0)


def test_warm_start_begins_at_the_sense_solution_plus_noise_of_its_sigma(denoiser, problem):
    """The first image the network sees is the regularized least-squares SENSE solution (dense numpy solve of
    (AᴴA + λ₂I) x = Aᴴy on the normalized data) plus complex noise of σ = the first level ≤ warm_start; every level
    the network sees is ≤ warm_start and their count is the NFE the result reports."""
    kspace, mask, maps = problem
    seen = []

    def recording(x, sigma):
        seen.append((x.detach().clone(), sigma.detach().clone()))
        return denoiser(x, sigma)
    recording.card = denoiser.card
    rec = Reconstructor(method="dpm", model=recording, zeta=1.0, device="cpu", output_guard=False, warm_start=0.2,
                        cg_iters=500, cg_tol=1e-10, memory_budget=None)               # all slices in one call
    res = rec.reconstruct(kspace, mask, maps=maps)
    levels = [float(s[0]) for _, s in seen]
    assert max(levels) <= 0.2 and len(levels) == res.info["nfe_per_sample"] and res.info["warm_start"] == 0.2
    s0 = levels[0]
    S, C, H, W = kspace.shape
    scale = np.asarray(res.info["scale"])
    measured = np.flatnonzero(mask)
    for s in range(S):
        E = maps[s, 0].numpy()                                               # [C, H, W] (one map set)
        F = np.fft.fftshift(np.fft.fft(np.fft.ifftshift(np.eye(H), axes=0), axis=0, norm="ortho"), axes=0)
        Fx = np.fft.fftshift(np.fft.fft(np.fft.ifftshift(np.eye(W), axes=0), axis=0, norm="ortho"), axes=0)
        F2 = np.kron(F[measured], Fx)                                         # measured rows of the 2-D DFT
        A = np.concatenate([F2 * E[c].reshape(1, -1) for c in range(C)])      # [C * lines * W, H * W]
        y = (kspace[s].numpy()[:, measured, :] / scale[s]).reshape(-1)
        x_ref = np.linalg.solve(A.conj().T @ A + 1e-3 * np.eye(H * W), A.conj().T @ y).reshape(H, W)
        support = np.abs(E).sum(0) > 0
        z = (seen[0][0][s].numpy() - x_ref)[support] / s0                    # the start's noise, per real channel
        assert abs(np.concatenate([z.real, z.imag]).std() - 1.0) < 0.1, np.concatenate([z.real, z.imag]).std()
        assert abs(z.mean()) < 0.1


def test_warm_start_runs_the_tail_of_the_fast_samplers_30_step_schedule(denoiser, problem):
    """A default warm start of the fast sampler: the levels the network sees are exactly the closed-form 30-step
    Karras levels (Karras et al. 2022 eq. 5, the denoiser's σ range) at or below σ_start; given steps override it."""
    kspace, mask, maps = problem
    lo, hi, rho = denoiser.sigma_min, denoiser.sigma_max, 7.0

    def levels_seen(**kwargs):
        seen = []

        def recording(x, sigma):
            seen.append(float(sigma.reshape(-1)[0]))
            return denoiser(x, sigma)
        recording.card, recording.sigma_min, recording.sigma_max = denoiser.card, lo, hi
        Reconstructor(method="dpm", model=recording, zeta=1.0, device="cpu", output_guard=False, warm_start=0.2,
                      memory_budget=None, progress=None, **kwargs).reconstruct(kspace[:1], mask, maps=maps[:1])
        return seen

    def closed(n):
        return [(hi ** (1 / rho) + i / (n - 1) * (lo ** (1 / rho) - hi ** (1 / rho))) ** rho for i in range(n)]
    np.testing.assert_allclose(levels_seen(), [v for v in closed(30) if v <= 0.2], rtol=1e-6)
    np.testing.assert_allclose(levels_seen(sampler_options={"steps": 50}), [v for v in closed(50) if v <= 0.2],
                               rtol=1e-6)


def test_warm_start_is_no_worse_than_the_cold_start_with_the_shipped_model(flair_reference):
    """Shipped FLAIR model, synthetic FLAIR at nominal R 4: the default warm start (8 network evaluations instead of
    50) reaches the cold start's error against the fully sampled reference (within 5 %)."""
    full, mask = flair_reference
    from dpm_core import metrics
    under = full * torch.from_numpy(mask).view(1, 1, -1, 1)
    cold = Reconstructor(warm_start=None, device="cpu", progress=None).reconstruct(under, mask)
    warm = Reconstructor(device="cpu", progress=None).reconstruct(under, mask, maps=cold.maps)
    ref = Reconstructor(method="sense").reconstruct(full, np.ones(full.shape[2], bool), maps=cold.maps).images
    e_cold, e_warm = metrics.nrmse(cold.images, ref), metrics.nrmse(warm.images, ref)
    assert warm.info["nfe_per_sample"] * 5 < cold.info["nfe_per_sample"]
    assert e_warm <= 1.05 * e_cold, (e_warm, e_cold)


def test_a_given_noise_level_is_used_per_slice_in_input_units_and_checked(denoiser, problem):
    """noise_std given per slice in the units of the k-space: recorded back unchanged (measured_noise_std) and, in
    the normalized units the sampler works in, divided by each slice's scale; non-positive values are refused. The
    calibration estimate of the same data is within 35 % of the noise added (0.01 per real channel, the fixture's):
    this phantom's calibration matrix is small (8 ACS lines, 4 coils) and its anatomy lifts the estimate (measured
    1.23-1.27 x), which is why a level known from a noise scan is passed on instead."""
    kspace, mask, maps = problem
    rec = Reconstructor(method="dpm", model=denoiser, sampler_options={"steps": 2}, zeta=1.0, device="cpu",
                        output_guard=False, warm_start=None, progress=None)
    given = rec.reconstruct(kspace, mask, maps=maps, noise_std=[0.01, 0.02, 0.03])
    assert given.info["noise_source"] == "given"
    np.testing.assert_allclose(given.info["measured_noise_std"], [0.01, 0.02, 0.03], rtol=1e-6)
    np.testing.assert_allclose(np.multiply(given.info["noise_std"], given.info["scale"]), [0.01, 0.02, 0.03],
                               rtol=1e-6)
    estimated = rec.reconstruct(kspace, mask, maps=maps)
    assert estimated.info["noise_source"] == "calibration matrix"
    np.testing.assert_allclose(estimated.info["measured_noise_std"], 0.01, rtol=0.35)
    for bad in (0.0, -1.0, float("nan"), [0.01, 0.0, 0.01], [0.01, 0.02]):
        with pytest.raises(ValueError, match="noise_std"):
            rec.reconstruct(kspace, mask, maps=maps, noise_std=bad)


# ---------------------------------------------------------------------------------------------------------------------
# Asymmetric echo: the readout samples an echo never measured are unknowns, not data

def _asymmetric(full: torch.Tensor, mask: np.ndarray, fraction: float):
    """The R-accelerated k-space of ``full`` [S, C, H, W] with the first (1 - fraction) of every readout never
    measured (zero, as the assembly pads it), and its readout mask [W]."""
    W = full.shape[-1]
    readout = np.zeros(W, bool)
    readout[W - int(fraction * W):] = True
    under = full * torch.from_numpy(mask).view(1, 1, -1, 1) * torch.from_numpy(readout).view(1, 1, 1, W)
    return under, readout


@pytest.mark.parametrize("method", ["l1_wavelet", "dpm"])
def test_an_asymmetric_echo_is_filled_where_it_was_not_measured(flair_reference, method):
    """Synthetic FLAIR at nominal R 4 with an 80 % echo: given the readout mask, L1-wavelet and the DPM fill the 20 %
    of the readout that was never measured (its k-space is no longer held at zero) and come closer to the fully
    sampled image (RSS of the fully sampled coil images) than with the padded zeros taken as data (measured: L1
    0.0762 -> 0.0484, DPM 0.0716 -> 0.053 on a 128² subject)."""
    from dpm_core import metrics
    from dpm_core.combine import rss
    from dpm_core.fft import fft2c, ifft2c
    full, mask = flair_reference
    under, readout = _asymmetric(full, mask, 0.8)
    ref = rss(ifft2c(full)).numpy()
    rec = Reconstructor(method=method, device="cpu", progress=None)
    as_zeros = rec.reconstruct(under, mask)
    filled = rec.reconstruct(under, mask, maps=as_zeros.maps, readout=readout)
    assert filled.info["readout_fraction"] == pytest.approx(readout.mean()) and "readout_fraction" not in as_zeros.info
    coil_k = fft2c(torch.from_numpy(filled.images).unsqueeze(1) * torch.from_numpy(filled.maps[:, 0]))
    unmeasured = coil_k[..., ~readout].abs().square().sum() / coil_k.abs().square().sum()
    assert unmeasured > 1e-4, float(unmeasured)
    e_zeros, e_filled = metrics.nrmse(np.abs(as_zeros.images), ref), metrics.nrmse(np.abs(filled.images), ref)
    assert e_filled < 0.85 * e_zeros, (e_filled, e_zeros)


def test_an_asymmetric_echo_leaves_the_noise_level_and_the_l1_rule_as_with_the_whole_echo(flair_reference):
    """The noise level from the calibration matrix and L1's k-space edge level read only measured readout samples:
    with a 75 % echo the noise estimate is within 5 % of the whole echo's on the same data (the padded zeros taken
    as samples lower it), and the edge level stays above zero (over the zeros its median was 0: λ 0, L1 = SENSE)."""
    from dpm_core.baselines import measured_edge_level
    from dpm_core.masks import sampling_of
    from dpm_core.noise import estimate_noise_std
    from dpm_core.operators import SenseOp
    full, mask = flair_reference
    H = full.shape[2]
    under, readout = _asymmetric(full, mask, 0.75)
    whole = full * torch.from_numpy(mask).view(1, 1, -1, 1)
    lines, echo = sampling_of(mask, H), sampling_of(mask, H, readout)
    reference = estimate_noise_std(whole, lines)
    assert torch.allclose(estimate_noise_std(under, echo), reference, rtol=0.05)
    assert bool(torch.all(estimate_noise_std(under, lines) < 0.95 * reference))
    maps = torch.ones(full.shape[0], 1, full.shape[1], H, full.shape[3], dtype=torch.complex64)
    edge_whole = measured_edge_level(whole, SenseOp(maps, lines))
    edge_echo = measured_edge_level(under, SenseOp(maps, echo))
    edge_zeros = measured_edge_level(under, SenseOp(maps, lines))
    assert bool(torch.all(edge_echo > 0.5 * edge_whole)) and bool(torch.all(edge_zeros < 0.1 * edge_whole))


def test_a_readout_mask_that_is_no_asymmetric_echo_is_refused(flair_reference):
    full, mask = flair_reference
    W = full.shape[-1]
    gaps = np.ones(W, bool)
    gaps[::7] = False
    with pytest.raises(ValueError, match="only an asymmetric echo"):
        Reconstructor(method="sense", device="cpu").reconstruct(full * torch.from_numpy(mask).view(1, 1, -1, 1), mask,
                                                                readout=gaps)
    with pytest.raises(ValueError, match="readout mask has 5 samples"):
        Reconstructor(method="sense", device="cpu").reconstruct(full * torch.from_numpy(mask).view(1, 1, -1, 1), mask,
                                                                readout=np.ones(5, bool))


@pytest.mark.parametrize("sampler,options", [("fast", {"steps": 4}), ("dps", {"steps": 3}), ("ald", {"steps": 2}),
                                             ("dds_lora", {"steps": 4}), ("dds_ssl", {"steps": 4}),
                                             ("pnp", {"steps": 3})])
def test_every_sampler_takes_an_asymmetric_echo(denoiser, problem, sampler, options):
    """Every registered sampler (and its ζ rule) runs with a readout mask, and the data it is consistent with are the
    measured samples only: its image differs from the padded-zeros-as-data run, and its k-space at the measured
    samples is closer to the data than at the unmeasured ones is to zero."""
    from dpm_core.fft import fft2c
    kspace, mask, maps = problem
    W = kspace.shape[-1]
    readout = np.arange(W) >= W // 4
    echo = kspace * torch.from_numpy(readout).view(1, 1, 1, W)
    rec = Reconstructor(method="dpm", model=denoiser, sampler=sampler, sampler_options=options, device="cpu",
                        output_guard=False, zeta="auto")
    masked = rec.reconstruct(echo, mask, maps=maps, readout=readout)
    zeros = rec.reconstruct(echo, mask, maps=maps)
    assert np.isfinite(masked.images).all() and masked.info["readout_fraction"] == pytest.approx(0.75)
    assert np.abs(masked.images - zeros.images).max() > 1e-3 * np.abs(zeros.images).max()
    coil_k = fft2c(torch.from_numpy(masked.images).unsqueeze(1) * maps[:, 0])
    lines = torch.from_numpy(mask).view(1, 1, -1, 1)
    measured = (coil_k - echo)[..., readout] * lines
    unmeasured = coil_k[..., ~readout] * lines
    assert measured.abs().square().sum() < unmeasured.abs().square().sum()


def test_time_budget_stops_the_dpm_where_its_projected_finish_passes_the_budget(monkeypatch):
    """The sampling check on a clock the test sets: the volume starts at 0 s, sampling at 10 s, 100 slice-steps, a
    100 s budget. 10 steps by 15 s project an end at 10 + 5 / 0.1 = 60 s: it goes on; 20 steps by 40 s project
    10 + 30 / 0.2 = 160 s: ReconstructionError naming the projection. Before 10 % of the steps nothing is projected
    (5 steps by 40 s would say 610 s), and an elapsed time past the budget stops it at any fraction."""
    import dpm_core.reconstruct as reconstruct_module

    clock = [10.0]
    monkeypatch.setattr(reconstruct_module.time, "perf_counter", lambda: clock[0])
    recon = Reconstructor(method="sense", time_budget=100.0, device="cpu")

    def steps(n):
        return {"x": torch.zeros(n, 1, 2, 2)}

    def at(seconds, n, check):
        clock[0] = seconds
        check(steps(n))

    seen = []
    check = recon._budget_callback(lambda state: seen.append(int(state["x"].shape[0])), t_start=0.0, total=100)
    at(15.0, 10, check)                                            # 10 % by 15 s: ends at about 60 s
    with pytest.raises(ReconstructionError, match=r"time budget of 100 s.*20% of its sampling steps.*about 160.0 s"):
        at(40.0, 10, check)
    assert seen == [10, 10]                                        # the progress report still ran first

    clock[0] = 10.0
    check = recon._budget_callback(None, t_start=0.0, total=100)
    at(40.0, 5, check)                                             # 5 %: not projected yet
    with pytest.raises(ReconstructionError, match="10% of its sampling steps"):
        at(41.0, 5, check)                                         # 10 % by 41 s: about 320 s
    clock[0] = 10.0
    check = recon._budget_callback(None, t_start=0.0, total=100)
    with pytest.raises(ReconstructionError, match="after 101.0 s"):
        at(101.0, 1, check)                                        # the budget itself is spent


def test_time_budget_sends_the_fallback_in_time(flair_scan):
    """A budget spent before the DPM could sample (1 µs) is a ReconstructionError that names it, and without a
    budget the same volume reconstructs; in the pipeline it becomes the flagged SENSE fallback (tests/test_malformed,
    'time budget spent')."""
    kspace, mask = flair_scan
    with pytest.raises(ReconstructionError, match=r"time budget of 1e-06 s per volume spent after the coil maps"):
        Reconstructor(sampler_options={"steps": 5}, device="cpu", time_budget=1e-6).reconstruct(kspace, mask)
    with pytest.raises(ValueError, match="time_budget must be a positive number"):
        Reconstructor(time_budget=0)
