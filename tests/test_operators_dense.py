"""The soft-SENSE operator against a dense-matrix reference, and the unitary wavelet transform (issue 10).

For random shapes, masks (phase-encode lines [H], arbitrary samples [H, W], none) and map counts M in {1, 2, 3}, A = M F S
is built column by column as an explicit matrix from
numpy's FFT (independent of dpm_core.fft), and SenseOp's forward, adjoint and normal operator must equal A x, Aᴴ y and
AᴴA x to float32 precision.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

from dpm_core.operators import SenseOp
from dpm_core.wavelets import Wavelet2D


def _dense_sense(maps: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """A as a dense matrix [(C H W), (M H W)] for one slice: column j is the k-space of the j-th unit image.

    mask: [H, W] bool, the samples kept."""
    M, C, H, W = maps.shape
    F = lambda img: np.fft.fftshift(np.fft.fft2(np.fft.ifftshift(img, axes=(-2, -1)), norm="ortho"), axes=(-2, -1))
    A = np.zeros((C * H * W, M * H * W), np.complex128)
    for j in range(M * H * W):
        e = np.zeros(M * H * W, np.complex128)
        e[j] = 1
        coil_images = (maps * e.reshape(M, 1, H, W)).sum(0)                  # [C, H, W]
        A[:, j] = (F(coil_images) * mask[None]).ravel()
    return A


@pytest.mark.parametrize("mask_kind", ["lines", "samples", "none"])
@pytest.mark.parametrize("seed", range(6))
def test_sense_forward_adjoint_normal_match_dense_matrix(seed, mask_kind):
    rng = np.random.default_rng(seed)
    M = int(rng.integers(1, 4))
    C = int(rng.integers(1, 5))
    H, W = int(rng.integers(3, 9)), int(rng.integers(3, 9))
    maps = (rng.normal(size=(M, C, H, W)) + 1j * rng.normal(size=(M, C, H, W))).astype(np.complex64)
    lines = rng.random(H) < 0.6
    mask, given = {"lines": (np.repeat(lines[:, None], W, axis=1), torch.from_numpy(lines)),
                   "samples": ((samples := rng.random((H, W)) < 0.6), torch.from_numpy(samples)),
                   "none": (np.ones((H, W), bool), None)}[mask_kind]
    A = _dense_sense(maps.astype(np.complex128), mask)
    op = SenseOp(torch.from_numpy(maps)[None], given)
    x = (rng.normal(size=(M, H, W)) + 1j * rng.normal(size=(M, H, W))).astype(np.complex64)
    y = (rng.normal(size=(C, H, W)) + 1j * rng.normal(size=(C, H, W))).astype(np.complex64)
    xt, yt = torch.from_numpy(x)[None], torch.from_numpy(y * mask[None])[None]
    scale = np.linalg.norm(A, 2)
    np.testing.assert_allclose(op.forward(xt)[0].numpy().ravel(), A @ x.ravel(), atol=1e-5 * scale * np.abs(x).max())
    np.testing.assert_allclose(op.adjoint(yt)[0].numpy().ravel(), A.conj().T @ (y * mask[None]).ravel(),
                               atol=1e-5 * scale * np.abs(y).max())
    np.testing.assert_allclose(op.normal(xt)[0].numpy().ravel(), A.conj().T @ A @ x.ravel(),
                               atol=1e-5 * scale ** 2 * np.abs(x).max())


@pytest.mark.parametrize("shape,name", [((96, 96), "db4"), ((48, 96), "db2"), ((20, 30), "db1"), ((250, 256), "db2")])
def test_wavelet_is_unitary_with_and_without_shift(shape, name):
    g = torch.Generator().manual_seed(0)
    psi = Wavelet2D(shape, name)
    x = torch.randn(2, *shape, generator=g, dtype=torch.complex64)
    z = torch.randn(2, *shape, generator=g, dtype=torch.complex64)
    for shift in ((0, 0), (5, 7)):
        c = psi.forward(x, shift)
        assert torch.allclose(psi.adjoint(c, shift), x, atol=1e-5)                       # inverse
        assert abs(float(c.norm() / x.norm()) - 1) < 1e-5                                # energy
        lhs, rhs = (psi.forward(x, shift).conj() * z).sum(), (x.conj() * psi.adjoint(z, shift)).sum()
        assert abs(complex(lhs - rhs)) < 1e-3 * float(x.norm() * z.norm()) ** 0.5        # adjoint = inverse
    assert psi.levels == {(96, 96): 4, (48, 96): 4, (20, 30): 1, (250, 256): 1}[shape]


def test_wavelet_sparsifies_a_piecewise_constant_image():
    """Haar detail coefficients of an image constant on dyadic blocks vanish; the low-pass band holds it (closed form)."""
    img = torch.zeros(1, 16, 16, dtype=torch.complex64)
    img[:, :8] = 1.0                                                  # top half: an edge on the level-2 block grid
    c = Wavelet2D((16, 16), "db1", max_levels=2).forward(img)
    assert float(c[..., 4:, :].abs().max()) < 1e-5 and float(c[..., :, 4:].abs().max()) < 1e-5
    np.testing.assert_allclose(c[0, :2, :4].real.numpy(), 4.0, atol=1e-5)   # 4x4 block sum / 4 (orthonormal Haar)
    np.testing.assert_allclose(c[0, 2:4, :4].abs().numpy(), 0.0, atol=1e-5)
