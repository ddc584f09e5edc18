"""Test-time LoRA adaptation (sampler dds_lora): it is DDS when it adapts nothing, it steers a wrong prior towards the
data, it never writes the shipped weights, and concurrent reconstructions never share an adapter."""
import hashlib
import threading

import torch
from torch import nn

from dpm_core.gaussian import gaussian_problem
from dpm_core.lora import lora_copy
from dpm_core.reconstruct import Reconstructor
from dpm_core.samplers import SAMPLERS, default_sigmas, num_evaluations, posterior_samples


class ShrinkingDenoiser(nn.Module):
    """A deliberately wrong prior: D(x, σ) = W x with W = 0.5 I on the (real, imaginary) channels (a 1x1 conv)."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(2, 2, 1, bias=False)
        with torch.no_grad():
            self.conv.weight.copy_(0.5 * torch.eye(2).view(2, 2, 1, 1))

    def forward(self, x, sigma):
        out = self.conv(torch.view_as_real(x).permute(0, 3, 1, 2))
        return torch.view_as_complex(out.permute(0, 2, 3, 1).contiguous())


def _weights_digest(module: nn.Module) -> str:
    h = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        h.update(name.encode())
        h.update(tensor.detach().cpu().numpy().tobytes())
    return h.hexdigest()


def _problem():
    return gaussian_problem(height=16, width=16, num_coils=4, acceleration=3, num_acs=4, noise_std=0.01, seed=1,
                            num_slices=2)


def test_no_adaptation_is_exactly_dds():
    P = _problem()
    net = ShrinkingDenoiser()
    common = dict(steps=8, seed=3, noise_std=P.noise_std, zeta=2.0, sigma_data=1.0)
    plain = posterior_samples("dds", net, P.y, P.op, **common).mean
    adapted = posterior_samples("dds_lora", net, P.y, P.op, adapt_steps=0, **common).mean
    assert torch.equal(plain, adapted)


def test_adaptation_steers_a_wrong_prior_towards_the_data_and_leaves_the_weights_alone():
    P = _problem()
    net = ShrinkingDenoiser()
    before = _weights_digest(net)
    common = dict(steps=20, seed=3, noise_std=P.noise_std, zeta=1.0, sigma_data=1.0)
    truth = P.x_true

    def error(x):
        return float(torch.linalg.vector_norm(x - truth) / torch.linalg.vector_norm(truth))

    plain = error(posterior_samples("dds", net, P.y, P.op, **common).mean)
    # At high noise levels the best data fit of a network that sees mostly noise is to shrink it further, so the
    # adapter learns only where sigma <= 0.3 (the data's std is 1 here).
    adapted = error(posterior_samples("dds_lora", net, P.y, P.op, adapt_steps=3, adapt_lr=3e-2, lora_rank=2,
                                      adapt_sigma_max=0.3, **common).mean)
    assert adapted < 0.85 * plain, (adapted, plain)
    assert _weights_digest(net) == before                          # the shipped weights are never written


def test_lora_copy_starts_as_the_network_and_trains_only_the_adapters():
    net = ShrinkingDenoiser()
    copy, params = lora_copy(net, rank=1, seed=0)
    x = torch.randn(3, 8, 8, dtype=torch.complex64)
    assert torch.equal(copy(x, torch.ones(3)), net(x, torch.ones(3)))  # U = 0: the same function
    assert all(p.requires_grad for p in params)
    assert not any(p.requires_grad for name, p in copy.named_parameters() if "original" in name)
    assert copy.conv.parametrizations.weight.original.data_ptr() != net.conv.weight.data_ptr()


def test_cost_is_counted_as_forward_and_backward_passes():
    sig = default_sigmas("dds_lora", None, 10)
    assert num_evaluations("dds_lora", sig, adapt_steps=2) == 10 * 4
    assert num_evaluations("dds_lora", sig, backward=True, adapt_steps=2) == 10 * 2
    assert num_evaluations("dds_lora", sig, adapt_steps=0) == 10 == num_evaluations("dds", sig)
    assert SAMPLERS["dds_lora"].evaluations(11, {})[1] == 10           # default adapt_steps = 1


def test_concurrent_reconstructions_get_independent_adapters():
    """Two threads reconstruct different scans with one shared model (as the server's streams do): each gets exactly
    its sequential result, and the model's weights are unchanged."""
    problems = [_problem(), gaussian_problem(height=16, width=16, num_coils=4, acceleration=2, num_acs=4,
                                             noise_std=0.02, seed=7, num_slices=2)]
    net = ShrinkingDenoiser()
    before = _weights_digest(net)
    options = dict(steps=10, seed=5, sigma_data=1.0, zeta=1.0, adapt_steps=2, adapt_lr=3e-2)
    sequential = [posterior_samples("dds_lora", net, P.y, P.op, noise_std=P.noise_std, **options).mean
                  for P in problems]
    results = [None, None]

    def run(i):
        P = problems[i]
        results[i] = posterior_samples("dds_lora", net, P.y, P.op, noise_std=P.noise_std, **options).mean

    threads = [threading.Thread(target=run, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert all(torch.equal(r, s) for r, s in zip(results, sequential))
    assert _weights_digest(net) == before


def test_reconstructor_with_the_shipped_model_keeps_its_weights_bit_identical(real_brain_kspace):
    from dpm_core.masks import equispaced_mask
    rec = Reconstructor(sampler="dds_lora", sampler_options={"steps": 3}, zeta=8.0, warm_start=None)
    kspace = real_brain_kspace[:, :, :, :]
    mask = equispaced_mask(kspace.shape[2], 4, num_acs=24)
    before = _weights_digest(rec.denoiser())
    result = rec.reconstruct(kspace * torch.from_numpy(mask).view(1, 1, -1, 1), mask)
    assert result.info["sampler"] == "dds_lora" and result.info["backward_per_sample"] == 3
    assert _weights_digest(rec.denoiser()) == before
