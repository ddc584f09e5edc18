"""Process-group helpers in the style of EDM's ``torch_utils/distributed.py``.

:func:`init` works in three situations:
- plain ``python``/console script: one process; nothing is initialised (rank 0 of 1);
- ``torchrun --nproc_per_node=N``: reads RANK/WORLD_SIZE/LOCAL_RANK/MASTER_ADDR/MASTER_PORT from the environment and
  starts a process group, ``nccl`` when CUDA is used and ``gloo`` on the CPU;
- ``torch.multiprocessing.spawn`` (tests): the caller sets those variables before calling :func:`init`.
"""
from __future__ import annotations

import os

import torch
import torch.distributed as dist

__all__ = ["init", "get_rank", "get_world_size", "get_local_rank", "is_distributed", "barrier", "print0", "shutdown"]


def init(device: str | torch.device = "cpu") -> torch.device:
    """Start the process group when launched with WORLD_SIZE > 1; return the device this rank uses.

    Args:
        device: "cpu", "cuda" or "auto" (CUDA when available). With CUDA each rank takes GPU ``LOCAL_RANK``.
    Returns: torch.device of this rank.
    """
    device = str(device)
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    use_cuda = device.startswith("cuda")
    if use_cuda and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} requested but CUDA is not available; pass --device cpu")
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size > 1 and not dist.is_initialized():
        os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
        os.environ.setdefault("MASTER_PORT", "29500")
        backend = "nccl" if use_cuda else "gloo"
        dist.init_process_group(backend=backend, rank=int(os.environ["RANK"]), world_size=world_size)
    if use_cuda:
        torch.cuda.set_device(get_local_rank())
        return torch.device("cuda", get_local_rank())
    return torch.device("cpu")


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized()


def get_rank() -> int:
    return dist.get_rank() if is_distributed() else 0


def get_world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def get_local_rank() -> int:
    return int(os.environ.get("LOCAL_RANK", "0")) if is_distributed() else 0


def barrier() -> None:
    if is_distributed():
        dist.barrier()


def print0(*args, **kwargs) -> None:
    """print() on rank 0 only."""
    if get_rank() == 0:
        print(*args, **kwargs)


def shutdown() -> None:
    """Destroy the process group if one was started."""
    if is_distributed():
        dist.destroy_process_group()
