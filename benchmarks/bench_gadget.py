"""Latency of the external gadget over the real wire protocol (tests/harness.py plays Gadgetron).

    python benchmarks/bench_gadget.py --matrix 64 --coils 8 --slices 4 --method sense [--target dpm_recon]

Reports stream wall time (spawn + import + reconstruction + transfer), time to the first image and the per-volume
recon times the gadget logs. Numbers depend on the machine; state which one with the result.
"""
from __future__ import annotations

import argparse
import copy
import json
import re
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

from gadgets.mrd_io import make_raw_acquisitions  # noqa: E402
from tests.harness import GadgetronSide, bucket_to_buffer, config_xml, correlated_noise, oversampled_phantom  # noqa


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--matrix", type=int, default=64)
    parser.add_argument("--coils", type=int, default=8)
    parser.add_argument("--slices", type=int, default=4)
    parser.add_argument("--acceleration", type=int, default=3)
    parser.add_argument("--method", default="sense")
    parser.add_argument("--target", default="dpm_recon", choices=["dpm_recon", "dpm_recon_acquisitions"])
    parser.add_argument("--timeout", type=float, default=600.0)
    args = parser.parse_args(argv)

    kos, _ = oversampled_phantom(args.matrix, args.matrix, args.coils, args.slices)
    noise, _ = correlated_noise(args.coils, 1024, 1e-3)
    mask = np.zeros(args.matrix, dtype=bool)
    mask[args.matrix // 2 % args.acceleration::args.acceleration] = True
    raw = make_raw_acquisitions(kos, mask, num_acs=min(24, args.matrix // 4), noise=noise)
    if args.target == "dpm_recon":
        t0 = time.perf_counter()
        items = bucket_to_buffer(copy.deepcopy(raw.acquisitions), raw.header)
        prep = time.perf_counter() - t0
    else:
        items, prep = copy.deepcopy(raw.acquisitions), 0.0
    result = GadgetronSide(target=args.target, timeout=args.timeout).run(
        raw.header_xml, items, config=config_xml({"method": args.method}))
    recon_times = [float(x) for x in re.findall(r" in ([0-9.]+) s \(coil maps", result.log)]
    report = {"target": args.target, "method": args.method, "matrix": args.matrix, "coils": args.coils,
              "slices": args.slices, "images": len(result.images), "errors": result.errors,
              "stream_s": round(result.elapsed, 3), "first_image_s": round(result.first_image_s or -1, 3),
              "bucket_to_buffer_s": round(prep, 3), "recon_s_per_volume": recon_times}
    print(json.dumps(report))
    return report


if __name__ == "__main__":
    main()
