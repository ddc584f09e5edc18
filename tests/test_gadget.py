"""End-to-end tests of the external gadget over the Gadgetron wire protocol (tests/harness.py plays Gadgetron).

Every stream spawns ``python -m gadgetron <port> gadgets.gadget <target>`` exactly as Gadgetron's execute mode does,
with a deadline, so nothing can hang. Reconstructions use method="sense" (fast on CPU); the DPM failure cases check
the SENSE fallback and the ERROR message.
"""
from __future__ import annotations

import copy
import shutil
import subprocess

import ismrmrd
import numpy as np
import pytest

from dpm_core.reconstruct import Reconstructor
from gadgets import assembly
from gadgets.pipeline import INJECT_FAILURE_ENV
from gadgets.mrd_io import convert_ismrmrd_tools_file, make_raw_acquisitions, read_mrd_raw
from tests.harness import GadgetronSide, bucket_to_buffer, config_xml, noisy_phantom

TIMEOUT = 150.0
H = W = 48            # the failure-case scans
C, S = 4, 2


def _check_clean_end(result) -> None:
    assert result.closed, f"no CLOSE from the gadget; log:\n{result.log[-3000:]}"
    assert result.returncode == 0, result.log[-3000:]


def _direct_images(raw, method: str = "sense") -> list[np.ndarray]:
    """What the Reconstructor gives on the same buffers, in (repetition, slice) order: the expected pixels."""
    rec = Reconstructor(method=method, device="cpu")
    out = []
    for buffer in assembly.buffers_from_acquisitions(copy.deepcopy(raw.acquisitions), raw.header):
        out.extend(rec.reconstruct(buffer.kspace, buffer.mask).images)
    return out


