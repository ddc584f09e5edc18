"""Benchmark: ESPIRiT coil maps, sigpy reference vs the fast torch path, on one 256 x 256 slice.

Synthetic slice: sigpy Shepp-Logan phantom x birdcage maps (8 and 16 coils), complex Gaussian noise, equispaced R = 4
mask with 24 ACS lines. Times are the median of several runs (first call excluded as warm-up for the fast path);
the machine may be shared, so the load average is recorded before and after. Agreement: per-pixel |<S_fast, S_sigpy>|
inside the object where both eigenvalues exceed crop, and the fraction of pixels whose crop decision agrees.

Usage: python benchmarks/bench_coils.py [--device cuda] [--sigpy-runs 3] [--fast-runs 7] [--threads N]
Writes benchmarks/results/coils.json and benchmarks/results/coils.md (a suffix is added for non-CPU devices).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from dpm_core import coils
from dpm_core.fft import fft2c
from dpm_core.masks import equispaced_mask

RESULTS = Path(__file__).resolve().parent / "results"


def synthetic_slice(num_coils: int, size: int = 256, seed: int = 0):
    """(kspace [1, C, H, W] complex64 undersampled, mask [H], object mask [1, H, W] bool)."""
    import sigpy as sp
    import sigpy.mri as mr
    image = sp.shepp_logan((size, size)).astype(np.complex64)
    maps = mr.birdcage_maps((num_coils, size, size)).astype(np.complex64)
    k = fft2c(torch.from_numpy(maps * image))[None]
    g = torch.Generator().manual_seed(seed)
    k = k + 0.01 * torch.randn(k.shape, dtype=torch.complex64, generator=g)
    mask = equispaced_mask(size, 4, num_acs=24)
    k = k * torch.from_numpy(mask).view(1, 1, size, 1)
    obj = torch.from_numpy(np.abs(image) > 0.1 * np.abs(image).max())[None]
    return k, mask, obj


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def _median_time(fn, runs: int, device: torch.device, warmup: int = 1):
    for _ in range(warmup):
        fn()
    _sync(device)
    times, cpu = [], []
    for _ in range(runs):
        t0, c0 = time.perf_counter(), time.process_time()
        out = fn()
        _sync(device)
        times.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    _median_time.last_cpu = statistics.median(cpu)     # process CPU seconds (all threads), steadier under load
    return statistics.median(times), times, out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--sigpy-runs", type=int, default=3)
    parser.add_argument("--fast-runs", type=int, default=7)
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's choice)")
    parser.add_argument("--coils", type=int, nargs="+", default=[8, 16])
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)

    rows = []
    load_before = os.getloadavg()
    for num_coils in args.coils:
        k, mask, obj = synthetic_slice(num_coils)
        t_sigpy, all_sigpy, (ref, eig_r) = _median_time(
            lambda: coils.espirit_sigpy(k, mask, return_eigenvalues=True), args.sigpy_runs, torch.device("cpu"),
            warmup=0)
        cpu_sigpy = _median_time.last_cpu
        kd = k.to(device)
        t_fast, all_fast, (fast, eig_f) = _median_time(
            lambda: coils.espirit_fast(kd, mask, return_eigenvalues=True), args.fast_runs, device)
        cpu_fast = _median_time.last_cpu
        t_fast_2, _, _ = _median_time(lambda: coils.espirit_fast(kd, mask, num_maps=2), args.fast_runs, device)
        t_noref, _, _ = _median_time(lambda: coils.espirit_fast(kd, mask, refine=False), args.fast_runs, device)
        fast, eig_f = fast.cpu(), eig_f.cpu()
        ip = (fast[:, 0] * ref[:, 0].conj()).sum(1).abs()
        sup_f, sup_r = eig_f[:, 0] > 0.95, eig_r[:, 0] > 0.95
        region = sup_f & sup_r & obj
        rows.append(dict(
            coils=num_coils, size=[256, 256], device=str(device),
            sigpy_s=round(t_sigpy, 3), sigpy_runs_s=[round(t, 3) for t in all_sigpy],
            sigpy_cpu_s=round(cpu_sigpy, 3), fast_cpu_s=round(cpu_fast, 4),
            fast_s=round(t_fast, 4), fast_runs_s=[round(t, 4) for t in all_fast],
            fast_2maps_s=round(t_fast_2, 4), fast_no_refine_s=round(t_noref, 4),
            speedup=round(t_sigpy / t_fast, 1),
            agreement_min_ip_object=round(float(ip[region].min()), 6),
            agreement_p1_ip_support=round(float(np.percentile(ip[sup_f & sup_r].numpy(), 1)), 6),
            support_agreement=round(float((sup_f == sup_r).float().mean()), 6),
        ))
        print(rows[-1], flush=True)
    result = dict(
        benchmark="coils: ESPIRiT sigpy vs fast (256x256, R=4 equispaced, 24 ACS, k=6, thresh 0.02, crop 0.95)",
        torch=torch.__version__, torch_threads=torch.get_num_threads(), cpu_count=os.cpu_count(),
        machine=platform.processor() or platform.machine(),
        gpu=torch.cuda.get_device_name(0) if device.type == "cuda" else None,
        loadavg_before=[round(x, 2) for x in load_before], loadavg_after=[round(x, 2) for x in os.getloadavg()],
        rows=rows,
    )
    RESULTS.mkdir(parents=True, exist_ok=True)
    suffix = "" if device.type == "cpu" else f"_{device.type}"
    (RESULTS / f"coils{suffix}.json").write_text(json.dumps(result, indent=2) + "\n")
    lines = [
        f"# ESPIRiT coil maps: sigpy vs fast ({device}{', ' + result['gpu'] if result['gpu'] else ''})",
        "",
        f"256x256 slice, equispaced R=4 with 24 ACS lines, kernel 6, threshold 0.02, crop 0.95. torch {torch.__version__},"
        f" {result['torch_threads']} torch threads, {os.cpu_count()} CPUs; load average before "
        f"{result['loadavg_before']}, after {result['loadavg_after']} (shared machine).",
        "",
        "| coils | sigpy (s) | fast (s) | speed-up | sigpy CPU (s) | fast CPU (s) | fast, 2 maps (s) |"
        " fast, no refine (s) | min ip in object | 1st pct ip in support | support agreement |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(f"| {r['coils']} | {r['sigpy_s']:.2f} | {r['fast_s']:.3f} | {r['speedup']}x | {r['sigpy_cpu_s']:.2f} |"
                     f" {r['fast_cpu_s']:.3f} | {r['fast_2maps_s']:.3f} |"
                     f" {r['fast_no_refine_s']:.3f} | {r['agreement_min_ip_object']:.5f} |"
                     f" {r['agreement_p1_ip_support']:.5f} | {r['support_agreement']:.5f} |")
    lines.append("")
    lines.append("Wall-clock medians; CPU = process CPU seconds (all threads), steadier on a loaded machine. sigpy always")
    lines.append("runs on the CPU (numpy); first fast call excluded (warm-up).")
    (RESULTS / f"coils{suffix}.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
