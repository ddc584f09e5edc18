"""Issue acceptance for dpm-replay: one recorded file, three transports, the same images and complete outputs.

Two inputs: a Debian ismrmrd-tools Shepp-Logan dataset (converted with gadgets.mrd_io.convert_ismrmrd_tools_file) and
a small fully sampled synthetic FLAIR volume (training.synth), the latter undersampled retrospectively so that
NRMSE/SSIM are scored. Each goes through ``gadgets.replay.replay`` in mode "gadget" (spawned as Gadgetron does: the
reference), "local" (in this process) and "client" (against a dpm-server subprocess; for the ismrmrd-tools dataset
through the ``dpm-replay`` command line). method=sense throughout, so no model is needed.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import ismrmrd
import numpy as np
import pytest

from gadgets import replay
from gadgets.mrd_io import MrdRaw, convert_ismrmrd_tools_file, make_raw_acquisitions, read_mrd_raw, write_mrd_raw
from tests.test_server import ServerProcess

REPO = Path(__file__).resolve().parents[1]
CONFIG = {"method": "sense"}
TIMEOUT = 150.0
RETROSPECTIVE_R = 4.0


@pytest.fixture(scope="module")
def server():
    process = ServerProcess("--set", "method=sense", "--default-config", "dpm_recon")
    yield process
    process.kill()


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    """{"shepp_logan": converted ismrmrd-tools file or None, "flair": fully sampled synthetic FLAIR file}."""
    from training.synth import generate_subject

    folder = tmp_path_factory.mktemp("replay_inputs")
    files = {"shepp_logan": None}
    if shutil.which("ismrmrd_generate_cartesian_shepp_logan"):
        src = folder / "shepp_logan_tools.h5"
        subprocess.run(["ismrmrd_generate_cartesian_shepp_logan", "-o", str(src), "-m", "64", "-c", "4", "-r", "1",
                        "-a", "2", "-w", "16", "-C"], check=True, capture_output=True, timeout=60)
        files["shepp_logan"] = folder / "shepp_logan.h5"
        convert_ismrmrd_tools_file(str(src), str(files["shepp_logan"]))
    subject = generate_subject(5, contrast="AXFLAIR", matrix=64, coils=4, slices=2)
    full = make_raw_acquisitions(subject.kspace.numpy(), np.ones(64, dtype=bool), num_acs=0)
    files["flair"] = folder / "flair_full.h5"
    write_mrd_raw(str(files["flair"]), full)
    return files


def assert_same_headers(out: Path, reference: Path) -> None:
    """Every written image has the ImageHeader of its counterpart (same series and index), byte for byte apart from
    the attribute-string length (the meta holds measured seconds)."""
    from tests.harness import header_bytes

    def heads(folder):
        dataset = ismrmrd.Dataset(str(folder / "images.h5"), "dataset", create_if_needed=False)
        try:
            out = {}
            for group in dataset.list():
                if group.startswith("image_"):
                    for i in range(dataset.number_of_images(group)):
                        head = dataset.read_image(group, i).getHead()
                        head.attribute_string_len = 0
                        out[(group, int(head.image_index))] = header_bytes(head)
            return out
        finally:
            dataset.close()

    got, expected = heads(out), heads(reference)
    assert got.keys() == expected.keys() and all(got[k] == expected[k] for k in got)


def read_output_images(out: Path) -> dict[int, np.ndarray]:
    """images.h5 (read back with ismrmrd) -> {series: [N, H, W] pixels in image_index order}."""
    dataset = ismrmrd.Dataset(str(out / "images.h5"), "dataset", create_if_needed=False)
    try:
        series = {}
        for group in dataset.list():
            if not group.startswith("image_"):
                continue
            members = [dataset.read_image(group, i) for i in range(dataset.number_of_images(group))]
            members.sort(key=lambda im: im.image_index)
            assert all(im.image_series_index == int(group[len("image_"):]) for im in members)
            series[int(group[len("image_"):])] = np.stack([replay.image_array(im) for im in members])
        return series
    finally:
        dataset.close()


def check_outputs(out: Path, summary: dict, mode: str) -> dict[int, np.ndarray]:
    """Everything a replay promises is there and consistent with the summary; returns the images by series."""
    on_disk = json.loads((out / "summary.json").read_text())
    assert on_disk["num_images"] == summary["num_images"] > 0 and on_disk["mode"] == mode
    assert on_disk["errors"] == []
    images = read_output_images(out)
    assert sum(len(v) for v in images.values()) == summary["num_images"]
    assert {str(k): len(v) for k, v in images.items()} == summary["series"]
    assert len(list((out / "dicom").rglob("*.dcm"))) == summary["num_images"] == summary["num_dicom_files"]
    pngs = sorted(p.name for p in (out / "png").glob("*.png"))
    for series, planes in images.items():
        assert f"series{series:03d}_contact_sheet.png" in pngs
        assert sum(name.startswith(f"series{series:03d}_image") for name in pngs) == len(planes)
    assert len(pngs) == summary["num_png_files"]
    assert on_disk["reconstruction"].keys() == on_disk["series"].keys()
    assert all(params["DPM_NumMaps"] == "1" for params in on_disk["reconstruction"].values())
    timings = on_disk["timings_s"]
    assert {"read", "output"} <= set(timings)
    assert ({"model_load", "assembly", "reconstruction"} if mode == "local" else {"wire_total"}) <= set(timings)
    assert all(v >= 0 for v in timings.values())
    return images


def assert_same_pixels(got: dict, expected: dict) -> None:
    assert got.keys() == expected.keys()
    for series in expected:
        scale = np.abs(expected[series]).max()
        np.testing.assert_allclose(got[series], expected[series], rtol=0, atol=1e-4 * scale)


def test_ismrmrd_tools_dataset_in_three_modes(inputs, server, tmp_path):
    if inputs["shepp_logan"] is None:
        pytest.skip("Debian ismrmrd-tools not installed")
    path = str(inputs["shepp_logan"])
    results = {}
    for mode in ("gadget", "local"):
        out = tmp_path / mode
        summary = replay.replay(path, str(out), mode=mode, config=CONFIG, timeout=TIMEOUT)
        results[mode] = check_outputs(out, summary, mode)
    # client mode through the command line, against the running dpm-server
    out = tmp_path / "client"
    script = Path(sys.executable).with_name("dpm-replay")
    command = [str(script)] if script.exists() else [sys.executable, "-m", "gadgets.replay"]
    cli = subprocess.run(command + [path, "--out", str(out), "--mode", "client", "--port", str(server.port),
                                    "--set", "method=sense", "--timeout", str(TIMEOUT)],
                         capture_output=True, text=True, timeout=TIMEOUT + 60, cwd=str(REPO),
                         env=dict(os.environ, PYTHONPATH=str(REPO)))
    assert cli.returncode == 0, cli.stderr[-3000:]
    printed = json.loads(cli.stdout[:cli.stdout.index("\n}") + 2])
    summary = json.loads((out / "summary.json").read_text())
    assert printed["num_images"] == summary["num_images"] and summary["config"] == CONFIG
    results["client"] = check_outputs(out, summary, "client")
    assert_same_pixels(results["local"], results["gadget"])
    assert_same_pixels(results["client"], results["gadget"])


def test_synthetic_flair_retrospective_in_every_transport(inputs, server, tmp_path):
    """Fully sampled FLAIR, undersampled at R=4 (equispaced + 24 ACS), through every transport — the spawned gadget
    (execute mode), replay local, a Gadgetron client of the connect-mode server and an MRD/FIRE client of the same
    server (NUL-terminated strings): the same pixels and image headers, the same scores. The clients ask for the
    server's configuration by name (CONFIG_FILE "dpm_recon" = dpm-server's --set defaults)."""
    path = str(inputs["flair"])
    results, scores = {}, {}
    for mode in ("gadget", "local", "client", "mrd"):
        out = tmp_path / mode
        client = mode in ("client", "mrd")
        summary = replay.replay(path, str(out), mode=mode, config=None if client else CONFIG,
                                retrospective=RETROSPECTIVE_R, port=server.port if client else None, timeout=TIMEOUT,
                                config_name="dpm_recon" if client else None)
        results[mode] = check_outputs(out, summary, mode)
        assert summary["retrospective_acceleration"] == RETROSPECTIVE_R
        assert summary["methods"] == ["sense"]
        assert "metrics" in json.loads((out / "summary.json").read_text())["timings_s"]
        scores[mode] = summary["metrics_vs_reference"]["repetition_0"]
        assert scores[mode]["slices"] == 2
    for mode in ("local", "client", "mrd"):
        assert_same_pixels(results[mode], results["gadget"])
        assert_same_headers(tmp_path / mode, tmp_path / "gadget")
    assert "CONFIG_FILE 'dpm_recon'" in server.log
    for mode in ("local", "client", "mrd"):
        for name in ("nrmse", "psnr", "ssim"):
            assert scores[mode][name] == pytest.approx(scores["gadget"][name], rel=1e-4)
    # SENSE at R=4 on 4 coils: clearly better than nothing, clearly not perfect (the scores measure something)
    assert 0.01 < scores["gadget"]["nrmse"] < 0.3
    assert 0.6 < scores["gadget"]["ssim"] < 0.9999


def test_replay_refuses_client_mode_without_a_port(inputs, tmp_path):
    with pytest.raises(ValueError, match="--port"):
        replay.replay(str(inputs["flair"]), str(tmp_path), mode="client", config=CONFIG)
    with pytest.raises(ValueError, match="--config-name"):
        replay.replay(str(inputs["flair"]), str(tmp_path), mode="local", config_name="dpm_recon")


@pytest.mark.parametrize("keep", ["noise scan only", "nothing"])
def test_local_replay_of_a_stream_without_imaging_data_names_the_reason(tmp_path, keep):
    """A measurement whose file holds only its noise scan (or no acquisition at all): local replay ends with an error
    that says so, not with a blank reason."""
    from gadgets.mrd_io import MrdRaw
    from tests.harness import correlated_noise, oversampled_phantom
    kos, _ = oversampled_phantom(32, 32, 4, 1, seed=1)
    noise, _ = correlated_noise(4, 256, 1e-3, seed=2)
    raw = make_raw_acquisitions(kos, np.arange(32) % 2 == 0, num_acs=8, noise=noise)
    acquisitions = [a for a in raw.acquisitions if a.is_flag_set(ismrmrd.ACQ_IS_NOISE_MEASUREMENT)]
    write_mrd_raw(str(tmp_path / "in.h5"), MrdRaw(raw.header_xml, acquisitions if keep != "nothing" else []))
    with pytest.raises(RuntimeError, match="no imaging k-space in the stream"):
        replay.replay(str(tmp_path / "in.h5"), str(tmp_path / "out"), mode="local", config={"method": "sense"})


@pytest.mark.parametrize("content", ["text", "truncated"])
def test_replay_of_a_file_that_is_not_readable_hdf5_names_it(tmp_path, content):
    """A file that is not HDF5 at all, or an ISMRMRD file cut short: a ValueError naming the file and what is wrong
    (dpm-replay turns it into its error message, rc 2), not an h5py traceback."""
    from gadgets.mrd_io import MrdRaw
    from tests.harness import oversampled_phantom
    path = tmp_path / "in.h5"
    if content == "text":
        path.write_text("not an HDF5 file\n")
    else:
        kos, _ = oversampled_phantom(32, 32, 4, 1, seed=1)
        raw = make_raw_acquisitions(kos, np.arange(32) % 2 == 0, num_acs=8)
        write_mrd_raw(str(tmp_path / "full.h5"), MrdRaw(raw.header_xml, raw.acquisitions))
        data = (tmp_path / "full.h5").read_bytes()
        path.write_bytes(data[: len(data) // 3])
    with pytest.raises(ValueError, match=r"in\.h5: not a readable ISMRMRD HDF5 file"):
        replay.replay(str(path), str(tmp_path / "out"), mode="local", config={"method": "sense"})


def test_client_mode_names_an_unreachable_server(inputs, tmp_path):
    import socket

    with socket.socket() as probe:     # bound and held, never listening: connections are refused, no other test gets it
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
        with pytest.raises(ConnectionError, match=f"127.0.0.1:{port}.*dpm-server"):
            replay.replay(str(inputs["flair"]), str(tmp_path), mode="client", config=CONFIG, port=port, timeout=10)


def test_local_replay_records_the_reconstruction_parameters(inputs, tmp_path, caplog):
    """The recorded parameters (gadgets.images.recorded_parameters) are in every image's meta, in the DICOM
    ImageComments, in summary.json per series and in one log line per volume."""
    import logging

    import pydicom

    out = tmp_path / "local"
    with caplog.at_level(logging.INFO, logger="gadgets.pipeline"):
        summary = replay.replay(str(inputs["flair"]), str(out), mode="local", config={"method": "sense"},
                                retrospective=RETROSPECTIVE_R)
    on_disk = json.loads((out / "summary.json").read_text())
    assert on_disk["reconstruction"] == summary["reconstruction"]
    params = on_disk["reconstruction"]["1"]
    assert params["DPM_Method"] == "sense" and params["DPM_NumMaps"] == "1"
    assert 1.5 < float(params["DPM_EffectiveAcceleration"]) < RETROSPECTIVE_R      # 24 ACS of 64 lines
    assert "DPM_Zeta" not in params and "DPM_Model" not in params          # SENSE uses neither
    dataset = ismrmrd.Dataset(str(out / "images.h5"), "dataset", create_if_needed=False)
    try:
        images = [dataset.read_image("image_1", i) for i in range(dataset.number_of_images("image_1"))]
    finally:
        dataset.close()
    assert len(images) == 2
    for image in images:
        assert {key: image.meta[key] for key in params} == params
        assert image.meta["ImageComment"].endswith("; maps=1")
    comments = [str(pydicom.dcmread(path).ImageComments) for path in (out / "dicom").rglob("*.dcm")]
    assert len(comments) == 2 and all("; maps=1]" in comment for comment in comments)
    logged = [r.getMessage() for r in caplog.records if r.name == "gadgets.pipeline" and "images; " in r.getMessage()]
    assert len(logged) == 1 and logged[0].endswith("2 images; maps=1")             # one volume, one line


def test_a_raw_ismrmrd_tools_file_keeps_its_images_when_dicom_is_impossible(tmp_path):
    """Straight from ismrmrd_generate_cartesian_shepp_logan (direction cosines 0, no conversion): the ISMRMRD images,
    previews and summary are written with exit code 0; DICOM is skipped (no geometry) and the summary says why."""
    if shutil.which("ismrmrd_generate_cartesian_shepp_logan") is None:
        pytest.skip("Debian ismrmrd-tools not installed")
    src = tmp_path / "raw_tools.h5"
    subprocess.run(["ismrmrd_generate_cartesian_shepp_logan", "-o", str(src), "-m", "64", "-c", "4", "-r", "2"],
                   check=True, capture_output=True, timeout=60)
    out = tmp_path / "out"
    assert replay.main([str(src), "--out", str(out), "--set", "method=sense"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["num_images"] == 2 and summary["num_dicom_files"] == 0 and summary["errors"] == []
    assert summary["num_png_files"] == 4 == len(list((out / "png").glob("*.png")))    # 2 images + 2 contact sheets
    assert "DICOM not written" in summary["dicom_skipped"] and "read_dir" in summary["dicom_skipped"]
    assert sum(len(v) for v in read_output_images(out).values()) == 2


def test_a_raw_ismrmrd_tools_file_with_interleaved_calibration_reconstructs_every_repetition(tmp_path):
    """ismrmrd_generate_cartesian_shepp_logan -a 2 as it is (no calibration width): calibrationMode 'interleaved',
    each of the 2 repetitions one shifted ky lattice and no ACS block. Every repetition is reconstructed from its own
    lines with coil maps from both put together: against the file's own noise-free fully sampled coil images (RSS,
    readout oversampling cropped) each SENSE and L1-wavelet image is several times better than its zero-filled image
    (measured: SENSE 0.08, L1 0.061, zero-filled 0.48-0.57) and records its calibration. With the first repetition
    alone no ACS block comes together and its error says why."""
    import h5py
    if shutil.which("ismrmrd_generate_cartesian_shepp_logan") is None:
        pytest.skip("Debian ismrmrd-tools not installed")
    src = tmp_path / "raw_tools_interleaved.h5"
    subprocess.run(["ismrmrd_generate_cartesian_shepp_logan", "-o", str(src), "-m", "64", "-c", "8", "-a", "2", "-n",
                    "0.02"], check=True, capture_output=True, timeout=60)
    with h5py.File(src, "r") as f:
        coils = f["dataset/coil_images"][()]
    coils = (coils["real"] + 1j * coils["imag"])[0]                                  # [C, H, 2W]
    W = coils.shape[-1] // 2
    reference = np.sqrt((np.abs(coils[..., W // 2:W // 2 + W]) ** 2).sum(axis=0))

    def nrmse(image):                                             # scale-fitted: the file's images have their own units
        x = np.abs(image)
        x = x * (x * reference).sum() / (x * x).sum()
        return float(np.linalg.norm(x - reference) / np.linalg.norm(reference))

    errors = {}
    for method in ("sense", "l1_wavelet", "zero_filled"):
        out = tmp_path / method
        summary = replay.replay(str(src), str(out), mode="local", config={"method": method})
        assert summary["errors"] == [] and summary["num_images"] == 2, summary["errors"]
        assert all(p["DPM_Calibration"] == "64 lines of the interleaved volumes"
                   for p in summary["reconstruction"].values())
        errors[method] = [nrmse(image) for images in read_output_images(out).values() for image in images]
    assert len(errors["sense"]) == 2
    assert max(errors["sense"]) < 0.3 * min(errors["zero_filled"]), errors
    assert max(errors["l1_wavelet"]) < 0.3 * min(errors["zero_filled"]), errors

    raw = read_mrd_raw(str(src))
    short = tmp_path / "first_repetition.h5"
    write_mrd_raw(str(short), MrdRaw(raw.header_xml, [a for a in raw.acquisitions if a.idx.repetition == 0]))
    with pytest.raises(RuntimeError, match="no images came back") as failure:
        replay.replay(str(short), str(tmp_path / "short"), mode="local", config={"method": "sense"})
    assert str(failure.value).count("calibrationMode 'interleaved'") == 1


def test_a_raw_ismrmrd_tools_single_coil_file_reconstructs(tmp_path):
    """ismrmrd_generate_cartesian_shepp_logan -c 1 as it is: one receive channel has one ESPIRiT map set (the second-map
    decision used to index a second eigenvalue that does not exist and lost every image, the SENSE fallback too);
    the default DPM delivers every repetition with one map set."""
    if shutil.which("ismrmrd_generate_cartesian_shepp_logan") is None:
        pytest.skip("Debian ismrmrd-tools not installed")
    src = tmp_path / "raw_tools_one_coil.h5"
    subprocess.run(["ismrmrd_generate_cartesian_shepp_logan", "-o", str(src), "-m", "32", "-c", "1", "-a", "2", "-w",
                    "12", "-r", "2"], check=True, capture_output=True, timeout=60)
    out = tmp_path / "out"
    summary = replay.replay(str(src), str(out), mode="local", config={"steps": "3"})
    assert summary["errors"] == [] and summary["methods"] == ["dpm:fast"] and summary["num_images"] == 4
    assert all(params["DPM_NumMaps"] == "1" for params in summary["reconstruction"].values())


def test_previews_never_overwrite_each_other_when_image_index_repeats(tmp_path):
    import ismrmrd
    images = []
    for value in (1.0, 2.0, 3.0):
        image = ismrmrd.Image.from_array(np.full((8, 8), value, np.float32))
        image.image_series_index, image.image_index = 1, 0             # all three claim index 0
        images.append(image)
    written = replay.write_previews(images, tmp_path / "png")
    assert len(written) == len(set(written)) == 4 and all(p.exists() for p in written)


def test_a_series_with_images_of_different_sizes_is_written_whole(tmp_path):
    """One series, two matrix sizes: every image reaches images.h5 (the odd size in its own group) and the previews."""
    import ismrmrd
    from gadgets.mrd_io import make_header
    images = []
    for index, shape in enumerate([(8, 8), (12, 10), (8, 8)]):
        image = ismrmrd.Image.from_array(np.full(shape, index + 1.0, np.complex64))
        image.image_series_index, image.image_index = 1, index
        images.append(image)
    header_xml = ismrmrd.xsd.ToXML(make_header(num_lines=8, readout=8, num_coils=1))
    replay.write_ismrmrd_images(images, tmp_path / "images.h5", header_xml)
    dataset = ismrmrd.Dataset(str(tmp_path / "images.h5"), "dataset", False)
    groups = {name: dataset.number_of_images(name) for name in ("image_1", "image_1_10x12")}
    dataset.close()
    assert groups == {"image_1": 2, "image_1_10x12": 1}
    assert len(replay.write_previews(images, tmp_path / "png")) == 4


def test_client_mode_records_the_servers_text_messages(inputs, server, tmp_path):
    """The server's TEXT (here: an unknown configuration name replaced by its default) reaches summary.json."""
    summary = replay.replay(str(inputs["flair"]), str(tmp_path / "out"), mode="client", port=server.port,
                            config_name="invertcontrast", retrospective=RETROSPECTIVE_R, timeout=TIMEOUT)
    assert summary["num_images"] > 0
    assert any("'invertcontrast' is unknown here" in t for t in summary["texts"])
    assert json.loads((tmp_path / "out" / "summary.json").read_text())["texts"] == summary["texts"]


