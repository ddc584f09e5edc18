"""3-D slabs accelerated along ky: a slab is reconstructed as the stack of its partitions.

Independent references: numpy's centred inverse FFT along kz (the assembly's partitions, their order and their
positions), BART's analytic 3-D multi-coil Shepp-Logan k-space (``bart phantom -3 -k``, computed in closed form, not
by an FFT) and BART's own 3-D SENSE on it (``ecalib`` on the 3-D calibration region + ``pics -l2 -r 0``), against
the RSS of the fully sampled coil images (numpy ``ifftn``).
"""
from __future__ import annotations

import subprocess
import ismrmrd
import numpy as np
import pytest

from benchmarks import bart
from dpm_core.masks import acs_slice, equispaced_mask
from gadgets import assembly, replay
from gadgets.mrd_io import MrdRaw, write_mrd_raw
from tests.harness import bucket_to_buffer, slab_acquisitions

C, Z, H, W = 4, 12, 24, 20
NUM_ACS = 12


def _kz_to_partitions(kspace: np.ndarray) -> np.ndarray:
    """[C, Z, H, W] -> [Z, C, H, W]: numpy's centred orthonormal inverse FFT along kz."""
    images = np.fft.fftshift(np.fft.ifft(np.fft.ifftshift(kspace, axes=1), axis=1, norm="ortho"), axes=1)
    return np.moveaxis(images, 1, 0)


@pytest.fixture
def slab():
    rng = np.random.default_rng(3)
    kspace = (rng.standard_normal((C, Z, H, W)) + 1j * rng.standard_normal((C, Z, H, W))).astype(np.complex64)
    return kspace, np.asarray(equispaced_mask(H, 3, NUM_ACS))


def _buffers(raw: MrdRaw) -> list:
    return list(assembly.buffers_from_acquisitions(raw.acquisitions, MrdRaw(raw.header_xml, []).header))


