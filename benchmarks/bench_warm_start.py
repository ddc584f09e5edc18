"""The DPM's warm start: from which σ the sampler may start from the SENSE image instead of pure noise.

    OMP_NUM_THREADS=1 python benchmarks/bench_warm_start.py [--subjects 4] [--slices 2] [--R 2 4 6]
    OMP_NUM_THREADS=1 python benchmarks/bench_warm_start.py --steps-at 0.2       # the schedule length at one σ_start

A warm start (SDEdit; "come closer, diffuse faster", Chung, Sim & Ye, CVPR 2022) runs only the levels of the default
schedule at or below σ_start, from the SENSE-CG image plus noise of that σ: fewer network evaluations, and a start
that already agrees with the data. σ_start is chosen here on *validation* subjects (corpus seed 3, the slices the
model cards' ζ tables were swept on), never on the held-out subjects that eval_default_model.py and bench_real.py
report: for each shipped model on its own contrasts (FLAIR fine-tune on AXFLAIR, foundation on AXT1 and AXT2), every
σ_start of the grid and the cold start from σ_max, at nominal R 2, 4, 6 (equispaced + 24 ACS), 128 x 128, 8 coils,
the default DDS sampler (50-step schedule) and the card's ζ. Reference: the fully sampled MVUE with the same maps.
Rule (stated before the run): the largest saving whose NRMSE is within one standard error of the cold start or
better, at every R and for both models. Writes benchmarks/results/warm_start.{json,md}. With ``--steps-at σ``: the
same rule over the length of the schedule (:data:`STEPS_GRID`, its levels ≤ σ kept) at that σ_start, against the cold
start with the default 50 steps → benchmarks/results/warm_start_steps.{json,md}.
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
from eval_default_model import central_slices  # noqa: E402

from dpm_core import metrics  # noqa: E402
from dpm_core.checkpoints import DEFAULT_MODEL_PATH  # noqa: E402
from dpm_core.masks import effective_acceleration, equispaced_mask  # noqa: E402
from dpm_core.reconstruct import WARM_START_SIGMA, Reconstructor  # noqa: E402
from dpm_core.samplers.registry import DDS_WARM_START_STEPS  # noqa: E402

VALIDATION_CORPUS_SEED = 3
SIGMA_GRID = (0.05, 0.1, 0.2, 0.4, 0.8, 1.6)
STEPS_GRID = (15, 20, 30, 50)
MODELS = {"flair_default": ("AXFLAIR",), "foundation_default": ("AXT1", "AXT2")}


def validation_volumes(contrast: str, subjects: int, slices: int):
    """[(name, k-space [slices, C, H, W])]: central slices of validation subjects (corpus seed 3) of one contrast."""
    return central_slices(VALIDATION_CORPUS_SEED, contrast, subjects, slices, f"{contrast}_val")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--subjects", type=int, default=4)
    parser.add_argument("--slices", type=int, default=2)
    parser.add_argument("--R", type=float, nargs="+", default=[2, 4, 6])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--steps-at", type=float, default=None, metavar="SIGMA",
                        help="sweep the schedule length at this σ_start instead of σ_start")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    # (warm_start σ or None, schedule length or None = 50 steps); the first is the cold reference
    if args.steps_at is None:
        configs = [(None, None)] + [(s, None) for s in SIGMA_GRID]
    else:
        configs = [(None, None)] + [(args.steps_at, n) for n in STEPS_GRID]
    rows = []
    for model, contrasts in MODELS.items():
        card = Path(DEFAULT_MODEL_PATH).with_name(f"{model}.json")
        shared = Reconstructor(method="dpm", model=card, device=args.device).denoiser()   # one network, every row
        recs = {c: Reconstructor(method="dpm", model=shared, warm_start=c[0], device=args.device, progress=None,
                                 sampler_options={"steps": c[1] or 50}) for c in configs}
        reference = Reconstructor(method="sense")
        volumes = [v for contrast in contrasts for v in validation_volumes(contrast, args.subjects, args.slices)]
        for R in args.R:
            errors = {c: [] for c in configs}
            seconds = {c: 0.0 for c in configs}
            nfe = {}
            for name, k in volumes:
                H = k.shape[2]
                mask = equispaced_mask(H, R, num_acs=24)
                under = k * torch.from_numpy(mask).view(1, 1, H, 1)
                maps = ref = None
                for c, rec in recs.items():
                    t0 = time.perf_counter()
                    res = rec.reconstruct(under, mask, maps=maps)
                    seconds[c] += time.perf_counter() - t0
                    if maps is None:                                 # every row on the same coil maps
                        maps = res.maps
                        ref = reference.reconstruct(k, np.ones(H, bool), maps=maps).images
                    nfe[c] = res.info["nfe_per_sample"]
                    errors[c] += [metrics.nrmse(res.images[i], ref[i]) for i in range(k.shape[0])]
                print(f"{model} R={R:g} {name} done", flush=True)
            cold = np.asarray(errors[configs[0]])
            for c in configs:
                e = np.asarray(errors[c])
                diff = e - cold                                      # paired with the cold start, slice by slice
                rows.append({"model": model, "R nominal": R, "R effective": round(effective_acceleration(mask), 2),
                             "start": "cold (σ_max)" if c[0] is None else f"SENSE + σ={c[0]:g}",
                             "schedule": f"{c[1] or 50} steps", "sigma_start": c[0], "steps": c[1] or 50,
                             "NFE": nfe[c], "NRMSE": f"{e.mean():.4f} ± {e.std(ddof=1) / np.sqrt(len(e)):.4f}",
                             "Δ vs cold (paired)": "" if c[0] is None else
                             f"{diff.mean():+.4f} ± {diff.std(ddof=1) / np.sqrt(len(diff)):.4f}",
                             "slices": len(e), "s/slice": seconds[c] / len(e),
                             "nrmse_mean": float(e.mean()), "delta_mean": float(diff.mean()),
                             "delta_se": float(diff.std(ddof=1) / np.sqrt(len(diff)))})
    meets = {c: all(r["delta_mean"] <= r["delta_se"] for r in rows
                    if (r["sigma_start"], r["steps"]) == (c[0], c[1] or 50)) for c in configs[1:]}
    admissible = [c for c in configs[1:] if meets[c]]
    # the fewest network evaluations that meet the rule (smaller σ_start, or fewer steps)
    chosen = min(admissible, key=lambda c: (c[1] or 50, c[0])) if admissible else None
    what = "σ_start" if args.steps_at is None else f"schedule length at σ_start = {args.steps_at:g}"
    label = (lambda c: f"σ_start = {c[0]:g}") if args.steps_at is None else (lambda c: f"{c[1]} steps")
    notes = (f"{args.subjects} validation subjects (corpus seed {VALIDATION_CORPUS_SEED}) x {args.slices} central "
             f"slices per contrast, 128x128, 8 coils, equispaced + 24 ACS; DDS (Karras schedule of the given length; "
             f"a warm start keeps its levels ≤ σ_start), the card's ζ, on {args.device}, 1 thread. NRMSE mean ± "
             "standard error over slices vs the fully sampled MVUE with the same maps; Δ: paired difference to the "
             f"cold start (50 steps). Rule over the {what}: the fewest network evaluations whose Δ ≤ its standard "
             f"error at every R for both models → {'none' if chosen is None else label(chosen)}; shipped default "
             f"WARM_START_SIGMA = {WARM_START_SIGMA:g} with DDS_WARM_START_STEPS = {DDS_WARM_START_STEPS} (the "
             "Karras schedule whose levels ≤ σ_start a warm start runs). Meeting the rule: "
             f"{', '.join(label(c) for c in admissible) or 'none'}.")
    write_results("warm_start" if args.steps_at is None else "warm_start_steps", rows,
                  ["model", "R nominal", "R effective", "start", "schedule", "NFE", "NRMSE", "Δ vs cold (paired)",
                   "slices", "s/slice"],
                  "DPM warm start from the SENSE image on validation subjects: " + what, notes,
                  extra={"chosen": None if chosen is None else {"sigma_start": chosen[0], "steps": chosen[1] or 50},
                         "admissible": [{"sigma_start": c[0], "steps": c[1] or 50} for c in admissible]})


if __name__ == "__main__":
    main()
