"""The pnp sampler's last noise level σ_end against ζ, on cases of bench_real.py, with the product's ζ rule.

    OMP_NUM_THREADS=1 python docs/experiments/pnp_band/eval_band.py CASE[,CASE...] > LOG
    python docs/experiments/pnp_band/eval_band.py --summarize LOG > summary.md

For each case, each σ_end of SIGMA_ENDS (30 geometric levels from pnp's σ_start, 0.05) and each ζ of ZETAS, pnp runs
on the production path's inputs (maps with num_maps auto, calibration-matrix noise level, SENSE start, the scan's L1
phase reference; through posterior_samples) and the script prints one JSON line per (case, σ_end) with:
- nrmse: per ζ, the NRMSE of the image against the fully sampled RSS (bench_real.py's scoring): the oracle surface;
- holdout: per ζ and slice, the relative held-out-line error of dpm_core.zeta_rules.holdout_zeta (the product's rule
  and draw, run over ZETAS), so that a joint (σ_end, ζ) choice by held-out lines can be scored offline; null where
  the case has too few lines to hold out (the product then falls back to GCV).
--summarize: per case and σ_end the oracle ζ and NRMSE and the held-out rule's pick; then the joint pick over
(σ_end, ζ) by the smallest held-out error.
"""
import dataclasses
import json
import sys
import time
from pathlib import Path


ROOT = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(ROOT / "benchmarks"))
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "docs" / "experiments" / "pnp_zeta"))
from bench_real import scores  # noqa: E402
from case_inputs import case_inputs, pnp_experiment  # noqa: E402

from dpm_core.operators import SenseOp, combine_map_images  # noqa: E402
from dpm_core.samplers import get_sampler, posterior_samples  # noqa: E402
from dpm_core.samplers.pnp import PNP_LEVELS, PNP_SIGMA_START  # noqa: E402
from dpm_core.schedules import geometric_sigmas  # noqa: E402
from dpm_core.zeta_rules import holdout_zeta  # noqa: E402

SIGMA_ENDS = (0.01, 0.005, 0.0025)                   # 0.01: the shipped band's end (the control)
ZETAS = tuple(2.0 ** k for k in range(-6, 3))        # 1/64 ... 4, factors of 2
SEED = 0


def main():
    cases, rec = pnp_experiment(sys.argv[1])
    denoiser = rec.denoiser()
    spec = dataclasses.replace(get_sampler("pnp"), zeta_grid=ZETAS)
    for case in cases:
        S = case.kspace.shape[0]
        ids = list(range(S))
        ref, sampling, scale, kn, maps, support, noise_std = case_inputs(case, rec)

        def run_inputs(y, part):
            return rec._run_inputs(y, part, maps, phase_reference=True)
        full = run_inputs(kn, sampling)
        for sigma_end in SIGMA_ENDS:
            t0 = time.perf_counter()
            options = {"sigmas": geometric_sigmas(PNP_SIGMA_START, sigma_end, PNP_LEVELS), "noise_std": noise_std}
            chosen = holdout_zeta(spec, denoiser, kn, sampling, maps, seed=SEED, slice_ids=ids,
                                  run_inputs=run_inputs, options=options)
            info = {"zeta_holdout_error": None, "zeta_holdout_lines": 0} if chosen is None else chosen[1]
            nrmse, error_sq = [], []
            for zeta in ZETAS:
                x, _, _ = posterior_samples(spec, denoiser, kn, SenseOp(maps, sampling), num_samples=1, seed=SEED,
                                            slice_ids=ids, **options, **full, zeta=zeta)
                image = (combine_map_images(x * support) * scale.view(S, 1, 1)).abs().numpy()
                nrmse.append(round(scores(image, ref)["NRMSE"], 6))
                error_sq.append(((image - ref) ** 2).reshape(S, -1).sum(1).tolist())
            print(json.dumps({"case": case.name, "sigma_end": sigma_end, "zetas": list(ZETAS), "nrmse": nrmse,
                              "error_sq": error_sq, "reference_sq": (ref ** 2).reshape(S, -1).sum(1).tolist(),
                              "holdout": info["zeta_holdout_error"], "holdout_lines": info["zeta_holdout_lines"],
                              "maps": int(maps.shape[1]), "seconds": round(time.perf_counter() - t0, 1)}),
                  flush=True)


def summarize(path: str) -> None:
    rows = [json.loads(line) for line in open(path)]
    print("| case | σ_end | oracle ζ: NRMSE | held-out pick: NRMSE |")
    print("|---|---|---|---|")
    best = {}
    for r in rows:
        i = min(range(len(r["zetas"])), key=lambda j: r["nrmse"][j])
        cell = "–"
        if r["holdout"] is not None:
            score = [sum(r["holdout"][s][j] for s in range(len(r["holdout"]))) for j in range(len(r["zetas"]))]
            h = min(range(len(score)), key=score.__getitem__)
            cell = f"{r['zetas'][h]:g}: {r['nrmse'][h]:.5f}"
            if r["case"] not in best or score[h] < best[r["case"]][0]:
                best[r["case"]] = (score[h], r["sigma_end"], r["zetas"][h], r["nrmse"][h])
        print(f"| {r['case']} | {r['sigma_end']:g} | {r['zetas'][i]:g}: {r['nrmse'][i]:.5f} | {cell} |")
    print("\n| case | joint held-out pick (σ_end, ζ): NRMSE |\n|---|---|")
    for case, (_, sigma_end, zeta, nrmse) in best.items():
        print(f"| {case} | {sigma_end:g}, {zeta:g}: {nrmse:.5f} |")


if __name__ == "__main__":
    if sys.argv[1] == "--summarize":
        summarize(sys.argv[2])
    else:
        main()
