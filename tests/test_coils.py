"""Coil maps (ESPIRiT fast vs sigpy) and coil preprocessing.

Agreement metric for two map sets S_a, S_b [S, 1, C, H, W] (both unit-norm over coils inside their support, same
phase convention): per pixel |<S_a(r), S_b(r)>| = |sum_c S_a,c conj(S_b,c)| (phase-insensitive, 1 = identical up to
phase), required >= 0.98 at every pixel of the object (signal above 10 % of the max of the RSS image) where both
eigenvalues exceed crop, and the eigenvalue supports (eigenvalue > crop) must agree on >= 98 % of the pixels.
For soft-SENSE (M = 2) maps only the subspace spanned per pixel matters, so 2-map results are compared via the
projector P(r) = sum_m S_m S_m^H.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

from benchmarks import bart
from benchmarks.bench_real import fold_phase_fov   # the folded cases of the benchmarks, built alike
from dpm_core import coils
from dpm_core.baselines import sense_cg
from dpm_core.combine import rss
from dpm_core.fft import fft2c, ifft2c
from dpm_core.masks import equispaced_mask
from dpm_core.normalize import normalization_scale
from dpm_core.operators import combine_map_images

from .conftest import birdcage_phantom


def _agreement(maps_a, eig_a, maps_b, eig_b, obj, crop=0.95):
    """(min |<S_a, S_b>| over object ∩ both supports, fraction of pixels where the supports agree)."""
    ip = (maps_a[:, 0] * maps_b[:, 0].conj()).sum(1).abs()                    # [S, H, W]
    sup_a, sup_b = eig_a[:, 0] > crop, eig_b[:, 0] > crop
    region = sup_a & sup_b & obj
    assert region.float().mean() > 0.2, "test region unexpectedly small"
    return float(ip[region].min()), float((sup_a == sup_b).float().mean())


def _nrmse(x, ref):
    return float(torch.linalg.vector_norm(x - ref) / torch.linalg.vector_norm(ref))


def _folded_phantom(height=64, width=64, coils_=8, extent=1.2):
    """k-space [1, C, H, W] of a phantom `extent` times the FOV in the phase direction (H), folded into the FOV.

    The object and birdcage maps live on a 2H grid; sampling k-space with the spacing of an H-pixel FOV sums image rows
    H apart (aliasing), which we do directly in image space.
    """
    import sigpy as sp
    import sigpy.mri as mr
    Hb = 2 * height
    h = int(round(extent * height)) // 2 * 2
    obj = np.zeros((Hb, width), np.complex64)
    obj[Hb // 2 - h // 2: Hb // 2 + h // 2] = sp.shepp_logan((h, width))
    mps = mr.birdcage_maps((coils_, Hb, width), r=1.0).astype(np.complex64)
    big = mps * obj                                                              # centre of the big FOV at row Hb // 2
    # Row Y of the big grid is position Y - Hb//2; in the small FOV position p sits at row (p + H//2) mod H.
    small = np.roll(big.reshape(coils_, 2, height, width).sum(1), height // 2, axis=1)
    return fft2c(torch.from_numpy(small))[None]


# --------------------------------------------------------------------------------------------------------------------
# Calibration region

def test_calibration_width_from_mask_and_errors():
    mask = equispaced_mask(96, 4, num_acs=24)                                    # line 60 extends the block to 36..60
    assert coils.MAX_CALIB_WIDTH == 24                                            # BART ecalib's -r 24
    assert coils.calibration_width((1, 8, 96, 80), mask) == 24                    # the 25-line run, capped
    assert coils.calibration_width((1, 8, 96, 80), mask, num_acs=30) == 25        # the run itself
    assert coils.calibration_width((1, 8, 96, 80), mask, num_acs=16) == 16
    assert coils.calibration_width((1, 8, 96, 80), None) == 24
    assert coils.calibration_width((1, 8, 96, 80), None, num_acs=20) == 20
    # Fully sampled mask: capped.
    assert coils.calibration_width((1, 8, 96, 80), np.ones(96, bool)) == coils.MAX_CALIB_WIDTH
    # Asymmetric block around the centre: the widest centred block inside it.
    m = np.zeros(96, bool)
    m[40:60] = True                                                               # centre 48: 8 below, 12 above
    n = coils.calibration_width((1, 8, 96, 80), m)
    assert n == 17 and 48 - n // 2 >= 40 and 48 - n // 2 + n <= 60
    k = torch.zeros(1, 4, 32, 32, dtype=torch.complex64)
    with pytest.raises(ValueError, match="too narrow"):
        coils.espirit_fast(k, num_acs=6, kernel_width=6)
    with pytest.raises(ValueError, match="num_maps"):
        coils.espirit_fast(k, num_acs=16, num_maps=3)
    with pytest.raises(ValueError, match=r"\[S, C, H, W\]"):
        coils.espirit_fast(torch.zeros(4, 32, 32, dtype=torch.complex64))
    with pytest.raises(ValueError, match="not sampled"):
        coils.espirit_fast(torch.ones(1, 4, 32, 32, dtype=torch.complex64), np.zeros(32, bool))


# --------------------------------------------------------------------------------------------------------------------
# ESPIRiT: fast vs sigpy vs truth

def test_fast_agrees_with_sigpy_and_truth_on_birdcage_phantom():
    kspace, image, true_maps = birdcage_phantom(64, 64, coils=8, slices=2)
    kspace = kspace + 1e-3 * torch.randn(kspace.shape, dtype=torch.complex64, generator=torch.Generator().manual_seed(0))
    mask = equispaced_mask(64, 3, num_acs=20)
    ku = kspace * torch.from_numpy(mask).view(1, 1, 64, 1)
    opts = dict(kernel_width=5, threshold=0.02, crop=0.95)                      # k = 5 keeps sigpy's kernel loop short
    # grid_size 32 < 64 so that the interpolation is exercised; two slices in one batch.
    fast, eig_f = coils.espirit_fast(ku, mask, grid_size=32, return_eigenvalues=True, **opts)
    assert fast.shape == (2, 1, 8, 64, 64) and fast.dtype == torch.complex64
    # Slices are independent: the batched result equals the single-slice one.
    assert torch.allclose(coils.espirit_fast(ku[1:], mask, grid_size=32, **opts), fast[1:], atol=1e-4)
    ref, eig_r = coils.espirit_sigpy(ku[:1], mask, return_eigenvalues=True, **opts)   # sigpy is slow: one slice
    obj = image.abs() > 0.1 * image.abs().amax()
    ip_min, support = _agreement(fast[:1], eig_f[:1], ref, eig_r, obj[:1])
    assert ip_min >= 0.98 and support >= 0.98, (ip_min, support)
    # Unit norm over coils inside the support, zero outside.
    norm = torch.linalg.vector_norm(fast[:, 0], dim=1)
    inside = eig_f[:, 0] > 0.95
    assert torch.allclose(norm[inside], torch.ones(()), atol=1e-4) and float(norm[~inside].abs().max()) == 0
    # Phase convention: projection on the virtual coil is real and non-negative, for both.
    u = coils.virtual_coil(coils.calibration_block(ku, 20))
    for m in (fast, ref):
        proj = torch.einsum("sc,schw->shw", u[:len(m)].conj(), m[:, 0])
        assert float(proj.imag.abs().max()) < 1e-4 and float(proj.real.min()) > -1e-4
    # The maps are the true coil sensitivities (up to a phase per pixel) inside the object.
    ip_true = (fast[:, 0] * true_maps[:, 0].conj()).sum(1).abs()
    assert float(ip_true[obj].min()) > 0.99


@pytest.mark.parametrize("size,acs", [(24, 8), (32, 12), (32, 32), (48, 24), (64, 40), (64, 64)])
def test_fast_agrees_with_sigpy_over_matrix_sizes_and_acs_widths(size, acs):
    """Small matrices, narrow, wide and full ACS blocks (acs = size: fully sampled k-space): the fast maps are
    sigpy's ESPIRiT maps (inner product >= 0.98 inside the object, supports agree), and SENSE with either gives the
    same image — so the fast path never needs to hand over to the exact one on these inputs."""
    from dpm_core.baselines import sense_cg
    kspace, image, _ = birdcage_phantom(size, size, coils=8, slices=1)
    kspace = kspace + 1e-3 * torch.randn(kspace.shape, dtype=torch.complex64, generator=torch.Generator().manual_seed(1))
    mask = equispaced_mask(size, 2, num_acs=acs) if acs < size else np.ones(size, dtype=bool)
    ku = kspace * torch.from_numpy(mask).view(1, 1, size, 1)
    opts = dict(kernel_width=5, threshold=0.02, crop=0.95)
    fast, eig_f = coils.espirit_fast(ku, mask, return_eigenvalues=True, **opts)
    ref, eig_r = coils.espirit_sigpy(ku, mask, return_eigenvalues=True, **opts)
    ip_min, support = _agreement(fast, eig_f, ref, eig_r, image.abs() > 0.1 * image.abs().amax())
    assert ip_min >= 0.98 and support >= 0.97, (ip_min, support)
    x_fast, x_ref = (sense_cg(ku, mask, m, 50, 1e-3)[:, 0] for m in (fast, ref))
    assert _nrmse(x_fast.abs(), x_ref.abs()) < 0.01


def test_fast_agrees_with_sigpy_on_real_brain_and_sense_matches(real_brain_kspace):
    k = real_brain_kspace                                                           # [1, 16, 96, 96]
    mask = equispaced_mask(96, 3, num_acs=24)
    ku = k * torch.from_numpy(mask).view(1, 1, 96, 1)
    fast, eig_f = coils.espirit_fast(ku, mask, return_eigenvalues=True)
    ref, eig_r = coils.espirit_sigpy(ku, mask, return_eigenvalues=True)
    full = rss(ifft2c(k))
    obj = full > 0.1 * full.amax()
    ip_min, support = _agreement(fast, eig_f, ref, eig_r, obj)
    assert ip_min >= 0.98 and support >= 0.98, (ip_min, support)
    # Acceptance: SENSE with fast maps within 5 % NRMSE of SENSE with sigpy maps (and both close to the truth).
    scale = normalization_scale(ku, mask).view(-1, 1, 1, 1)
    x_fast = combine_map_images(sense_cg(ku / scale, mask, fast, num_iters=30)).abs()
    x_ref = combine_map_images(sense_cg(ku / scale, mask, ref, num_iters=30)).abs()
    assert _nrmse(x_fast, x_ref) < 0.05
    support_r = eig_r[:, 0] > 0.95
    truth = full / scale.view(-1, 1, 1)
    assert _nrmse(x_fast * support_r, truth * support_r) < 1.05 * _nrmse(x_ref * support_r, truth * support_r) + 1e-3


# --------------------------------------------------------------------------------------------------------------------
# Two map sets: folded FOV

def test_second_map_detects_folding_and_fixes_sense():
    mask = equispaced_mask(64, 2, num_acs=16)
    mask_t = torch.from_numpy(mask).view(1, 1, 64, 1)
    # Normal FOV (object fits): no energy in the second map, for both implementations.
    normal = _folded_phantom(extent=0.9)
    for method in ("fast", "sigpy"):
        maps = coils.estimate_coil_maps(normal * mask_t, mask, method=method, num_maps=2, num_acs=16)
        assert maps.shape[1] == 2
        assert float(coils.second_map_energy(maps, normal * mask_t, mask)) < 0.2 * coils.SECOND_MAP_ENERGY_THRESHOLD
        assert not bool(coils.needs_second_map(maps, normal * mask_t, mask).any())
    auto = coils.estimate_coil_maps(normal * mask_t, mask, num_maps="auto", num_acs=16)
    assert auto.shape[1] == 1
    # FOV 1/1.2 of the object in the phase direction: anatomy folds in, the second map carries it.
    k = _folded_phantom(extent=1.2)
    ku = k * mask_t
    m2_fast, e_fast = coils.espirit_fast(ku, mask, num_acs=16, num_maps=2, grid_size=32, return_eigenvalues=True)
    m2_ref, e_ref = coils.espirit_sigpy(ku, mask, num_acs=16, num_maps=2, return_eigenvalues=True)
    for maps in (m2_fast, m2_ref):
        assert float(coils.second_map_energy(maps, ku, mask)) > 2 * coils.SECOND_MAP_ENERGY_THRESHOLD
        assert bool(coils.needs_second_map(maps, ku, mask).all())
    assert coils.estimate_coil_maps(ku, mask, num_maps="auto", num_acs=16).shape[1] == 2
    # auto decides from the coarse grid's second eigenvalue, before any map: its energy is sigpy's exact one.
    for kspace in (normal * mask_t, ku):
        count, coarse = coils.choose_num_maps(kspace, mask, num_acs=16)
        exact = coils.second_map_energy(coils.espirit_sigpy(kspace, mask, num_acs=16, num_maps=2), kspace, mask)
        assert count == (2 if kspace is ku else 1)
        assert abs(float(coarse[0]) - float(exact[0])) <= 0.05 * float(exact[0]) + 1e-3
    # Same soft-SENSE subspace per pixel: projectors P = sum_m S_m S_m^H agree where both supports agree.
    proj = lambda m: torch.einsum("smchw,smdhw->shwcd", m, m.conj())
    same = ((e_fast > 0.95) == (e_ref > 0.95)).all(dim=1)
    diff = torch.linalg.matrix_norm(proj(m2_fast) - proj(m2_ref))                   # [S, H, W] Frobenius
    assert float(diff[same].max()) < 0.2 and float(same.float().mean()) > 0.97
    # 1-map SENSE breaks (worse than zero-filled); 2-map SENSE recovers the folded image.
    truth = rss(ifft2c(k))
    def fit(img):
        a = (img * truth).sum() / (img * img).sum()
        return _nrmse(a * img, truth)
    scale = normalization_scale(ku, mask).view(-1, 1, 1, 1)
    err_1 = fit(combine_map_images(sense_cg(ku / scale, mask, m2_fast[:, :1].contiguous(), num_iters=30)).abs())
    err_2 = fit(combine_map_images(sense_cg(ku / scale, mask, m2_fast, num_iters=30)).abs())
    err_zf = fit(rss(ifft2c(ku)))
    assert err_1 > err_zf * 0.6 and err_2 < 0.5 * err_1 and err_2 < 0.08, (err_1, err_2, err_zf)


@pytest.mark.parametrize("extent", [0.9, 1.2])
def test_auto_maps_from_one_calibration_equal_the_two_step_path(extent):
    # auto_coil_maps shares the coarse calibration between the decision and the maps; the result must be exactly
    # choose_num_maps' count and energy and estimate_coil_maps' maps for that count, for both implementations.
    mask = equispaced_mask(64, 2, num_acs=16)
    ku = _folded_phantom(extent=extent) * torch.from_numpy(mask).view(1, 1, 64, 1)
    count, energy = coils.choose_num_maps(ku, mask, num_acs=16)
    assert count == (2 if extent > 1 else 1)
    for method in ("fast", "sigpy"):
        maps, auto_energy = coils.auto_coil_maps(ku, mask, method=method, num_acs=16)
        assert torch.equal(auto_energy, energy)
        assert torch.equal(maps, coils.estimate_coil_maps(ku, mask, method=method, num_maps=count, num_acs=16))


def test_estimate_coil_maps_dispatch_and_device():
    kspace, _, _ = birdcage_phantom(32, 32, coils=4, slices=1)
    maps = coils.estimate_coil_maps(kspace, None, method="fast", num_acs=16, kernel_width=4)
    assert maps.shape == (1, 1, 4, 32, 32) and maps.dtype == torch.complex64
    with pytest.raises(ValueError, match="unknown coil-map method"):
        coils.estimate_coil_maps(kspace, None, method="bart")
    if torch.cuda.is_available():
        gpu = coils.espirit_fast(kspace.cuda(), None, num_acs=16, kernel_width=4)
        assert gpu.device.type == "cuda"
        assert float((gpu.cpu()[:, 0] * maps[:, 0].conj()).sum(1).abs()[maps[:, 0].abs().sum(1) > 0].min()) > 0.999


# --------------------------------------------------------------------------------------------------------------------
# Preprocessing

def test_prewhitening_makes_correlated_noise_white():
    C, N = 8, 40000
    g = torch.Generator().manual_seed(1)
    mix = torch.randn(C, C, dtype=torch.complex64, generator=g) + 2 * torch.eye(C)
    white = lambda n: torch.randn(C, n, dtype=torch.complex64, generator=g)
    noise_cal = mix @ white(N)                                                       # correlated noise scan
    cov = coils.noise_covariance(noise_cal)
    assert cov.shape == (C, C) and float((cov - cov.conj().T).abs().max()) < 1e-4
    assert float(torch.linalg.matrix_norm(cov - mix @ mix.conj().T) / torch.linalg.matrix_norm(mix @ mix.conj().T)) < 0.05
    W = coils.whitening_matrix(cov)
    # Fresh noise through the same channels, whitened: covariance ~ I. Sample covariance error ~ 1/sqrt(N) = 0.005.
    test_noise = (mix @ white(N)).reshape(1, C, 200, 200)
    whitened = coils.prewhiten(test_noise, W)
    cov_w = coils.noise_covariance(whitened[0])
    assert float((cov_w - torch.eye(C)).abs().max()) < 0.03
    # Correlation before whitening is far from that.
    assert float((cov - torch.eye(C)).abs().max()) > 1.0
    # noise [C, N] with coil_dim=0 is the same operation.
    assert torch.allclose(coils.prewhiten(noise_cal[:, :10], W, coil_dim=0), W @ noise_cal[:, :10], atol=1e-4)
    with pytest.raises(ValueError, match="positive definite"):
        coils.whitening_matrix(torch.zeros(C, C, dtype=torch.complex64))
    with pytest.raises(ValueError, match="coils"):
        coils.prewhiten(test_noise, W[:4, :4])


@pytest.mark.parametrize("width,factor", [(128, 2), (66, 2), (96, 3)])
def test_remove_readout_oversampling_keeps_centre_of_image(width, factor):
    g = torch.Generator().manual_seed(2)
    k = torch.randn(2, 3, 20, width, dtype=torch.complex64, generator=g)
    out = coils.remove_readout_oversampling(k, factor)
    Wn = width // factor
    assert out.shape == (2, 3, 20, Wn) and out.dtype == torch.complex64
    # numpy reference: centred 1-D inverse FFT along the readout, crop the centre, compare images.
    img = np.fft.fftshift(np.fft.ifft(np.fft.ifftshift(k.numpy(), axes=-1), axis=-1, norm="ortho"), axes=-1)
    start = width // 2 - Wn // 2
    img_ref = img[..., start:start + Wn]
    img_out = np.fft.fftshift(np.fft.ifft(np.fft.ifftshift(out.numpy(), axes=-1), axis=-1, norm="ortho"), axes=-1)
    assert np.allclose(img_out, img_ref, atol=1e-5)
    # And in 2-D with the package FFT: the image of the result is the central columns of the full image.
    assert torch.allclose(ifft2c(out), ifft2c(k)[..., start:start + Wn], atol=1e-5)
    with pytest.raises(ValueError, match="divisible"):
        coils.remove_readout_oversampling(k[..., :width - 1], factor)


def test_coil_compress_keeps_energy_of_low_rank_data():
    kspace, _, _ = birdcage_phantom(32, 32, coils=8, slices=2)
    g = torch.Generator().manual_seed(3)
    # 8 physical channels that are mixtures of 3 underlying coils: 3 virtual coils hold everything.
    mix = torch.randn(8, 3, dtype=torch.complex64, generator=g)
    k8 = torch.einsum("cv,svhw->schw", mix, kspace[:, :3])
    comp, A = coils.coil_compress(k8, 3)
    assert comp.shape == (2, 3, 32, 32) and A.shape == (2, 3, 8)
    assert torch.allclose(A @ A.conj().transpose(1, 2), torch.eye(3, dtype=A.dtype).expand(2, 3, 3), atol=1e-5)
    assert abs(float(comp.norm() / k8.norm()) - 1) < 1e-4
    # With a mask: calibrate on the measured lines only, same subspace.
    mask = equispaced_mask(32, 2, num_acs=8)
    comp_m, A_m = coils.coil_compress(k8 * torch.from_numpy(mask).view(1, 1, 32, 1), 3, mask)
    assert abs(float((A_m @ k8.flatten(2)).norm() / k8.norm()) - 1) < 1e-4
    # Fewer virtual coils than the rank loses energy, but keeps the most.
    comp1, _ = coils.coil_compress(k8, 1)
    assert 0.3 < float(comp1.norm() / k8.norm()) < 1
    with pytest.raises(ValueError, match="num_virtual"):
        coils.coil_compress(k8, 9)


def test_map_set_basis_is_ecalibs_orthogonal_iteration():
    """map_set_basis against ecalib's algorithm written out in numpy: n products with the full C x C matrix from the
    unit vectors of coils 1 and 0, Gram-Schmidt in that order (its map 0 from coil 1). Well-separated eigenvalues give
    the eigenvectors; equal ones the projections of the start vectors."""
    rng = np.random.default_rng(3)
    C, n = 6, coils.MAP_BASIS_ITERATIONS
    cases = []
    for lam1, lam2 in ((1.0, 0.3), (0.999, 0.99), (1.0, 1.0), (0.95, 0.9)):
        Q, _ = np.linalg.qr(rng.normal(size=(C, C)) + 1j * rng.normal(size=(C, C)))
        ev = np.array([lam1, lam2, 0.2, 0.1, 0.05, 0.01])
        cases.append((Q * ev) @ Q.conj().T)
    A = np.stack(cases)                                                              # [4, C, C]
    ev, V = np.linalg.eigh(A)
    ev, V = ev[:, ::-1][:, :2].copy(), V[:, :, ::-1][:, :, :2].copy()
    got = coils.map_set_basis(torch.from_numpy(V), torch.from_numpy(ev)).numpy()     # [4, C, 2]
    for i in range(1, len(A)):           # (case 0: 0.3^n is below float64's precision for the written-out iteration)
        Y = np.linalg.matrix_power(A[i], n)[:, [1, 0]]                               # A^n [e_1, e_0]
        q0 = Y[:, 0] / np.linalg.norm(Y[:, 0])
        q1 = Y[:, 1] - (q0.conj() @ Y[:, 1]) * q0
        q1 /= np.linalg.norm(q1)
        for m, q in enumerate((q0, q1)):
            # up to phase, and up to the leak of the 3rd eigenvector (0.2 / lambda)^n that ecalib keeps and we drop
            assert abs(abs(q.conj() @ got[i, :, m]) - 1) < 1e-5, (i, m)
        assert np.allclose(got[i].conj().T @ got[i], np.eye(2), atol=1e-6)
    # Well separated (case 0): the eigenvectors themselves, up to phase.
    assert np.allclose(np.abs((V[0].conj() * got[0]).sum(0)), 1, atol=1e-6)
    # One map: unchanged.
    assert torch.equal(coils.map_set_basis(torch.from_numpy(V[:, :, :1]), torch.from_numpy(ev[:, :1])),
                       torch.from_numpy(V[:, :, :1]))


@pytest.mark.skipif(not bart.available(), reason="bart is not on PATH (./run.sh installs it)")
def test_two_map_sets_are_bart_ecalibs_maps_on_a_folded_phantom():
    """Both implementations return BART ecalib -m 2's map sets pixel by pixel (not only their subspace) in the overlap
    of a folded FOV (308 pixels with two map sets), where the exact eigenvectors are not ecalib's basis: with them
    |<S_m, S_bart,m>| has its 1st percentile at 0.925, with map_set_basis at 0.998."""
    mask = equispaced_mask(64, 2, num_acs=16)
    ku = _folded_phantom(extent=1.2) * torch.from_numpy(mask).view(1, 1, 64, 1)
    ref, _, _ = bart.ecalib(ku[0].numpy(), num_maps=2, calib_size=16)             # [2, C, H, W]
    both = (np.abs(ref).sum(1) > 0).all(0)                                          # two map sets in both
    for method in ("fast", "sigpy"):
        maps = coils.estimate_coil_maps(ku, mask, method=method, num_maps=2, num_acs=16)[0].numpy()
        assert ((np.abs(maps).sum(1) > 0).all(0) == both).mean() > 0.99
        region = both & (np.abs(maps).sum(1) > 0).all(0)
        assert region.sum() > 250
        for m in range(2):
            agreement = np.abs((maps[m] * ref[m].conj()).sum(0))[region]
            print(f"{method} map set {m}: |<S, S_bart>| 1st percentile {np.percentile(agreement, 1):.4f}")
            assert np.percentile(agreement, 1) > 0.99 and np.median(agreement) > 0.999, (method, m)


def test_refine_eigen_two_maps_matches_eigh_including_diagonal_cases():
    g = torch.Generator().manual_seed(4)
    A = torch.randn(200, 2, 2, dtype=torch.complex64, generator=g)
    A = A @ A.conj().transpose(1, 2)
    A[:2] = torch.diag_embed(torch.tensor([[2.0, 1.0], [1.0, 2.0]])).to(A.dtype)    # already diagonal, both orders
    X = torch.eye(2, dtype=torch.complex64).expand(200, 2, 2).clone()
    e, v = coils._refine_eigen(A, X, iters=0)                                       # pure Rayleigh-Ritz on A itself
    e_ref = torch.linalg.eigvalsh(A).flip(-1)
    assert torch.allclose(e, e_ref, atol=1e-4)
    assert float((A @ v - v * e[:, None, :]).abs().max()) < 1e-4
    assert torch.allclose(v.conj().transpose(1, 2) @ v, torch.eye(2, dtype=v.dtype).expand(200, 2, 2), atol=1e-5)


@pytest.mark.parametrize("lines,folded", [(96, False), (80, True), (72, True), (48, True)])
def test_map_detection_on_real_slice_with_cut_phase_fov(real_brain_kspace, lines, folded):
    """The head spans 80 of 96 rows: 96 lines is unfolded, 80 and fewer fold. auto keeps 2 maps exactly when folded
    (signal-weighted second-map energy: 0.0000 unfolded, >= 0.07 folded), at nominal R = 2 and 4."""
    k = fold_phase_fov(real_brain_kspace, lines)
    for R in (2, 4):
        mask = equispaced_mask(lines, R, num_acs=24)
        under = k * torch.from_numpy(mask).view(1, 1, lines, 1)
        maps2 = coils.estimate_coil_maps(under, mask, num_maps=2)
        energy = float(coils.second_map_energy(maps2, under, mask)[0])
        print(f"phase FOV {lines}/96 lines, R={R}: second-map energy {energy:.4f}")
        assert coils.estimate_coil_maps(under, mask, num_maps="auto").shape[1] == (2 if folded else 1)
        count, coarse = coils.choose_num_maps(under, mask)          # the energy auto thresholds, from the coarse grid
        assert count == (2 if folded else 1)
        assert abs(float(coarse[0]) - energy) <= 0.02 * energy + 1e-4
        if folded:
            assert energy > 1.2 * coils.SECOND_MAP_ENERGY_THRESHOLD
        else:
            assert energy < 0.02 * coils.SECOND_MAP_ENERGY_THRESHOLD
