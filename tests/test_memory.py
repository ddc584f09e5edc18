"""The memory budget: measured working memory, chunked sampler calls that stay inside it, bf16 never on the CPU."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

from dpm_core.masks import equispaced_mask
from dpm_core.memory import LiveTensorBytes, slices_per_call
from dpm_core.networks import ComplexDenoiser, build_network
from dpm_core.operators import SenseOp
from dpm_core.reconstruct import Reconstructor
from dpm_core.samplers import get_sampler, posterior_samples
from tests.conftest import birdcage_phantom

TINY_UNET = {"base_channels": 8, "channel_mults": (1, 2), "num_res_blocks": 1, "attention_levels": (), "emb_dim": 32}
MB = 2 ** 20


@pytest.fixture(scope="module")
def denoiser():
    torch.manual_seed(0)
    return ComplexDenoiser(build_network("unet", TINY_UNET)).eval()


@pytest.fixture(scope="module")
def volume():
    """Five 32² 4-coil slices, nominal R 2 + 8 ACS, normalized: (k-space, operator)."""
    kspace, _, maps = birdcage_phantom(32, 32, 4, slices=5)
    mask = equispaced_mask(32, 2, num_acs=8)
    op = SenseOp(maps, mask)
    return op.forward(op.adjoint(kspace * op.mask)), op


def test_live_tensor_bytes_counts_what_is_alive_together():
    """1 MiB + 2 MiB alive, the first freed, 3 MiB more: peak 5 MiB (closed form); views share their storage."""
    with LiveTensorBytes() as tracker:
        a = torch.zeros(MB // 4)                  # float32: 1 MiB
        b = torch.zeros(MB // 2)                  # 2 MiB
        view = b[:10]                             # no new storage
        del a
        c = torch.zeros(3 * MB // 4)              # 3 MiB
        assert tracker.current == 5 * MB
        del b, view, c
    assert tracker.peak == 5 * MB and tracker.current == 0


def test_slices_per_call_rule():
    assert slices_per_call(peak_one=100, budget=350, remaining=10) == 3
    assert slices_per_call(peak_one=100, budget=350, remaining=2) == 2
    assert slices_per_call(peak_one=100, budget=50, remaining=10) == 1        # not even one fits: tried alone


def test_chunked_sampler_calls_never_exceed_a_small_budget_and_match_one_call(denoiser, volume):
    """A budget of 2.5 single-slice calls: the first call runs one slice, every further call two, each call's
    footprint (what the sampler allocates, measured, plus the inputs cut for it) stays inside the budget, and the
    samples equal those of one call over all slices."""
    y, op = volume
    calls = []
    dds = get_sampler("dds")

    def measured_run(denoiser, y, op, sigmas, generators, **kwargs):
        with LiveTensorBytes() as tracker:
            x = dds.run(denoiser, y, op, sigmas, generators, **kwargs)
        inputs = y.nbytes + op.maps.nbytes + op.mask.nbytes
        calls.append((x.shape[0], tracker.peak + inputs))
        return x
    probe = dataclasses.replace(dds, run=measured_run)
    options = dict(steps=6, num_samples=2, seed=3, cg_iters=3, noise_std=0.01, zeta=2.0)

    whole = posterior_samples(probe, denoiser, y, op, **options)
    assert [n for n, _ in calls] == [10]                                      # 5 slices x 2 samples
    calls.clear()
    one = posterior_samples(probe, denoiser, y, op, memory_budget=2 ** 40, **options).info["working_bytes_one_slice"]
    assert one >= calls[0][1]                                                 # the measurement covers the call
    calls.clear()
    budget = int(2.5 * one)
    chunked = posterior_samples(probe, denoiser, y, op, memory_budget=budget, **options)
    sizes = [n for n, _ in calls]
    assert sizes == [1, 2, 2, 2, 2, 1], sizes
    assert all(peak <= budget for _, peak in calls), (calls, budget)
    assert chunked.info["slices_per_call"] == 2
    np.testing.assert_allclose(chunked.mean.numpy(), whole.mean.numpy(), atol=1e-5 * float(whole.mean.abs().max()))


def test_reconstructor_refuses_a_bad_budget():
    for bad in (0, -5, "lots", 1.5):
        with pytest.raises(ValueError, match="memory_budget"):
            Reconstructor(memory_budget=bad)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_chunked_calls_stay_inside_the_budget_on_cuda(denoiser, volume):
    """The same on CUDA, measured by the caching allocator's peak (workspaces included)."""
    y, op = volume
    device = torch.device("cuda")
    y, op = y.to(device), SenseOp(op.maps.to(device), op.mask.to(device))
    net = ComplexDenoiser(build_network("unet", TINY_UNET)).eval().to(device)
    net.load_state_dict(denoiser.state_dict())
    one = posterior_samples("dds", net, y, op, steps=6, seed=3, memory_budget=2 ** 40).info["working_bytes_one_slice"]
    budget = int(2.5 * one)
    torch.cuda.synchronize(device)
    torch.cuda.reset_peak_memory_stats(device)
    before = torch.cuda.memory_allocated(device)
    chunked = posterior_samples("dds", net, y, op, steps=6, seed=3, memory_budget=budget)
    held = chunked.mean.numel() * 8 * 3                   # the finished calls' results, their concatenation, the mean
    assert torch.cuda.max_memory_allocated(device) - before <= budget + held
    assert chunked.info["slices_per_call"] == 2


class _Dtypes(TorchDispatchMode):
    """Every dtype an op inside the block returns."""

    def __init__(self):
        super().__init__()
        self.seen = set()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        self.seen |= {t.dtype for t in tree_flatten(out)[0] if isinstance(t, torch.Tensor)}
        return out


def test_bf16_is_never_used_on_the_cpu(denoiser):
    """use_bf16=True (the default) on CPU tensors: no op returns bfloat16, and the output is bit-identical to the same
    weights with use_bf16=False."""
    x = torch.randn(2, 32, 32, dtype=torch.complex64)
    sigma = torch.full((2,), 0.3)
    assert denoiser.precond.use_bf16
    with _Dtypes() as dtypes, torch.no_grad():
        out = denoiser(x, sigma)
    assert torch.bfloat16 not in dtypes.seen and out.dtype == torch.complex64
    plain = ComplexDenoiser(build_network("unet", TINY_UNET)).eval()
    plain.load_state_dict(denoiser.state_dict())
    plain.precond.use_bf16 = False
    with torch.no_grad():
        assert torch.equal(plain(x, sigma), out)
