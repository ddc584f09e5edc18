"""fastMRI reader: oversampling removal, index selection by acquisition, round trip with the synthetic writer."""
from __future__ import annotations

import h5py
import numpy as np
import pytest
import torch

from dpm_core.combine import rss
from dpm_core.fft import ifft2c
from training import synth
from training.fastmri_data import (FastMRISample, FastMRISliceDataset, FastMRIVolumeIndex, parse_header,
                                   remove_readout_oversampling)

CONTRASTS = ["AXT1", "AXFLAIR", "AXT2", "AXFLAIR"]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """Four small files with mixed contrasts, and the in-memory subjects they were written from."""
    root = tmp_path_factory.mktemp("corpus")
    subjects = {}
    for i, c in enumerate(CONTRASTS):
        s = synth.generate_subject(100 + i, c, matrix=32, coils=3, slices=3)
        path = root / f"synth_{c}_s{i:04d}.h5"
        synth.write_fastmri_h5(path, s)
        subjects[str(path)] = s
    return root, subjects


@pytest.mark.parametrize("height,w_os,w", [(8, 16, 8), (7, 20, 10), (6, 15, 7), (5, 9, 9)])
def test_remove_readout_oversampling_matches_numpy_image_crop(height, w_os, w):
    rng = np.random.default_rng(height * w_os)
    k = (rng.standard_normal((2, height, w_os)) + 1j * rng.standard_normal((2, height, w_os))).astype(np.complex64)
    axes = (-2, -1)
    img = np.fft.fftshift(np.fft.ifft2(np.fft.ifftshift(k, axes=axes), norm="ortho"), axes=axes)
    start = w_os // 2 - w // 2
    crop = img[..., start:start + w]
    ref = np.fft.fftshift(np.fft.fft2(np.fft.ifftshift(crop, axes=axes), norm="ortho"), axes=axes)
    out = remove_readout_oversampling(torch.from_numpy(k), w)
    assert out.shape == (2, height, w) and out.dtype == torch.complex64
    np.testing.assert_allclose(out.numpy(), ref, atol=1e-5)


def test_remove_readout_oversampling_rejects_bad_sizes():
    with pytest.raises(ValueError):
        remove_readout_oversampling(torch.zeros(4, 8, dtype=torch.complex64), 9)
    with pytest.raises(ValueError):
        remove_readout_oversampling(torch.zeros(4, 8), 4)


def test_index_selects_by_acquisition(corpus):
    root, _ = corpus
    full = FastMRIVolumeIndex(root)
    assert len(full) == 4 and full.acquisitions() == {"AXT1": 1, "AXFLAIR": 2, "AXT2": 1}
    assert full.num_slices == 12
    flair = FastMRIVolumeIndex(root, include=["AXFLAIR"])
    assert [v.acquisition for v in flair] == ["AXFLAIR", "AXFLAIR"]
    rest = FastMRIVolumeIndex(root, exclude=["axflair"])
    assert sorted(v.acquisition for v in rest) == ["AXT1", "AXT2"]
    assert len(FastMRIVolumeIndex(root, include="AXT1,AXT2", exclude=["AXT2"])) == 1
    assert len(FastMRIVolumeIndex(root, include=["AXPD"])) == 0
    vol = flair[0]
    assert vol.kspace_shape == (3, 3, 64, 32)
    assert vol.header["encoding_size"] == (64, 32, 1) and vol.header["recon_size"] == (32, 32, 1)
    assert vol.header["padding_left"] == 0 and vol.header["padding_right"] == 32
    assert vol.header["TI"] is not None and vol.header["field_strength_T"] == 3.0


