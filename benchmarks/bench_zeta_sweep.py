"""ζ sweep of the shipped models with the sampler as production runs it (warm start, the warm schedule), beside the
ζ tables on their cards.

The cards' tables were swept before the warm start became the default (DDS from pure noise, 20 steps; docs/training.md
§4). This benchmark repeats the sweep with ``sampler_options=None`` — the Reconstructor's defaults, i.e. the SENSE warm
start at σ = 0.2 and the fast sampler's warm schedule — on the same validation subjects (dpm-synth corpus seed 3, never the
held-out subjects of eval_default_model.py / bench_real.py), over a grid wide enough for an interior optimum and one
acceleration more (nominal R 8), and reports per model and R: the NRMSE at every ζ, the best ζ, and what the card's
table costs against that best. It does not rewrite the cards (training.finetune.refresh_validation does).

One command: `OMP_NUM_THREADS=1 python benchmarks/bench_zeta_sweep.py` -> benchmarks/results/zeta_sweep.{json,md}.
"""
from __future__ import annotations

import argparse
import json
import math
import platform
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from dpm_core.checkpoints import DEFAULT_MODEL_PATH, load_checkpoint, zeta_for_acceleration  # noqa: E402
from dpm_core.masks import DEFAULT_NUM_ACS as NUM_ACS, effective_acceleration, equispaced_mask  # noqa: E402
from dpm_core.samplers.registry import DDS_WARM_START_STEPS  # noqa: E402
from training.finetune import load_validation_set, zeta_sweep  # noqa: E402
from training.synth import main as synth_main  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
VALIDATION_CORPUS_SEED = 3
ZETAS = (0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0)
# model -> (dpm-synth subjects, contrasts, validation slices): the validation sets of docs/training.md
MODELS = {
    "flair_default": (4, ("AXFLAIR",), 4),
    "foundation_default": (2, ("AXT1", "AXT2", "AXPD"), 6),
}


def synthesize(out: Path, subjects: int, contrasts) -> Path:
    """The validation volumes as docs/training.md makes them (dpm-synth, corpus seed 3)."""
    synth_main(["--out", str(out), "--subjects", str(subjects), "--contrasts", ",".join(contrasts), "--matrix", "128",
                "--coils", "8", "--slices", "8", "--seed", str(VALIDATION_CORPUS_SEED), "--quiet"])
    return out


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--R", type=float, nargs="+", default=[2, 4, 6, 8])
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for model, (subjects, contrasts, slices) in MODELS.items():
            card_path = Path(DEFAULT_MODEL_PATH).with_name(f"{model}.json")
            precond, card = load_checkpoint(card_path)
            valset = load_validation_set(synthesize(Path(tmp) / model, subjects, contrasts), contrasts, slices)
            start = time.perf_counter()
            table, best, _ = zeta_sweep(precond, valset, args.R, ZETAS, sampler="fast", sampler_options=None,
                                        device=args.device, seed=0)
            seconds = time.perf_counter() - start
            table_Rs = sorted(float(r) for r in card["zeta"])
            for R in args.R:
                key = f"{float(R):g}"
                curve = {float(z): float(v) for z, v in table[key].items()}
                R_eff = effective_acceleration(equispaced_mask(valset.kspace.shape[-2], R, num_acs=NUM_ACS))
                card_zeta = zeta_for_acceleration(card, R_eff)
                rows.append({"model": model, "R": R, "effective_R": R_eff, "nrmse": curve,
                             "best_zeta": float(best[key]), "best_nrmse": min(curve.values()),
                             "card_zeta_table": card["zeta"], "card_zeta": card_zeta,
                             "card_brackets": table_Rs[0] <= R_eff <= table_Rs[-1],
                             "card_zeta_nrmse_ratio": _interpolated(curve, card_zeta) / min(curve.values()),
                             "slices": valset.ids, "sweep_seconds": seconds})
    write(rows, args)


def _interpolated(curve: dict, zeta: float) -> float:
    """NRMSE at ζ, linear in log ζ between the swept values (the card's ζ is interpolated in R and may fall between)."""
    zs = sorted(curve)
    if zeta <= zs[0]:
        return curve[zs[0]]
    if zeta >= zs[-1]:
        return curve[zs[-1]]
    for lo, hi in zip(zs, zs[1:]):
        if lo <= zeta <= hi:
            t = (math.log(zeta) - math.log(lo)) / (math.log(hi) - math.log(lo))
            return curve[lo] + t * (curve[hi] - curve[lo])
    raise AssertionError(zeta)


def write(rows, args):
    RESULTS.mkdir(exist_ok=True)
    meta = {"machine": f"{platform.platform()}, torch {torch.__version__}", "device": args.device,
            "command": "OMP_NUM_THREADS=1 python benchmarks/bench_zeta_sweep.py", "zetas": list(ZETAS)}
    (RESULTS / "zeta_sweep.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=2))
    lines = ["# ζ sweep of the shipped models with the production sampler (warm start)", "",
             f"Machine: {meta['machine']}, {args.device}, 1 thread.", "",
             f"One command: `{meta['command']}`. Validation subjects of dpm-synth corpus seed "
             f"{VALIDATION_CORPUS_SEED} (the cards' own validation sets), equispaced + 24 ACS, the fast sampler with "
             f"the Reconstructor's defaults (SENSE warm start at σ 0.2, {DDS_WARM_START_STEPS}-step warm schedule), "
             "BART-default ESPIRiT "
             "with automatic map sets, mean NRMSE against the MVUE in the coil support. 'card ζ' is what the card's "
             "table gives at the effective R (interpolated; its nearest end outside the table, where the Reconstructor "
             "uses GCV instead); its NRMSE is interpolated in log ζ on the sweep.", "",
             "| model | R nominal (effective) | " + " | ".join(f"ζ {z:g}" for z in ZETAS)
             + " | best ζ | card ζ (brackets R) | card ζ / best NRMSE |",
             "|---|---|" + "---|" * len(ZETAS) + "---|---|---|"]
    for r in rows:
        cells = " | ".join(("**%.4f**" if z == r["best_zeta"] else "%.4f") % r["nrmse"][z] for z in ZETAS)
        lines.append(f"| {r['model']} | {r['R']:g} ({r['effective_R']:.3f}) | {cells} | {r['best_zeta']:g} | "
                     f"{r['card_zeta']:.3g} ({'yes' if r['card_brackets'] else 'no'}) | "
                     f"{r['card_zeta_nrmse_ratio']:.3f} |")
    interior = all(ZETAS[0] < r["best_zeta"] < ZETAS[-1] for r in rows)
    lines += ["", f"Optimum inside the grid for every row: {'yes' if interior else 'no'}. Sweep time per model: "
              + ", ".join(f"{m} {next(r['sweep_seconds'] for r in rows if r['model'] == m):.0f} s" for m in MODELS)
              + "."]
    (RESULTS / "zeta_sweep.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
