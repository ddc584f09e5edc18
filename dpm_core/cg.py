"""Conjugate gradient for Hermitian positive (semi-)definite operators, solved independently per slice.

Used by SENSE-CG (:mod:`dpm_core.baselines`) and by the DDS samplers' data-consistency step. Layout: the first axis
is the slice; every step size and every stopping decision is per slice, so a slice never waits for, or is changed
by, its batch-mates.
"""
from __future__ import annotations

from typing import Callable

import torch

__all__ = ["conjugate_gradient", "batch_dot"]


def batch_dot(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per-slice real inner product Re<a, b> = Re sum conj(a) b over all but the first axis: [S] float.

    Computed on the real views (Re conj(a) b = a_re b_re + a_im b_im): no complex product is formed, which on the CPU
    is ~4x faster than ``(a.conj() * b).real`` (torch 2.13).
    """
    if a.is_complex():
        a, b = torch.view_as_real(a.resolve_conj()), torch.view_as_real(b.resolve_conj())
    return (a * b).flatten(1).sum(dim=1)


def conjugate_gradient(normal_op: Callable[[torch.Tensor], torch.Tensor], rhs: torch.Tensor,
                       x0: torch.Tensor | None = None, num_iters: int = 30, tol: float = 1e-6) -> torch.Tensor:
    """Solve normal_op(x) = rhs for a Hermitian positive (semi-)definite operator, independently per slice.

    Args:
        normal_op: x [S, ...] -> [S, ...], Hermitian PSD, acting on each slice separately.
        rhs: [S, ...] complex.
        x0: initial guess (default zeros).
        num_iters: maximum iterations.
        tol: a slice stops updating once ||r|| <= tol * ||rhs|| (0: always run ``num_iters``).
    Returns: x [S, ...].
    """
    x = torch.zeros_like(rhs) if x0 is None else x0.clone()
    r = rhs - normal_op(x)
    p = r.clone()
    rr = batch_dot(r, r)
    stop = tol ** 2 * batch_dot(rhs, rhs)
    view = (-1,) + (1,) * (rhs.ndim - 1)
    for _ in range(num_iters):
        active = rr > stop
        if not bool(active.any()):
            break
        Ap = normal_op(p)
        pAp = batch_dot(p, Ap)
        alpha = torch.where(active & (pAp > 0), rr / pAp.clamp_min(1e-30), torch.zeros_like(rr)).view(view)
        x = x + alpha * p
        r = r - alpha * Ap
        rr_new = batch_dot(r, r)
        beta = torch.where(active, rr_new / rr.clamp_min(1e-30), torch.zeros_like(rr)).view(view)
        p = r + beta * p
        rr = torch.where(active, rr_new, rr)
    return x
