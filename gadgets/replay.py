"""Replay a recorded ISMRMRD raw file through the gadget's own code path and write images, DICOM and previews.

    dpm-replay INPUT.h5 --out DIR [--mode local|gadget|client] [--reference FULL.h5 | --retrospective R] ...

Modes (one reconstruction path, three transports):
- ``local``: in this process, the gadget's own stages: :func:`gadgets.assembly.buffers_from_acquisitions` (noise
  prewhitening, readout-oversampling removal, BucketToBuffer-style slice assembly) then
  :meth:`gadgets.pipeline.Pipeline.reconstruct_stream` (Reconstructor, image headers and meta, SENSE fallback).
- ``gadget``: spawns ``python -m gadgetron <port> gadgets.gadget dpm_recon_acquisitions`` exactly as Gadgetron does
  and plays Gadgetron's side of the wire protocol (:mod:`gadgets.wire`).
- ``client``: connects to a running Gadgetron or FIRE/OpenRecon-style MRD server at ``--host``/``--port`` and speaks
  the client protocol (CONFIG, HEADER, acquisitions, CLOSE; images back).

Outputs in DIR: ``images.h5`` (ISMRMRD images, one group per series), ``dicom/`` (MR Image Storage series),
``png/`` (a preview per image and a contact sheet per series), ``summary.json`` (timings per stage, reconstruction
settings, the parameters each series was reconstructed with ("reconstruction": ζ, λ, map sets, model, ... from the
images' DPM_* meta), NRMSE/PSNR/SSIM against a fully sampled reference when one is given or made retrospectively).
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

import numpy as np

log = logging.getLogger("dpm.replay")

MODES = ("local", "gadget", "client", "mrd")   # mrd: a client speaking the MRD streaming format (FIRE/OpenRecon)


# ---------------------------------------------------------------------------------------------------------------------
# Input

def retrospective_undersample(raw, acceleration: float, num_acs: int = 24, mask_kind: str = "equispaced"):
    """Keep only the lines of an equispaced (or random) mask + ACS block of a fully sampled measurement.

    Lines in the ACS block are flagged PARALLEL_CALIBRATION_AND_IMAGING (embedded calibration), the header gets the
    acceleration factor. Noise scans are kept. Returns (new MrdRaw, mask [H] bool).
    """
    import ismrmrd

    from dpm_core.masks import acs_slice, make_mask

    from . import assembly
    from .mrd_io import MrdRaw

    header = raw.header
    info = assembly.encoding_info(header)
    H = info.num_lines
    mask = make_mask(mask_kind, H, acceleration, num_acs=num_acs)
    acs = np.zeros(H, dtype=bool)
    acs[acs_slice(H, num_acs)] = True
    kept = []
    for acq in raw.acquisitions:
        if acq.is_flag_set(ismrmrd.ACQ_IS_NOISE_MEASUREMENT):
            kept.append(acq)
            continue
        ky = int(acq.idx.kspace_encode_step_1)
        if not mask[ky]:
            continue
        if acs[ky]:
            acq.set_flag(ismrmrd.ACQ_IS_PARALLEL_CALIBRATION_AND_IMAGING)
        kept.append(acq)
    # Gadgetron closes a slice on LAST_IN_SLICE: move the flag to the last kept line of each slice.
    last_of_slice = {}
    for n, acq in enumerate(kept):
        if not acq.is_flag_set(ismrmrd.ACQ_IS_NOISE_MEASUREMENT):
            acq.clear_flag(ismrmrd.ACQ_LAST_IN_SLICE)
            last_of_slice[(acq.idx.slice, acq.idx.repetition, acq.idx.average, acq.idx.contrast, acq.idx.set)] = n
    for n in last_of_slice.values():
        kept[n].set_flag(ismrmrd.ACQ_LAST_IN_SLICE)
    enc = header.encoding[0]
    if enc.parallelImaging is not None and enc.parallelImaging.accelerationFactor is not None:
        enc.parallelImaging.accelerationFactor.kspace_encoding_step_1 = int(round(acceleration))
    return MrdRaw(header_xml=header.toXML(), acquisitions=kept), mask


# ---------------------------------------------------------------------------------------------------------------------
# Reconstruction in the three modes

def reconstruct_local(raw, config: dict) -> tuple[list, list[str], dict]:
    """The pipeline in this process. Returns (images, errors, timings)."""
    from . import assembly
    from .config import parse_config
    from .pipeline import Pipeline

    timings = {}
    t0 = time.perf_counter()
    pipeline = Pipeline(parse_config(config))
    timings["model_load"] = time.perf_counter() - t0
    header = raw.header
    images, errors = [], []
    stage = {"assembly": 0.0, "reconstruction": 0.0}

    def timed_buffers():
        iterator = assembly.buffers_from_acquisitions(iter(raw.acquisitions), header, trigger=pipeline.config.trigger)
        while True:
            t = time.perf_counter()
            try:
                buffer = next(iterator)
            except StopIteration:
                return
            finally:
                stage["assembly"] += time.perf_counter() - t
            yield buffer

    from tqdm import tqdm
    progress = tqdm(desc="volumes", unit="vol", disable=None)

    def send(image):
        images.append(image)

    t0 = time.perf_counter()
    buffers = (progress.update(1) or b for b in timed_buffers())
    pipeline.reconstruct_stream(buffers, header, send, errors)
    progress.close()
    stage["reconstruction"] = time.perf_counter() - t0 - stage["assembly"]
    timings.update(stage)
    return images, errors, timings


def reconstruct_over_wire(raw, config: dict, mode: str, host: str = "127.0.0.1", port: int | None = None,
                          timeout: float = 600.0, config_name: str | None = None,
                          texts: list | None = None) -> tuple[list, list[str], dict]:
    """``gadget`` mode (spawn the gadget as Gadgetron does), ``client`` mode (connect to a server as
    gadgetron_ismrmrd_client does) or ``mrd`` mode (connect speaking the MRD streaming format: NUL-terminated strings,
    as FIRE/OpenRecon clients; the server then answers errors as TEXT). ``config_name`` sends CONFIG_FILE, a
    configuration the server knows by name, instead of ``config`` as CONFIG_TEXT. The peer's TEXT messages (log
    lines, notices, an MRD server's "ERROR: ...") are appended to ``texts``."""
    from . import wire

    t0 = time.perf_counter()
    if mode == "gadget":
        reply = wire.run_spawned_gadget("gadgets.gadget", "dpm_recon_acquisitions", raw.header_xml,
                                        raw.acquisitions, config=config, timeout=timeout)
    else:
        if port is None:
            raise ValueError("client mode needs --port (and --host) of a running Gadgetron or MRD server")
        reply = wire.run_client(host, port, raw.header_xml, raw.acquisitions, config=config,
                                config_name=config_name, timeout=timeout, null_terminated=mode == "mrd")
    if texts is not None:
        texts.extend(reply.texts)
    return reply.images, reply.errors, {"wire_total": time.perf_counter() - t0}


