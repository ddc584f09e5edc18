"""Latency of the external gadget over the real wire protocol (tests/harness.py plays Gadgetron).

    python benchmarks/bench_gadget.py [--matrix 128 --coils 8 --slices 4 --methods sense dpm] [--target dpm_recon]

Writes benchmarks/results/gadget.{json,md}: stream wall time, time to the first image, and the split into
spawn/import/transport, coil maps, sampling, and normalization + image building (from the gadget's own log).
"""
from __future__ import annotations

import argparse
import copy
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402

from gadgets.mrd_io import make_raw_acquisitions  # noqa: E402
from common import parse_volume_log  # noqa: E402
from tests.harness import GadgetronSide, bucket_to_buffer, config_xml  # noqa: E402


def stream_once(args, method: str, raw) -> dict:
    """One stream through the spawned gadget; the split comes from the gadget's own per-volume log line."""
    if args.target == "dpm_recon":
        t0 = time.perf_counter()
        items = bucket_to_buffer(copy.deepcopy(raw.acquisitions), raw.header)
        prep = time.perf_counter() - t0
    else:
        items, prep = copy.deepcopy(raw.acquisitions), 0.0
    result = GadgetronSide(target=args.target, timeout=args.timeout).run(
        raw.header_xml, items, config=config_xml({"method": method, **({"steps": args.steps} if args.steps else {})}))
    recon, coil, sampling = parse_volume_log(result.log)
    return {"method": method, "target": args.target, "images": len(result.images), "errors": len(result.errors),
            "stream_s": result.elapsed, "first_image_s": result.first_image_s or -1.0,
            "spawn_import_transport_s": result.elapsed - recon, "coil_maps_s": coil, "sampling_s": sampling,
            "normalize_and_images_s": recon - coil - sampling, "bucket_to_buffer_s (Gadgetron side)": prep}


def main(argv=None) -> list:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--matrix", type=int, default=128)
    parser.add_argument("--coils", type=int, default=8)
    parser.add_argument("--slices", type=int, default=4)
    parser.add_argument("--acceleration", type=int, default=4)
    parser.add_argument("--methods", nargs="+", default=["sense", "dpm"])
    parser.add_argument("--steps", type=int, default=None, help="DPM sampler steps (default: the sampler's)")
    parser.add_argument("--target", default="dpm_recon", choices=["dpm_recon", "dpm_recon_acquisitions"])
    parser.add_argument("--timeout", type=float, default=1200.0)
    args = parser.parse_args(argv)

    from dpm_core.masks import equispaced_mask
    from training.synth import generate_subject

    subject = generate_subject(11, "AXFLAIR", args.matrix, args.coils, args.slices, lesion=True)
    rng = np.random.default_rng(0)
    n = 8 * subject.kspace.shape[-1]
    noise = (subject.noise_std / np.sqrt(2) * (rng.standard_normal((args.coils, n))
                                               + 1j * rng.standard_normal((args.coils, n)))).astype(np.complex64)
    raw = make_raw_acquisitions(subject.kspace.numpy(), equispaced_mask(args.matrix, args.acceleration, 24),
                                num_acs=24, noise=noise)
    rows = [stream_once(args, method, raw) for method in args.methods]
    for row in rows:
        print(json.dumps(row))
    from common import write_results
    write_results("gadget", rows, ["method", "target", "images", "errors", "stream_s", "first_image_s",
                                   "spawn_import_transport_s", "coil_maps_s", "sampling_s", "normalize_and_images_s"],
                  "Per-volume latency through the wire protocol (spawned gadget, as Gadgetron runs it)",
                  f"Synthetic FLAIR volume {args.matrix}x{args.matrix}, {args.coils} coils, {args.slices} slices, "
                  f"equispaced R={args.acceleration} + 24 ACS, noise scan; ReconData from a Gadgetron-side "
                  "BucketToBuffer emulation. spawn_import_transport = stream wall time minus the gadget's own "
                  "reconstruction time (Python start, imports, model load, socket transfer). A warm dpm-server "
                  "removes the spawn/import part (docs/server_replay.md).")
    return rows


if __name__ == "__main__":
    main()