@pytest.mark.parametrize("read,phase,normal", [
    ((1, 0, 0), (0, 1, 0), (0, 0, 1)),          # axial as scanners store it: nothing to do
    ((0, 1, 0), (1, 0, 0), (0, 0, -1)),         # axial, read along anterior-posterior: transpose
    ((-1, 0, 0), (0, -1, 0), (0, 0, 1)),        # axial, both reversed: flip both
    ((1, 0, 0), (0, 0, 1), (0, -1, 0)),         # coronal, phase towards the head: flip rows
    ((0, 0, -1), (0, 1, 0), (1, 0, 0)),         # sagittal, read towards the feet: transpose
    ((0.995, 0.0998, 0), (-0.0998, 0.995, 0), (0, 0, 1)),    # axial, 5.7° in-plane rotation
])
def test_previews_are_in_radiological_display_orientation(read, phase, normal):
    """Each pixel's patient position (DICOM LPS, from the directions: p = column · read + row · phase) after the
    turn: axial — patient left grows to the right, posterior downwards; coronal — left to the right, feet downwards;
    sagittal — posterior to the right, feet downwards."""
    from gadgets.images import display_orientation
    H, W = 6, 8
    rows, cols = np.meshgrid(np.arange(H) - H / 2, np.arange(W) - W / 2, indexing="ij")
    position = [cols * r + rows * p for r, p in zip(read, phase)]               # x, y, z images [H, W]
    shown = [display_orientation(c, read, phase, normal) for c in position]
    main = int(np.argmax(np.abs(normal)))
    right, down = {2: ((0, 1), (1, 1)), 1: ((0, 1), (2, -1)), 0: ((1, 1), (2, -1))}[main]
    assert np.all(np.diff(shown[right[0]], axis=1) * right[1] > 0)
    assert np.all(np.diff(shown[down[0]], axis=0) * down[1] > 0)
    zero = np.arange(12.0).reshape(3, 4)
    assert np.array_equal(display_orientation(zero, (0, 0, 0), (0, 0, 0), (0, 0, 0)), zero)   # unknown: unchanged