def test_round_trip_equals_in_memory_subject(corpus):
    root, subjects = corpus
    ds = FastMRISliceDataset(root)
    assert len(ds) == 12
    for i in range(len(ds)):
        sample = ds[i]
        assert isinstance(sample, FastMRISample)
        subj = subjects[sample.fname]
        assert sample.kspace.shape == (3, 32, 32) and sample.kspace.dtype == torch.complex64   # oversampling removed
        expected = subj.recon_kspace()[sample.slice_idx]
        assert torch.allclose(sample.kspace, expected, atol=1e-6 * float(expected.abs().max()), rtol=1e-4)
        # RSS of the recon-FOV k-space reproduces the stored reconstruction_rss (read in the same orientation)
        assert torch.allclose(rss(ifft2c(sample.kspace[None]))[0], sample.target, rtol=1e-4,
                              atol=1e-5 * float(sample.target.max()))
        assert sample.attrs["acquisition"] == subj.contrast
        assert sample.header["TR"] == subj.protocol.TR


def test_dataset_include_transform_and_slice_range(corpus):
    root, _ = corpus
    ds = FastMRISliceDataset(root, include=["AXFLAIR"], transform=lambda s: (s.kspace.shape, s.slice_idx),
                             slice_range=(1, None))
    assert len(ds) == 4
    assert [ds[i][1] for i in range(4)] == [1, 2, 1, 2]
    assert ds[0][0] == (3, 32, 32)


def test_reader_on_fastmri_layout_with_nonsquare_phase_encode(tmp_path):
    """A file laid out like real fastMRI brain data (readout 2x oversampled on axis -2, 40 PE lines, recon 32 x 32)."""
    xml = """<?xml version="1.0"?><ismrmrdHeader xmlns="http://www.ismrm.org/ISMRMRD"><encoding>
      <encodedSpace><matrixSize><x>64</x><y>40</y><z>1</z></matrixSize>
        <fieldOfView_mm><x>440</x><y>220</y><z>5</z></fieldOfView_mm></encodedSpace>
      <reconSpace><matrixSize><x>32</x><y>32</y><z>1</z></matrixSize>
        <fieldOfView_mm><x>220</x><y>220</y><z>5</z></fieldOfView_mm></reconSpace>
      <encodingLimits><kspace_encoding_step_1><minimum>0</minimum><maximum>35</maximum><center>18</center>
      </kspace_encoding_step_1></encodingLimits><trajectory>cartesian</trajectory></encoding>
      <sequenceParameters><TR>9000</TR><TE>120</TE><TI>2500</TI></sequenceParameters></ismrmrdHeader>"""
    rng = np.random.default_rng(0)
    k = (rng.standard_normal((2, 4, 64, 40)) + 1j * rng.standard_normal((2, 4, 64, 40))).astype(np.complex64)
    path = tmp_path / "file_brain_AXFLAIR_0.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("kspace", data=k)
        f.create_dataset("reconstruction_rss", data=rng.random((2, 32, 32)).astype(np.float32))
        f.create_dataset("ismrmrd_header", data=np.bytes_(xml.encode()))
        f.attrs["acquisition"] = "AXFLAIR"
        f.attrs["max"] = 1.0
        f.attrs["patient_id"] = "abc"
    header = parse_header(xml)
    assert header["padding_left"] == 2 and header["padding_right"] == 38       # as fastMRI computes them
    sample = FastMRISliceDataset(tmp_path)[1]
    assert sample.kspace.shape == (4, 40, 32)                                    # [C, PE, readout without oversampling]
    expected = remove_readout_oversampling(torch.from_numpy(k[1]).transpose(-1, -2), 32)
    assert torch.allclose(sample.kspace, expected)
    with h5py.File(path, "r") as f:
        assert torch.equal(sample.target, torch.from_numpy(f["reconstruction_rss"][1]).T)
    assert sample.header["TI"] == 2500.0 and sample.attrs["patient_id"] == "abc"


def test_index_refuses_non_fastmri_files(tmp_path):
    with h5py.File(tmp_path / "x.h5", "w") as f:
        f.create_dataset("data", data=np.zeros(3))
    with pytest.raises(ValueError, match="kspace"):
        FastMRIVolumeIndex(tmp_path)
    with pytest.raises(ValueError, match="neither"):
        FastMRIVolumeIndex(tmp_path / "missing")
