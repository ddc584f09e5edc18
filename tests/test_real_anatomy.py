"""Real-anatomy corpus (dipy's bundled brain images): geometry of the resampling, scanner physics, files, CLI."""
from __future__ import annotations

import json

import h5py
import numpy as np
import pytest
import torch
from scipy import ndimage as ndi

from dpm_core.fft import fft2c, ifft2c
from training import real_anatomy
from training.fastmri_data import remove_readout_oversampling
from training.preprocess import find_volumes

pytestmark = pytest.mark.timeout(120)


def _ramp_source(n_rows: int, n_cols: int, pixel_mm: float) -> real_anatomy.RealSource:
    rows = np.broadcast_to(np.arange(n_rows, dtype=np.float32)[:, None], (n_rows, n_cols))
    cols = np.broadcast_to(np.arange(n_cols, dtype=np.float32)[None, :], (n_rows, n_cols))
    return real_anatomy.RealSource("ramp", "AXT1", np.stack([rows, cols]), pixel_mm, "test")


def _no_augmentation(monkeypatch, scale: float = 1.0):
    monkeypatch.setattr(real_anatomy, "ROTATION_DEG", 0.0)
    monkeypatch.setattr(real_anatomy, "SCALE_RANGE", (scale, scale))
    monkeypatch.setattr(real_anatomy, "AXIS_SCALE_SD", 0.0)
    monkeypatch.setattr(real_anatomy, "SHIFT_MM", 0.0)
    monkeypatch.setattr(real_anatomy, "WARP_RMS_MM", 0.0)


@pytest.mark.parametrize("scale", [1.0, 1.25])
def test_grid_maps_output_millimetres_onto_source_pixels(monkeypatch, scale):
    # Closed form: output pixel (i, j) of an Hs x Ws grid over fov mm sits at ((i - Hs//2), (j - Ws//2)) * fov / Hs mm;
    # a head scaled by `scale` shows source pixel n//2 + mm / (scale * pixel_mm) there. Bilinear interpolation
    # reproduces a linear ramp exactly, so sampling the index ramps returns those coordinates.
    _no_augmentation(monkeypatch, scale)
    src = _ramp_source(60, 80, 2.0)
    hs, ws, fov = 48, 48, 96.0
    grid = real_anatomy._warp_grid(np.random.default_rng(0), (hs, ws), fov, src)
    img = torch.from_numpy(src.slices)[:, None]                         # [2, 1, 60, 80]
    got = torch.nn.functional.grid_sample(img, grid.expand(2, -1, -1, -1), mode="bilinear", align_corners=False)
    mm = (np.arange(hs) - hs // 2) * fov / hs
    np.testing.assert_allclose(got[0, 0, :, 7].numpy(), 60 // 2 + mm / (scale * 2.0), atol=1e-3)
    np.testing.assert_allclose(got[1, 0, 5, :].numpy(), 80 // 2 + mm / (scale * 2.0), atol=1e-3)


def test_rotation_turns_the_head_about_the_centre(monkeypatch):
    _no_augmentation(monkeypatch)
    monkeypatch.setattr(real_anatomy, "ROTATION_DEG", 90.0)
    src = _ramp_source(64, 64, 1.0)
    rng = np.random.default_rng(3)
    angle = np.radians(np.random.default_rng(3).uniform(-90.0, 90.0))
    grid = real_anatomy._warp_grid(rng, (32, 32), 64.0, src)
    got = torch.nn.functional.grid_sample(torch.from_numpy(src.slices)[:, None], grid.expand(2, -1, -1, -1),
                                          align_corners=False)
    u = (np.arange(32) - 16)[:, None] * 2.0
    v = (np.arange(32) - 16)[None, :] * 2.0
    # output point p = R(angle) q for source point q, so q = R^T p.
    q_row = np.cos(angle) * u + np.sin(angle) * v
    q_col = -np.sin(angle) * u + np.cos(angle) * v
    inside = (np.abs(q_row) < 28) & (np.abs(q_col) < 28)
    np.testing.assert_allclose(got[0, 0].numpy()[inside], (32 + q_row)[inside], atol=1e-3)
    np.testing.assert_allclose(got[1, 0].numpy()[inside], (32 + q_col)[inside], atol=1e-3)


def test_sources_are_real_brains_normalized():
    sources = real_anatomy.load_sources()
    assert [s.name for s in sources] == list(real_anatomy.SOURCE_NAMES)
    for s in sources:
        assert s.slices.ndim == 3 and s.slices.dtype == np.float32 and s.slices.min() >= 0
        assert np.percentile(s.slices, 99.5) == pytest.approx(1.0, rel=1e-3)
        tissue = s.slices > real_anatomy.TISSUE_FRACTION
        assert 0.15 < tissue.mean() < 0.7                        # a head in the FOV, not noise or a full frame
    with pytest.raises(ValueError, match="unknown real-anatomy sources"):
        real_anatomy.load_sources(["colin27"])


def test_subject_is_coil_maps_times_image_with_the_stated_noise():
    src = real_anatomy.load_sources(["dipy_s0_axial"])[0]
    s = real_anatomy.augmented_subject(5, src, matrix=64, coils=4, slices=3, snr=20.0)
    assert s.kspace.shape == (3, 4, 64, 128) and s.contrast == "AXT2"
    noiseless = real_anatomy.augmented_subject(5, src, matrix=64, coils=4, slices=3, snr=1e7)
    expected = fft2c(noiseless.image[:, None] * noiseless.maps)
    assert float((noiseless.recon_kspace() - expected).norm() / expected.norm()) < 1e-4
    coil_img = ifft2c(remove_readout_oversampling(s.kspace, 64))
    air = ndi.binary_erosion((s.segmentation["head"] < 0.01).numpy(), structure=np.ones((1, 3, 3)), iterations=3)
    air = torch.from_numpy(air)[:, None].expand_as(coil_img)
    assert air.sum() > 1000
    assert float(coil_img[air].abs().pow(2).mean().sqrt()) == pytest.approx(s.noise_std, rel=0.15)
    brain = s.segmentation["head"] > 0.5
    assert float(s.image.abs()[brain].mean()) / s.noise_std == pytest.approx(20.0, rel=1e-4)
    again = real_anatomy.augmented_subject(5, src, matrix=64, coils=4, slices=3, snr=20.0)
    assert torch.equal(again.kspace, s.kspace)
    other = real_anatomy.augmented_subject(6, src, matrix=64, coils=4, slices=3, snr=20.0)
    assert not torch.equal(other.image.abs(), s.image.abs())


def test_cli_writes_a_corpus_that_the_training_reader_finds(tmp_path):
    out = tmp_path / "real"
    assert real_anatomy.main(["--out", str(out), "--heads", "2", "--matrix", "32", "--coils", "2", "--slices", "2",
                              "--quiet"]) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert len(manifest["files"]) == 2 * len(real_anatomy.SOURCE_NAMES)
    assert all("dipy" in origin for origin in manifest["sources"].values())
    volumes = find_volumes(out)
    assert sorted({v.contrast for v in volumes}) == ["AXT1", "AXT2"]
    assert len({v.subject for v in volumes}) == len(volumes)          # every file is its own head
    with h5py.File(out / manifest["files"][0]["file"]) as f:
        assert f["kspace"].shape == (2, 2, 64, 32) and f.attrs["source"] in real_anatomy.SOURCE_NAMES
    with pytest.raises(SystemExit):
        real_anatomy.main(["--out", str(out), "--sources", "colin27"])
