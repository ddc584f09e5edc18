"""Test-time LoRA adaptation (samplers dds_lora and dds_ssl): each is DDS when it adapts nothing, steers a wrong prior
towards the data, never writes the shipped weights, and concurrent reconstructions never share an adapter; dds_ssl's
first pass never sees the lines its loss scores."""
import hashlib
import threading

import pytest
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


@pytest.mark.parametrize("sampler", ["dds_lora", "dds_ssl"])
def test_no_adaptation_is_exactly_dds(sampler):
    P = _problem()
    net = ShrinkingDenoiser()
    common = dict(steps=8, seed=3, noise_std=P.noise_std, zeta=2.0, sigma_data=1.0)
    plain = posterior_samples("dds", net, P.y, P.op, **common).mean
    adapted = posterior_samples(sampler, net, P.y, P.op, adapt_steps=0, **common).mean
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


@pytest.mark.parametrize("sampler", ["dds_lora", "dds_ssl"])
def test_cost_is_counted_as_forward_and_backward_passes(sampler):
    sig = default_sigmas(sampler, None, 10)
    assert num_evaluations(sampler, sig, adapt_steps=2) == 10 * 4   # dds_lora 2 x 2 per level, dds_ssl 2 + 2
    assert num_evaluations(sampler, sig, backward=True, adapt_steps=2) == 10 * 2
    assert num_evaluations(sampler, sig, adapt_steps=0) == 10 == num_evaluations("dds", sig)
    assert SAMPLERS[sampler].evaluations(11, {})[1] == 10              # default adapt_steps = 1


