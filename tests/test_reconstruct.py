"""The Reconstructor's DPM path: batch independence, posterior std, ζ, failure reporting (tiny random U-Net)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from dpm_core.masks import equispaced_mask
from dpm_core.networks import ComplexDenoiser, build_network
from dpm_core.reconstruct import Reconstructor, ReconstructionError, estimate_noise_std
from tests.conftest import birdcage_phantom

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
                        device="cpu")
    together = rec.reconstruct(kspace, mask, maps=maps, slice_ids=[4, 5, 6])
    alone = rec.reconstruct(kspace[1:2], mask, maps=maps[1:2], slice_ids=[5])
    assert together.method == f"dpm:{sampler}"
    np.testing.assert_allclose(together.images[1], alone.images[0], atol=1e-5 * np.abs(alone.images).max())
    again = rec.reconstruct(kspace, mask, maps=maps, slice_ids=[4, 5, 6])
    np.testing.assert_array_equal(together.images, again.images)


def test_posterior_std_map_and_seed(denoiser, problem):
    kspace, mask, maps = problem
    rec = Reconstructor(method="dpm", model=denoiser, sampler_options={"steps": 4}, num_samples=3, device="cpu")
    res = rec.reconstruct(kspace, mask, maps=maps)
    assert res.std is not None and res.std.shape == (3, 32, 32) and res.std.dtype == np.float32
    assert float(res.std.max()) > 0
    other = Reconstructor(method="dpm", model=denoiser, sampler_options={"steps": 4}, num_samples=3, seed=1,
                          device="cpu").reconstruct(kspace, mask, maps=maps)
    assert not np.array_equal(res.images, other.images)
    assert res.info["nfe_per_sample"] == 4 and res.info["zeta"] == 1.0


def test_zeta_changes_the_fast_sampler(denoiser, problem):
    kspace, mask, maps = problem
    runs = [Reconstructor(method="dpm", model=denoiser, sampler_options={"steps": 4}, zeta=z,
                          device="cpu").reconstruct(kspace, mask, maps=maps).images for z in (0.5, 4.0)]
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


def test_noise_estimate_from_kspace_corners():
    g = torch.Generator().manual_seed(3)
    noise = 0.3 * torch.complex(torch.randn(2, 4, 64, 64, generator=g), torch.randn(2, 4, 64, 64, generator=g))
    mask = equispaced_mask(64, 4, num_acs=8)
    est = estimate_noise_std(noise, mask)
    assert torch.allclose(est, torch.full((2,), 0.3), rtol=0.1)
