"""Time the classical baselines on a 256x256 slice with 8 and 16 coils (CPU, or GPU when present).

    python benchmarks/bench_baselines.py [--device cpu]

Writes benchmarks/results/baselines.json and baselines.md. Coil-map timings are in bench_coils.py.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import sigpy as sp
import sigpy.mri as mr
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import median_time, write_results  # noqa: E402

from dpm_core import baselines, metrics  # noqa: E402
from dpm_core.combine import rss  # noqa: E402
from dpm_core.fft import fft2c, ifft2c  # noqa: E402
from dpm_core.masks import equispaced_mask  # noqa: E402
from dpm_core.normalize import normalization_scale  # noqa: E402
from dpm_core.operators import combine_map_images  # noqa: E402


def problem(coils: int, size: int = 256, R: int = 4, device="cpu"):
    image = sp.shepp_logan((size, size)).astype(np.complex64)
    maps = mr.birdcage_maps((coils, size, size)).astype(np.complex64)
    maps /= np.sqrt((np.abs(maps) ** 2).sum(0, keepdims=True))
    maps_t = torch.from_numpy(maps)[None, None].to(device)
    k = fft2c(maps_t[:, 0] * torch.from_numpy(image).to(device))
    k = k / normalization_scale(k, None).view(-1, 1, 1, 1)
    mask = equispaced_mask(size, R, num_acs=24)
    return k * torch.from_numpy(mask).to(device).view(1, 1, size, 1), mask, maps_t, rss(ifft2c(k))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args(argv)
    rows = []
    for coils in (8, 16):
        under, mask, maps, ref = problem(coils, device=args.device)
        runs = {
            "zero_filled": lambda: baselines.zero_filled(under, mask, maps),
            "sense_cg (30 it)": lambda: combine_map_images(baselines.sense_cg(under, mask, maps, num_iters=30)),
            "l1_wavelet (FISTA + cycle spinning, λ per scan)": lambda: combine_map_images(
                baselines.l1_wavelet(under, mask, maps)),
        }
        for name, fn in runs.items():
            seconds = median_time(fn, repeats=3 if "l1" not in name else 1)
            rows.append({"method": name, "coils": coils, "matrix": "256x256", "R (nominal, 24 ACS)": 4,
                         "seconds": seconds, "NRMSE vs RSS": metrics.nrmse(fn(), ref), "device": args.device})
    write_results("baselines", rows, ["method", "coils", "matrix", "R (nominal, 24 ACS)", "device", "seconds",
                                      "NRMSE vs RSS"], "Classical baselines: time per slice",
                  "Shepp-Logan phantom with birdcage maps, k-space normalized by the ACS rule, equispaced R=4 + 24 ACS.")


if __name__ == "__main__":
    main()
