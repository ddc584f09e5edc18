"""ISMRMRD raw files, acquisition assembly (BucketToBuffer equivalent), ReconData conversion, image headers.

In-process and fast: small phantoms (64 x 64, 8 coils, 3 slices). The wire-protocol end-to-end tests are in
tests/test_gadget.py.
"""
from __future__ import annotations

import copy
import shutil
import subprocess

import ismrmrd
import numpy as np
import pytest
import torch

from dpm_core.coils import noise_covariance, whitening_matrix
from dpm_core.masks import acs_slice
from dpm_core.reconstruct import Reconstructor
from gadgets import assembly, images as images_mod
from gadgets.config import ACCEPTED_PROPERTIES, GadgetConfig, parse_config
from gadgets.mrd_io import (GeometrySpec, convert_ismrmrd_tools_file, make_header, make_raw_acquisitions,
                            read_mrd_raw, rotation_directions, write_mrd_raw)
from tests.harness import asymmetric_echo, bucket_to_buffer, correlated_noise, noisy_phantom, oversampled_phantom

H = W = 64
C, S, R = 8, 3, 2
NUM_ACS = 16


@pytest.fixture(scope="module")
def scan():
    """(kspace_os [R, S, C, H, 2W], kspace [R, S, C, H, W] (whitening target), noise [C, N], imaging mask [H])."""
    kos, k = oversampled_phantom(H, W, C, S, seed=3)
    kos = np.stack([kos, 0.8 * kos])
    k = np.stack([k, 0.8 * k])
    noise, _ = correlated_noise(C, 1024, 1e-3, seed=4)
    mask = np.zeros(H, dtype=bool)
    mask[1::3] = True
    return kos, k, noise, mask


def _whiten(k: np.ndarray, noise: np.ndarray) -> np.ndarray:
    w = whitening_matrix(noise_covariance(torch.from_numpy(noise))).numpy()
    return np.einsum("dc,...chw->...dhw", w, k)


def _measured(mask: np.ndarray) -> np.ndarray:
    full = mask.copy()
    full[acs_slice(H, NUM_ACS)] = True
    return full


# ---------------------------------------------------------------------------------------------------------------------
# mrd_io

@pytest.mark.parametrize("calibration", ["embedded", "separate"])
def test_raw_file_round_trip_and_flags(tmp_path, scan, calibration):
    kos, _, noise, mask = scan
    raw = make_raw_acquisitions(kos, mask, num_acs=NUM_ACS, calibration=calibration, noise=noise)
    path = tmp_path / "raw.h5"
    write_mrd_raw(str(path), raw)
    back = read_mrd_raw(str(path))
    assert back.header_xml == raw.header_xml
    assert len(back.acquisitions) == len(raw.acquisitions)
    assert all(a == b for a, b in zip(raw.acquisitions, back.acquisitions))
    # the ismrmrd package reads the file row by row as well
    with ismrmrd.Dataset(str(path), "dataset", mode="r") as ds:
        assert ds.number_of_acquisitions() == len(raw.acquisitions)
        assert ds.read_acquisition(20) == raw.acquisitions[20]

    acqs = raw.acquisitions
    flags = lambda f: [a for a in acqs if a.is_flag_set(f)]                                     # noqa: E731
    assert len(flags(ismrmrd.ACQ_IS_NOISE_MEASUREMENT)) == 8
    assert all(a.is_flag_set(ismrmrd.ACQ_IS_NOISE_MEASUREMENT) for a in acqs[:8])
    assert len(flags(ismrmrd.ACQ_LAST_IN_SLICE)) == R * S
    assert len(flags(ismrmrd.ACQ_FIRST_IN_SLICE)) == R * S
    assert flags(ismrmrd.ACQ_LAST_IN_MEASUREMENT) == [acqs[-1]]
    imaging_acqs = acqs[8:]
    assert all(a.number_of_samples == 2 * W and a.center_sample == W for a in imaging_acqs)
    acs = np.zeros(H, dtype=bool)
    acs[acs_slice(H, NUM_ACS)] = True
    per_slice = len(imaging_acqs) // (R * S)
    if calibration == "embedded":
        assert per_slice == int((mask | acs).sum())
        both = [a.idx.kspace_encode_step_1 for a in imaging_acqs[:per_slice]
                if a.is_flag_set(ismrmrd.ACQ_IS_PARALLEL_CALIBRATION_AND_IMAGING)]
        assert sorted(both) == list(np.flatnonzero(mask & acs))
    else:
        assert per_slice == int(mask.sum() + acs.sum())
        first = imaging_acqs[:int(acs.sum())]
        assert all(a.is_flag_set(ismrmrd.ACQ_IS_PARALLEL_CALIBRATION) for a in first)
    header = raw.header
    enc = header.encoding[0]
    assert (enc.encodedSpace.matrixSize.x, enc.reconSpace.matrixSize.x) == (2 * W, W)
    assert enc.encodingLimits.kspace_encoding_step_1.center == H // 2
    assert enc.encodingLimits.slice.maximum == S - 1 and enc.encodingLimits.repetition.maximum == R - 1
    assert enc.parallelImaging.calibrationMode.value == calibration
    assert header.sequenceParameters.TI == [2500.0]
    assert header.acquisitionSystemInformation.receiverChannels == C


