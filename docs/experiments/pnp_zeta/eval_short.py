"""Can the held-out-lines ζ rule score its candidates with shorter pnp runs? On every case of bench_real.py.

    OMP_NUM_THREADS=1 python docs/experiments/pnp_zeta/eval_short.py CASE[,CASE...] > LOG
    python docs/experiments/pnp_zeta/eval_short.py --summarize LOG eval_rules_a.log eval_rules_b.log > short.md

For each case, dpm_core.zeta_rules.holdout_zeta (the product's rule, draw and grid) runs on the production inputs
with candidate schedules of LEVELS geometric levels over pnp's band (30: the product), and the script logs the ζ it
picks per slice, its held-out errors and its seconds. --summarize scores each pick by the NRMSE of the full 30-level
pnp image at that ζ, taken per slice from eval_rules.py's logs (the same production inputs), against the oracle.
"""
import json
import sys
import time
from collections import defaultdict
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(ROOT / "benchmarks"))
sys.path.insert(0, str(ROOT))
from case_inputs import case_inputs, pnp_experiment  # noqa: E402

from dpm_core.samplers.pnp import PNP_SIGMA_END, PNP_SIGMA_START  # noqa: E402
from dpm_core.schedules import geometric_sigmas  # noqa: E402
from dpm_core.zeta_rules import holdout_zeta  # noqa: E402

LEVELS = (30, 15, 8)
SEED = 0


def main():
    cases, rec = pnp_experiment(sys.argv[1])
    denoiser = rec.denoiser()
    for case in cases:
        S = case.kspace.shape[0]
        _, sampling, _, kn, maps, _, noise_std = case_inputs(case, rec)

        def run_inputs(y, part):
            return rec._run_inputs(y, part, maps, phase_reference=True)
        for levels in LEVELS:
            t0 = time.perf_counter()
            options = {"sigmas": geometric_sigmas(PNP_SIGMA_START, PNP_SIGMA_END, levels), "noise_std": noise_std}
            chosen = holdout_zeta("pnp", denoiser, kn, sampling, maps, seed=SEED, slice_ids=list(range(S)),
                                  run_inputs=run_inputs, options=options)
            row = {"case": case.name, "levels": levels, "seconds": None}
            if chosen is not None:
                row.update(zeta=chosen[0].tolist(), holdout=chosen[1]["zeta_holdout_error"])
            row["seconds"] = round(time.perf_counter() - t0, 1)
            print(json.dumps(row), flush=True)


def summarize(log: str, sweeps: list[str]) -> None:
    curves = defaultdict(dict)                                   # case -> ζ -> eval_rules row
    for path in sweeps:
        for line in open(path):
            row = json.loads(line)
            curves[row["case"]][row["zeta"]] = row
    print("| case | oracle ζ: NRMSE | " + " | ".join(f"{n} levels: ζ, NRMSE (ratio), s" for n in LEVELS) + " |")
    print("|---" * (2 + len(LEVELS)) + "|")
    picks = defaultdict(dict)
    for line in open(log):
        row = json.loads(line)
        picks[row["case"]][row["levels"]] = row
    ratios = defaultdict(list)
    for case, by_levels in picks.items():
        by_zeta = curves[case]
        oracle_z = min(by_zeta, key=lambda z: by_zeta[z]["nrmse"])
        oracle = by_zeta[oracle_z]["nrmse"]
        cells = []
        for n in LEVELS:
            row = by_levels[n]
            if "zeta" not in row:
                cells.append("too few lines (GCV)")
                continue
            zetas = [min(by_zeta, key=lambda z: abs(z - c)) for c in row["zeta"]]
            err = sum(by_zeta[z]["error_sq"][s] for s, z in enumerate(zetas))
            value = float(np.sqrt(err / sum(by_zeta[zetas[0]]["reference_sq"])))
            ratios[n].append(value / oracle)
            cells.append(f"{'/'.join(f'{z:g}' for z in sorted(set(zetas)))}, {value:.5f} ({value / oracle:.3f}), "
                         f"{row['seconds']}")
        print(f"| {case} | {oracle_z:g}: {oracle:.5f} | " + " | ".join(cells) + " |")
    print("| mean / worst ratio | | " + " | ".join(f"{np.mean(ratios[n]):.3f} / {np.max(ratios[n]):.3f}"
                                                 for n in LEVELS) + " |")


if __name__ == "__main__":
    if sys.argv[1] == "--summarize":
        summarize(sys.argv[2], sys.argv[3:])
    else:
        main()
