"""Shared fixtures: the real 16-coil brain slice (development data, never in the repo) and small phantoms."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
REAL_BRAIN = REPO.parent / "shared" / "data" / "brain_16coil_96" / "raw_data.mat"


def load_real_brain() -> torch.Tensor:
    """The real fully sampled 16-coil slice as k-space [1, 16, 96, 96] complex64 (skips when absent)."""
    if not REAL_BRAIN.exists():
        pytest.skip(f"real brain data not present at {REAL_BRAIN}")
    import h5py
    with h5py.File(REAL_BRAIN, "r") as f:
        raw = f["raw"][()]
    kspace = (raw["real"] + 1j * raw["imag"]).astype(np.complex64)[:, 0]
    return torch.from_numpy(kspace)[None]


DEFAULT_TEST_TIMEOUT_S = 600    # pytest-timeout: a hung test fails with a stack dump instead of stalling CI


def pytest_collection_modifyitems(items):
    """Every test gets a timeout (its own ``@pytest.mark.timeout`` if it has one)."""
    for item in items:
        if item.get_closest_marker("timeout") is None:
            item.add_marker(pytest.mark.timeout(DEFAULT_TEST_TIMEOUT_S))


@pytest.fixture
def one_thread():
    """One torch thread for the test: on a shared 2-core machine more threads only add contention."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def real_brain_kspace() -> torch.Tensor:
    return load_real_brain()


def birdcage_phantom(height: int = 64, width: int = 64, coils: int = 8, slices: int = 2, seed: int = 0):
    """Shepp-Logan phantom with smooth random phase and birdcage coil maps.

    Returns (kspace [S, C, H, W] complex64, image [S, H, W] complex64, maps [S, 1, C, H, W] complex64), torch.
    """
    import sigpy as sp
    import sigpy.mri as mr
    from dpm_core.fft import fft2c

    rng = np.random.default_rng(seed)
    base = sp.shepp_logan((height, width)).astype(np.complex64)
    yy, xx = np.meshgrid(np.linspace(-1, 1, height), np.linspace(-1, 1, width), indexing="ij")
    images, maps = [], []
    for s in range(slices):
        a, b = rng.normal(size=2)
        images.append(base * np.exp(1j * (0.5 * a * xx + 0.5 * b * yy)).astype(np.complex64))
        mps = mr.birdcage_maps((coils, height, width), r=1.2 + 0.1 * s).astype(np.complex64)
        mps /= np.sqrt((np.abs(mps) ** 2).sum(0, keepdims=True))
        maps.append(mps)
    image = torch.from_numpy(np.stack(images))
    maps_t = torch.from_numpy(np.stack(maps))[:, None]
    kspace = fft2c(maps_t[:, 0] * image[:, None])
    return kspace, image, maps_t
