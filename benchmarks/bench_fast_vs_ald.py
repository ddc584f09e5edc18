"""The fast sampler against the reference sampler (ALD) on the same model and slices: NRMSE, network evaluations, time.

    OMP_NUM_THREADS=1 python benchmarks/bench_fast_vs_ald.py [--subjects 2] [--slices 1] [--R 4]

The shipped FLAIR model on held-out synthetic FLAIR subjects (eval_default_model's held-out corpus), 128², 8 coils,
equispaced + 24 ACS, the same coil maps for every row. Rows: ALD (annealed Langevin dynamics, Jalal et al. 2021: the
reference sampler A, csgm's schedule, from pure noise; with the annealed-likelihood weighting, its default, whose
exact-posterior property tests/test_sampler_laws.py proves, and with csgm's own "mse" weighting as published), the fast
sampler from pure noise (50 DDS steps) and the fast sampler as shipped (warm start from the SENSE image). The output
guard is off for every row (raw sampler outputs compared); a sampler whose output is not finite is recorded as diverged.
NRMSE against the fully sampled MVUE with the same maps; paired ratios to ALD per slice. Goal (issue 14): fast ≤ 1.02 ×
ALD NRMSE at ≥ 50 × fewer network evaluations. ALD costs about 3,500 network evaluations per slice (≈ 8 min per 128²
slice on one CPU thread), hence few slices. Writes benchmarks/results/fast_vs_ald.{json,md}.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from common import write_results  # noqa: E402
from eval_default_model import held_out_volumes  # noqa: E402

from dpm_core import metrics  # noqa: E402
from dpm_core.masks import effective_acceleration, equispaced_mask  # noqa: E402
from dpm_core.reconstruct import ReconstructionError, Reconstructor  # noqa: E402
from dpm_core.samplers import default_sigmas, num_evaluations  # noqa: E402

NRMSE_GOAL, NFE_GOAL = 1.02, 50.0
CONFIGS = {   # label -> Reconstructor keyword arguments (the shipped model, zeta from its card for the ζ samplers)
    "ALD (reference A), likelihood weighting, from pure noise": {"sampler": "ald", "warm_start": None,
                                                                 "sampler_options": {"weighting": "likelihood"}},
    "ALD (reference A), csgm weighting (as published), from pure noise": {"sampler": "ald", "warm_start": None,
                                                                        "sampler_options": {"weighting": "csgm"}},
    "fast (DDS), from pure noise, 50 steps": {"sampler": "fast", "warm_start": None},
    "fast (DDS), shipped default (warm start)": {"sampler": "fast"},
}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--subjects", type=int, default=2)
    parser.add_argument("--slices", type=int, default=1)
    parser.add_argument("--R", type=float, default=4)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    shared = Reconstructor(method="dpm", device="cpu").denoiser()        # one loaded network for every row
    recs = {label: Reconstructor(method="dpm", model=shared, device="cpu", progress=None, output_guard=False, **kw)
            for label, kw in CONFIGS.items()}
    reference = Reconstructor(method="sense")
    errors = {label: [] for label in CONFIGS}
    seconds = {label: 0.0 for label in CONFIGS}
    nfe, names, diverged = {}, [], {}
    for name, k in held_out_volumes(args.subjects, args.slices):
        H = k.shape[2]
        mask = equispaced_mask(H, args.R, num_acs=24)
        under = k * torch.from_numpy(mask).view(1, 1, H, 1)
        maps = Reconstructor(method="sense").reconstruct(under, mask).maps          # every row on the same maps
        ref = reference.reconstruct(k, np.ones(H, bool), maps=maps).images
        for label, rec in recs.items():
            t0 = time.perf_counter()
            try:
                res = rec.reconstruct(under, mask, maps=maps)
                nfe[label] = res.info["nfe_per_sample"]
                errors[label] += [metrics.nrmse(res.images[i], ref[i]) for i in range(k.shape[0])]
            except ReconstructionError as exc:                          # non-finite output: the sampler diverged
                errors[label] += [float("nan")] * k.shape[0]
                diverged[label] = str(exc)
            seconds[label] += time.perf_counter() - t0
            print(f"{name} {label}: {errors[label][-1]:.4f} ({time.perf_counter() - t0:.1f} s)", flush=True)
        names += [f"{name}/{i}" for i in range(k.shape[0])]
    ald_label = next(iter(CONFIGS))
    ald = np.asarray(errors[ald_label])
    full_nfe = num_evaluations("ald", default_sigmas("ald", shared))
    rows, summary = [], {}
    for label in CONFIGS:
        e = np.asarray(errors[label])
        ratio = e / ald
        evaluations = nfe.get(label, full_nfe)
        rows.append({"sampler": label, "NFE / slice": evaluations, "NFE ratio to ALD": full_nfe / evaluations,
                     "NRMSE": "diverged (non-finite pixels)" if label in diverged else
                     (f"{e.mean():.4f} ± {e.std(ddof=1) / np.sqrt(len(e)):.4f}" if len(e) > 1 else f"{e.mean():.4f}"),
                     "NRMSE / ALD (per slice)": ", ".join(f"{r:.3f}" for r in ratio),
                     "mean ratio": float(ratio.mean()), "s / slice": seconds[label] / len(e), "slices": len(e),
                     "nrmse_per_slice": e.tolist(), "diverged": diverged.get(label)})
        summary[label] = {"mean_ratio": float(ratio.mean()), "nfe_ratio": full_nfe / evaluations}
    fast = summary["fast (DDS), shipped default (warm start)"]
    met = bool(fast["mean_ratio"] <= NRMSE_GOAL and fast["nfe_ratio"] >= NFE_GOAL)
    notes = (f"One command: `OMP_NUM_THREADS=1 python benchmarks/bench_fast_vs_ald.py --subjects {args.subjects} "
             f"--slices {args.slices} --R {args.R:g}`. Shipped FLAIR model; held-out synthetic FLAIR slices {names}, "
             f"128x128, 8 coils, equispaced nominal R {args.R:g} (effective {effective_acceleration(mask):.2f}) + 24 "
             "ACS; the same coil maps for every row; ζ from the model card for DDS; 1 CPU thread; ratios against ALD "
             "with the likelihood weighting. Goal: the shipped "
             f"fast sampler ≤ {NRMSE_GOAL:g} × ALD's NRMSE at ≥ {NFE_GOAL:g} × fewer network evaluations → "
             f"{fast['mean_ratio']:.3f} × at {fast['nfe_ratio']:.0f} × fewer: {'met' if met else 'missed'}.")
    write_results("fast_vs_ald", rows, ["sampler", "NFE / slice", "NFE ratio to ALD", "NRMSE",
                                        "NRMSE / ALD (per slice)", "mean ratio", "s / slice", "slices"],
                  "The fast sampler against ALD on the same model and slices", notes,
                  extra={"goal_met": met, "summary": summary, "diverged": diverged})


if __name__ == "__main__":
    main()
