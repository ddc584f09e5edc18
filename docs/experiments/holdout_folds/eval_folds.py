"""How many held-out folds does pnp's ζ rule need on a small matrix? On every case of bench_real.py.

    OMP_NUM_THREADS=1 [MODEL=<card.json>] python docs/experiments/holdout_folds/eval_folds.py CASE[,CASE...] > LOG
    python docs/experiments/holdout_folds/eval_folds.py --summarize LOG [LOG ...] > summary.md

For each case, on the production path's inputs (case_inputs: maps with num_maps auto, calibration-matrix noise
level) and the product's draw of folds (dpm_core.holdout.holdout_folds with zeta_rules' seed, every whole
fold), the pnp sampler runs
- per fold and candidate ζ of its grid: the held-out rule's candidate run (the record's 15-level schedule, from the
  fold's kept lines alone, with their own L1 phase reference) and logs the held-out residual and energy per slice;
- per candidate ζ: the full 30-level run on all measured lines (the product's final run, the scan's own phase
  reference) and logs its squared magnitude error and the reference's squared norm per slice.
--summarize picks ζ per slice from the first K folds' pooled error, for every K, and from the product's rule
(folds until HOLDOUT_SCORED_LINES lines are held out), and scores each pick by the full run's NRMSE at it, against
the grid's oracle. MODEL defaults to the shipped FLAIR model (bench_real.py's).
"""
import json
import os
import sys
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(ROOT / "benchmarks"))
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "docs" / "experiments" / "pnp_zeta"))
from case_inputs import case_inputs, pnp_experiment  # noqa: E402

from dpm_core.holdout import HOLDOUT_FRACTION, holdout_folds  # noqa: E402
from dpm_core.masks import sampling_of  # noqa: E402
from dpm_core.operators import SenseOp, combine_map_images  # noqa: E402
from dpm_core.samplers import default_sigmas, get_sampler, posterior_samples  # noqa: E402
from dpm_core.seeding import stable_seed  # noqa: E402
from dpm_core.zeta_rules import HOLDOUT_SCORED_LINES  # noqa: E402

SEED = 0            # the Reconstructor's default seed


def main():
    model = os.environ.get("MODEL")
    cases, rec = pnp_experiment(sys.argv[1], model)
    denoiser = rec.denoiser()
    spec = get_sampler("pnp")
    trial, final = default_sigmas(spec, denoiser, spec.zeta_trial_steps), default_sigmas(spec, denoiser)
    for case in cases:
        t0 = time.perf_counter()
        S, C, H, W = case.kspace.shape
        ids = list(range(S))
        ref, sampling, scale, kn, maps, support, noise_std = case_inputs(case, rec)
        generator = torch.Generator().manual_seed(stable_seed("zeta-holdout", SEED))
        folds = holdout_folds(sampling.mask, HOLDOUT_FRACTION, generator, min_lines=10 ** 9)
        fold_rows = []
        for held in folds:
            kept = sampling_of(sampling.mask & ~held, H)
            op_kept, op_held = SenseOp(maps, kept), SenseOp(maps, held)
            y_kept, y_held = op_kept.mask * kn, op_held.mask * kn
            inputs = rec._run_inputs(y_kept, kept, maps, True)
            residual = []
            for zeta in spec.zeta_grid:
                x, _, _ = posterior_samples(spec, denoiser, y_kept, op_kept, num_samples=1, seed=SEED, slice_ids=ids,
                                            sigmas=trial, noise_std=noise_std, **inputs, zeta=float(zeta))
                residual.append((op_held.forward(x) - y_held).abs().square().flatten(1).sum(1).tolist())
            fold_rows.append({"lines": int(held.sum()), "residual": residual,
                              "energy": y_held.abs().square().flatten(1).sum(1).tolist()})
        full = rec._run_inputs(kn, sampling, maps, True)
        op = SenseOp(maps, sampling)
        error_sq, reference_sq = [], (ref ** 2).reshape(S, -1).sum(1).tolist()
        for zeta in spec.zeta_grid:
            x, _, _ = posterior_samples(spec, denoiser, kn, op, num_samples=1, seed=SEED, slice_ids=ids,
                                        sigmas=final, noise_std=noise_std, **full, zeta=float(zeta))
            image = (combine_map_images(x * support) * scale.view(S, 1, 1)).abs().numpy()
            error_sq.append(((image - ref) ** 2).reshape(S, -1).sum(1).tolist())
        print(json.dumps({"case": case.name, "model": Path(model).stem if model else "flair_default",
                          "zeta_grid": list(spec.zeta_grid), "folds": fold_rows, "error_sq": error_sq,
                          "reference_sq": reference_sq, "seconds": round(time.perf_counter() - t0, 1)}), flush=True)


def rule_folds(fold_rows) -> int:
    """The number of folds the product's rule uses (dpm_core.holdout.holdout_folds)."""
    k = 1
    while k < len(fold_rows) and k * fold_rows[0]["lines"] < HOLDOUT_SCORED_LINES:
        k += 1
    return k


def summarize(paths) -> None:
    rows = [json.loads(line) for path in paths for line in open(path)]
    most = max(len(r["folds"]) for r in rows)
    print("| model | case | lines per fold / folds | oracle ζ: NRMSE | "
          + " | ".join(f"{k} fold{'s' if k > 1 else ''}" for k in range(1, most + 1)) + " | the rule (folds) | s |")
    print("|---" * (6 + most) + "|")
    ratios = defaultdict(list)
    for r in rows:
        grid, err, refsq = r["zeta_grid"], np.array(r["error_sq"]), np.array(r["reference_sq"])   # err [Z, S]
        nrmse = np.sqrt(err.sum(1) / refsq.sum())
        oracle = float(nrmse.min())

        def pick(k):
            residual = sum(np.array(f["residual"]) for f in r["folds"][:k])                           # [Z, S]
            energy = sum(np.array(f["energy"]) for f in r["folds"][:k])
            choice = (residual / energy).argmin(0)                                                    # [S]
            value = float(np.sqrt(sum(err[z, s] for s, z in enumerate(choice)) / refsq.sum()))
            return "/".join(f"{grid[z]:g}" for z in sorted(set(choice))), value

        cells = []
        for k in range(1, most + 1):
            if k > len(r["folds"]):
                cells.append("–")
                continue
            z, v = pick(k)
            ratios[(r["model"], k)].append(v / oracle)
            cells.append(f"{z}: {v:.5f} ({v / oracle:.3f})")
        k = rule_folds(r["folds"])
        z, v = pick(k)
        ratios[(r["model"], "rule")].append(v / oracle)
        print(f"| {r['model']} | {r['case']} | {r['folds'][0]['lines'] if r['folds'] else 0} / {len(r['folds'])} | "
              f"{grid[int(nrmse.argmin())]:g}: {oracle:.5f} | " + " | ".join(cells)
              + f" | {z}: {v:.5f} ({v / oracle:.3f}, {k}) | {r['seconds']} |")
    for model in sorted({r["model"] for r in rows}):
        cells = []
        for k in list(range(1, most + 1)):
            values = ratios.get((model, k), [])
            cells.append(f"{np.mean(values):.3f} / {np.max(values):.3f} ({len(values)})" if values else "–")
        rule = ratios[(model, "rule")]
        print(f"| {model} | mean / worst ratio (cases) | | | " + " | ".join(cells)
              + f" | {np.mean(rule):.3f} / {np.max(rule):.3f} ({len(rule)}) | |")


if __name__ == "__main__":
    if sys.argv[1] == "--summarize":
        summarize(sys.argv[2:])
    else:
        main()