# ---------------------------------------------------------------------------------------------------------------------
# Outputs

def image_array(image) -> np.ndarray:
    """ismrmrd.Image -> [H, W] (first channel, first z) complex64 or float32."""
    data = np.asarray(image.data)
    return data.reshape(data.shape[-2], data.shape[-1]) if data.ndim > 2 else data


def group_by_series(images) -> dict[int, list]:
    """{image_series_index: images sorted by image_index}."""
    series: dict[int, list] = {}
    for image in images:
        series.setdefault(int(image.image_series_index), []).append(image)
    return {k: sorted(v, key=lambda im: int(im.image_index)) for k, v in sorted(series.items())}


def reconstruction_parameters(images) -> dict[str, dict[str, str]]:
    """{series: the DPM_* meta of its first image} - method, ζ, λ, map sets, model, ... as the gadget recorded them
    (:func:`gadgets.images.recorded_parameters`); one series is one volume (repetition) of one image kind."""
    return {str(series): {key: str(value) for key, value in members[0].meta.items() if key.startswith("DPM_")}
            for series, members in group_by_series(images).items()}


def write_ismrmrd_images(images, path: Path, header_xml: str) -> None:
    """All images into one ISMRMRD file, group ``image_<series>`` per series. An ISMRMRD image group holds one
    matrix size, so images of a series whose size differs from its first image's go to ``image_<series>_<X>x<Y>``
    (matrix_size x, y) instead of failing the whole file."""
    import ismrmrd

    if path.exists():
        path.unlink()
    dataset = ismrmrd.Dataset(str(path), "dataset", create_if_needed=True)
    dataset.write_xml_header(header_xml)
    for series, members in group_by_series(images).items():
        first = tuple(members[0].matrix_size[:2])
        for image in members:
            size = tuple(image.matrix_size[:2])
            group = f"image_{series}" if size == first else f"image_{series}_{size[0]}x{size[1]}"
            dataset.append_image(group, image)
    dataset.close()