@pytest.mark.parametrize("sampler", ["dds_lora", "dds_ssl"])
def test_concurrent_reconstructions_get_independent_adapters(sampler):
    """Two threads reconstruct different scans with one shared model (as the server's streams do): each gets exactly
    its sequential result, and the model's weights are unchanged."""
    problems = [_problem(), gaussian_problem(height=16, width=16, num_coils=4, acceleration=2, num_acs=4,
                                             noise_std=0.02, seed=7, num_slices=2)]
    net = ShrinkingDenoiser()
    before = _weights_digest(net)
    options = dict(steps=10, seed=5, sigma_data=1.0, zeta=1.0, adapt_steps=2, adapt_lr=3e-2)
    sequential = [posterior_samples(sampler, net, P.y, P.op, noise_std=P.noise_std, **options).mean
                  for P in problems]
    results = [None, None]

    def run(i):
        P = problems[i]
        results[i] = posterior_samples(sampler, net, P.y, P.op, noise_std=P.noise_std, **options).mean

    threads = [threading.Thread(target=run, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert all(torch.equal(r, s) for r, s in zip(results, sequential))
    assert _weights_digest(net) == before


@pytest.mark.parametrize("sampler", ["dds_lora", "dds_ssl"])
def test_reconstructor_with_the_shipped_model_keeps_its_weights_bit_identical(real_brain_kspace, sampler):
    from dpm_core.masks import equispaced_mask
    rec = Reconstructor(sampler=sampler, sampler_options={"steps": 3}, zeta=8.0, warm_start=None)
    kspace = real_brain_kspace[:, :, :, :]
    mask = equispaced_mask(kspace.shape[2], 4, num_acs=24)
    before = _weights_digest(rec.denoiser())
    result = rec.reconstruct(kspace * torch.from_numpy(mask).view(1, 1, -1, 1), mask)
    assert result.info["sampler"] == sampler and result.info["backward_per_sample"] == 3
    assert _weights_digest(rec.denoiser()) == before


@pytest.mark.parametrize("sampler", ["dds_lora", "dds_ssl"])
def test_zeta_auto_scores_plain_dds_runs_and_adapts_only_the_final_run(monkeypatch, sampler):
    """ζ="auto" for an adapted sampler: GCV's candidate runs are DDS's (the same ζ and GCV table as
    Reconstructor(sampler="dds")), and the only adapters made are the final run's, one per slice."""
    import importlib
    from dpm_core import lora
    P = _problem()
    made = []
    real_copy = lora.lora_copy

    def counting_copy(*args, **kwargs):
        made.append(1)
        return real_copy(*args, **kwargs)
    for name in ("dds_lora", "dds_ssl"):                 # each sampler module holds its own reference
        monkeypatch.setattr(importlib.import_module(f"dpm_core.samplers.{name}"), "lora_copy", counting_copy)
    common = dict(model=ShrinkingDenoiser(), zeta="auto", seed=2, device="cpu", progress=None, output_guard=False)
    under = P.y                                          # [S, C, H, W], zero off the mask
    mask = P.op.mask[0].reshape(-1).numpy() > 0          # [H], the same lines in both slices
    maps = P.op.maps                                     # [S, M, C, H, W]: the problem's own
    plain = Reconstructor(sampler="dds", sampler_options={"steps": 6}, **common).reconstruct(under, mask, maps)
    assert not made
    adapted = Reconstructor(sampler=sampler, sampler_options={"steps": 6, "adapt_steps": 1}, **common).reconstruct(
        under, mask, maps)
    assert adapted.info["zeta"] == plain.info["zeta"], (adapted.info["zeta"], plain.info["zeta"])
    assert adapted.info["zeta_gcv"] == plain.info["zeta_gcv"]
    assert adapted.info["zeta_rule"].endswith("scored on dds runs"), adapted.info["zeta_rule"]
    assert len(made) == under.shape[0]


# -- dds_ssl: the adapter learns to predict withheld measured lines (zero-shot self-supervised) ---------------------

def test_ssl_first_pass_never_sees_the_withheld_lines_and_its_loss_scores_only_them(monkeypatch):
    """Pass 1 runs on the kept lines (its start from them too), the loss scores the withheld ones, and the two sets
    split the measured lines outside the ACS block: an SSDU split, checked on the data each pass receives."""
    import importlib
    ssl = importlib.import_module("dpm_core.samplers.dds_ssl")      # the module (the package exports the function)
    P = gaussian_problem(height=32, width=16, num_coils=4, acceleration=2, num_acs=4, noise_std=0.01, seed=2)
    calls, losses = [], []
    real_dds, real_init = ssl.dds, ssl.HeldOutLineAdapter.__init__

    def spy_dds(denoiser, y, op, *args, **kwargs):
        calls.append((y, op.mask, kwargs.get("x_init")))
        return real_dds(denoiser, y, op, *args, **kwargs)

    def spy_init(self, denoiser, y, op, withheld, *args):
        losses.append(withheld)
        real_init(self, denoiser, y, op, withheld, *args)
    monkeypatch.setattr(ssl, "dds", spy_dds)
    monkeypatch.setattr(ssl.HeldOutLineAdapter, "__init__", spy_init)
    x_init = torch.zeros(P.op.ishape, dtype=torch.complex64)
    posterior_samples("dds_ssl", ShrinkingDenoiser(), P.y, P.op, steps=4, seed=1, noise_std=P.noise_std,
                      sigma_data=1.0, x_init=x_init)
    (y1, mask1, start1), (y2, mask2, _) = calls                   # pass 1, pass 2 of the one slice
    withheld = losses[0].reshape(-1) > 0
    measured = P.op.mask.reshape(-1) > 0
    assert torch.equal(mask2.reshape(-1) > 0, measured)           # pass 2: every measured line
    assert torch.equal(mask1.reshape(-1) > 0, measured & ~withheld)
    assert int(withheld.sum()) >= 1 and not bool((withheld & ~measured).any())
    assert float(y1[..., withheld, :].abs().max()) == 0.0 < float(P.y[..., withheld, :].abs().max())
    acs = torch.arange(32)[(torch.arange(32) >= 14) & (torch.arange(32) < 18)]        # the 4 ACS lines
    assert not bool(withheld[acs].any())
    assert start1 is not None and not torch.equal(start1, x_init)    # pass 1 starts from the kept lines' SENSE


def test_ssl_steers_a_wrong_prior_towards_the_data_and_leaves_the_weights_alone():
    from dpm_core.baselines import sense_cg
    from dpm_core.samplers import warm_start_sigmas
    P = _problem()
    net = ShrinkingDenoiser()
    before = _weights_digest(net)
    # Warm-started, as the product runs it: from pure noise the best prediction of a network that sees mostly noise
    # is to shrink it further (as for dds_lora above), so both samplers start from the SENSE image at σ 0.3.
    common = dict(sigmas=warm_start_sigmas(default_sigmas("dds_ssl", None, 20), 0.3), seed=3, noise_std=P.noise_std,
                  zeta=1.0, sigma_data=1.0, x_init=sense_cg(P.y, P.op.mask, P.op.maps))

    def error(x):
        return float(torch.linalg.vector_norm(x - P.x_true) / torch.linalg.vector_norm(P.x_true))
    plain = error(posterior_samples("dds", net, P.y, P.op, **common).mean)
    adapted = error(posterior_samples("dds_ssl", net, P.y, P.op, adapt_steps=3, adapt_lr=3e-2, lora_rank=2,
                                      **common).mean)
    assert adapted < 0.85 * plain, (adapted, plain)
    assert _weights_digest(net) == before