@pytest.fixture(scope="module")
def small_scan():
    """Two-slice phantom, one repetition, nominal R=3 + 16 ACS lines, with a noise scan."""
    kos, noise = noisy_phantom(H, W, C, S, seed=11, noise_samples=512)
    mask = np.zeros(H, dtype=bool)
    mask[H // 2 % 3::3] = True
    return kos, noise, mask


# ---------------------------------------------------------------------------------------------------------------------
# End to end

@pytest.mark.skipif(shutil.which("ismrmrd_generate_cartesian_shepp_logan") is None,
                    reason="Debian ismrmrd-tools not installed")
def test_ismrmrd_tools_dataset_with_repetitions_acquisition_input(tmp_path):
    src, dst = tmp_path / "sl.h5", tmp_path / "sl_converted.h5"
    subprocess.run(["ismrmrd_generate_cartesian_shepp_logan", "-o", str(src), "-m", "64", "-c", "4", "-r", "1",
                    "-a", "2", "-w", "16", "-C"], check=True, capture_output=True, timeout=60)
    convert_ismrmrd_tools_file(str(src), str(dst))
    raw = read_mrd_raw(str(dst))
    reps = raw.header.encoding[0].encodingLimits.repetition.maximum + 1
    result = GadgetronSide(target="dpm_recon_acquisitions", timeout=TIMEOUT).run(
        raw.header_xml, copy.deepcopy(raw.acquisitions), config=config_xml({"method": "sense", "series_index": 10}))
    _check_clean_end(result)
    assert result.errors == []
    assert len(result.images) == reps
    assert [(i.repetition, i.image_series_index, i.image_index) for i in result.images] == [
        (r, 10 + r, 0) for r in range(reps)]
    for image, expected in zip(result.images, _direct_images(raw)):
        assert image.data.shape == (1, 1, 64, 64) and image.data.dtype == np.complex64
        np.testing.assert_allclose(image.data[0, 0], expected, rtol=0, atol=1e-5 * np.abs(expected).max())


def test_recon_data_with_interleaved_calibration_reconstructs_every_repetition(tmp_path):
    """Gadgetron's ReconData path (execute mode) for ismrmrd-tools' interleaved phantom as it is (-a 2: two shifted
    lattices, no ACS block): the gadget puts the repetitions together for the coil maps as the acquisition path does,
    and delivers both, each with its calibration recorded."""
    if shutil.which("ismrmrd_generate_cartesian_shepp_logan") is None:
        pytest.skip("Debian ismrmrd-tools not installed")
    from gadgets.mrd_io import read_mrd_raw
    src = tmp_path / "interleaved.h5"
    subprocess.run(["ismrmrd_generate_cartesian_shepp_logan", "-o", str(src), "-m", "64", "-c", "8", "-a", "2", "-n",
                    "0.02"], check=True, capture_output=True, timeout=60)
    raw = read_mrd_raw(str(src))
    messages = bucket_to_buffer(copy.deepcopy(raw.acquisitions), raw.header)
    result = GadgetronSide(target="dpm_recon", timeout=TIMEOUT).run(raw.header_xml, messages,
                                                                   config=config_xml({"method": "sense"}))
    _check_clean_end(result)
    assert result.errors == [] and len(result.images) == 2, result.log[-3000:]
    assert all(image.meta["DPM_Calibration"] == "64 lines of the interleaved volumes" for image in result.images)


def test_dpm_through_the_spawned_gadget_to_valid_dicom(tmp_path):
    """The DPM itself through the spawned gadget (ReconData input, synthetic FLAIR, the shipped model chosen from the
    header, 5 DDS steps): DPM images, not the fallback, with the pixels of the in-process Reconstructor at the same
    settings (the transport adds nothing), recorded parameters in the meta, and DICOM that dciodvfy accepts."""
    from gadgets.dicom import images_to_datasets, write_dicom_series
    from training.synth import generate_subject
    from tests.test_dicom import dciodvfy_errors

    subject = generate_subject(11, contrast="AXFLAIR", matrix=64, coils=4, slices=2)
    mask = np.zeros(64, dtype=bool)
    mask[32 % 3::3] = True
    raw = make_raw_acquisitions(subject.kspace.numpy(), mask, num_acs=16)
    messages = bucket_to_buffer(copy.deepcopy(raw.acquisitions), raw.header)
    result = GadgetronSide(target="dpm_recon", timeout=TIMEOUT).run(
        raw.header_xml, messages, config=config_xml({"method": "dpm", "steps": "5"}))
    _check_clean_end(result)
    assert result.errors == [] and len(result.images) == 2, result.log[-3000:]
    assert "sampling: 100 % (" in result.log                                # a long volume never runs silent
    buffer = next(assembly.buffers_from_acquisitions(copy.deepcopy(raw.acquisitions), raw.header))
    expected = Reconstructor(method="dpm", sampler_options={"steps": 5}, device="cpu").reconstruct(
        buffer.kspace, buffer.mask, slice_ids=buffer.slices).images
    for s, image in enumerate(result.images):
        assert "SENSE_FALLBACK" not in image.meta["ImageComment"]
        assert image.meta["DPM_Model"] == "flair_default" and image.meta["DPM_Sampler"] == "fast"
        np.testing.assert_allclose(image.data[0, 0], expected[s], rtol=0, atol=1e-4 * np.abs(expected[s]).max())
    if shutil.which("dciodvfy"):
        for path in write_dicom_series(images_to_datasets(raw.header_xml, result.images), tmp_path / "dicom"):
            assert dciodvfy_errors(path) == [], path


def test_flair_volume_recon_data_input(tmp_path):
    """Main configuration: ReconData from the (emulated) BucketToBuffer, multi-slice synthetic FLAIR."""
    from training.synth import generate_subject

    subject = generate_subject(7, contrast="AXFLAIR", matrix=64, coils=4, slices=3)
    kos = subject.kspace.numpy()
    mask = np.zeros(64, dtype=bool)
    mask[32 % 4::4] = True
    noise = (subject.noise_std * (np.random.default_rng(0).standard_normal((4, 512))
                                  + 1j * np.random.default_rng(1).standard_normal((4, 512))) / np.sqrt(2))
    raw = make_raw_acquisitions(kos, mask, num_acs=16, noise=noise.astype(np.complex64), order="interleaved")
    messages = bucket_to_buffer(copy.deepcopy(raw.acquisitions), raw.header)
    assert len(messages) == 3                                  # split_slices: one ReconData per slice
    result = GadgetronSide(target="dpm_recon", timeout=TIMEOUT).run(
        raw.header_xml, messages, config=config_xml({"method": "sense", "series_index": 3}))
    _check_clean_end(result)
    assert result.errors == []
    assert [(i.slice, i.image_index, i.image_series_index) for i in result.images] == [(s, s, 3) for s in range(3)]
    buffer = next(assembly.buffers_from_acquisitions(copy.deepcopy(raw.acquisitions), raw.header))
    expected = _direct_images(raw)
    for s, image in enumerate(result.images):
        ref = buffer.reference_headers[s]
        np.testing.assert_allclose(image.position, ref.position, atol=1e-5)
        np.testing.assert_allclose(image.read_dir, ref.read_dir, atol=1e-6)
        np.testing.assert_allclose(image.phase_dir, ref.phase_dir, atol=1e-6)
        np.testing.assert_allclose(image.slice_dir, ref.slice_dir, atol=1e-6)
        assert image.acquisition_time_stamp == ref.acquisition_time_stamp
        assert image.measurement_uid == ref.measurement_uid
        assert tuple(image.matrix_size) == (64, 64, 1)
        assert image.meta["GADGETRON_DataRole"] == "Image"
        assert image.meta["SeriesDescription"] == "AX FLAIR SENSE"
        assert "SENSE" in image.meta["GADGETRON_ImageComment"]
        np.testing.assert_allclose(image.data[0, 0], expected[s], rtol=0, atol=1e-4 * np.abs(expected[s]).max())


# ---------------------------------------------------------------------------------------------------------------------
# Failures: an ERROR message (id 8) and, where k-space is usable, the SENSE fallback; never a hang

@pytest.mark.parametrize("properties,injected,reason", [
    ({"method": "dpm", "model": "/nonexistent/model_card.json"}, None, "unavailable"),
    ({"method": "dpm"}, "reconstruction_error", "DPM"),
])
def test_dpm_failure_delivers_sense_fallback_and_error(small_scan, properties, injected, reason):
    kos, noise, mask = small_scan
    raw = make_raw_acquisitions(kos, mask, num_acs=16, noise=noise)
    messages = bucket_to_buffer(copy.deepcopy(raw.acquisitions), raw.header)
    env = {INJECT_FAILURE_ENV: injected} if injected else None        # the test hook is no property
    result = GadgetronSide(target="dpm_recon", timeout=TIMEOUT, env=env).run(raw.header_xml, messages,
                                                                             config=config_xml(properties))
    _check_clean_end(result)
    assert len(result.errors) == 1 and reason in result.errors[0], result.errors
    assert len(result.images) == S
    expected = _direct_images(raw, "sense")
    for s, image in enumerate(result.images):
        assert "SENSE_FALLBACK" in image.meta["ImageComment"]
        assert "SENSE_FALLBACK" in image.meta["SeriesDescription"]
        assert "DPM_FAILED" in image.meta["GADGETRON_ImageProcessingHistory"]
        np.testing.assert_allclose(image.data[0, 0], expected[s], rtol=0, atol=1e-4 * np.abs(expected[s]).max())


@pytest.mark.parametrize("properties,expect_error", [
    ({"method": "dpm", "error_report": "log"}, False),                  # fallback images sent: flags + log, no ERROR
    ({"method": "dpm", "error_report": "log", "fallback": "false"}, True),   # nothing sent: ERROR even so
    ({"method": "dpm", "error_report": "error"}, True),
])
def test_error_report_log_keeps_the_fallback_images_of_an_offline_run(small_scan, properties, expect_error):
    """error_report=log (configs_xml/dpm_recon_offline.xml, for gadgetron --from_stream, which aborts on ERROR and
    loses the images sent before it): a failed DPM stage still delivers its flagged SENSE images and the stream ends
    in a plain CLOSE; a stream that produced no image at all still ends in ERROR."""
    kos, noise, mask = small_scan
    raw = make_raw_acquisitions(kos, mask, num_acs=16, noise=noise)
    result = GadgetronSide(target="dpm_recon_acquisitions", timeout=TIMEOUT,
                           env={INJECT_FAILURE_ENV: "reconstruction_error"}).run(
        raw.header_xml, copy.deepcopy(raw.acquisitions), config=config_xml(properties))
    _check_clean_end(result)
    if properties.get("fallback") == "false":
        assert result.images == []
    else:
        assert len(result.images) == S
        assert all("SENSE_FALLBACK" in image.meta["ImageComment"] for image in result.images)
    if expect_error:
        assert len(result.errors) == 1 and "DPM" in result.errors[0], result.errors
    else:
        assert result.errors == [], result.errors
        assert "error_report=log: not sent as ERROR" in result.log


def test_a_damaged_model_gives_the_flagged_sense_fallback_and_says_why(small_scan, tmp_path):
    """The output guard through the gadget's code path: the shipped FLAIR weights damaged and saved with a freshly
    hashed card reconstruct nothing labelled DPM; the SENSE fallback comes out flagged, and the ERROR says that the
    model failed its denoising check. The intact model on the same scan passes (DPM images, no error)."""
    from dpm_core.checkpoints import DEFAULT_MODEL_PATH
    from gadgets.config import parse_config
    from gadgets.pipeline import Pipeline
    from tests.test_reconstruct import _damaged_copy
    kos, noise, mask = small_scan
    raw = make_raw_acquisitions(kos, mask, num_acs=16, noise=noise)
    damaged = _damaged_copy(DEFAULT_MODEL_PATH, tmp_path)
    outcome = {}
    for name, model in (("intact", str(DEFAULT_MODEL_PATH)), ("damaged", str(damaged))):
        sent, errors = [], []
        buffers = assembly.buffers_from_acquisitions(copy.deepcopy(raw.acquisitions), raw.header)
        Pipeline(parse_config({"model": model, "steps": "20"})).reconstruct_stream(buffers, raw.header, sent.append,
                                                                                   errors)
        outcome[name] = (sent, errors)
    sent, errors = outcome["intact"]
    assert errors == [] and len(sent) == S
    assert all("SENSE_FALLBACK" not in ismrmrd.Meta.deserialize(i.attribute_string)["ImageComment"] for i in sent)
    sent, errors = outcome["damaged"]
    assert len(errors) == 1 and "worse than a Gaussian low-pass" in errors[0] and "SENSE fallback" in errors[0]
    assert len(sent) == S
    for image in sent:
        meta = ismrmrd.Meta.deserialize(image.attribute_string)
        assert "SENSE_FALLBACK" in meta["ImageComment"] and "DPM_FAILED" in meta["GADGETRON_ImageProcessingHistory"]


def test_a_corrupt_line_is_dropped_not_its_volume(small_scan):
    """A readout with a NaN sample costs that line only: both slices come back, slice 1 reconstructed without the line
    (its image equals SENSE of the k-space with that line unmeasured), and its image comment and DPM_InputWarnings
    say what was dropped; no ERROR, since nothing is missing."""
    kos, noise, mask = small_scan
    raw = make_raw_acquisitions(kos, mask, num_acs=16, noise=noise)
    acqs = copy.deepcopy(raw.acquisitions)
    bad = next(a for a in acqs if a.idx.slice == 1 and not a.is_flag_set(ismrmrd.ACQ_IS_NOISE_MEASUREMENT))
    bad.data[0, 5] = np.nan
    result = GadgetronSide(target="dpm_recon_acquisitions", timeout=TIMEOUT).run(
        raw.header_xml, acqs, config=config_xml({"method": "sense", "trigger": "slice"}))
    _check_clean_end(result)
    assert result.errors == [] and sorted(i.slice for i in result.images) == [0, 1]
    image = next(i for i in result.images if i.slice == 1)
    warning = image.meta["DPM_InputWarnings"]
    assert "slice 1: 1 line(s) with NaN/Inf samples dropped" in warning and str(bad.scan_counter) in warning
    assert "NaN/Inf samples dropped" in image.meta["ImageComment"]
    assert "DPM_InputWarnings" not in next(i for i in result.images if i.slice == 0).meta
    # Reference: the same slice with that line never acquired.
    without = [a for a in copy.deepcopy(raw.acquisitions) if a.scan_counter != bad.scan_counter]
    buffer = next(b for b in assembly.buffers_from_acquisitions(without, raw.header, trigger="slice")
                  if b.slices == [1])
    assert not buffer.mask[bad.idx.kspace_encode_step_1 + H // 2 - int(
        raw.header.encoding[0].encodingLimits.kspace_encoding_step_1.center)]
    from dpm_core.reconstruct import Reconstructor
    expected = Reconstructor(method="sense").reconstruct(buffer.kspace, buffer.mask).images[0]
    np.testing.assert_allclose(image.data[0, 0], expected, rtol=0, atol=1e-4 * np.abs(expected).max())