def display_array(image) -> np.ndarray:
    """ismrmrd.Image -> its magnitude [rows, columns] float32 in radiological display orientation
    (:func:`gadgets.images.display_orientation`)."""
    from .images import display_orientation
    return display_orientation(np.abs(image_array(image)).astype(np.float32), image.read_dir, image.phase_dir,
                               image.slice_dir)


def write_previews(images, out_dir: Path) -> list[Path]:
    """A PNG per image (magnitude in radiological display orientation, windowed per series at its 99.5th percentile;
    a repeated image_index gets a suffix, never overwrites) and a contact sheet per series. Returns every file
    written, once."""
    from PIL import Image

    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for series, members in group_by_series(images).items():
        planes = [display_array(im) for im in members]
        top = float(np.percentile(np.concatenate([p.ravel() for p in planes]), 99.5)) or 1.0
        tiles = []
        used: set[str] = set()
        for image, plane in zip(members, planes):
            pixels = (np.clip(plane / top, 0, 1) * 255).astype(np.uint8)
            name = f"series{series:03d}_image{int(image.image_index):03d}"
            copy = 1
            while name in used:                          # a repeated image_index must not overwrite a preview
                copy += 1
                name = f"series{series:03d}_image{int(image.image_index):03d}_{copy}"
            used.add(name)
            path = out_dir / f"{name}.png"
            Image.fromarray(pixels).save(path)
            written.append(path)
            tiles.append(pixels)
        cols = int(np.ceil(np.sqrt(len(tiles))))
        rows = int(np.ceil(len(tiles) / cols))
        h, w = max(t.shape[0] for t in tiles), max(t.shape[1] for t in tiles)     # sizes may differ in a series
        sheet = np.zeros((rows * h, cols * w), np.uint8)
        for n, tile in enumerate(tiles):
            r, c = divmod(n, cols)
            sheet[r * h:r * h + tile.shape[0], c * w:c * w + tile.shape[1]] = tile
        path = out_dir / f"series{series:03d}_contact_sheet.png"
        Image.fromarray(sheet).save(path)
        written.append(path)
    return written


def read_ismrmrd_images(path: Path) -> list:
    """Every image of an ISMRMRD file written by :func:`write_ismrmrd_images` (all ``image_*`` groups)."""
    import ismrmrd
    dataset = ismrmrd.Dataset(str(path), "dataset", create_if_needed=False)
    try:
        groups = [g for g in dataset.list() if g.startswith("image_")]
        return [dataset.read_image(g, i) for g in groups for i in range(dataset.number_of_images(g))]
    finally:
        dataset.close()


