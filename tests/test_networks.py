"""Tests of dpm_core.networks: shapes, preconditioning, presets, gradients, the EDM loss."""
import math

import pytest
import torch
from torch import nn

from dpm_core.networks import (NCSNV2_PRESETS, UNET_PRESETS, ComplexDenoiser, EDMPrecond, NCSNv2, UNet,
                               build_network, count_parameters, edm_loss)


class LinearNet(nn.Module):
    """F(h, c_noise) = gain·h: a known raw network for checking the preconditioning and the pad/crop."""

    in_channels = 2
    size_multiple = 8

    def __init__(self, gain=2.0):
        super().__init__()
        self.gain = gain
        self.seen_shapes = []

    def forward(self, h, c_noise):
        assert h.shape[-2] % self.size_multiple == 0 and h.shape[-1] % self.size_multiple == 0
        self.seen_shapes.append(tuple(h.shape))
        self.c_noise = c_noise
        return self.gain * h


def _randomize_(module, std=0.05, seed=0):
    """Give every parameter random values so the network is far from its near-identity initialisation."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(torch.randn(p.shape, generator=g) * std)
    return module


@pytest.fixture(scope="module")
def small_unet():
    torch.manual_seed(0)
    return _randomize_(build_network("unet", {"preset": "small"})).eval()


@pytest.fixture(scope="module")
def small_ncsnv2():
    torch.manual_seed(0)
    return build_network("ncsnv2", {"preset": "small"}).eval()


@pytest.mark.parametrize("shape", [(3, 2, 45, 37), (1, 2, 32, 32), (2, 2, 17, 64)])
def test_unet_output_shape_any_size(small_unet, shape):
    x = torch.randn(shape)
    with torch.no_grad():
        D = small_unet(x, torch.full((shape[0],), 0.7))
    assert D.shape == shape and D.dtype == torch.float32
    assert torch.isfinite(D).all()


def test_ncsnv2_output_shape_any_size(small_ncsnv2):
    x = torch.randn(2, 2, 45, 37)
    with torch.no_grad():
        D = small_ncsnv2(x, 3.0)
    assert D.shape == x.shape and torch.isfinite(D).all()
    assert small_ncsnv2.precond == "ve"


def test_edm_coefficients_known_sigma():
    pc = EDMPrecond(LinearNet(), sigma_data=0.5)
    c_skip, c_out, c_in, c_noise = pc.coefficients(torch.tensor(0.5))
    assert c_skip.item() == pytest.approx(0.5)
    assert c_out.item() == pytest.approx(0.25 / math.sqrt(0.5))
    assert c_in.item() == pytest.approx(1 / math.sqrt(0.5))
    assert c_noise.item() == pytest.approx(math.log(0.5) / 4)
    c_skip, c_out, c_in, _ = pc.coefficients(torch.tensor(2.0))
    assert c_skip.item() == pytest.approx(0.25 / 4.25)
    assert c_out.item() == pytest.approx(1.0 / math.sqrt(4.25))
    assert c_in.item() == pytest.approx(1 / math.sqrt(4.25))
    ve = EDMPrecond(LinearNet(), precond="ve")
    c_skip, c_out, c_in, _ = ve.coefficients(torch.tensor(3.0))
    assert (c_skip.item(), c_out.item(), c_in.item()) == (1.0, 3.0, 1.0)


@pytest.mark.parametrize("precond", ["edm", "ve"])
@pytest.mark.parametrize("pad_mode", ["reflect", "zeros"])
def test_precond_combination_and_crop(precond, pad_mode):
    """D = c_skip·x + c_out·F(c_in·x) exactly, per batch item, after padding 45×37 to 48×40 and cropping back."""
    net = LinearNet(gain=2.0)
    pc = EDMPrecond(net, sigma_data=0.5, precond=precond, pad_mode=pad_mode)
    x = torch.randn(2, 2, 45, 37)
    sigma = torch.tensor([0.1, 4.0])
    D = pc(x, sigma)
    assert net.seen_shapes == [(2, 2, 48, 40)]
    c_skip, c_out, c_in, c_noise = pc.coefficients(sigma.reshape(2, 1, 1, 1))
    torch.testing.assert_close(D, c_skip * x + c_out * 2.0 * c_in * x)
    torch.testing.assert_close(net.c_noise, sigma.log() / 4)


def test_precond_rejects_bad_input(small_unet):
    with pytest.raises(ValueError, match="real tensor"):
        small_unet(torch.randn(1, 3, 16, 16), 1.0)
    with pytest.raises(ValueError, match="one value per batch item"):
        small_unet(torch.randn(2, 2, 16, 16), torch.tensor([1.0, 2.0, 3.0]))


def test_unet_translation_sane(small_unet):
    """Shifting compact content by a multiple of the pooling grid shifts the output (away from the borders)."""
    g = torch.Generator().manual_seed(1)
    x = torch.zeros(1, 2, 64, 64)
    x[..., 20:40, 20:40] = torch.randn(1, 2, 20, 20, generator=g)
    shift = small_unet.net.size_multiple
    with torch.no_grad():
        D0 = small_unet(x, 0.5)
        D1 = small_unet(torch.roll(x, shifts=(shift, shift), dims=(-2, -1)), 0.5)
    assert torch.isfinite(D0).all() and torch.isfinite(D1).all()
    a = D0[..., 16:44, 16:44]
    b = D1[..., 16 + shift:44 + shift, 16 + shift:44 + shift]
    assert (a - b).norm() / a.norm() < 0.05


def test_parameter_counts():
    small = count_parameters(build_network("unet", {"preset": "small"}))
    assert 0.8e6 <= small <= 1.2e6
    medium = count_parameters(build_network("unet", {"preset": "medium"}))
    assert 2.5e6 <= medium and 4 * medium <= 20e6                           # float32 weights within issue 11's 20 MB
    with torch.device("meta"):                                               # size only, no memory
        base = count_parameters(build_network("unet", {"preset": "base"}))
        jalal = count_parameters(build_network("ncsnv2", {"preset": "jalal2021"}))
    assert base >= 60e6
    assert jalal == 94_130_306                                               # NCSNv2Deepest, ngf 128, original code
    assert set(UNET_PRESETS) == {"small", "medium", "base"} and "jalal2021" in NCSNV2_PRESETS


def test_size_multiple():
    assert UNet(channel_mults=(1, 2, 2)).size_multiple == 4
    assert NCSNv2(ngf=4, depth="ncsnv2").size_multiple == 2
    assert NCSNv2(ngf=4, depth="deeper").size_multiple == 4
    assert NCSNv2(ngf=4, depth="deepest").size_multiple == 8


def test_complex_denoiser_matches_precond(small_unet):
    den = ComplexDenoiser(small_unet)
    x = torch.randn(2, 19, 23, dtype=torch.complex64)
    sigma = torch.tensor([0.3, 1.5])
    with torch.no_grad():
        D = den(x, sigma)
        ref = small_unet(torch.stack([x.real, x.imag], dim=1), sigma)
        s = den.score(x, sigma)
    assert D.dtype == torch.complex64 and D.shape == x.shape
    torch.testing.assert_close(torch.stack([D.real, D.imag], dim=1), ref)
    torch.testing.assert_close(s, (D - x) / sigma.reshape(2, 1, 1) ** 2)
    with pytest.raises(ValueError, match="complex images"):
        den(torch.randn(2, 19, 23), sigma)


@pytest.mark.parametrize("arch", ["unet", "ncsnv2"])
def test_gradient_through_complex_denoiser(arch, small_unet, small_ncsnv2):
    """∇ₓ Re⟨v, D(x)⟩ exists and carries the network's Jacobian (not only c_skip); for the smooth U-Net it matches
    finite differences (NCSNv2's max-pooling and instance norms on a tiny image are too kinked for float32 FD)."""
    precond = small_unet if arch == "unet" else small_ncsnv2
    den = ComplexDenoiser(precond)
    g = torch.Generator().manual_seed(2)
    x = torch.randn(1, 24, 20, dtype=torch.complex64, generator=g).requires_grad_(True)
    v = torch.randn(1, 24, 20, dtype=torch.complex64, generator=g)
    u = torch.randn(1, 24, 20, dtype=torch.complex64, generator=g)
    sigma = torch.tensor([0.8])

    def f(z):
        return (v.conj() * den(z, sigma)).real.sum()

    f(x).backward()
    grad = x.grad
    assert grad is not None and torch.isfinite(torch.view_as_real(grad)).all()
    c_skip = precond.coefficients(sigma)[0].item()
    assert (grad - c_skip * v).abs().max() > 1e-3                          # the network contributes
    if arch == "ncsnv2":
        return
    eps = 1e-2
    with torch.no_grad():
        fd = (f(x + eps * u) - f(x - eps * u)) / (2 * eps)
    directional = (grad.conj() * u).real.sum()
    assert directional.item() == pytest.approx(fd.item(), rel=2e-2, abs=1e-2)


def test_build_network_errors_and_presets():
    with pytest.raises(ValueError, match="unknown network architecture"):
        build_network("resnet", {})
    with pytest.raises(ValueError, match="invalid arguments"):
        build_network("unet", {"base_chanels": 32})
    with pytest.raises(ValueError, match="preset"):
        build_network("unet", {"preset": "huge"})
    pc = build_network("unet", {"preset": "small", "base_channels": 16})
    assert pc.net.arch_kwargs["base_channels"] == 16 and pc.net.arch_kwargs["emb_dim"] == 112
    pc = build_network("unet", {"channel_mults": [1, 2], "attention_levels": []})   # JSON lists accepted
    assert pc.net.size_multiple == 2


class ZeroNet(LinearNet):
    def forward(self, h, c_noise):
        return torch.zeros_like(h)


def test_edm_loss_unit_weight_for_gaussian_data():
    """F = 0 is the exact denoiser for N(0, σd²) data; EDM's weighting makes its expected loss 1 at every σ."""
    pc = EDMPrecond(ZeroNet(), sigma_data=0.5)
    g = torch.Generator().manual_seed(3)
    x = 0.5 * torch.randn(256, 2, 16, 16, generator=g)
    loss = edm_loss(pc, x, generator=g)
    assert loss.shape == (256,)
    assert loss.mean().item() == pytest.approx(1.0, rel=0.03)


def test_edm_loss_trains_and_is_reproducible():
    pc = build_network("unet", {"preset": "small"})
    x = torch.randn(2, 2, 16, 16)
    l1 = edm_loss(pc, x, generator=torch.Generator().manual_seed(5))
    l2 = edm_loss(pc, x, generator=torch.Generator().manual_seed(5))
    torch.testing.assert_close(l1, l2)
    assert l1.shape == (2,) and torch.all(l1 > 0)
    l1.mean().backward()
    unused = [name for name, p in pc.named_parameters() if p.grad is None]
    assert not unused, f"parameters without gradient: {unused}"
    assert all(torch.isfinite(p.grad).all() for p in pc.parameters())
