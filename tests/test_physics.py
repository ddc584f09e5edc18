"""FFT convention, SENSE operator adjointness, masks, normalization: the physics core."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from dpm_core.fft import fft2c, ifft2c
from dpm_core.masks import (acs_slice, effective_acceleration, equispaced_mask, find_acs_lines, make_mask,
                            random_mask)
from dpm_core.normalize import normalization_scale
from dpm_core.operators import SenseOp, combine_map_images


def crandn(*shape, generator=None):
    return torch.complex(torch.randn(*shape, generator=generator), torch.randn(*shape, generator=generator))


def assert_adjoint(forward, adjoint, ishape, oshape, rtol=1e-5, seed=0):
    """Dot-product test <A x, y> = <x, Aᴴ y> for random complex x, y."""
    g = torch.Generator().manual_seed(seed)
    x, y = crandn(*ishape, generator=g).to(torch.complex128), crandn(*oshape, generator=g).to(torch.complex128)
    lhs = torch.vdot(forward(x).flatten(), y.flatten())
    rhs = torch.vdot(x.flatten(), adjoint(y).flatten())
    assert abs(lhs - rhs) <= rtol * abs(lhs), (lhs, rhs)


@pytest.mark.parametrize("shape", [(8, 8), (7, 9), (16, 5), (1, 3, 11, 6)])
def test_fft2c_matches_numpy_reference(shape):
    x = crandn(*shape, generator=torch.Generator().manual_seed(1))
    ref = np.fft.fftshift(np.fft.fft2(np.fft.ifftshift(x.numpy(), axes=(-2, -1)), norm="ortho"), axes=(-2, -1))
    np.testing.assert_allclose(fft2c(x).numpy(), ref, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(ifft2c(fft2c(x)).numpy(), x.numpy(), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("shape", [(6, 10), (7, 9)])
def test_fft2c_puts_centre_at_n_over_2_and_preserves_energy(shape):
    img = torch.ones(shape, dtype=torch.complex64)
    k = fft2c(img)
    assert torch.argmax(k.abs()).item() == (shape[0] // 2) * shape[1] + shape[1] // 2
    assert torch.allclose(k.abs().pow(2).sum(), img.abs().pow(2).sum())


def test_fft2c_dim_argument():
    x = crandn(4, 6, 5, generator=torch.Generator().manual_seed(2))
    moved = fft2c(x.permute(1, 2, 0), dim=(0, 1)).permute(2, 0, 1)
    assert torch.allclose(moved, fft2c(x), atol=1e-5)


@pytest.mark.parametrize("num_maps", [1, 2])
@pytest.mark.parametrize("hw", [(12, 10), (9, 7)])
def test_sense_adjoint_identity(num_maps, hw):
    S, C = 2, 3
    H, W = hw
    g = torch.Generator().manual_seed(3)
    maps = crandn(S, num_maps, C, H, W, generator=g).to(torch.complex128)
    mask = equispaced_mask(H, 2, num_acs=4)
    op = SenseOp(maps, mask)
    assert_adjoint(op.forward, op.adjoint, op.ishape, op.oshape)
    # The normal operator is Hermitian positive semi-definite.
    x = crandn(*op.ishape, generator=g).to(torch.complex128)
    assert torch.vdot(x.flatten(), op.normal(x).flatten()).real > 0


def test_sense_soft_sense_sums_map_weighted_images():
    g = torch.Generator().manual_seed(4)
    maps = crandn(1, 2, 4, 8, 8, generator=g)
    x = crandn(1, 2, 8, 8, generator=g)
    y = SenseOp(maps).forward(x)
    expected = fft2c(maps[:, 0] * x[:, 0:1] + maps[:, 1] * x[:, 1:2])
    assert torch.allclose(y, expected, atol=1e-5)


def test_sense_rejects_wrong_shapes_with_message():
    op = SenseOp(torch.ones(1, 1, 2, 4, 4, dtype=torch.complex64))
    with pytest.raises(ValueError, match="expected shape"):
        op.forward(torch.ones(1, 4, 4, dtype=torch.complex64))
    with pytest.raises(ValueError, match="1-D mask has 5 entries"):
        SenseOp(torch.ones(1, 1, 2, 4, 4, dtype=torch.complex64), np.ones(5, bool))
    with pytest.raises(ValueError, match="does not fit"):
        SenseOp(torch.ones(1, 1, 2, 4, 4, dtype=torch.complex64), np.ones((2, 3, 4, 4), bool))


def test_combine_map_images_single_and_double():
    x = crandn(2, 1, 4, 4, generator=torch.Generator().manual_seed(5))
    assert torch.equal(combine_map_images(x), x[:, 0])
    x2 = torch.cat([x, x], dim=1)
    assert torch.allclose(combine_map_images(x2).abs(), np.sqrt(2) * x[:, 0].abs(), atol=1e-5)


@pytest.mark.parametrize("lines,R,num_acs,expected", [(320, 2, 26, 1.85), (320, 4, 26, 3.23), (320, 8, 13, 6.27)])
def test_equispaced_nominal_effective_acceleration_matches_csgm(lines, R, num_acs, expected):
    # csgm-mri-langevin / fastMRI recipe (DESIGN.md §2): every R-th line plus a centre block of 8 % of the lines at
    # R <= 4 and 4 % at R = 8 (fastMRI's center_fractions 0.08 / 0.04).
    # At R = 8 our lattice (aligned with the centre line) shares one line fewer with the ACS block than csgm's
    # (52 lines instead of 51), hence the wider tolerance there.
    mask = equispaced_mask(lines, R, num_acs=num_acs)
    assert effective_acceleration(mask) == pytest.approx(expected, abs=0.03 if R < 8 else 0.15)


@pytest.mark.parametrize("kind", ["equispaced_exact", "random"])
@pytest.mark.parametrize("lines,R", [(256, 2), (256, 4), (256, 6), (218, 3), (97, 4)])
def test_exact_masks_hit_stated_acceleration_and_acs(kind, lines, R):
    mask = make_mask(kind, lines, R, num_acs=24, seed=7)
    target = round(lines / R)
    assert abs(int(mask.sum()) - target) <= (1 if kind == "equispaced_exact" else 0)
    assert mask[acs_slice(lines, 24)].all()
    assert mask[lines // 2]
    acs = find_acs_lines(mask)
    assert acs.stop - acs.start >= 24


def test_random_mask_is_seeded_and_leaves_global_rng_alone():
    state = np.random.get_state()[1].copy()
    torch_state = torch.random.get_rng_state().clone()
    a, b, c = random_mask(128, 4, seed=1), random_mask(128, 4, seed=1), random_mask(128, 4, seed=2)
    assert np.array_equal(a, b) and not np.array_equal(a, c)
    assert np.array_equal(np.random.get_state()[1], state)
    assert torch.equal(torch.random.get_rng_state(), torch_state)


def test_equispaced_lattice_contains_centre_line():
    for lines in (96, 97, 256):
        for R in (2, 3, 4, 6):
            mask = equispaced_mask(lines, R, num_acs=2)
            assert mask[lines // 2]


def test_find_acs_lines_requires_centre():
    mask = np.zeros(32, bool)
    mask[::4] = True
    mask[16] = False
    with pytest.raises(ValueError, match="centre line 16 is not sampled"):
        find_acs_lines(mask)


def test_mask_arguments_are_checked():
    with pytest.raises(ValueError, match="acceleration must be >= 1"):
        equispaced_mask(64, 0.5)
    with pytest.raises(ValueError, match="unknown mask kind"):
        make_mask("spiral", 64, 2)


def test_normalization_scale_is_same_for_full_and_undersampled_data():
    from tests.conftest import birdcage_phantom
    kspace, _, _ = birdcage_phantom(64, 64, 8, slices=2)
    mask = equispaced_mask(64, 4, num_acs=24)
    full = normalization_scale(kspace, None, num_acs=24)
    under = normalization_scale(kspace * torch.from_numpy(mask).view(1, 1, 64, 1), mask)
    assert torch.allclose(full, under)
    # Per slice and linear in the data: scaling one slice scales only its own factor.
    scaled = kspace.clone()
    scaled[1] *= 3
    s2 = normalization_scale(scaled, None, num_acs=24)
    assert s2[0] == pytest.approx(float(full[0]), rel=1e-5) and s2[1] == pytest.approx(3 * float(full[1]), rel=1e-5)


def test_normalization_refuses_empty_acs():
    with pytest.raises(ValueError, match="ACS block"):
        normalization_scale(torch.zeros(1, 2, 16, 16, dtype=torch.complex64), None, num_acs=4)