def test_demo_exam_geometry_agrees_with_its_anatomy(tmp_path):
    """The demo's raw file: displayed by its own direction cosines, the head is longer top to bottom (anterior-
    posterior, ~ 1.2 x) than across (left-right), as every human head is; with the plain axial frame it would not be."""
    import torch

    from dpm_core.combine import rss
    from dpm_core.fft import ifft2c
    from gadgets import assembly
    from gadgets.images import display_orientation
    from gadgets.mrd_io import read_mrd_raw, rotation_directions
    from training.demo import write_synthetic_exam
    paths = write_synthetic_exam(tmp_path, 4.0, seed=7, matrix=64, coils=2, slices=2)
    raw = read_mrd_raw(str(paths["full"]))
    acq = [a for a in raw.acquisitions if not a.is_flag_set(ismrmrd.ACQ_IS_NOISE_MEASUREMENT)][0]
    buffer = next(assembly.buffers_from_acquisitions(iter(raw.acquisitions), raw.header))
    image = rss(ifft2c(torch.as_tensor(buffer.kspace[:1]))).numpy()[0]
    head = image > 0.2 * image.max()

    def extents(mask):
        rows, cols = np.nonzero(mask)
        return rows.max() - rows.min(), cols.max() - cols.min()
    tall, wide = extents(display_orientation(head, acq.read_dir, acq.phase_dir, acq.slice_dir))
    assert tall > 1.1 * wide, (tall, wide)
    axial = rotation_directions((12.0, 0.0, 6.0))
    tall, wide = extents(display_orientation(head, *axial))
    assert not tall > 1.1 * wide
