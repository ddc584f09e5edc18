"""Classical baselines and the Reconstructor on real and phantom data (issue 2 acceptance numbers)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from dpm_core import baselines, metrics
from dpm_core.cg import conjugate_gradient
from dpm_core.combine import rss
from dpm_core.fft import ifft2c
from dpm_core.masks import equispaced_mask
from dpm_core.normalize import normalization_scale
from dpm_core.operators import combine_map_images
from dpm_core.noise import kspace_edge_level
from dpm_core.reconstruct import Reconstructor
from tests.conftest import birdcage_phantom


def _real_problem(real_brain_kspace, R):
    """Normalized real slice, its RSS reference, an equispaced + 24 ACS mask and the undersampled k-space."""
    k = real_brain_kspace / normalization_scale(real_brain_kspace, None).view(-1, 1, 1, 1)
    H = k.shape[2]
    mask = equispaced_mask(H, R, num_acs=24)
    return k, rss(ifft2c(k)), mask, k * torch.from_numpy(mask).view(1, 1, H, 1)


@pytest.fixture(scope="module")
def real_maps(real_brain_kspace):
    from dpm_core.coils import estimate_coil_maps
    k, _, mask, under = _real_problem(real_brain_kspace, 2)
    return {name: estimate_coil_maps(under, mask, method=name, num_maps=1) for name in ("sigpy", "fast")}


def test_sense_cg_halves_zero_filled_error_at_R2_on_real_brain(real_brain_kspace, real_maps):
    _, ref, mask, under = _real_problem(real_brain_kspace, 2)
    zf = metrics.nrmse(baselines.zero_filled(under, mask), ref)
    sense = metrics.nrmse(combine_map_images(baselines.sense_cg(under, mask, real_maps["sigpy"])), ref)
    print(f"real slice R=2: zero-filled NRMSE {zf:.4f}, SENSE-CG {sense:.4f}")
    assert sense <= 0.5 * zf


def test_l1_wavelet_beats_sense_at_R4_on_real_brain(real_brain_kspace, real_maps):
    _, ref, mask, under = _real_problem(real_brain_kspace, 4)
    sense = metrics.nrmse(combine_map_images(baselines.sense_cg(under, mask, real_maps["sigpy"])), ref)
    edge = kspace_edge_level(under, mask)                                            # the per-scan λ rule's input
    l1 = metrics.nrmse(combine_map_images(baselines.l1_wavelet(under, mask, real_maps["sigpy"], edge_level=edge)), ref)
    print(f"real slice R=4: SENSE-CG NRMSE {sense:.4f}, L1-wavelet {l1:.4f}")
    assert l1 < sense


@pytest.mark.timeout(60)
def test_l1_lambda_rule_reads_each_slice_own_measured_edge_lines():
    """With neither λ nor an edge level given, λ = 0.16 × each slice's k-space edge level over its own measured lines:
    sqrt(median |k|² / (2 ln 2)) of the outer eighth of ky and kx (numpy here), so a slice's λ does not depend on its
    batch-mates' masks."""
    gen = torch.Generator().manual_seed(3)
    S, C, H, W = 2, 3, 32, 24
    kspace = torch.complex(torch.randn(S, C, H, W, generator=gen), torch.randn(S, C, H, W, generator=gen))
    kspace[1] *= 5.0
    masks = np.stack([equispaced_mask(H, R, num_acs=8) for R in (2, 3)])                   # [S, H]
    kspace = kspace * torch.from_numpy(masks).view(S, 1, H, 1)
    maps = torch.ones(S, 1, C, H, W, dtype=torch.complex64) / np.sqrt(C)
    _, info = baselines.l1_wavelet(kspace, torch.from_numpy(masks).view(S, 1, H, 1), maps, max_iter=1,
                                   return_info=True)
    expected = []
    for s in range(S):
        lines = np.flatnonzero(masks[s])
        lines = lines[(lines < H // 8) | (lines >= H - H // 8)]
        k = kspace[s].numpy()[:, lines]
        edge = np.concatenate([k[..., :W // 8], k[..., -(W // 8):]], axis=-1)
        power = np.sort(np.abs(edge).ravel() ** 2)
        median = power[(power.size - 1) // 2]                           # the lower median, as torch.median takes it
        expected.append(baselines.L1_LAMDA_PER_EDGE_LEVEL * np.sqrt(median / (2 * np.log(2))))
    np.testing.assert_allclose(info["lamda"], expected, rtol=1e-5)


@pytest.mark.parametrize("R", [2, 4])
def test_fast_maps_give_sense_within_5_percent_of_sigpy_maps(real_brain_kspace, real_maps, R):
    _, ref, mask, under = _real_problem(real_brain_kspace, R)
    errors = {name: metrics.nrmse(combine_map_images(baselines.sense_cg(under, mask, maps)), ref)
              for name, maps in real_maps.items()}
    print(f"real slice R={R}: SENSE-CG NRMSE with sigpy maps {errors['sigpy']:.4f}, fast maps {errors['fast']:.4f}")
    assert errors["fast"] <= 1.05 * errors["sigpy"]


def test_conjugate_gradient_solves_each_slice_independently():
    g = torch.Generator().manual_seed(0)
    A = torch.randn(3, 6, 6, generator=g, dtype=torch.float64)
    spd = A @ A.transpose(1, 2) + 0.5 * torch.eye(6, dtype=torch.float64)
    spd[2] *= 1e3                                             # a badly scaled slice must not disturb the others
    spd[2] = 0.5 * (spd[2] + spd[2].T)
    b = torch.randn(3, 6, generator=g, dtype=torch.float64).to(torch.complex128)
    op = lambda x: torch.einsum("sij,sj->si", spd.to(torch.complex128), x)
    x = conjugate_gradient(op, b, num_iters=50, tol=1e-12)
    assert torch.allclose(op(x), b, atol=1e-8)
    x0 = conjugate_gradient(lambda v: op(torch.cat([v, b[1:]]))[:1], b[:1], num_iters=50, tol=1e-12)
    assert torch.allclose(x0, x[:1], atol=1e-8)


def test_reconstructor_sense_matches_direct_call_and_is_scale_equivariant():
    kspace, image, maps = birdcage_phantom(64, 64, 8, slices=2)
    mask = equispaced_mask(64, 2, num_acs=16)
    under = kspace * torch.from_numpy(mask).view(1, 1, 64, 1)
    rec = Reconstructor(method="sense", device="cpu")
    res = rec.reconstruct(under, mask, maps=maps)
    scale = normalization_scale(under, mask).view(-1, 1, 1)
    direct = combine_map_images(baselines.sense_cg(under / scale.unsqueeze(1), mask, maps, rec.cg_iters,
                                                   rec.l2_weight, tol=rec.cg_tol)) * scale
    np.testing.assert_allclose(res.images, direct.numpy(), rtol=1e-4, atol=1e-6)
    assert metrics.nrmse(res.images, image) < 0.05
    res_big = rec.reconstruct(under * 1000, mask, maps=maps)
    np.testing.assert_allclose(res_big.images, 1000 * res.images, rtol=1e-3, atol=1e-3)
    assert res.images.shape == (2, 64, 64) and res.images.dtype == np.complex64
    assert set(res.timings) >= {"coil_maps", "sampling", "total"}


def test_reconstructor_rejects_bad_input_with_clear_messages():
    kspace, _, maps = birdcage_phantom(32, 32, 4, slices=1)
    mask = equispaced_mask(32, 2, num_acs=8)
    rec = Reconstructor(method="zero_filled", device="cpu")
    bad = kspace.clone()
    bad[0, 0, 3, 3] = float("nan")
    with pytest.raises(ValueError, match="NaN or Inf"):
        rec.reconstruct(bad, mask, maps=maps)
    no_acs = mask.copy()
    no_acs[16] = False
    with pytest.raises(ValueError, match="not sampled"):
        rec.reconstruct(kspace, no_acs, maps=maps)
    with pytest.raises(ValueError, match=r"mask must be \[H=32\]"):
        rec.reconstruct(kspace, np.ones(31, bool), maps=maps)
    with pytest.raises(ValueError, match="method 'gan' is unknown"):
        Reconstructor(method="gan")