def test_non_cartesian_header_is_refused(small_scan):
    kos, _, mask = small_scan
    raw = make_raw_acquisitions(kos, mask, num_acs=16, header_kwargs={"trajectory": "radial"})
    result = GadgetronSide(target="dpm_recon_acquisitions", timeout=TIMEOUT).run(
        raw.header_xml, copy.deepcopy(raw.acquisitions), config=config_xml({"method": "sense"}))
    _check_clean_end(result)
    assert result.images == []
    assert len(result.errors) == 1 and "cartesian" in result.errors[0]


def test_no_acs_is_refused(small_scan):
    kos, _, _ = small_scan
    mask = np.zeros(H, dtype=bool)
    mask[1::3] = True                                       # the centre line 24 is not measured
    raw = make_raw_acquisitions(kos, mask, num_acs=0)
    messages = bucket_to_buffer(copy.deepcopy(raw.acquisitions), raw.header)
    result = GadgetronSide(target="dpm_recon", timeout=TIMEOUT).run(raw.header_xml, messages,
                                                                    config=config_xml({"method": "sense"}))
    _check_clean_end(result)
    assert result.images == []
    # ReconData arrives one message per slice; the gadget groups the volume's slices, so one error names both.
    assert len(result.errors) == 1 and "ACS" in result.errors[0] and "slices [0, 1]" in result.errors[0]


@pytest.mark.parametrize("target", ["dpm_recon", "dpm_recon_acquisitions"])
def test_empty_stream_is_an_error(small_scan, target):
    kos, _, mask = small_scan
    raw = make_raw_acquisitions(kos, mask, num_acs=16)
    result = GadgetronSide(target=target, timeout=TIMEOUT).run(raw.header_xml, [], config=config_xml(
        {"method": "sense"}))
    _check_clean_end(result)
    assert result.images == [] and len(result.errors) == 1 and "no imaging k-space in the stream" in result.errors[0]


def test_bad_configuration_is_refused(small_scan):
    kos, _, mask = small_scan
    raw = make_raw_acquisitions(kos, mask, num_acs=16)
    messages = bucket_to_buffer(copy.deepcopy(raw.acquisitions), raw.header)
    result = GadgetronSide(target="dpm_recon", timeout=TIMEOUT).run(
        raw.header_xml, messages, config=config_xml({"method": "sense", "steps": "zero"}))
    _check_clean_end(result)
    assert result.images == []
    assert len(result.errors) == 1 and "'steps'" in result.errors[0]
