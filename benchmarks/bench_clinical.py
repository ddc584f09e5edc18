"""A FLAIR exam of clinical size through the gadget path: per stage time, peak memory, three transports.

    OMP_NUM_THREADS=1 python benchmarks/bench_clinical.py                 # CPU: 1 slice, extrapolated to 32
    python benchmarks/bench_clinical.py --slices 32 --device cuda --name clinical_gpu          # a GPU host
    python benchmarks/bench_clinical.py --slices 32 --device cuda --sampler pnp --name clinical_gpu_pnp

The exam: synthetic FLAIR (training.synth, subject 21), 320 x 320 after oversampling removal (640 readout samples
sent), 16 coils, equispaced nominal R = 4 + 24 ACS lines, a noise scan; the shipped model (auto choice: FLAIR),
the Reconstructor's defaults (method dpm, the fast sampler DDS started from the SENSE image at σ = WARM_START_SIGMA,
the memory budget of the device's free memory; ``--sampler`` sets the gadget property ``sampler``, e.g. pnp). Rows:
- ``local, stages``: the pipeline in a fresh process, each stage timed on its own — assembly (prewhitening,
  oversampling removal, accumulation), coil maps and sampling (the Reconstructor's own timings), images, DICOM — with
  the process's peak RSS and (CUDA) peak device memory;
- ``spawned gadget``: the acquisitions streamed to ``python -m gadgetron ... dpm_recon_acquisitions`` as Gadgetron
  does (Python start, imports and model load included);
- ``warm server``: a stream to a ``dpm-server`` that has served one before (a one-step warm-up: model loaded,
  torch initialised, nothing to start).
On the CPU the volume has ``--slices`` slices; per-slice stages scale linearly with the slice count (the sampler runs
the slices as one batch, so this is an upper bound), and the table adds the 32-slice extrapolation of each row.
Writes benchmarks/results/<name>.{json,md}.
"""
from __future__ import annotations

import argparse
import copy
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
from common import parse_volume_log, write_results  # noqa: E402

from dpm_core.reconstruct import WARM_START_SIGMA  # noqa: E402

CLINICAL_SLICES = 32


def make_exam(slices: int, matrix: int, coils: int):
    from dpm_core.masks import equispaced_mask
    from gadgets.mrd_io import GeometrySpec, make_raw_acquisitions
    from training.synth import IMAGE_FRAME, generate_subject
    subject = generate_subject(21, "AXFLAIR", matrix, coils, slices, lesion=True)
    rng = np.random.default_rng(0)
    n = 8 * subject.kspace.shape[-1]
    noise = (subject.noise_std / np.sqrt(2) * (rng.standard_normal((coils, n))
                                               + 1j * rng.standard_normal((coils, n)))).astype(np.complex64)
    return make_raw_acquisitions(subject.kspace.numpy(), equispaced_mask(matrix, 4, 24), num_acs=24, noise=noise,
                                 geometry=GeometrySpec(frame=IMAGE_FRAME))


def gadget_config(args) -> dict:
    """The gadget properties of every transport's run."""
    return {"method": "dpm", "device": args.device, **({"sampler": args.sampler} if args.sampler else {})}