def test_oblique_geometry_per_slice(scan):
    kos, _, _, mask = scan
    geometry = GeometrySpec(angles_deg=(15.0, -5.0, 8.0), slice_thickness=4.0, slice_gap=1.0)
    raw = make_raw_acquisitions(kos[:1], mask, num_acs=NUM_ACS, geometry=geometry)
    read, phase, normal = rotation_directions(geometry.angles_deg)
    rot = np.stack([read, phase, normal])
    np.testing.assert_allclose(rot @ rot.T, np.eye(3), atol=1e-6)
    centres = {}
    for a in raw.acquisitions:
        np.testing.assert_allclose(a.read_dir, read, atol=1e-6)
        np.testing.assert_allclose(a.slice_dir, normal, atol=1e-6)
        centres.setdefault(a.idx.slice, np.array(a.position))
    steps = np.diff(np.stack([centres[s] for s in range(S)]), axis=0)
    np.testing.assert_allclose(steps, np.tile(5.0 * normal, (S - 1, 1)), atol=1e-4)
    stamps = [a.acquisition_time_stamp for a in raw.acquisitions]
    assert stamps == sorted(stamps) and stamps[-1] > stamps[0]


# ---------------------------------------------------------------------------------------------------------------------
# assembly

@pytest.mark.parametrize("calibration,order", [("embedded", "sequential"), ("separate", "interleaved")])
def test_acquisitions_to_buffers(scan, calibration, order):
    kos, k, noise, mask = scan
    raw = make_raw_acquisitions(kos, mask, num_acs=NUM_ACS, calibration=calibration, noise=noise, order=order)
    buffers = list(assembly.buffers_from_acquisitions(copy.deepcopy(raw.acquisitions), raw.header))
    assert [b.repetition for b in buffers] == [0, 1]
    measured = _measured(mask)
    expected = _whiten(k, noise) * measured[None, None, None, :, None]
    for r, buffer in enumerate(buffers):
        assert buffer.kspace.shape == (S, C, H, W) and buffer.kspace.dtype == np.complex64
        assert buffer.slices == [0, 1, 2] and buffer.complete
        np.testing.assert_array_equal(buffer.mask, measured)
        np.testing.assert_array_equal(buffer.calibration[acs_slice(H, NUM_ACS)], True)
        err = np.abs(buffer.kspace - expected[r]).max() / np.abs(expected[r]).max()
        assert err < 1e-4
        nearest_imaging = np.flatnonzero(mask)[np.argmin(np.abs(np.flatnonzero(mask) - H // 2))]
        for s, ref in enumerate(buffer.reference_headers):
            # as GenericReconGadget: the imaging line nearest the centre (calibration-only lines are bit.ref)
            assert ref.idx.kspace_encode_step_1 == nearest_imaging
            assert ref.idx.slice == s and ref.idx.repetition == r
            assert not ref.flags & (1 << (ismrmrd.ACQ_IS_PARALLEL_CALIBRATION - 1))


def test_slice_trigger_and_truncated_stream(scan, caplog):
    kos, _, _, mask = scan
    raw = make_raw_acquisitions(kos[:1], mask, num_acs=NUM_ACS)
    per_slice = list(assembly.buffers_from_acquisitions(copy.deepcopy(raw.acquisitions), raw.header,
                                                        trigger="slice"))
    assert [b.slices for b in per_slice] == [[0], [1], [2]]
    truncated = copy.deepcopy(raw.acquisitions[:-5])                   # stream ends inside the last slice
    buffers = list(assembly.buffers_from_acquisitions(truncated, raw.header))
    assert len(buffers) == 2 and not buffers[-1].complete
    assert "stream ended before LAST_IN_SLICE" in caplog.text


@pytest.mark.parametrize("calibration,n_dimension", [("embedded", ""), ("separate", "repetition")])
def test_recon_data_matches_acquisition_path(scan, calibration, n_dimension):
    kos, _, noise, mask = scan
    raw = make_raw_acquisitions(kos, mask, num_acs=NUM_ACS, calibration=calibration, noise=noise)
    header = raw.header
    direct = list(assembly.buffers_from_acquisitions(copy.deepcopy(raw.acquisitions), header))
    messages = bucket_to_buffer(copy.deepcopy(raw.acquisitions), header, n_dimension=n_dimension)
    assert len(messages) == (S if n_dimension == "repetition" else R * S)
    if calibration == "separate":
        assert messages[0].bits[0].ref.data.shape[1] == NUM_ACS          # Gadgetron: separate ref spans only ACS
    from_rd = [b for m in messages for b in assembly.buffers_from_recon_data(m, header)]
    for volume in direct:
        for s in volume.slices:
            match = [b for b in from_rd if b.slices == [s] and b.repetition == volume.repetition]
            assert len(match) == 1
            np.testing.assert_array_equal(match[0].mask, volume.mask)
            np.testing.assert_allclose(match[0].kspace[0], volume.kspace[s], rtol=0, atol=1e-6)
            ref_a, ref_b = match[0].reference_headers[0], volume.reference_headers[s]
            assert ref_a.scan_counter == ref_b.scan_counter


def test_readouts_of_another_encoding_space_never_reach_encoding_0(scan):
    """A second encoding's readouts (encoding_space_ref 1; here copies of encoding 0's lines with other data) ahead of
    the imaging, or as a second ReconData bit: both paths build exactly encoding 0's k-space and every buffer says how
    many readouts were skipped (without the filter they were averaged into encoding 0's lines)."""
    from gadgetron.types.recon_data import ReconBit, ReconBuffer, ReconData
    kos, _, noise, mask = scan
    raw = make_raw_acquisitions(kos, mask, num_acs=NUM_ACS, noise=noise)
    noise_acqs = [a for a in raw.acquisitions if a.is_flag_set(ismrmrd.ACQ_IS_NOISE_MEASUREMENT)]
    imaging = [a for a in raw.acquisitions if not a.is_flag_set(ismrmrd.ACQ_IS_NOISE_MEASUREMENT)]
    others = []
    for a in imaging[:5]:
        other = copy.deepcopy(a)
        other.encoding_space_ref = 1
        other.data[:] = 7 * a.data[::-1]
        others.append(other)
    clean = list(assembly.buffers_from_acquisitions(copy.deepcopy(raw.acquisitions), raw.header))
    mixed = list(assembly.buffers_from_acquisitions(copy.deepcopy(noise_acqs + others + imaging), raw.header))
    assert len(mixed) == len(clean) == R
    for a, b in zip(clean, mixed):
        np.testing.assert_array_equal(b.kspace, a.kspace)
        assert a.warnings == [] and b.warnings == ["5 readout(s) of encoding space 1 skipped: this reconstruction "
                                                   "uses encoding 0 only"]
    message = bucket_to_buffer(copy.deepcopy(raw.acquisitions), raw.header)[0]
    data = message.bits[0].data
    headers = copy.deepcopy(data.headers)
    for index in np.ndindex(headers.shape):
        headers[index].encoding_space_ref = 1
    second = ReconBit(ReconBuffer(7 * data.data, None, None, headers, data.sampling), None)
    alone = assembly.buffers_from_recon_data(message, raw.header)
    both = assembly.buffers_from_recon_data(ReconData([message.bits[0], second]), raw.header)
    filled = sum(int(h.number_of_samples > 0) for h in headers.flat)
    assert len(both) == len(alone) == 1 and filled > 0
    np.testing.assert_array_equal(both[0].kspace, alone[0].kspace)
    assert both[0].warnings == [f"{filled} readout(s) of encoding space 1 skipped: this reconstruction uses "
                                f"encoding 0 only"]


def test_an_oversampled_asymmetric_echo_keeps_its_measured_samples_and_says_which(scan):
    """A 75 % echo of the 2x-oversampled readout: the buffer's readout mask holds the recon samples the echo covers
    less ASYMMETRIC_ECHO_MARGIN at the cut, there its k-space is the full echo's within 2 %, and the rest is zero (not
    data); before, such lines were refused ('do not fit a readout')."""
    kos, _, noise, mask = scan
    raw = make_raw_acquisitions(kos, mask, num_acs=NUM_ACS, noise=noise)
    cut = kos.shape[-1] // 4                                                   # 25 % of the 2W samples
    whole = list(assembly.buffers_from_acquisitions(copy.deepcopy(raw.acquisitions), raw.header))
    echo = list(assembly.buffers_from_acquisitions(asymmetric_echo(copy.deepcopy(raw.acquisitions), cut), raw.header))
    assert len(echo) == len(whole) == R
    first = int(np.ceil(cut / 2)) + assembly.ASYMMETRIC_ECHO_MARGIN
    expected = np.arange(W) >= first
    for a, b in zip(whole, echo):
        assert a.readout is None and np.array_equal(b.readout, expected) and np.array_equal(b.mask, a.mask)
        assert np.abs(b.kspace[..., ~expected]).max() == 0
        kept, ref = b.kspace[..., expected], a.kspace[..., expected]
        assert np.linalg.norm(kept - ref) < 0.02 * np.linalg.norm(ref)
    # The pipeline hands the readout mask on: its L1 images are the readout-aware ones, not those of zeros as data.
    from gadgets.pipeline import Pipeline
    sent, errors = [], []
    Pipeline(parse_config({"method": "l1_wavelet"})).reconstruct_stream(iter(echo[:1]), raw.header, sent.append, errors)
    assert not errors and len(sent) == S
    pixels = np.stack([np.asarray(i.data).squeeze() for i in sent])
    rec = Reconstructor(method="l1_wavelet", device="cpu")
    aware = rec.reconstruct(echo[0].kspace, echo[0].mask, readout=echo[0].readout)
    zeros = rec.reconstruct(echo[0].kspace, echo[0].mask, maps=aware.maps)
    assert aware.info["readout_fraction"] == pytest.approx(expected.mean())
    np.testing.assert_allclose(pixels, aware.images, rtol=0, atol=1e-5 * np.abs(aware.images).max())
    meta = ismrmrd.Meta.deserialize(sent[0].attribute_string)
    assert float(meta["DPM_ReadoutFraction"]) == pytest.approx(expected.mean(), abs=1e-5)
    assert np.abs(pixels - zeros.images).max() > 1e-2 * np.abs(zeros.images).max()


def test_an_asymmetric_echo_padded_by_gadgetron_keeps_its_measured_samples_on_the_recon_data_path(scan):
    """Gadgetron's AsymmetricEchoAdjustROGadget zero-pads a 75 % echo and records it in discard_pre, which its
    RemoveROOversamplingGadget rescales (emulated by tests.harness.bucket_to_buffer as those gadgets' source does):
    the ReconData buffers carry the same readout mask and k-space as the acquisition path's, so the padding is not
    taken as measured zeros there either; a line whose recorded echo misses the k-space centre is refused."""
    from tests.harness import bucket_to_buffer
    kos, _, noise, mask = scan
    raw = make_raw_acquisitions(kos, mask, num_acs=NUM_ACS, noise=noise)
    cut = kos.shape[-1] // 4
    direct = list(assembly.buffers_from_acquisitions(asymmetric_echo(copy.deepcopy(raw.acquisitions), cut),
                                                     raw.header))
    messages = bucket_to_buffer(asymmetric_echo(copy.deepcopy(raw.acquisitions), cut), raw.header)
    padded = [b for m in messages for b in assembly.buffers_from_recon_data(m, raw.header)]
    first = int(np.ceil(cut / 2)) + assembly.ASYMMETRIC_ECHO_MARGIN
    for b in padded:
        assert np.array_equal(b.readout, np.arange(W) >= first)
        match = next(d for d in direct if d.counters == b.counters)
        rows = [match.slices.index(s) for s in b.slices]
        np.testing.assert_allclose(b.kspace, match.kspace[rows], rtol=0, atol=1e-5 * np.abs(match.kspace).max())
    assert len(padded) == R * S
    head = copy.copy(messages[0].bits[0].data.headers[0, 0, 0, 0, 0])
    head.discard_pre = 3 * W // 2 + 2                                           # beyond the centre, in recon units
    with pytest.raises(ValueError, match="does not hold the k-space centre"):
        assembly._echo_of_padded_line(head, assembly.encoding_info(raw.header), W, 0)


def test_interleaved_volumes_without_acs_calibrate_from_their_group(scan):
    """calibrationMode 'interleaved': repetition 0 brings an embedded ACS block and calibrates itself; repetition 1
    measures the other lattice only (no ACS). Repetition 1 leaves with its group's lines put together, repetition 0's
    ACS lines among them, and its own lines as its only data; a header in another mode passes such a volume on
    unchanged (and the Reconstructor refuses it)."""
    kos, _, noise, mask = scan
    lattice = np.zeros(H, dtype=bool)
    lattice[::2] = True
    first = make_raw_acquisitions(kos[:1], lattice, num_acs=NUM_ACS, noise=noise)
    second = make_raw_acquisitions(kos[1:], ~lattice, num_acs=0)
    for a in second.acquisitions:
        a.idx.repetition = 1
    header = make_header(num_lines=H, readout=W, num_coils=C, num_slices=S, num_repetitions=2, acceleration=2,
                         calibration="interleaved")
    acquisitions = first.acquisitions + [a for a in second.acquisitions
                                         if not a.is_flag_set(ismrmrd.ACQ_IS_NOISE_MEASUREMENT)]
    buffers = list(assembly.buffers_from_acquisitions(copy.deepcopy(acquisitions), header))
    assert [b.repetition for b in buffers] == [0, 1]
    own, lent = buffers
    assert own.interleaved_calibration is None
    assert np.array_equal(lent.mask, ~lattice) and lent.interleaved_calibration is not None
    measured = np.abs(lent.interleaved_calibration).sum(axis=(0, 1, 3)) > 0
    assert np.array_equal(measured, np.ones(H, bool))          # both lattices and the ACS block
    np.testing.assert_array_equal(lent.interleaved_calibration[:, :, ~lattice], lent.kspace[:, :, ~lattice])
    np.testing.assert_array_equal(lent.interleaved_calibration[:, :, lattice], own.kspace[:, :, lattice])
    rec = Reconstructor(method="sense", device="cpu")
    assert rec.reconstruct(lent.kspace, lent.mask, calibration=lent.interleaved_calibration).info["calibration"] \
        == f"{H} lines of the interleaved volumes"
    embedded = make_header(num_lines=H, readout=W, num_coils=C, num_slices=S, num_repetitions=2, acceleration=2)
    plain = list(assembly.buffers_from_acquisitions(copy.deepcopy(acquisitions), embedded))
    assert plain[1].interleaved_calibration is None
    with pytest.raises(ValueError, match="centre line"):
        rec.reconstruct(plain[1].kspace, plain[1].mask)


def test_interleaved_calibration_follows_the_headers_interleaving_dimension(scan):
    """interleavingDimension 'phase': the two lattices arrive as phases 0 and 1 of one repetition and calibrate each
    other; declared as 'repetition' instead, the same volumes are no group and each gets none."""
    from ismrmrd import xsd
    kos, _, noise, mask = scan
    lattice = np.zeros(H, dtype=bool)
    lattice[::2] = True
    parts = [make_raw_acquisitions(kos[i:i + 1], m, num_acs=0, noise=noise if i == 0 else None)
             for i, m in enumerate((lattice, ~lattice))]
    for a in parts[1].acquisitions:
        a.idx.phase = 1
    acquisitions = parts[0].acquisitions + parts[1].acquisitions
    for dimension, grouped in (("phase", True), ("repetition", False)):
        header = make_header(num_lines=H, readout=W, num_coils=C, num_slices=S, acceleration=2,
                             calibration="interleaved")
        header.encoding[0].parallelImaging.interleavingDimension = xsd.interleavingDimensionType(dimension)
        buffers = list(assembly.buffers_from_acquisitions(copy.deepcopy(acquisitions), header))
        assert sorted(b.counters["phase"] for b in buffers) == [0, 1]
        if grouped:
            assert all(np.array_equal(np.abs(b.interleaved_calibration).sum(axis=(0, 1, 3)) > 0, np.ones(H, bool))
                       for b in buffers)
        else:
            assert all(not np.array_equal(np.abs(b.interleaved_calibration).sum(axis=(0, 1, 3)) > 0,
                                          np.ones(H, bool)) for b in buffers)


def test_header_validation():
    radial = make_header(num_lines=H, readout=W, num_coils=C, trajectory="radial")
    with pytest.raises(ValueError, match="only 'cartesian'"):
        assembly.encoding_info(radial)
    info = assembly.encoding_info(make_header(num_lines=H, readout=W, num_coils=C, num_slices=5))
    assert (info.num_lines, info.readout, info.encoded_readout, info.num_slices, info.ky_offset) == (H, W, 2 * W, 5, 0)


def test_header_parsing_is_tolerant_where_gadgetron_is(scan, caplog):
    """parse_header (every transport's parser): unknown elements are ignored, a missing <encodingLimits> becomes an
    empty one and the scan still assembles (what the ismrmrd package's parser refuses with a TypeError), trailing
    NULs are stripped; XML that is not well-formed and a missing <encodedSpace> are ValueErrors naming the problem."""
    import re
    from gadgets.mrd_io import MrdRaw, parse_header
    kos, _, _, mask = scan
    raw = make_raw_acquisitions(kos[0], mask, num_acs=NUM_ACS)
    vendor = raw.header_xml.replace("<encoding>", "<encoding><vendorTweak>7</vendorTweak>", 1)
    assert parse_header(vendor.encode() + b"\0").encoding[0].encodedSpace.matrixSize.y == H
    without_limits = re.sub(r"<encodingLimits>.*?</encodingLimits>", "", raw.header_xml, flags=re.S)
    assert "encodingLimits" not in without_limits
    buffers = list(assembly.buffers_from_acquisitions(copy.deepcopy(raw.acquisitions),
                                                      MrdRaw(without_limits, []).header))
    reference = list(assembly.buffers_from_acquisitions(copy.deepcopy(raw.acquisitions), raw.header))
    assert len(buffers) == 1 and buffers[0].slices == reference[0].slices
    np.testing.assert_array_equal(buffers[0].kspace, reference[0].kspace)
    assert "without <encodingLimits>" in caplog.text
    with pytest.raises(ValueError, match="not well-formed XML"):
        parse_header(raw.header_xml[:-40])
    with pytest.raises(ValueError, match="lacks the required element <encodedSpace>"):
        parse_header(re.sub(r"<encodedSpace>.*?</encodedSpace>", "", raw.header_xml, flags=re.S))


def test_declared_sizes_are_checked_before_allocating():
    """An absurd declared matrix is refused from the header, and a volume over the k-space budget before its buffer
    is allocated — each naming what to check — instead of an allocation failure killing the process."""
    with pytest.raises(ValueError, match=r"encodedSpace.matrixSize.y = 100000 is outside 1\.\.2048"):
        assembly.encoding_info(make_header(num_lines=100000, readout=W, num_coils=C))
    header = make_header(num_lines=2048, readout=2048, num_coils=C, num_slices=64)
    with pytest.raises(ValueError, match=r"64 slice\(s\) x 32 coils x 2048 lines x 2048 samples needs 64\.0 GiB"):
        assembly._SliceAccumulator(32, assembly.encoding_info(header))


def test_repeated_lines_are_averaged_not_overwritten(scan):
    """Two copies of one imaging line with different data (no noise scan, so no whitening): the buffer holds their
    mean — computed here from the two single-copy streams — and says so."""
    kos, _, _, mask = scan
    raw = make_raw_acquisitions(kos[0], mask, num_acs=NUM_ACS)
    line = next(a for a in raw.acquisitions if a.idx.slice == 0 and a.idx.kspace_encode_step_1 == 1)
    second = copy.deepcopy(line)
    second.data[:] = 3.0 * line.data + 1.0                    # a conflicting copy
    first_only = next(iter(assembly.buffers_from_acquisitions(copy.deepcopy(raw.acquisitions), raw.header)))
    replaced = [copy.deepcopy(second) if a.scan_counter == line.scan_counter else a
                for a in copy.deepcopy(raw.acquisitions)]
    second_only = next(iter(assembly.buffers_from_acquisitions(replaced, raw.header)))
    stream = copy.deepcopy(raw.acquisitions)
    at = next(i for i, a in enumerate(stream) if a.scan_counter == line.scan_counter)
    stream.insert(at + 1, copy.deepcopy(second))
    both = next(iter(assembly.buffers_from_acquisitions(stream, raw.header)))
    ky = 1 + H // 2 - int(raw.header.encoding[0].encodingLimits.kspace_encoding_step_1.center)
    expected = (first_only.kspace[0, :, ky] + second_only.kspace[0, :, ky]) / 2
    np.testing.assert_allclose(both.kspace[0, :, ky], expected, rtol=1e-5, atol=1e-6 * np.abs(expected).max())
    assert not np.allclose(both.kspace[0, :, ky], second_only.kspace[0, :, ky])       # not last-copy-wins
    np.testing.assert_array_equal(both.kspace[1:], first_only.kspace[1:])
    assert both.warnings == ["slice 0: 1 repeated line(s) averaged"]


@pytest.mark.skipif(shutil.which("ismrmrd_generate_cartesian_shepp_logan") is None,
                    reason="Debian ismrmrd-tools not installed")
def test_ismrmrd_tools_dataset_converts_and_assembles(tmp_path):
    src, dst = tmp_path / "sl.h5", tmp_path / "sl_converted.h5"
    subprocess.run(["ismrmrd_generate_cartesian_shepp_logan", "-o", str(src), "-m", "64", "-c", "4", "-r", "2",
                    "-a", "2", "-w", "16", "-C"], check=True, capture_output=True, timeout=60)
    raw = convert_ismrmrd_tools_file(str(src), str(dst))
    again = read_mrd_raw(str(dst))
    header = again.header                                   # parses with the strict ismrmrd 1.15 schema
    assert header.measurementInformation.protocolName == "SHEPP LOGAN"
    buffers = list(assembly.buffers_from_acquisitions(again.acquisitions, header))
    reps = header.encoding[0].encodingLimits.repetition.maximum + 1
    assert [b.repetition for b in buffers] == list(range(reps))
    for b in buffers:
        assert b.kspace.shape == (1, 4, 64, 64)
        assert b.mask[32 - 8:32 + 8].all()                  # the calibration block is in the buffer
        np.testing.assert_allclose(np.linalg.norm(b.reference_headers[0].read_dir), 1.0, atol=1e-6)
    assert len(raw.acquisitions) == len(again.acquisitions)


# ---------------------------------------------------------------------------------------------------------------------
# images

def _zero_filled_volume(scan, repetition: int):
    """(header, buffer, zero-filled ReconResult) of one repetition of the raw scan."""
    kos, _, _, mask = scan
    raw = make_raw_acquisitions(kos, mask, num_acs=NUM_ACS)
    buffer = list(assembly.buffers_from_acquisitions(copy.deepcopy(raw.acquisitions), raw.header))[repetition]
    return raw.header, buffer, Reconstructor(method="zero_filled", device="cpu").reconstruct(buffer.kspace, buffer.mask)


def test_images_from_result_headers_and_meta(scan):
    header, buffer, result = _zero_filled_volume(scan, 1)
    result.std = np.abs(result.images).astype(np.float32) * 0.1
    imgs = images_mod.images_from_result(result, buffer, header, series_index=5, std_series_index=900)
    assert len(imgs) == 2 * S
    for s, image in enumerate(imgs[:S]):
        ref = buffer.reference_headers[s]
        assert image.data_type == ismrmrd.DATATYPE_CXFLOAT and image.image_type == ismrmrd.IMTYPE_COMPLEX
        assert tuple(image.matrix_size) == (W, H, 1)
        np.testing.assert_array_equal(image.data[0, 0], result.images[s])
        assert (image.image_series_index, image.image_index) == (5 + 1, s)        # repetition 1 -> series 6
        assert (image.slice, image.repetition) == (s, 1)
        np.testing.assert_allclose(image.position, ref.position)
        np.testing.assert_allclose(image.read_dir, ref.read_dir)
        np.testing.assert_allclose(image.phase_dir, ref.phase_dir)
        assert image.acquisition_time_stamp == ref.acquisition_time_stamp
        assert tuple(image.field_of_view) == pytest.approx((220.0, 220.0, 5.0))
        meta = image.meta
        assert meta["GADGETRON_DataRole"] == "Image" and meta["DataRole"] == "Image"
        assert meta["Keep_image_geometry"] == "1" and meta["encoding"] == "0"
        assert meta["SeriesDescription"] == "AX FLAIR ZERO_FILLED"
        assert [float(v) for v in meta["ImageRowDir"]] == pytest.approx(list(ref.read_dir), abs=1e-5)
        # survives serialization
        back = ismrmrd.Image.from_bytes(image.to_bytes())
        assert back.meta["GADGETRON_ImageComment"] == meta["GADGETRON_ImageComment"]
    for image in imgs[S:]:
        assert image.data_type == ismrmrd.DATATYPE_FLOAT and image.image_series_index == 901
    fallback = images_mod.images_from_result(result, buffer, header, fallback_reason="ReconstructionError: boom")
    assert all("SENSE_FALLBACK" in i.meta["ImageComment"] and "SENSE_FALLBACK" in i.meta["SeriesDescription"]
               for i in fallback)
    assert len(fallback) == S


def test_prewhitened_buffers_carry_unit_noise_and_the_estimate_finds_it():
    """Correlated coil noise, its noise scan, readout oversampling: after the acquisition path (prewhitening, then
    oversampling removal by orthonormal FFTs) the noise is white with unit complex variance, 1/√2 per real channel.
    The calibration-matrix estimate (the DPM's noise level) finds it within 3 % on the noise alone and within 15 %
    with the birdcage phantom on top (its anatomy lifts the singular values: 1.12x, benchmarks/results/noise.md);
    the k-space edge level, with the phantom's signal at the edges, is several times too high."""
    from dpm_core.noise import estimate_noise_std, kspace_edge_level
    kos, noise = noisy_phantom(H, W, C, 2, seed=11, noise_samples=4096, sigma=2e-3)
    clean, _ = oversampled_phantom(H, W, C, 2, seed=11)
    mask = np.zeros(H, dtype=bool)
    mask[::3] = True
    unit = torch.full((2,), 2 ** -0.5)
    for k, tolerance in ((kos - clean, 0.03), (kos, 0.15)):
        raw = make_raw_acquisitions(k, mask, num_acs=NUM_ACS, noise=noise)
        buffer = next(assembly.buffers_from_acquisitions(raw.acquisitions, raw.header))
        kspace = torch.from_numpy(buffer.kspace)
        if tolerance == 0.03:
            measured = kspace[:, :, torch.from_numpy(buffer.mask)]
            assert float(torch.cat([measured.real.flatten(), measured.imag.flatten()]).std()) == \
                pytest.approx(2 ** -0.5, rel=0.02)
        estimate = estimate_noise_std(kspace, buffer.mask)
        assert torch.allclose(estimate, unit, rtol=tolerance), estimate
        assert buffer.noise_std == pytest.approx(2 ** -0.5, rel=1e-12)     # known exactly: passed on, not estimated
    assert bool((kspace_edge_level(kspace, buffer.mask) > 3 * unit).all())
    unwhitened = make_raw_acquisitions(kos, mask, num_acs=NUM_ACS)            # no noise scan: nothing is known
    assert next(assembly.buffers_from_acquisitions(unwhitened.acquisitions, unwhitened.header)).noise_std is None


def test_the_noise_scans_level_reaches_the_sampler_and_the_image_meta():
    """With a noise scan the DPM weighs the data by the prewhitened level 1/√2 (the images equal a direct
    Reconstructor call given that level, and differ from the calibration estimate's), recorded as DPM_NoiseStd with
    DPM_NoiseSource; without one, the calibration estimate, recorded as such."""
    from gadgets.pipeline import Pipeline

    kos, noise = noisy_phantom(32, 32, 4, 1, seed=5, noise_samples=1024, sigma=2e-3)
    mask = np.zeros(32, dtype=bool)
    mask[::2] = True
    properties = {"method": "dpm", "model": "flair_default", "steps": "4", "warm_start": "none", "zeta": "1"}

    def run(raw):
        sent, errors = [], []
        buffers = list(assembly.buffers_from_acquisitions(copy.deepcopy(raw.acquisitions), raw.header))
        Pipeline(parse_config(properties)).reconstruct_stream(iter(buffers), raw.header, sent.append, errors)
        assert not errors and len(sent) == 1, errors
        return buffers[0], np.asarray(sent[0].data).squeeze(), ismrmrd.Meta.deserialize(sent[0].attribute_string)

    buffer, pixels, meta = run(make_raw_acquisitions(kos, mask, num_acs=12, noise=noise))
    assert meta["DPM_NoiseSource"] == "given" and float(meta["DPM_NoiseStd"]) == pytest.approx(2 ** -0.5)
    direct = Reconstructor(method="dpm", sampler_options={"steps": 4}, warm_start=None, zeta=1.0, device="cpu",
                           progress=None)
    given = direct.reconstruct(buffer.kspace, buffer.mask, slice_ids=buffer.slices, noise_std=2 ** -0.5).images[0]
    estimated = direct.reconstruct(buffer.kspace, buffer.mask, slice_ids=buffer.slices).images[0]
    np.testing.assert_allclose(pixels, given, rtol=0, atol=1e-5 * np.abs(given).max())
    assert np.abs(pixels - estimated).max() > 1e-3 * np.abs(given).max()
    _, _, meta = run(make_raw_acquisitions(kos, mask, num_acs=12))
    assert meta["DPM_NoiseSource"] == "calibration matrix"


DPM_INFO = {"effective_acceleration": 3.2307692, "num_maps": 2, "second_map_energy": [0.31, 0.2875], "zeta": 8.0,
            "zeta_rule": "card", "model": "flair_default", "model_sha256": "1a2b3c4d" + "e" * 56, "sampler": "fast",
            "nfe_per_sample": 40, "num_samples": 1, "scale": [1.0, 2.0], "measured_noise_std": [0.70711, 0.7]}


def test_recorded_parameters_from_a_hand_made_info():
    from dpm_core.reconstruct import ReconResult

    result = ReconResult(images=np.zeros((2, 4, 4), np.complex64), std=None, maps=np.zeros((2, 2, 1, 4, 4)),
                         method="dpm:fast", info=dict(DPM_INFO))
    params = images_mod.recorded_parameters(result.info)
    assert params == {"DPM_EffectiveAcceleration": "3.23077", "DPM_NumMaps": "2", "DPM_SecondMapEnergy": "0.31 0.2875",
                      "DPM_Zeta": "8", "DPM_ZetaRule": "card", "DPM_Model": "flair_default",
                      "DPM_ModelSHA256": "1a2b3c4d" + "e" * 56, "DPM_Sampler": "fast", "DPM_NFEPerSample": "40",
                      "DPM_NumSamples": "1", "DPM_NoiseStd": "0.70711 0.7"}
    assert images_mod.parameters_text(params) == "zeta=8 (card), maps=2, model=flair_default sha256 1a2b3c4d"
    # L1 with a λ per slice chosen by a rule; None and absent keys give no entry
    l1 = images_mod.recorded_parameters({"num_maps": 1, "l1_lamda": [1e-4, 2.5e-4],
                                         "lamda_rule": "edge:0.16*kspace_edge_level", "nfe_per_sample": None})
    assert l1 == {"DPM_NumMaps": "1", "DPM_Lambda": "0.0001 0.00025", "DPM_LambdaRule": "edge:0.16*kspace_edge_level"}
    assert images_mod.parameters_text(l1) == "lambda=0.0001 0.00025 (edge:0.16*kspace_edge_level), maps=1"
    assert images_mod.recorded_parameters({}) == {} and images_mod.parameters_text({}) == ""
    # pnp's held-out ζ rule also says how many lines, in how many folds, it scored ζ on
    pnp = images_mod.recorded_parameters({"zeta": 0.0625, "zeta_rule": "auto:holdout (the pnp sampler's rule)",
                                          "zeta_holdout_lines": 9, "zeta_holdout_folds": 3})
    assert pnp == {"DPM_Zeta": "0.0625", "DPM_ZetaRule": "auto:holdout (the pnp sampler's rule)",
                   "DPM_ZetaHoldoutLines": "9", "DPM_ZetaHoldoutFolds": "3"}


def test_recorded_parameters_reach_meta_comment_and_dicom(scan):
    from gadgets.dicom import images_to_datasets

    header, buffer, result = _zero_filled_volume(scan, 0)
    result.method, result.info = "dpm:fast", dict(DPM_INFO)          # as a DPM reconstruction reports it
    text = "zeta=8 (card), maps=2, model=flair_default sha256 1a2b3c4d"
    dpm = images_mod.images_from_result(result, buffer, header)
    fallback = images_mod.images_from_result(result, buffer, header, series_index=2,
                                             fallback_reason="ReconstructionError: boom")
    for image in dpm + fallback:
        assert image.meta["DPM_Zeta"] == "8" and image.meta["DPM_ZetaRule"] == "card"
        assert image.meta["DPM_NumMaps"] == "2" and image.meta["DPM_Model"] == "flair_default"
        assert image.meta["DPM_ModelSHA256"] == DPM_INFO["model_sha256"]
    assert dpm[0].meta["GADGETRON_ImageComment"] == dpm[0].meta["ImageComment"] == f"DPM:FAST R=3.23; {text}"
    assert fallback[0].meta["ImageComment"] == f"SENSE_FALLBACK (dpm:fast) R=3.23; {text}: DPM failed: " \
                                               "ReconstructionError: boom"
    by_series = {int(d.SeriesNumber): d for d in images_to_datasets(header, dpm + fallback)}
    assert text in by_series[1].ImageComments and list(by_series[1].ImageType)[3] == "DPM"
    assert text in by_series[2].ImageComments and list(by_series[2].ImageType)[3] == "SENSE_FALLBACK"
    assert "boom" in by_series[2].ImageComments


# ---------------------------------------------------------------------------------------------------------------------
# configuration

def test_parse_config():
    import xml.etree.ElementTree as ET
    cfg = parse_config(ET.fromstring(
        '<configuration><property name="method" value="sense"/><property name="steps" value="40"/>'
        '<property name="zeta" value="1.5"/><property name="send_std" value="false"/>'
        '<property><name>num_maps</name><value>auto</value></property></configuration>'))
    assert (cfg.method, cfg.steps, cfg.zeta, cfg.send_std, cfg.num_maps) == ("sense", 40, 1.5, False, "auto")
    assert parse_config(None) == GadgetConfig()
    assert parse_config("<configuration/>") == GadgetConfig()
    with pytest.raises(ValueError, match="unknown property 'metod'"):
        parse_config({"metod": "dpm"})
    with pytest.raises(ValueError, match="'steps' = '-3' is invalid"):
        parse_config({"steps": "-3"})
    with pytest.raises(ValueError, match="'method'"):
        parse_config({"method": "grappa"})
    for name, value in (("sampler", "nonsense"), ("zeta", "nan"), ("zeta", "-5"), ("zeta", "inf"),
                        ("device", f"cuda:{torch.cuda.device_count() + 7}"), ("device", "gpu")):
        with pytest.raises(ValueError, match=f"'{name}' = '{value}' is invalid"):   # refused at start, no fallback
            parse_config({name: value})
    assert parse_config({"sampler": "dds_lora", "model_dirs": "/a, /b"}).model_dirs == ("/a", "/b")
    from dpm_core.reconstruct import WARM_START_SIGMA
    assert GadgetConfig().reconstructor_kwargs().get("warm_start", WARM_START_SIGMA) == WARM_START_SIGMA
    assert parse_config({"warm_start": "none"}).reconstructor_kwargs()["warm_start"] is None
    assert parse_config({"warm_start": "0.4"}).reconstructor_kwargs()["warm_start"] == 0.4
    for value in ("0", "-1", "nan", "inf", "soon"):
        with pytest.raises(ValueError, match=f"'warm_start' = '{value}' is invalid"):
            parse_config({"warm_start": value})
    assert parse_config({"memory_budget_gb": "0.5"}).reconstructor_kwargs()["memory_budget"] == 2 ** 29
    assert GadgetConfig().reconstructor_kwargs()["memory_budget"] == "auto"
    with pytest.raises(ValueError, match="'memory_budget_gb' = '-2' is invalid"):
        parse_config({"memory_budget_gb": "-2"})
    assert "inject_failure" not in ACCEPTED_PROPERTIES               # the failure test hook is an environment variable
    with pytest.raises(ValueError, match="unknown property 'inject_failure'"):
        parse_config({"inject_failure": "nan"})


def test_uint16_pixel_format_is_the_scaled_magnitude_with_window_meta():
    """pixel_format=uint16 (as FIRE modules send images): stored = round(|x| / s) with one scale s = max|x| / 4095
    per volume, s in DPM_IntensityScale, WindowCenter/Width 2048/4096 — checked against the complex output."""
    from gadgets.pipeline import Pipeline

    kspace_os, _ = oversampled_phantom(height=32, width=32, coils=4, slices=2)
    imaging = np.zeros(32, bool)
    imaging[::2] = True
    raw = make_raw_acquisitions(kspace_os, imaging, num_acs=12)

    def run(properties):
        sent, errors = [], []
        buffers = assembly.buffers_from_acquisitions(iter(raw.acquisitions), raw.header)
        Pipeline(parse_config(properties)).reconstruct_stream(buffers, raw.header, sent.append, errors)
        assert not errors and len(sent) == 2
        return sent

    complex_images = run({"method": "sense"})
    stored = run({"method": "sense", "pixel_format": "uint16"})
    magnitude = np.abs(np.stack([np.asarray(im.data).squeeze() for im in complex_images]))
    scale = magnitude.max() / 4095
    for image, expected in zip(stored, magnitude):
        meta = ismrmrd.Meta.deserialize(image.attribute_string)
        assert image.data.dtype == np.uint16 and image.image_type == ismrmrd.IMTYPE_MAGNITUDE
        np.testing.assert_array_equal(np.asarray(image.data).squeeze(), np.rint(expected / scale).astype(np.uint16))
        assert float(meta["DPM_IntensityScale"]) == pytest.approx(scale, rel=1e-6)
        assert (meta["WindowCenter"], meta["WindowWidth"]) == ("2048", "4096")
    with pytest.raises(ValueError, match="pixel_format"):
        parse_config({"pixel_format": "int8"})