def reference_volumes(images, reference_raw, config: dict) -> dict[int, tuple[np.ndarray, np.ndarray]]:
    """{repetition: (reconstruction [S, H, W], reference [S, H, W])} of the main series against a fully sampled
    reference: the SENSE (= MVUE for full sampling) reconstruction of the reference file's k-space, so only the
    undersampling differs."""
    from . import assembly
    from .config import parse_config
    from .pipeline import Pipeline

    main_series = int(config.get("series_index", 1))
    by_series = group_by_series(images)
    sense = Pipeline(parse_config({**config, "method": "sense"}))
    volumes = {}
    for buffer in assembly.buffers_from_acquisitions(iter(reference_raw.acquisitions), reference_raw.header):
        series = main_series + buffer.repetition
        if series not in by_series:
            continue
        recon = np.stack([image_array(im) for im in by_series[series]])
        ref = sense.reconstructor.reconstruct(buffer.kspace, buffer.mask, readout=buffer.readout,
                                              calibration=buffer.interleaved_calibration).images
        if recon.shape != ref.shape:
            raise ValueError(f"reference volume {ref.shape} and reconstruction {recon.shape} differ in shape; is "
                             "the reference the fully sampled version of the same measurement?")
        volumes[buffer.repetition] = (recon, ref)
    if not volumes:
        raise ValueError("the reference file produced no volume matching the reconstructed series")
    return volumes


def reference_metrics(images, reference_raw, config: dict) -> dict:
    """NRMSE/PSNR/SSIM of the main series against a fully sampled reference (:func:`reference_volumes`), per
    repetition."""
    from dpm_core import metrics
    return {f"repetition_{rep}": {"nrmse": metrics.nrmse(recon, ref), "psnr": metrics.psnr(recon, ref),
                                  "ssim": metrics.ssim(recon, ref), "slices": int(ref.shape[0])}
            for rep, (recon, ref) in reference_volumes(images, reference_raw, config).items()}


# ---------------------------------------------------------------------------------------------------------------------
# Command line

def replay(input_path: str, out_dir: str, *, mode: str = "local", dataset: str = "dataset", config: dict | None = None,
           reference: str | None = None, retrospective: float | None = None, host: str = "127.0.0.1",
           port: int | None = None, dicom: bool = True, deidentify: bool = False, timeout: float = 600.0,
           config_name: str | None = None) -> dict:
    """Replay ``input_path`` and write everything into ``out_dir``. Returns the summary (also in summary.json).

    ``config_name`` (client mode only): send CONFIG_FILE with this name (e.g. "dpm_recon") instead of ``config``."""
    from .dicom import images_to_datasets, write_dicom_series
    from .mrd_io import read_mrd_raw

    if mode not in MODES:
        raise ValueError(f"mode {mode!r} is unknown; choose one of {MODES}")
    if config_name is not None and (mode not in ("client", "mrd") or config):
        raise ValueError("--config-name (CONFIG_FILE) is for --mode client or mrd and replaces --set; give one of "
                         "them")
    if reference and retrospective:
        raise ValueError("give either --reference (a fully sampled file) or --retrospective R, not both")
    config = dict(config or {})
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    timings = {}

    t0 = time.perf_counter()
    raw = read_mrd_raw(input_path, dataset)
    reference_raw = read_mrd_raw(reference, dataset) if reference else None
    timings["read"] = time.perf_counter() - t0
    if retrospective:
        reference_raw = read_mrd_raw(input_path, dataset)
        raw, _ = retrospective_undersample(raw, retrospective)

    texts: list[str] = []
    if mode == "local":
        images, errors, stage_timings = reconstruct_local(raw, config)
    else:
        images, errors, stage_timings = reconstruct_over_wire(raw, config, mode, host, port, timeout, config_name,
                                                              texts=texts)
    timings.update(stage_timings)
    for message in errors:
        log.error("%s", message)
    for text in texts:
        log.info("peer: %s", text)
    if not images:
        raise RuntimeError(f"no images came back from {input_path} ({mode} mode): " + " | ".join(errors + texts))

    t0 = time.perf_counter()
    write_ismrmrd_images(images, out / "images.h5", raw.header_xml)
    previews = write_previews(images, out / "png")
    dicom_files, dicom_skipped = [], None
    if dicom:
        # Images without usable geometry (e.g. ismrmrd-tools phantoms: direction cosines 0) cannot become DICOM; the
        # ISMRMRD images and previews are written already: DICOM is skipped with the reason (summary and log), and
        # the run still succeeds — the reconstruction did.
        try:
            datasets = images_to_datasets(raw.header_xml, images, deidentify=deidentify)
            dicom_files = write_dicom_series(datasets, out / "dicom")
        except ValueError as exc:
            dicom_skipped = f"DICOM not written: {exc}"
            log.warning("%s", dicom_skipped)
    timings["output"] = time.perf_counter() - t0

    summary = {
        "input": str(input_path), "mode": mode, "config": config, "config_name": config_name, "errors": errors,
        "texts": texts,
        "series": {str(k): len(v) for k, v in group_by_series(images).items()},
        "methods": sorted({im.meta["DPM_Method"] for im in images if "DPM_Method" in im.meta}),
        "reconstruction": reconstruction_parameters(images),
        "num_images": len(images), "num_dicom_files": len(dicom_files), "dicom_skipped": dicom_skipped,
        "num_png_files": len(previews),
        "timings_s": timings,
    }
    if retrospective:
        summary["retrospective_acceleration"] = retrospective
    if reference_raw is not None:
        t0 = time.perf_counter()
        summary["metrics_vs_reference"] = reference_metrics(images, reference_raw, config)
        timings["metrics"] = time.perf_counter() - t0
    (out / "summary.json").write_text(json.dumps(summary, indent=2, default=str))
    return summary