def local_stages(args) -> dict:
    """The pipeline's stages in this (fresh) process."""
    import tempfile

    import torch

    from gadgets import assembly
    from gadgets.dicom import images_to_datasets, write_dicom_series
    from gadgets.config import parse_config
    from gadgets.pipeline import Pipeline
    raw = make_exam(args.slices, args.matrix, args.coils)
    props = gadget_config(args)
    t0 = time.perf_counter()
    pipeline = Pipeline(parse_config(props))
    model = pipeline.stream_model(raw.header)
    model.reconstructor.denoiser()
    load = time.perf_counter() - t0
    t0 = time.perf_counter()
    buffers = list(assembly.buffers_from_acquisitions(copy.deepcopy(raw.acquisitions), raw.header))
    assembly_s = time.perf_counter() - t0
    import logging
    lines: list[str] = []
    handler = logging.Handler()
    handler.emit = lambda record: lines.append(record.getMessage())
    logging.getLogger("gadgets.pipeline").addHandler(handler)
    logging.getLogger("gadgets.pipeline").setLevel(logging.INFO)
    t0 = time.perf_counter()
    errors, images = [], []
    for buffer in buffers:
        images += pipeline.reconstruct_buffer(buffer, raw.header, errors, model)
    volume_s = time.perf_counter() - t0
    _, coil, sampling = parse_volume_log("\n".join(lines))
    timings = {"coil_maps": coil, "sampling": sampling}
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        write_dicom_series(images_to_datasets(raw.header_xml, images), tmp)
    dicom_s = time.perf_counter() - t0
    peak_device = (torch.cuda.max_memory_allocated() / 2 ** 30) if torch.cuda.is_available() else None
    recorded = {key: images[0].meta[key] for key in ("DPM_EffectiveAcceleration", "DPM_Zeta", "DPM_ZetaRule",
                                                     "DPM_Model") if images and key in images[0].meta}
    return {"images": len(images), "errors": len(errors), "model_load_s": load, "assembly_s": assembly_s,
            "reconstruct_s": volume_s, "dicom_s": dicom_s, "timings": timings,
            "peak_rss_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 20,
            "peak_device_gib": peak_device, "recorded": recorded}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--slices", type=int, default=1)
    parser.add_argument("--matrix", type=int, default=320)
    parser.add_argument("--coils", type=int, default=16)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--name", default="clinical")
    parser.add_argument("--sampler", default=None, help="the gadget property sampler (default: the product's)")
    parser.add_argument("--timeout", type=float, default=3600.0)
    parser.add_argument("--inner", action="store_true", help=argparse.SUPPRESS)     # the fresh local process
    args = parser.parse_args(argv)
    if args.inner:
        print("RESULT " + json.dumps(local_stages(args)))
        return

    import torch

    from gadgets.wire import run_client, run_spawned_gadget
    from tests.test_server import ServerProcess
    scale = CLINICAL_SLICES / args.slices
    t0 = time.perf_counter()
    local = subprocess.run([sys.executable, __file__, "--inner", "--slices", str(args.slices), "--matrix",
                            str(args.matrix), "--coils", str(args.coils), "--device", args.device]
                           + (["--sampler", args.sampler] if args.sampler else []),
                           capture_output=True, text=True, timeout=args.timeout)
    line = next((ln for ln in local.stdout.splitlines() if ln.startswith("RESULT ")), None)
    if line is None:
        sys.exit(f"the local run failed:\n{local.stderr[-3000:]}")
    stages = json.loads(line[len("RESULT "):])
    recorded = stages["recorded"]
    local_wall = time.perf_counter() - t0

    raw = make_exam(args.slices, args.matrix, args.coils)
    config = gadget_config(args)
    spawned = run_spawned_gadget("gadgets.gadget", "dpm_recon_acquisitions", raw.header_xml,
                                 copy.deepcopy(raw.acquisitions), config=config, timeout=args.timeout)
    server = ServerProcess("--set", f"device={args.device}",
                           *(("--set", f"sampler={args.sampler}") if args.sampler else ()))
    try:
        # Warm-up: one sampler step loads the model and initialises torch; the second stream is the measured one.
        run_client("127.0.0.1", server.port, raw.header_xml, copy.deepcopy(raw.acquisitions),
                   config={**config, "steps": "1"}, timeout=args.timeout)
        warm = run_client("127.0.0.1", server.port, raw.header_xml, copy.deepcopy(raw.acquisitions), config=config,
                          timeout=args.timeout)
        server_log = server.log
    finally:
        server.kill()

    rows = []
    s_recon, s_coil, s_sampling = parse_volume_log(spawned.log)
    w_recon, w_coil, w_sampling = parse_volume_log(server_log.split("stream 2", 1)[-1])
    rows.append({"transport": "local, stages", "slices": args.slices, "images": stages["images"],
                 "total_s": round(local_wall, 1), "start_load_transfer_s": round(stages["model_load_s"], 2),
                 "assembly_s": round(stages["assembly_s"], 2),
                 "coil_maps_s": round(stages["timings"].get("coil_maps", float("nan")), 2),
                 "sampling_s": round(stages["timings"].get("sampling", float("nan")), 2),
                 "volume_s": round(stages["reconstruct_s"], 2), "dicom_s": round(stages["dicom_s"], 2),
                 "peak_rss_GiB": round(stages["peak_rss_gib"], 2),
                 "peak_device_GiB": None if stages["peak_device_gib"] is None else round(stages["peak_device_gib"], 2),
                 f"volume_s at {CLINICAL_SLICES} slices": round(stages["reconstruct_s"] * scale, 0)})
    for name, result, recon, coil, sampling in (("spawned gadget", spawned, s_recon, s_coil, s_sampling),
                                                 ("warm server (2nd stream)", warm, w_recon, w_coil, w_sampling)):
        rows.append({"transport": name, "slices": args.slices, "images": len(result.images),
                     "total_s": round(result.elapsed, 1), "start_load_transfer_s": round(result.elapsed - recon, 2),
                     "assembly_s": None, "coil_maps_s": round(coil, 2), "sampling_s": round(sampling, 2),
                     "volume_s": round(recon, 2), "dicom_s": None, "peak_rss_GiB": None, "peak_device_GiB": None,
                     f"volume_s at {CLINICAL_SLICES} slices": round(recon * scale, 0)})
    write_results(args.name, rows, list(rows[0]),
                  f"A clinical-size FLAIR exam through the gadget path ({args.slices} of {CLINICAL_SLICES} slices)",
                  f"One command: `OMP_NUM_THREADS=1 python benchmarks/bench_clinical.py --slices {args.slices} "
                  f"--device {args.device}" + (f" --sampler {args.sampler}" if args.sampler else "")
                  + f" --name {args.name}`. Synthetic FLAIR, {args.matrix}² after oversampling "
                  f"removal, {args.coils} coils, nominal R = 4 + 24 ACS, noise scan, shipped FLAIR model, the "
                  + (f"sampler {args.sampler}, otherwise the Reconstructor's defaults; " if args.sampler else
                     f"Reconstructor's defaults (DDS warm-started from the SENSE image at σ = {WARM_START_SIGMA:g}), ")
                  + f"torch {torch.__version__}, {torch.get_num_threads()} torch thread(s) in this process. "
                  f"As recorded in the image meta: effective R {recorded.get('DPM_EffectiveAcceleration')}, "
                  f"ζ = {recorded.get('DPM_Zeta')} ({recorded.get('DPM_ZetaRule')}), model "
                  f"{recorded.get('DPM_Model')}. "
                  f"volume_s = the gadget's reconstruction of the volume (coil maps + sampling + normalization + "
                  f"images); the last column scales it by {CLINICAL_SLICES}/{args.slices} (linear in slices, an upper "
                  "bound when slices batch). start_load_transfer_s = everything else in the stream: Python start, "
                  "imports and model load (spawned), socket transfer, assembly. Peak memory: local process only. "
                  "Threads: the local run and the spawned gadget inherit OMP_NUM_THREADS of the command (1 above); "
                  "the server runs with OMP_NUM_THREADS=2 (tests/test_server.py).",
                  extra={"local_stages": stages})


if __name__ == "__main__":
    main()
