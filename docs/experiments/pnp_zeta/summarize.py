"""Score ζ rules for the pnp sampler from eval_rules.py's logs: markdown on stdout.

    python docs/experiments/pnp_zeta/summarize.py LOG [LOG ...]

Each rule picks ζ per slice from the logged curves; the case's NRMSE is then that of the pnp image at the picked ζ of
every slice (sqrt of the summed squared errors over the summed squared reference). Runs: pnp runs per slice including
the final one at the chosen ζ; the oracle is the best ζ of every logged one (a GCV run on y at the chosen ζ is the final image, but the product re-runs it).
GCV's probed runs recompute the L1 phase reference from the probed data unless the rule says "shared" (the product
shares the reference of y); held-out runs always use the L1 image of their kept lines.
"""
import json
import sys
from collections import defaultdict

import numpy as np

COARSE = (1 / 64, 1 / 16, 1 / 4, 1.0, 4.0)          # the production grid (factors of 4)
FINE = tuple(2.0 ** k for k in range(-6, 3))         # 1/64 ... 4, factors of 2
TO_16 = COARSE + (16.0,)                             # the production grid extended (eval_rules_high_*.log)


def gcv(row, probes):
    return np.mean([np.asarray(row["gcv"][p]) for p in probes], axis=0)


def cv(row, folds):
    return np.mean([np.asarray(row["cv"][f]) for f in folds], axis=0)


RULES = {                     # name: (grid, per-slice score of a row, runs per slice)
    "GCV, 1 probe, shared phase reference (production)": (COARSE, lambda r: np.asarray(r["gcv_shared"]),
                                                          2 * len(COARSE) + 1),
    "GCV fine grid, shared phase reference": (FINE, lambda r: np.asarray(r["gcv_shared"]), 2 * 9 + 1),
    "GCV, 1 probe": (COARSE, lambda r: gcv(r, [0]), 2 * len(COARSE) + 1),
    "GCV, 3 probes": (COARSE, lambda r: gcv(r, [0, 1, 2]), 4 * len(COARSE) + 1),
    "GCV fine grid, 1 probe": (FINE, lambda r: gcv(r, [0]), 2 * 9 + 1),
    "GCV fine grid, 3 probes": (FINE, lambda r: gcv(r, [0, 1, 2]), 4 * 9 + 1),
    "GCV coarse then factor-2 refinement, 1 probe": ("refine", lambda r: gcv(r, [0]), 2 * (len(COARSE) + 2) + 1),
    "held-out lines, 1 fold": (COARSE, lambda r: cv(r, [0]), len(COARSE) + 1),
    "held-out lines, 2 folds": (COARSE, lambda r: cv(r, [0, 1]), 2 * len(COARSE) + 1),
    "held-out lines fine grid, 2 folds": (FINE, lambda r: cv(r, [0, 1]), 2 * 9 + 1),
    "held-out lines, 1 fold, grid to 16": (TO_16, lambda r: cv(r, [0]), len(TO_16) + 1),
}


def refined(by_zeta, score):
    """Per slice: the coarse grid's best ζ, then the better of it and its two factor-2 neighbours."""
    coarse = sorted(z for z in by_zeta if any(abs(z - g) < 1e-9 for g in COARSE))
    table = np.stack([score(by_zeta[z]) for z in coarse])
    choice = []
    for s, i in enumerate(table.argmin(axis=0)):
        near = [z for z in by_zeta if any(abs(z - coarse[i] * f) < 1e-9 for f in (0.5, 1, 2))
                and any(abs(z - g) < 1e-9 for g in FINE)]
        choice.append(min(near, key=lambda z: score(by_zeta[z])[s]))
    return choice


def nrmse_at(rows_by_zeta, choice):
    """Case NRMSE with ζ choice[s] on slice s."""
    err = sum(rows_by_zeta[z]["error_sq"][s] for s, z in enumerate(choice))
    ref = sum(rows_by_zeta[choice[0]]["reference_sq"])
    return float(np.sqrt(err / ref))


def main():
    cases = defaultdict(dict)
    for path in sys.argv[1:]:
        for line in open(path):
            row = json.loads(line)
            cases[row["case"]][row["zeta"]] = row
    print("| case | oracle ζ | oracle NRMSE | " + " | ".join(RULES) + " |")
    print("|---" * (3 + len(RULES)) + "|")
    ratios = defaultdict(list)
    for name, by_zeta in cases.items():
        zetas = sorted(by_zeta)
        oracle_z = min(zetas, key=lambda z: by_zeta[z]["nrmse"])
        oracle = by_zeta[oracle_z]["nrmse"]
        cells = []
        for rule, (grid, score, _) in RULES.items():
            if grid == "refine":
                choice = refined(by_zeta, score)
            else:
                grid = [z for z in zetas if any(abs(z - g) < 1e-9 for g in grid)]
                table = np.stack([score(by_zeta[z]) for z in grid])           # [zetas, S]
                choice = [grid[i] for i in table.argmin(axis=0)]
            value = nrmse_at(by_zeta, choice)
            ratios[rule].append(value / oracle)
            picked = "/".join(f"{z:g}" for z in sorted(set(choice)))
            cells.append(f"{picked}: {value:.5f} ({value / oracle:.3f})")
        print(f"| {name} | {oracle_z:g} | {oracle:.5f} | " + " | ".join(cells) + " |")
    print("| mean / worst ratio to the oracle | | | " + " | ".join(
        f"{np.mean(ratios[r]):.3f} / {np.max(ratios[r]):.3f}" for r in RULES) + " |")
    print("| pnp runs per slice | | | " + " | ".join(str(RULES[r][2]) for r in RULES) + " |")


if __name__ == "__main__":
    main()
