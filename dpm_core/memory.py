"""How many slices one sampler call may take: the measured working memory of one slice against a memory budget.

The sampler runs all slices (and posterior samples) of a volume as one batch when they fit. What fits is computed,
not guessed: with a budget, the first sampler call runs one slice (useful work: results do not depend on batching)
and its peak working memory is measured — on CUDA by the caching allocator's peak (``torch.cuda.max_memory_allocated``,
exact, workspaces included); on the CPU, which has no allocator statistics, by :class:`LiveTensorBytes`, the live
bytes of every tensor the call creates. The remaining slices then run in calls of

    slices per call = floor(budget / peak of one slice)            (at least 1)

The budget is given (bytes) or what the device has free now: CUDA free memory × :data:`CUDA_FRACTION`, host
MemAvailable × :data:`HOST_FRACTION`. It bounds the working memory of each sampler call, beyond the inputs already
held (k-space, maps) and the finished results.
"""
from __future__ import annotations

import math
import weakref
from typing import Callable

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

__all__ = ["LiveTensorBytes", "peak_working_bytes", "available_bytes", "slices_per_call", "CUDA_FRACTION",
           "HOST_FRACTION"]

CUDA_FRACTION = 0.9    # of the free device memory: the rest for the allocator's fragmentation and other streams
HOST_FRACTION = 0.5    # of MemAvailable: the host also holds the transport's buffers and the other volumes


class LiveTensorBytes(TorchDispatchMode):
    """Peak bytes of the tensors created inside the ``with`` block that are alive at the same time (every aten op's
    outputs, counted once per storage and released when the last tensor on that storage is freed). Temporaries
    inside a single op (a kernel's scratch) are not seen; tensors created before the block are not counted."""

    def __init__(self):
        super().__init__()
        self.current = 0
        self.peak = 0
        self._storages: dict[int, list[int]] = {}          # data_ptr -> [bytes, tensors alive on it]

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in tree_flatten(out)[0]:
            if isinstance(t, torch.Tensor):
                self._track(t)
        return out

    def _track(self, t: torch.Tensor) -> None:
        storage = t.untyped_storage()
        key = storage.data_ptr()
        if key == 0:
            return
        entry = self._storages.get(key)
        if entry is None:
            entry = self._storages[key] = [storage.nbytes(), 0]
            self.current += entry[0]
            self.peak = max(self.peak, self.current)
        entry[1] += 1
        weakref.finalize(t, self._release, key)

    def _release(self, key: int) -> None:
        entry = self._storages.get(key)
        if entry is None:
            return
        entry[1] -= 1
        if entry[1] == 0:
            self.current -= entry[0]
            del self._storages[key]


def peak_working_bytes(fn: Callable[[], torch.Tensor], device: torch.device) -> tuple[torch.Tensor, int]:
    """(``fn()``, the peak memory it allocated beyond what was held before it): CUDA allocator peak, else
    :class:`LiveTensorBytes`."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        before = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        result = fn()
        torch.cuda.synchronize(device)
        return result, int(torch.cuda.max_memory_allocated(device) - before)
    with LiveTensorBytes() as tracker:
        result = fn()
    return result, int(tracker.peak)


def available_bytes(device: torch.device) -> int:
    """What a reconstruction on ``device`` may use now: CUDA free memory × CUDA_FRACTION, else the host's
    MemAvailable × HOST_FRACTION (Linux /proc/meminfo; 8 GiB × HOST_FRACTION where it cannot be read)."""
    if device.type == "cuda":
        free, _total = torch.cuda.mem_get_info(device)
        return int(free * CUDA_FRACTION)
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(int(line.split()[1]) * 1024 * HOST_FRACTION)
    except OSError:
        pass
    return int(8 * 2 ** 30 * HOST_FRACTION)


def slices_per_call(peak_one: int, budget: int, remaining: int) -> int:
    """The most slices (1..remaining) whose working memory fits ``budget`` bytes, from the measured peak of a call
    on one slice: n = floor(budget / peak_one). peak_one = fixed + per_slice overstates the per-slice part, so
    n slices need at most n * peak_one <= budget. 1 when not even one fits (it is tried; an out-of-memory error
    then reaches the caller)."""
    return int(min(max(math.floor(budget / max(peak_one, 1)), 1), remaining))