def main(argv=None) -> int:
    from .config import parse_properties          # the one --set parser (the pipeline's configuration)

    parser = argparse.ArgumentParser(prog="dpm-replay", description=__doc__.split("\n\n")[0])
    parser.add_argument("input", help="ISMRMRD raw .h5 file")
    parser.add_argument("--out", required=True, help="output directory")
    parser.add_argument("--dataset", default="dataset", help="HDF5 group of the measurement [dataset]")
    parser.add_argument("--mode", choices=MODES, default="local")
    parser.add_argument("--host", default="127.0.0.1", help="server for --mode client / mrd")
    parser.add_argument("--port", type=int, help="server port for --mode client / mrd (mrd: NUL-terminated strings "
                                                 "and errors as TEXT, the MRD streaming format of FIRE/OpenRecon)")
    parser.add_argument("--reference", help="fully sampled ISMRMRD file of the same measurement (for metrics)")
    parser.add_argument("--retrospective", type=float, metavar="R",
                        help="undersample a fully sampled input at nominal R (equispaced + 24 ACS) and score it")
    parser.add_argument("--set", action="append", default=[], metavar="NAME=VALUE",
                        help="gadget property, e.g. --set method=sense --set num_samples=4 (repeatable)")
    parser.add_argument("--config-name", metavar="NAME",
                        help="client mode: ask the server for its configuration NAME (CONFIG_FILE, as FIRE and "
                             "gadgetron_ismrmrd_client -c do; dpm-server: dpm_recon = its defaults) instead of --set")
    parser.add_argument("--no-dicom", action="store_true", help="skip DICOM output")
    parser.add_argument("--deidentify", action="store_true", help="de-identify the DICOM series")
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds to wait for images over the wire")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    try:
        summary = replay(args.input, args.out, mode=args.mode, dataset=args.dataset,
                         config=parse_properties(args.set), reference=args.reference,
                         retrospective=args.retrospective, host=args.host, port=args.port,
                         dicom=not args.no_dicom, deidentify=args.deidentify, timeout=args.timeout,
                         config_name=args.config_name)
    except (ValueError, RuntimeError, OSError) as exc:
        print(f"dpm-replay: error: {exc}", file=sys.stderr)
        return 1
    print(json.dumps({k: summary[k] for k in ("num_images", "series", "methods", "timings_s")}, indent=2))
    if "metrics_vs_reference" in summary:
        print(json.dumps(summary["metrics_vs_reference"], indent=2))
    return 0 if not summary["errors"] else 3


if __name__ == "__main__":
    sys.exit(main())