@pytest.mark.parametrize("recon_partitions", [Z, 8])
def test_slab_becomes_its_partitions(slab, recon_partitions):
    """Every partition is numpy's kz transform of the measured lines (slice oversampling: the centred
    ``recon_partitions`` of them), numbered in order, at slab centre + (p - Zr // 2) x thickness along slice_dir,
    with the slab's ky mask; the Gadgetron ReconData path gives the same partitions."""
    kspace, mask = slab
    raw = slab_acquisitions(kspace, mask, num_acs=NUM_ACS, recon_partitions=recon_partitions, slab_thickness_mm=48.0)
    measured = mask.copy()
    measured[H // 2 - NUM_ACS // 2:H // 2 + NUM_ACS // 2] = True
    first = Z // 2 - recon_partitions // 2
    expected = _kz_to_partitions(kspace * measured[None, None, :, None])[first:first + recon_partitions]
    header = MrdRaw(raw.header_xml, []).header
    for buffers in (_buffers(raw), assembly.buffers_from_recon_data(bucket_to_buffer(raw.acquisitions, header)[0],
                                                                    header)):
        (buffer,) = buffers
        assert buffer.slices == list(range(recon_partitions)) and buffer.noise_scale == 1.0
        np.testing.assert_array_equal(buffer.mask, measured)
        np.testing.assert_allclose(buffer.kspace, expected, atol=1e-5 * np.abs(expected).max())
        thickness = 48.0 / recon_partitions
        centre = np.asarray(raw.acquisitions[0].position, np.float64)
        normal = np.asarray(raw.acquisitions[0].slice_dir, np.float64)
        for p, head in enumerate(buffer.reference_headers):
            np.testing.assert_allclose(head.position[:], centre + (p - recon_partitions // 2) * thickness * normal,
                                       atol=1e-4)
            assert head.idx.slice == p


def test_partial_fourier_along_kz_is_zero_filled_and_its_noise_level_follows(slab):
    """Kz planes never acquired stay zero (numpy's transform of the zero-filled slab), the buffer says how many
    were measured, and the known noise level of a prewhitened stream scales by √(measured / Z)."""
    kspace, mask = slab
    planes = np.arange(Z) >= 3                           # 9 of 12 kz planes (3/4 partial Fourier)
    rng = np.random.default_rng(4)
    noise = ((rng.standard_normal((C, 256)) + 1j * rng.standard_normal((C, 256))) * 0.01).astype(np.complex64)
    (buffer,) = _buffers(slab_acquisitions(kspace, mask, num_acs=NUM_ACS, noise=noise, measured_partitions=planes))
    assert any("9 of 12 kz partitions measured" in w for w in buffer.warnings)
    assert buffer.noise_scale == pytest.approx(np.sqrt(9 / 12))
    assert buffer.noise_std == pytest.approx(np.sqrt(9 / 12) / np.sqrt(2))
    # prewhitening mixes the channels: compare the zero pattern along kz, which it keeps
    kz_of_buffer = np.fft.fftshift(np.fft.fft(np.fft.ifftshift(buffer.kspace, axes=0), axis=0, norm="ortho"), axes=0)
    energy = np.abs(kz_of_buffer).sum(axis=(1, 2, 3))
    assert (energy[~planes] < 1e-4 * energy[planes].min()).all()


def test_kz_acceleration_is_refused_with_the_reason(slab):
    """A slab whose partitions measure different ky lines (2-D undersampling) and a header declaring kz acceleration
    are ValueErrors that say so; nothing is reconstructed from a wrong model."""
    kspace, mask = slab
    raw = slab_acquisitions(kspace, mask, num_acs=NUM_ACS)
    raw.acquisitions = [a for a in raw.acquisitions
                        if not (a.idx.kspace_encode_step_2 % 2 and a.idx.kspace_encode_step_1 == 0)]
    raw.acquisitions[-1].set_flag(ismrmrd.ACQ_LAST_IN_SLICE)
    with pytest.raises(ValueError, match="accelerated along kz"):
        _buffers(raw)
    header = MrdRaw(raw.header_xml, []).header
    header.encoding[0].parallelImaging.accelerationFactor.kspace_encoding_step_2 = 2
    with pytest.raises(ValueError, match="kspace_encoding_step_2 = 2"):
        assembly.encoding_info(header)


@pytest.mark.skipif(not bart.available(), reason="bart is not on PATH (./run.sh installs it)")
@pytest.mark.timeout(300)
def test_slab_sense_matches_bart_3d_sense(tmp_path):
    """BART's analytic 3-D phantom (32³, 8 coils), ky R 2 + 12 ACS, kz fully sampled, through dpm-replay with
    method=sense: against the RSS of the fully sampled coil images our NRMSE is within 5 % of BART's 3-D SENSE
    (measured 0.0427 vs 0.0417), the partitions are not mirrored along the slab (mirrored: 0.30), and the DICOM
    series steps by one partition thickness along the normal."""
    import pydicom

    N = 32
    subprocess.run(["bart", "phantom", "-3", "-x", str(N), "-s", "8", "-k", str(tmp_path / "k")], check=True,
                   capture_output=True, timeout=120)
    kspace = np.transpose(bart.read_cfl(tmp_path / "k").reshape(N, N, N, 8), (3, 2, 1, 0)).astype(np.complex64)
    mask = np.asarray(equispaced_mask(N, 2, 12))                  # kspace [C, Z, H (bart y), W (bart x)]
    write_mrd_raw(str(tmp_path / "raw.h5"), slab_acquisitions(kspace, mask, num_acs=12, slab_thickness_mm=64.0))
    summary = replay.replay(str(tmp_path / "raw.h5"), str(tmp_path / "out"), mode="local", config={"method": "sense"})
    assert summary["num_images"] == N and summary["num_dicom_files"] == N, summary
    images = sorted(replay.read_ismrmrd_images(tmp_path / "out" / "images.h5"), key=lambda im: im.image_index)
    ours = np.stack([np.abs(np.asarray(im.data)).reshape(N, N) for im in images])

    coil_images = np.fft.fftshift(np.fft.ifftn(np.fft.ifftshift(kspace, axes=(1, 2, 3)), axes=(1, 2, 3),
                                               norm="ortho"), axes=(1, 2, 3))
    truth = np.sqrt((np.abs(coil_images) ** 2).sum(0))

    acs = np.zeros(N, bool)
    acs[acs_slice(N, 12)] = True
    bart.write_cfl(tmp_path / "ku", np.transpose(kspace * (mask | acs)[None, None, :, None], (3, 2, 1, 0)))
    ku, maps, x = (str(tmp_path / name) for name in ("ku", "s", "x"))
    for args in (["ecalib", "-m1", "-r", "12", "-c", "0.8", ku, maps], ["pics", "-S", "-l2", "-r", "0", "-i", "100",
                                                                        ku, maps, x]):
        subprocess.run(["bart", *args], check=True, capture_output=True, timeout=240)
    theirs = np.abs(np.transpose(bart.read_cfl(tmp_path / "x").reshape(N, N, N), (2, 1, 0)))

    def nrmse(x):
        return float(np.linalg.norm(x - truth) / np.linalg.norm(truth))

    assert nrmse(ours) <= 1.05 * nrmse(theirs), (nrmse(ours), nrmse(theirs))
    assert nrmse(ours[::-1]) > 4 * nrmse(ours)

    files = sorted((tmp_path / "out" / "dicom").rglob("*.dcm"))
    datasets = sorted((pydicom.dcmread(f) for f in files), key=lambda d: int(d.InstanceNumber))
    assert float(datasets[0].SliceThickness) == pytest.approx(2.0) and datasets[0].MRAcquisitionType == "3D"
    normal = np.cross(*np.reshape(np.asarray(datasets[0].ImageOrientationPatient, float), (2, 3)))
    steps = np.diff([np.asarray(d.ImagePositionPatient, float) @ normal for d in datasets])
    np.testing.assert_allclose(np.abs(steps), 2.0, atol=1e-3)
    assert (np.sign(steps) == np.sign(steps[0])).all()


def test_slab_through_the_spawned_gadget_from_recon_data(slab, tmp_path):
    """Gadgetron's ReconData path (execute mode, E2 = the slab's kz): one image per partition, the pixels of the
    Reconstructor on numpy's partitions, each at its own position, and 3-D DICOM that dciodvfy accepts."""
    import shutil

    from dpm_core.reconstruct import Reconstructor
    from gadgets.dicom import images_to_datasets, write_dicom_series
    from tests.harness import GadgetronSide, config_xml
    from tests.test_dicom import dciodvfy_errors

    kspace, mask = slab
    raw = slab_acquisitions(kspace, mask, num_acs=NUM_ACS)
    header = MrdRaw(raw.header_xml, []).header
    result = GadgetronSide(target="dpm_recon", timeout=150.0).run(
        raw.header_xml, bucket_to_buffer(raw.acquisitions, header), config=config_xml({"method": "sense"}))
    assert result.closed and result.errors == [] and len(result.images) == Z, result.log[-3000:]
    measured = mask.copy()
    measured[acs_slice(H, NUM_ACS)] = True
    expected = Reconstructor(method="sense", device="cpu").reconstruct(
        _kz_to_partitions(kspace * measured[None, None, :, None]), measured).images
    images = sorted(result.images, key=lambda im: im.image_index)
    for p, image in enumerate(images):
        np.testing.assert_allclose(image.data[0, 0], expected[p], rtol=0, atol=1e-4 * np.abs(expected).max())
    positions = np.array([np.asarray(im.position, float) for im in images])
    np.testing.assert_allclose(np.linalg.norm(np.diff(positions, axis=0), axis=1), 64.0 / Z, atol=1e-3)
    if shutil.which("dciodvfy"):
        for path in write_dicom_series(images_to_datasets(raw.header_xml, result.images), tmp_path / "dicom"):
            assert dciodvfy_errors(path) == [], path


def test_two_slabs_number_their_partitions_in_order(slab):
    """Slab s's partition p is slice s x Zr + p, placed from its own slab's position, holding its own slab's data
    (the second slab: twice the first's k-space, 40 mm further along slice_dir); both slabs in one volume."""
    import copy
    import re

    kspace, mask = slab
    first = slab_acquisitions(kspace, mask, num_acs=NUM_ACS, recon_partitions=8)
    second = copy.deepcopy(slab_acquisitions(2 * kspace, mask, num_acs=NUM_ACS, recon_partitions=8))
    shift = 40.0 * np.asarray(second.acquisitions[0].slice_dir, np.float64)
    for a in second.acquisitions:
        a.idx.slice = 1
        a.position[:] = np.asarray(a.position, np.float64) + shift
    for a in first.acquisitions:
        if a.is_flag_set(ismrmrd.ACQ_LAST_IN_MEASUREMENT):
            a.clear_flag(ismrmrd.ACQ_LAST_IN_MEASUREMENT)
            a.clear_flag(ismrmrd.ACQ_LAST_IN_REPETITION)
    header = re.sub(r"(<slice>.*?<maximum>)0(</maximum>)", r"\g<1>1\g<2>", first.header_xml, count=1, flags=re.S)
    (buffer,) = _buffers(MrdRaw(header, first.acquisitions + [a for a in second.acquisitions
                                                             if not a.is_flag_set(ismrmrd.ACQ_IS_NOISE_MEASUREMENT)]))
    assert buffer.slices == list(range(16))
    positions = np.array([np.asarray(h.position[:], np.float64) for h in buffer.reference_headers])
    np.testing.assert_allclose(positions[8:] - positions[:8], np.tile(shift, (8, 1)), atol=1e-4)
    np.testing.assert_allclose(buffer.kspace[8:], 2 * buffer.kspace[:8], atol=1e-4)


def test_training_reads_a_fully_sampled_slab_as_its_partitions(slab, tmp_path):
    """dpm-finetune's reader: a fully sampled slab gives numpy's partitions as training slices; a slab with partial
    Fourier along kz (its partitions blurred along z) is refused, naming it."""
    from training.preprocess import SourceVolume, read_volume

    kspace, _ = slab
    full = np.ones(H, bool)
    write_mrd_raw(str(tmp_path / "full.h5"), slab_acquisitions(kspace, full, num_acs=NUM_ACS))
    got = read_volume(SourceVolume(str(tmp_path / "full.h5"), "AXFLAIR", "s0", "ismrmrd", Z)).numpy()
    np.testing.assert_allclose(got, _kz_to_partitions(kspace), atol=1e-5 * np.abs(kspace).max())
    write_mrd_raw(str(tmp_path / "pf.h5"), slab_acquisitions(kspace, full, num_acs=NUM_ACS,
                                                             measured_partitions=np.arange(Z) >= 2))
    with pytest.raises(ValueError, match="partial Fourier along kz"):
        read_volume(SourceVolume(str(tmp_path / "pf.h5"), "AXFLAIR", "s0", "ismrmrd", Z))
