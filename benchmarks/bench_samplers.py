"""Sampler benchmark: denoiser evaluations and CPU wall time per 128x128 8-coil slice with the small U-Net (random
weights: time is what matters), plus each sampler's exact-posterior error on the Gaussian problem.

Wall times are measured over a few steps (``--timed-steps``) and extrapolated to the sampler's full step count
(the per-step cost is constant); both counts are written. Writes benchmarks/results/samplers.json and .md.

    .venv/bin/python benchmarks/bench_samplers.py [--timed-steps 3] [--threads 1]
"""
from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import torch

from dpm_core.gaussian import gaussian_problem, synthetic_coil_maps
from dpm_core.seeding import randn_complex
from dpm_core.masks import equispaced_mask
from dpm_core.networks import ComplexDenoiser, build_network
from dpm_core.operators import SenseOp
from dpm_core.samplers import default_sigmas, make_generators, num_evaluations, posterior_samples, SAMPLERS
from dpm_core.schedules import geometric_sigmas, karras_sigmas

RESULTS = Path(__file__).resolve().parent / "results"
# Full-size settings (the defaults of each sampler) and their option sets.
FULL = {"ald": dict(steps=1156, options=dict(steps_per_level=3)),
        "dps": dict(steps=300, options=dict(zeta=1.0)),
        "dds": dict(steps=50, options=dict(cg_iters=5))}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_unet(timed_steps: int, device: torch.device = torch.device("cpu")) -> dict:
    net = ComplexDenoiser(build_network("unet", {"preset": "small"}, sigma_min=0.004, sigma_max=10.0).to(device)).eval()
    H = W = 128
    maps = synthetic_coil_maps(8, H, W).to(device)
    op = SenseOp(maps, torch.as_tensor(equispaced_mask(H, 4, num_acs=24)))
    y = op.forward(randn_complex((1, 1, H, W), torch.Generator().manual_seed(0)).to(device))
    out = {}
    for name, cfg in FULL.items():
        full = default_sigmas(name, net, cfg["steps"])
        steps = min(timed_steps, full.numel() - (0 if name == "ald" else 1))       # never past the full schedule
        short = full[:steps] if name == "ald" else torch.cat([full[:steps], full.new_zeros(1)])
        gens = lambda: make_generators(0, [0], device=device)                                  # noqa: E731
        SAMPLERS[name](net, y, op, short[:2] if name == "ald" else torch.tensor([full[0], 0.0]),
                       gens(), **cfg["options"])                                                # warm-up
        _sync(device)
        t = time.perf_counter()
        SAMPLERS[name](net, y, op, short, gens(), **cfg["options"])
        _sync(device)
        dt = time.perf_counter() - t
        n_short, n_full = num_evaluations(name, short, **cfg["options"]), num_evaluations(name, full, **cfg["options"])
        out[name] = {"nfe_full": n_full, "nfe_timed": n_short, "seconds_timed": dt,
                     "seconds_per_nfe": dt / n_short, "seconds_full_extrapolated": dt / n_short * n_full,
                     "backprop": name == "dps"}
        print(name, out[name], flush=True)
    return out


def gaussian_errors(K: int) -> dict:
    out = {}
    cases = {"ald": ("noise 0.2", dict(noise_std=0.2), geometric_sigmas(5.0, 0.02, 300),
                     dict(steps_per_level=3, eps=0.02 ** 2, weighting="likelihood", noise_std=0.2)),
             "dps": ("noise 0.05", dict(noise_std=0.05), karras_sigmas(100, 0.004, 10.0), dict(zeta=1.0)),
             "dds": ("noise 0.05", dict(noise_std=0.05), karras_sigmas(50, 0.004, 10.0),
                     dict(cg_iters=5, noise_std=0.05, sigma_data=math.sqrt(0.5)))}
    for name, (label, pk, sigmas, opts) in cases.items():
        P = gaussian_problem(**pk)
        res = posterior_samples(name, P.prior.denoiser(), P.y, P.op, sigmas, num_samples=K, **opts)
        mu, v = P.posterior.mean, P.posterior.variance
        rel = ((res.mean.to(torch.complex128) - mu).norm() / mu.norm()).item()
        out[name] = {"problem": label, "num_samples": K, "nfe": num_evaluations(name, sigmas, **opts),
                     "rel_mean_error": rel, "mc_standard_error": ((v.sum() / K).sqrt() / mu.norm()).item(),
                     "zero_filled_rel_error": ((P.op.adjoint(P.y).to(torch.complex128) - mu).norm() / mu.norm()).item(),
                     "variance_ratio_mean": (res.std.double() ** 2 / v).mean().item()}
        print(name, out[name], flush=True)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--timed-steps", type=int, default=3)
    ap.add_argument("--samples", type=int, default=96)
    ap.add_argument("--threads", type=int, default=1)   # 2 threads on a shared 2-core CPU ran up to 30x slower
    ap.add_argument("--device", default="cpu", help="cpu or cuda (timing only; the Gaussian proof runs on the CPU)")
    ap.add_argument("--name", default="samplers", help="results file stem [samplers]")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    where = (f"GPU {torch.cuda.get_device_name(device)}" if device.type == "cuda" else f"CPU, {args.threads} threads")
    res = {"device": str(device), "threads": args.threads, "unet": "small preset, random weights, 128x128, 8 coils, R=4",
           "timing": time_unet(args.timed_steps, device), "gaussian": gaussian_errors(args.samples)}
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{args.name}.json").write_text(json.dumps(res, indent=2))
    lines = ["# Sampler benchmark", "", f"{where}; {res['unet']}. Wall time measured over "
             f"{args.timed_steps} steps and extrapolated to the full count.", "",
             "| sampler | NFE/slice (full) | s/NFE | s/slice (full, extrapolated) | backprop |", "|---|---|---|---|---|"]
    for n, t in res["timing"].items():
        lines.append(f"| {n} | {t['nfe_full']} | {t['seconds_per_nfe']:.3f} | {t['seconds_full_extrapolated']:.0f} | "
                     f"{t['backprop']} |")
    lines += ["", "Exact-posterior error on the 16x16 4-coil Gaussian problem (mean of K samples vs closed form):", "",
              "| sampler | problem | NFE | rel. mean error | MC s.e. | zero-filled | variance ratio |",
              "|---|---|---|---|---|---|---|"]
    for n, g in res["gaussian"].items():
        lines.append(f"| {n} | {g['problem']} | {g['nfe']} | {g['rel_mean_error']:.4f} | {g['mc_standard_error']:.4f} | "
                     f"{g['zero_filled_rel_error']:.3f} | {g['variance_ratio_mean']:.3f} |")
    (RESULTS / f"{args.name}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
