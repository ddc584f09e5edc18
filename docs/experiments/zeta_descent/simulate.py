"""The held-out ζ rule's walk over the grid (dpm_core.zeta_rules.descend_grid) replayed on every logged curve.

    python docs/experiments/zeta_descent/simulate.py > simulate.log

The logs of docs/experiments/holdout_folds and docs/experiments/pnp_levers hold, per case, the held-out residual and
energy of every candidate ζ of pnp's grid on every fold (eval_folds.py). For each case this pools the folds the
product's rule uses (folds until HOLDOUT_SCORED_LINES lines are held out), walks the pooled errors with descend_grid
and compares its per-slice picks with the argmin over the whole grid, counting the candidates it visited.
"""
import glob
import json
import sys
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(ROOT))
from dpm_core.zeta_rules import HOLDOUT_SCORED_LINES, descend_grid  # noqa: E402

LOGS = sorted(glob.glob(str(ROOT / "docs/experiments/holdout_folds/eval_*.log"))
              + glob.glob(str(ROOT / "docs/experiments/pnp_levers/eval_*.log")))


def rule_folds(fold_rows) -> int:
    k = 1
    while k < len(fold_rows) and k * fold_rows[0]["lines"] < HOLDOUT_SCORED_LINES:
        k += 1
    return k


def main():
    print("| log | model | case | slices | folds used | whole grid's pick | descent's pick | candidates visited |")
    print("|---|---|---|---|---|---|---|---|")
    cases = same = visited_total = grid_total = 0
    for path in LOGS:
        for line in open(path):
            row = json.loads(line)
            k = rule_folds(row["folds"])
            residual = sum(np.array(f["residual"]) for f in row["folds"][:k])        # [Z, S]
            energy = sum(np.array(f["energy"]) for f in row["folds"][:k])            # [S]
            errors = residual / energy                                                # [Z, S]
            visited = []

            def score(j):
                visited.append(j)
                return torch.from_numpy(errors[j])
            walked = descend_grid(score, errors.shape[0]).numpy()
            pick = np.nanargmin(walked, axis=1)
            grid = row["zeta_grid"]
            cases += 1
            same += bool(np.array_equal(pick, errors.argmin(axis=0)))
            visited_total += len(visited)
            grid_total += len(grid)
            print(f"| {Path(path).parent.name}/{Path(path).name} | {row['model']} | {row['case']} | {errors.shape[1]} | "
                  f"{k} | {'/'.join(f'{grid[j]:g}' for j in errors.argmin(axis=0))} | "
                  f"{'/'.join(f'{grid[j]:g}' for j in pick)} | {len(visited)} of {len(grid)} |")
    print(f"\n{cases} cases: the same picks on {same}; {visited_total} of {grid_total} candidate runs "
          f"({visited_total / grid_total:.0%}).")


if __name__ == "__main__":
    main()
