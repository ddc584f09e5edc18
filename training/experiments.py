"""``dpm-experiment``: the paper's three experiments, each reproducible (and resumable) with one command.

    dpm-experiment finetune-sweep --config small --out runs/exp_small     # Fig 2/3: NRMSE vs fine-tuning epochs per LR
    dpm-experiment methods        --config small --out runs/exp_small     # Fig 4: six training recipes
    dpm-experiment zeta           --config small --out runs/exp_small     # Fig 5: ζ sweep per acceleration
    dpm-experiment all            --config small --out runs/exp_small     # the three in order
    dpm-experiment undersampled   --config small_undersampled --out runs/exp_under   # fine-tuning from R = 4 scans only

``--config`` is ``tiny`` (tests), ``small`` (synthetic corpus, 2-core CPU, about an hour), ``full`` (fastMRI brain,
GPUs; paths from environment variables) or a JSON file with the same keys (``training/experiment_configs/*.json``).
The methods are defined in docs/experiments.md.

Everything goes through the project's own machinery: corpora from :func:`training.synth.generate_corpus` (synthetic
configs), targets from :func:`training.preprocess.build_cache`, every training run is one
:func:`training.training_loop.training_loop` (resumable training state in its run directory), every evaluation is
:func:`training.finetune.validate` on the fixed slices of :func:`training.finetune.load_validation_set`, i.e. the
:class:`dpm_core.reconstruct.Reconstructor` with the configured sampler.

Resumability: every finished cell (an evaluation of one checkpoint at every acceleration, a (R, ζ) pair, a finished
training run) is appended to ``RUNDIR/results.jsonl`` and never recomputed; an interrupted training run continues from
its saved state. Outputs per experiment in ``RUNDIR/<experiment>/``: ``*.csv``, ``*.png`` (matplotlib, Agg) and
``*.md`` (markdown table).
"""
from __future__ import annotations

import argparse
import csv
import json
import math
import os
import sys
import time
from pathlib import Path
from typing import Sequence

import h5py
import numpy as np
import torch

from dpm_core.checkpoints import load_checkpoint, save_checkpoint, zeta_for_acceleration
from dpm_core.masks import DEFAULT_NUM_ACS

from . import distributed as dist_utils
from .finetune import ValidationSet, load_validation_set, validate
from .preprocess import CachedSlices, build_cache, find_volumes, select_volumes
from .pretrain import describe_corpus, estimate_sigma_data
from .training_loop import MODEL_STEM, training_loop

__all__ = ["EXPERIMENTS", "EXTRA_EXPERIMENTS", "CONFIG_DIR", "load_config", "ResultStore", "Experiment",
           "run_experiments", "main"]

EXPERIMENTS = ("finetune-sweep", "methods", "zeta")      # "all": the paper's three figures
EXTRA_EXPERIMENTS = ("undersampled",)                     # fine-tuning from accelerated scans (not in "all")
CONFIG_DIR = Path(__file__).with_name("experiment_configs")
RESULTS_NAME = "results.jsonl"

METHODS = {   # number -> (short name, init, training data); the budget rules are in docs/experiments.md
    1: ("scratch, all target", "scratch", "target_all"),
    2: ("pre-train + fine-tune, all target", "pretrained", "target_all"),
    3: ("joint external + all target", "scratch", "joint_all"),
    4: ("pre-train + fine-tune, 20 target (paper)", "pretrained", "target_few"),
    5: ("joint external + 20 target", "scratch", "joint_few"),
    6: ("scratch, 20 target", "scratch", "target_few"),
}


# ----------------------------------------------------------------------------------------------------------------------
# Configuration.

def load_config(name_or_path: str, out: str | os.PathLike) -> dict:
    """A named configuration (``training/experiment_configs/<name>.json``) or a JSON file; ``{out}`` in paths becomes
    the run directory and ``$VARS`` are expanded (the full config takes the fastMRI paths from the environment)."""
    path = Path(name_or_path)
    if not path.suffix:
        path = CONFIG_DIR / f"{name_or_path}.json"
    if not path.is_file():
        known = sorted(p.stem for p in CONFIG_DIR.glob("*.json"))
        raise ValueError(f"config {name_or_path!r} is neither one of {known} nor a JSON file")
    config = json.loads(path.read_text())

    def resolve(value):
        if isinstance(value, dict):
            return {k: resolve(v) for k, v in value.items()}
        if isinstance(value, list):
            return [resolve(v) for v in value]
        if isinstance(value, str) and ("{out}" in value or "$" in value):
            text = os.path.expandvars(value.replace("{out}", str(out)))
            if "$" in text:
                raise ValueError(f"config {path.name}: {value!r} needs the environment variable in it "
                                 f"(e.g. export FASTMRI_BRAIN_TRAIN=/data/fastmri/multicoil_train)")
            return text
        return value

    config = resolve(config)
    config["source"] = str(path)
    return config


# ----------------------------------------------------------------------------------------------------------------------
# Results file: one JSON object per finished cell.

class ResultStore:
    """``RUNDIR/results.jsonl``: {"key", "record", "time"} lines; the last line of a key wins. Counts what this
    process computed and reused (the tests check that a second run computes nothing)."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.records: dict[str, dict] = {}
        self.computed, self.reused = 0, 0
        if self.path.is_file():
            for line in self.path.read_text().splitlines():
                if line.strip():
                    try:
                        entry = json.loads(line)
                    except json.JSONDecodeError:              # a line cut by an interruption: recompute that cell
                        continue
                    self.records[entry["key"]] = entry["record"]

    def get(self, key: str) -> dict | None:
        record = self.records.get(key)
        if record is not None:
            self.reused += 1
        return record

    def put(self, key: str, record: dict) -> dict:
        self.records[key] = record
        self.computed += 1
        if dist_utils.get_rank() == 0:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with open(self.path, "a") as f:
                f.write(json.dumps({"key": key, "record": record, "time": time.time()}, default=_json_default) + "\n")
                f.flush()
                os.fsync(f.fileno())
        return record


def _json_default(value):
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    return str(value)


def summarize(res: dict) -> dict:
    """:func:`training.finetune.validate` output -> a cell record: per R mean and standard error of NRMSE and SSIM."""
    per_R = {}
    for R, values in res["per_slice"]["nrmse"].items():
        s = res["per_slice"]["ssim"][R]
        per_R[R] = {"nrmse": float(np.mean(values)), "nrmse_se": _se(values), "ssim": float(np.mean(s)),
                    "ssim_se": _se(s), "nrmse_support": res["nrmse_support"][R],
                    "effective_acceleration": res["effective_acceleration"][R], "n": len(values),
                    "nrmse_slices": [float(v) for v in values], "ssim_slices": [float(v) for v in s]}
    return {"score": res["score"], "per_R": per_R, "slices": res["per_slice"]["ids"]}


def _merge(parts: list[dict]) -> dict:
    """:func:`training.finetune.validate` outputs of consecutive slice chunks -> one output over all slices."""
    if len(parts) == 1:
        return parts[0]
    n = [len(p["per_slice"]["ids"]) for p in parts]
    first = parts[0]
    nrmse = {R: [v for p in parts for v in p["per_slice"]["nrmse"][R]] for R in first["nrmse"]}
    return {"nrmse": {R: float(np.mean(v)) for R, v in nrmse.items()},
            "nrmse_support": {R: float(np.average([p["nrmse_support"][R] for p in parts], weights=n))
                              for R in first["nrmse"]},
            "effective_acceleration": first["effective_acceleration"],
            "score": float(np.mean([np.mean(v) for v in nrmse.values()])),
            "per_slice": {"ids": [i for p in parts for i in p["per_slice"]["ids"]], "nrmse": nrmse,
                          "ssim": {R: [v for p in parts for v in p["per_slice"]["ssim"][R]] for R in first["nrmse"]}}}


def _se(values) -> float:
    values = np.asarray(values, dtype=np.float64)
    return float(values.std(ddof=1) / math.sqrt(len(values))) if len(values) > 1 else 0.0


def _fmt(value: float) -> str:
    return f"{value:g}"


# ----------------------------------------------------------------------------------------------------------------------
# The experiment context: corpora, caches, validation slices, training runs.

class Experiment:
    """Shared state of one ``dpm-experiment`` invocation (one RUNDIR, one config)."""

    def __init__(self, config: dict, out: str | os.PathLike, device: str = "auto", progress: bool = True):
        self.config = config
        self.out = Path(out)
        self.device = dist_utils.init(device)
        self.rank = dist_utils.get_rank()
        self.progress = progress and self.rank == 0
        if self.rank == 0:
            self.out.mkdir(parents=True, exist_ok=True)
            (self.out / "config.json").write_text(json.dumps(config, indent=2) + "\n")
        dist_utils.barrier()
        self.results = ResultStore(self.out / RESULTS_NAME)
        self.ev = dict(config["evaluation"])
        self.train = dict(config["training"])
        self.cache_dir = Path(config.get("cache") or self.out / "cache")
        self._slice_sets: dict[str, ValidationSet] = {}
        self._datasets: dict[str, CachedSlices] = {}
        self._bar = None

    # -- corpora -------------------------------------------------------------------------------------------------------
    def ensure_corpora(self) -> None:
        """Generate the synthetic corpora the config names (dpm-synth's generate_corpus), reusing matching ones."""
        if self.rank == 0:
            for part in ("external", "target", "validation", "test"):
                for spec in self.config["corpora"].get(part, {}).get("synth", []):
                    self._ensure_synth(spec)
        dist_utils.barrier()

    def _ensure_synth(self, spec: dict) -> None:
        from .synth import generate_corpus
        spec = dict(spec)
        out_dir = Path(spec.pop("dir"))
        subjects, contrasts, seed = spec.pop("subjects"), spec.pop("contrasts"), spec.pop("seed")
        key = f"corpus/{out_dir}"
        manifest_path = out_dir / "manifest.json"
        if manifest_path.is_file():
            manifest = json.loads(manifest_path.read_text())
            have = {(e["acquisition"], e["subject"]) for e in manifest["files"]}
            want = {(c, i) for i in range(subjects) for c in contrasts}
            same = manifest["seed"] == seed and all(manifest["options"].get(k) == v for k, v in spec.items()
                                                    if k in manifest["options"])
            if same and have == want and all((out_dir / e["file"]).is_file() for e in manifest["files"]):
                self.results.get(key) or self.results.put(key, {"dir": str(out_dir), "generated": False})
                return
            raise ValueError(f"{out_dir} holds a different corpus (seed {manifest['seed']}, {len(have)} files, "
                             f"options {manifest['options']}) than the config asks for (seed {seed}, "
                             f"{subjects} x {contrasts}, {spec}); point the config elsewhere or delete it")
        t0 = time.time()
        generate_corpus(out_dir, subjects, contrasts, seed=seed, progress=self.progress, **spec)
        self.results.put(key, {"dir": str(out_dir), "generated": True, "seconds": time.time() - t0})

    def volumes(self, part: str, subjects: int | None = None):
        c = self.config["corpora"][part]
        return select_volumes(find_volumes(c["dirs"]), c.get("contrasts"), c.get("exclude_contrasts"), subjects)

    def dataset(self, selection: str) -> CachedSlices:
        """Training slices of "external", "target_all", "target_few", "joint_all" or "joint_few" (cached targets)."""
        if selection not in self._datasets:
            few = self.config["few_subjects"]
            all_n = self.config.get("all_subjects")
            parts = {"external": [("external", None)], "target_all": [("target", all_n)],
                     "target_few": [("target", few)], "joint_all": [("external", None), ("target", all_n)],
                     "joint_few": [("external", None), ("target", few)]}[selection]
            index_name = f"index-exp-{self.config['name']}-{selection}.json"
            if self.rank == 0:
                volumes = [v for part, n in parts for v in self.volumes(part, n)]
                build_cache(volumes, self.cache_dir, coil_method=self.ev.get("coil_method", "fast"),
                            num_acs=self.ev.get("num_acs", DEFAULT_NUM_ACS), index_name=index_name,
                            progress=self.progress)
            dist_utils.barrier()
            self._datasets[selection] = CachedSlices(self.cache_dir / index_name, crop=self.train.get("crop"),
                                                     flip=bool(self.train.get("flip")))
        return self._datasets[selection]

    def fixed_slices(self, part: str = "validation") -> ValidationSet:
        """The fixed slices of ``part``: "validation" (what the arms select their epochs on) or "test" (optional
        held-out subjects that nothing selects on; the undersampled experiment reports on them when configured)."""
        if part not in self._slice_sets:
            c = self.config["corpora"][part]
            self._slice_sets[part] = load_validation_set(c["dirs"], c.get("contrasts"), c["slices"],
                                                         coil_method=self.ev.get("coil_method", "fast"),
                                                         num_acs=self.ev.get("num_acs", DEFAULT_NUM_ACS))
        return self._slice_sets[part]

    # -- evaluation ----------------------------------------------------------------------------------------------------
    def evaluate(self, key: str, precond, zeta=None, accelerations=None, part: str = "validation") -> dict:
        """The cell ``key``: validate ``precond`` on the fixed slices of ``part`` (rank 0), or its recorded result."""
        record = self.results.get(key)
        if record is None:
            t0 = time.time()
            valset = self.fixed_slices(part)
            chunk = self.ev.get("batch_slices") or len(valset.ids)      # slices per Reconstructor call (memory)
            parts = [validate(precond, ValidationSet(*(v[i:i + chunk] for v in valset)),
                              accelerations or self.ev["accelerations"],
                              zeta=self.ev.get("zeta", 1.0) if zeta is None else zeta, sampler=self.ev["sampler"],
                              sampler_options=self.ev.get("sampler_options"), device=self.device,
                              seed=self.ev.get("seed", 0), num_acs=self.ev.get("num_acs", DEFAULT_NUM_ACS))
                     for i in range(0, len(valset.ids), chunk)]
            record = self.results.put(key, {**summarize(_merge(parts)), "seconds": time.time() - t0})
        return record

    # -- training --------------------------------------------------------------------------------------------------
    def pretrained(self) -> Path:
        """The pre-trained model card: ``pretrain.reuse`` when that file exists, else trained here on "external"."""
        cfg = self.config["pretrain"]
        record = self.results.get("pretrain/done")
        if record is not None:
            return Path(record["model"])
        reuse = cfg.get("reuse")
        if reuse and Path(reuse).is_file():
            _, card = load_checkpoint(reuse)
            self.results.put("pretrain/done", {"model": str(reuse), "reused": True, "sha256": card.get("sha256"),
                                               "steps": card.get("training", {}).get("steps")})
            return Path(reuse)
        record = self.train_run("pretrain", "external", steps=cfg["steps"], lr=cfg["lr"],
                                lr_rampup=cfg.get("lr_rampup", 0), eval_every=None,
                                ema_halflife=cfg.get("ema_halflife"), ema_rampup=0.05, stage="pretrain")
        return Path(record["model"])

    def train_run(self, name: str, selection: str, steps: int, lr: float, eval_every: int | None,
                  init: str | Path | None = None, lr_rampup: int = 0, ema_halflife: float | None = None,
                  ema_rampup: float | None = None, stage: str = "") -> dict:
        """One training run ``RUNDIR/<name>`` (resumable); evaluations every ``eval_every`` steps are cells
        ``<name>/step=<s>``; returns the ``<name>/done`` record {"model", "best_step", "steps_per_epoch", ...}."""
        done = self.results.get(f"{name}/done")
        if done is not None:
            return done
        dataset = self.dataset(selection)
        run_dir = self.out / name
        batch = self.train["batch"]
        init_precond, init_card, sigma_data = None, {}, None
        if init is not None:
            init_precond, init_card = load_checkpoint(init, device="cpu")
            init_precond.train()
        else:
            sigma_data = self.config["network"].get("sigma_data") or round(estimate_sigma_data(dataset), 3)
        index = json.loads((Path(dataset.cache_dir) / f"index-exp-{self.config['name']}-{selection}.json").read_text())
        corpus = describe_corpus(index, dataset.slices)
        evaluate_fn = None
        if eval_every:
            def evaluate_fn(ema, step):
                if step == 0 and init is None:       # a randomly initialised network is no candidate: not evaluated
                    return {"score": math.inf}
                key = "pretrained/eval" if step == 0 else f"{name}/step={step}"
                return {"score": self.evaluate(key, ema)["score"]}
        card = {"training_data": (f"{stage}: {corpus['num_slices']} slices of {corpus['num_subjects']} subjects, "
                                  f"contrasts {', '.join(corpus['contrasts'])}"
                                  + (f"; initialised from {init}" if init else "")),
                "image_size": corpus["image_size"], "zeta": init_card.get("zeta", {"2": 1.0, "4": 1.0}),
                "training": {"stage": stage, "experiment": self.config["name"], "run": name, "data": corpus,
                             "init": str(init) if init else None, "init_sha256": init_card.get("sha256"),
                             "pretraining": init_card.get("training", {})}}
        result = training_loop(
            run_dir=run_dir,
            dataset=dataset,
            arch=self.config["network"]["arch"],
            arch_kwargs=self.config["network"].get("arch_kwargs"),
            init_precond=init_precond,
            sigma_data=sigma_data or 0.5,
            total_steps=steps,
            batch_size=batch,
            batch_gpu=self.train.get("batch_gpu"),
            lr=lr,
            lr_rampup_steps=lr_rampup,
            grad_clip=self.train.get("grad_clip"),
            ema_halflife_nimg=ema_halflife or 10.0 * batch,
            ema_rampup_ratio=ema_rampup,
            seed=self.train.get("seed", 0),
            device=self.device,
            num_workers=self.train.get("workers", 0),
            tick_steps=self.train.get("tick", 25),
            snapshot_ticks=1,
            evaluate=evaluate_fn,
            evaluate_every_steps=eval_every or 0,
            card=card,
            resume=True,
            progress=self.progress,
            tensorboard=False,
            options={"command": "dpm-experiment", "run": name},
        )
        record = {"model": str(result["model"] or run_dir / f"{MODEL_STEM}.json"), "best_step": result["best_step"],
                  "steps": result["step"], "steps_per_epoch": len(dataset) // batch, "lr": lr,
                  "num_slices": len(dataset), "num_subjects": corpus["num_subjects"], "seconds": result["seconds"]}
        dist_utils.barrier()
        return self.results.put(f"{name}/done", record)

    def progress_bar(self, total: int, desc: str):
        if self.progress:
            from tqdm import tqdm
            self._bar = tqdm(total=total, desc=desc, unit="cell", dynamic_ncols=True, position=1, leave=True)
        return self._bar

    def close_bar(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None


# ----------------------------------------------------------------------------------------------------------------------
# Experiment 1: fine-tuning learning rate x epochs (Fig 2/3).

def finetune_sweep(exp: Experiment) -> dict:
    """Fine-tune the pre-trained model on the few-subject target set at every LR; NRMSE/SSIM per (LR, epoch, R)."""
    cfg = exp.config["finetune"]
    pretrained = exp.pretrained()
    spe = len(exp.dataset("target_few")) // exp.train["batch"]
    steps, every = cfg["epochs"] * spe, cfg["eval_every"] * spe
    checkpoints = [0] + list(range(every, steps + 1, every))
    exp.progress_bar(len(cfg["lrs"]), "finetune-sweep runs")
    rows, runs = [], {}
    for lr in cfg["lrs"]:
        name = f"finetune-sweep/lr={_fmt(lr)}"
        runs[_fmt(lr)] = exp.train_run(name, "target_few", steps=steps, lr=lr, eval_every=every, init=pretrained,
                                       stage="finetune")
        if exp._bar is not None:
            exp._bar.update(1)
        if exp.rank != 0:
            continue
        base = exp.results.records["pretrained/eval"]["per_R"]
        for step in checkpoints:
            key = "pretrained/eval" if step == 0 else f"{name}/step={step}"
            record = exp.results.records[key]
            for R, m in record["per_R"].items():
                rows.append({"lr": lr, "epoch": step / spe, "step": step, "R": float(R), **_metric_cols(m),
                             **_paired(m, base[R], "pretrained")})
    exp.close_bar()
    if exp.rank != 0:
        return {}
    scores = {}
    for row in rows:
        scores.setdefault((row["lr"], row["epoch"]), []).append(row["nrmse"])
    (best_lr, best_epoch) = min(scores, key=lambda k: (np.mean(scores[k]), k[1]))
    best = {"lr": best_lr, "epoch": best_epoch, "mean_nrmse": float(np.mean(scores[(best_lr, best_epoch)])),
            "model": runs[_fmt(best_lr)]["model"], "steps_per_epoch": spe}
    exp.results.records["finetune-sweep/best"] = best
    out = exp.out / "finetune-sweep"
    _write_csv(out / "finetune_sweep.csv", rows)
    _plot_sweep(out / "finetune_sweep.png", rows, exp.ev["accelerations"])
    _write_sweep_md(out / "finetune_sweep.md", rows, best, exp)
    return {"best": best, "rows": rows}


def _metric_cols(m: dict) -> dict:
    return {"R_eff": m["effective_acceleration"], "nrmse": m["nrmse"], "nrmse_se": m["nrmse_se"], "ssim": m["ssim"],
            "ssim_se": m["ssim_se"], "nrmse_support": m["nrmse_support"], "n_slices": m["n"]}


def _paired(m: dict, ref: dict, name: str) -> dict:
    """Mean and standard error of the per-slice NRMSE difference to ``ref`` (the same slices: a paired comparison)."""
    d = np.asarray(m["nrmse_slices"]) - np.asarray(ref["nrmse_slices"])
    return {f"delta_vs_{name}": float(d.mean()), f"delta_vs_{name}_se": _se(d)}


def _write_csv(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def _pm(value: float, se: float, digits: int = 4) -> str:
    return f"{value:.{digits}f} ± {se:.{digits}f}"


def _plot_sweep(path: Path, rows: list[dict], accelerations) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    Rs = sorted({r["R"] for r in rows})
    fig, axes = plt.subplots(2, len(Rs), figsize=(4.2 * len(Rs), 6.4), squeeze=False, sharex=True)
    for j, R in enumerate(Rs):
        for lr in sorted({r["lr"] for r in rows}, reverse=True):
            pts = sorted((r["epoch"], r["nrmse"], r["nrmse_se"], r["delta_vs_pretrained"],
                          r["delta_vs_pretrained_se"]) for r in rows if r["R"] == R and r["lr"] == lr)
            e, v, s, d, ds = map(np.asarray, zip(*pts))
            axes[0][j].errorbar(e, v, yerr=s, marker="o", ms=3, capsize=2, label=f"lr {lr:g}")
            axes[1][j].errorbar(e, d, yerr=ds, marker="o", ms=3, capsize=2, label=f"lr {lr:g}")
        axes[0][j].set_title(f"R = {R:g}")
        axes[0][j].set_ylabel("NRMSE (mean ± SE)")
        axes[1][j].axhline(0.0, color="k", lw=0.8)
        axes[1][j].set_ylabel("NRMSE − pre-trained (paired SE)")
        axes[1][j].set_xlabel("fine-tuning epochs")
        for ax in axes[:, j]:
            ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=8)
    fig.suptitle("Fine-tuning duration and learning rate (epoch 0 = pre-trained model)")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _write_sweep_md(path: Path, rows: list[dict], best: dict, exp: Experiment) -> None:
    Rs = sorted({r["R"] for r in rows})
    by = {(r["lr"], r["epoch"], r["R"]): r for r in rows}
    lines = [f"# Fine-tuning sweep ({exp.config['name']})", "",
             f"NRMSE (mean ± standard error over {rows[0]['n_slices']} fixed validation slices), equispaced + "
             f"{exp.ev.get('num_acs', DEFAULT_NUM_ACS)} ACS; sampler {exp.ev['sampler']} "
             f"{json.dumps(exp.ev.get('sampler_options') or {})}, ζ = {exp.ev.get('zeta', 1.0)}. "
             f"Epoch 0 is the pre-trained model; Δ = per-slice NRMSE difference to it, mean ± paired SE (same "
             f"slices). **Bold**: lowest mean over R.", "",
             "| lr | epoch | " + " | ".join(f"NRMSE R={R:g} (eff {by[next(k for k in by if k[2] == R)]['R_eff']:.2f})"
                                          for R in Rs) + " | mean | " + " | ".join(f"Δ vs pre-trained R={R:g}"
                                                                                 for R in Rs)
             + " | " + " | ".join(f"SSIM R={R:g}" for R in Rs) + " |",
             "|---|---|" + "---|" * (3 * len(Rs) + 1)]
    for lr in sorted({r["lr"] for r in rows}, reverse=True):
        for epoch in sorted({r["epoch"] for r in rows if r["lr"] == lr}):
            cells = [by[(lr, epoch, R)] for R in Rs]
            mean = float(np.mean([c["nrmse"] for c in cells]))
            b = "**" if (lr, epoch) == (best["lr"], best["epoch"]) else ""
            lines.append(f"| {lr:g} | {epoch:g} | " + " | ".join(_pm(c["nrmse"], c["nrmse_se"]) for c in cells)
                         + f" | {b}{mean:.4f}{b} | "
                         + " | ".join(_pm(c["delta_vs_pretrained"], c["delta_vs_pretrained_se"]) for c in cells)
                         + " | " + " | ".join(_pm(c["ssim"], c["ssim_se"], 3) for c in cells) + " |")
    lines += ["", f"Best: lr {best['lr']:g}, epoch {best['epoch']:g} (mean NRMSE {best['mean_nrmse']:.4f}); model "
                  f"`{best['model']}`.", ""]
    path.write_text("\n".join(lines))


# ----------------------------------------------------------------------------------------------------------------------
# Experiment 2: six training recipes (Fig 4).

def methods(exp: Experiment) -> dict:
    """Methods 1-6 of docs/experiments.md with one network, one sampler and the budget rules of the config."""
    cfg = exp.config["methods"]
    sweep = finetune_sweep(exp)
    sweep_best = exp.results.records.get("finetune-sweep/best") or {}       # known on rank 0
    ft_lr = _broadcast(cfg.get("finetune_lr") or sweep_best.get("lr") or exp.config["finetune"]["lrs"][0])
    pretrained = exp.pretrained()
    spe_few = len(exp.dataset("target_few")) // exp.train["batch"]
    ft_steps = exp.config["finetune"]["epochs"] * spe_few
    ft_every = exp.config["finetune"]["eval_every"] * spe_few
    numbers = sorted(set(cfg.get("include") or METHODS) | {4})          # M4 is the reference of the comparison
    exp.progress_bar(len(numbers), "methods")
    runs = {}
    for number in numbers:
        label, init, selection = METHODS[number]
        if number == 4:                                       # the sweep's run at the chosen LR: the paper's recipe
            name = f"finetune-sweep/lr={_fmt(ft_lr)}"
            runs[number] = (name, exp.train_run(name, selection, steps=ft_steps, lr=ft_lr, eval_every=ft_every,
                                                init=pretrained, stage="finetune"))
        elif init == "pretrained":
            name = f"methods/m{number}"
            runs[number] = (name, exp.train_run(name, selection, steps=ft_steps, lr=ft_lr, eval_every=ft_every,
                                                init=pretrained, stage="finetune"))
        else:
            name = f"methods/m{number}"
            runs[number] = (name, exp.train_run(name, selection, steps=cfg["scratch_steps"], lr=cfg["scratch_lr"],
                                                lr_rampup=cfg.get("scratch_lr_rampup", 0),
                                                eval_every=cfg["scratch_eval_every"],
                                                ema_halflife=cfg.get("scratch_ema_halflife"), ema_rampup=0.05,
                                                stage="scratch"))
        if exp._bar is not None:
            exp._bar.update(1)
    exp.close_bar()
    if exp.rank != 0:
        return {}
    rows, selected = [], {}
    for number, (name, done) in runs.items():
        cells = {int(k.rsplit("=", 1)[1]): v for k, v in exp.results.records.items()
                 if k.startswith(f"{name}/step=")}
        if METHODS[number][1] == "pretrained" and "pretrained/eval" in exp.results.records:
            cells[0] = exp.results.records["pretrained/eval"]
        step = min(cells, key=lambda s: (cells[s]["score"], s))       # the training loop's selection rule
        selected[number] = (step, cells[step])
    for number, (name, done) in runs.items():
        step, record = selected[number]
        for R, m in record["per_R"].items():
            rows.append({"method": number, "label": METHODS[number][0], "R": float(R), **_metric_cols(m),
                         **_paired(m, selected[4][1]["per_R"][R], "m4"),
                         "selected_step": step, "train_steps": done["steps"], "train_subjects": done["num_subjects"],
                         "train_slices": done["num_slices"], "lr": done["lr"], "run": name})
    out = exp.out / "methods"
    _write_csv(out / "methods.csv", rows)
    _plot_methods(out / "methods.png", rows)
    _write_methods_md(out / "methods.md", rows, exp, ft_lr)
    return {"rows": rows, "finetune_lr": ft_lr, "sweep": sweep.get("best")}


def _broadcast(value):
    """Rank 0's ``value`` on every rank (torchrun); the value itself without a process group."""
    if not dist_utils.is_distributed():
        return value
    box = [value]
    torch.distributed.broadcast_object_list(box, src=0)
    return box[0]


def _plot_methods(path: Path, rows: list[dict]) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    Rs = sorted({r["R"] for r in rows})
    numbers = sorted({r["method"] for r in rows})
    fig, ax = plt.subplots(figsize=(7.5, 3.6))
    width = 0.8 / len(Rs)
    for j, R in enumerate(Rs):
        v = [next(r for r in rows if r["method"] == n and r["R"] == R) for n in numbers]
        ax.bar(np.arange(len(numbers)) + (j - (len(Rs) - 1) / 2) * width, [r["nrmse"] for r in v], width,
               yerr=[r["nrmse_se"] for r in v], capsize=2, label=f"R = {R:g}")
    ax.set_xticks(np.arange(len(numbers)), [f"M{n}" for n in numbers])
    ax.set_ylabel("NRMSE (mean ± SE)")
    ax.set_title("Training recipes (M4 = pre-train + fine-tune on 20 target subjects)")
    ax.legend(fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _write_methods_md(path: Path, rows: list[dict], exp: Experiment, ft_lr: float) -> None:
    Rs = sorted({r["R"] for r in rows})
    lines = [f"# Methods ({exp.config['name']})", "",
             f"NRMSE / SSIM (mean ± SE over {rows[0]['n_slices']} fixed validation slices) of the selected checkpoint "
             f"of each method; Δ = per-slice NRMSE difference to method 4, mean ± paired SE; fine-tuning LR {ft_lr:g}.",
             "",
             "| method | recipe | subjects | steps (selected) | " + " | ".join(f"NRMSE R={R:g}" for R in Rs)
             + " | " + " | ".join(f"Δ vs M4 R={R:g}" for R in Rs) + " | " + " | ".join(f"SSIM R={R:g}" for R in Rs)
             + " |",
             "|---|---|---|---|" + "---|" * (3 * len(Rs))]
    for n in sorted({r["method"] for r in rows}):
        cells = [next(r for r in rows if r["method"] == n and r["R"] == R) for R in Rs]
        c = cells[0]
        lines.append(f"| {n} | {c['label']} | {c['train_subjects']} | {c['train_steps']} ({c['selected_step']}) | "
                     + " | ".join(_pm(x["nrmse"], x["nrmse_se"]) for x in cells) + " | "
                     + " | ".join(_pm(x["delta_vs_m4"], x["delta_vs_m4_se"]) for x in cells) + " | "
                     + " | ".join(_pm(x["ssim"], x["ssim_se"], 3) for x in cells) + " |")
    lines.append("")
    path.write_text("\n".join(lines))


# ----------------------------------------------------------------------------------------------------------------------
# Experiment 3: ζ per acceleration with the best fine-tuned model (Fig 5).

def zeta(exp: Experiment) -> dict:
    """NRMSE for every (R, ζ) with the sweep's best model; writes the best ζ per R into that model's card."""
    finetune_sweep(exp)
    if exp.rank != 0:
        return {}
    best = exp.results.records["finetune-sweep/best"]
    card_path = Path(best["model"])
    precond, card = load_checkpoint(card_path, device=exp.device)
    zetas = [float(z) for z in exp.config["zeta"]["values"]]
    Rs = [float(R) for R in exp.ev["accelerations"]]
    exp.progress_bar(len(Rs) * len(zetas), "zeta")
    rows = []
    for R in Rs:
        for z in zetas:
            key = f"zeta/{card_path.parent.name}/R={_fmt(R)}/zeta={_fmt(z)}"     # the sweep run of the model
            record = exp.evaluate(key, precond, zeta=z, accelerations=[R])
            m = record["per_R"][_fmt(R)]
            if exp._bar is not None:
                exp._bar.update(1)
            rows.append({"R": R, "zeta": z, **_metric_cols(m)})
    exp.close_bar()
    best_zeta = {}
    for R in Rs:
        row = min((r for r in rows if r["R"] == R), key=lambda r: (r["nrmse"], abs(math.log(r["zeta"]))))
        best_zeta[R] = (row["zeta"], row["R_eff"])
    table = {f"{eff:g}": z for z, eff in best_zeta.values()}
    if card.get("zeta") != table:             # write the tuned table into the model's card (weights unchanged)
        card = dict(card)
        card["zeta"] = table
        card.setdefault("training", {})["zeta_sweep"] = {
            "experiment": exp.config["name"], "zetas": zetas, "best_zeta_nominal_R": {_fmt(R): z for R, (z, _) in
                                                                                      best_zeta.items()},
            "nrmse": {_fmt(r["R"]): {} for r in rows}}
        for r in rows:
            card["training"]["zeta_sweep"]["nrmse"][_fmt(r["R"])][_fmt(r["zeta"])] = r["nrmse"]
        save_checkpoint(card_path, precond, card)
    out = exp.out / "zeta"
    _write_csv(out / "zeta.csv", rows)
    _plot_zeta(out / "zeta.png", rows, best_zeta)
    lines = [f"# ζ sweep ({exp.config['name']})", "",
             f"Model `{card_path}` (finetune-sweep best: lr {best['lr']:g}, epoch {best['epoch']:g}); NRMSE mean ± SE "
             f"over {rows[0]['n_slices']} validation slices; sampler {exp.ev['sampler']} "
             f"{json.dumps(exp.ev.get('sampler_options') or {})}. **Bold**: best ζ per R (written to the card's "
             f"`zeta` table, keyed by effective R).", "",
             "| ζ | " + " | ".join(f"R={R:g} (eff {best_zeta[R][1]:.2f})" for R in Rs) + " |",
             "|---|" + "---|" * len(Rs)]
    for z in zetas:
        cells = []
        for R in Rs:
            r = next(r for r in rows if r["R"] == R and r["zeta"] == z)
            b = "**" if best_zeta[R][0] == z else ""
            cells.append(f"{b}{_pm(r['nrmse'], r['nrmse_se'])}{b}")
        lines.append(f"| {z:g} | " + " | ".join(cells) + " |")
    lines += ["", "Card zeta table: `" + json.dumps(table) + "`; check: zeta_for_acceleration(card, R_eff) = "
              + ", ".join(f"{zeta_for_acceleration({'zeta': table}, eff):g}" for _, eff in best_zeta.values()), ""]
    (out / "zeta.md").write_text("\n".join(lines))
    return {"rows": rows, "best_zeta": {_fmt(R): v[0] for R, v in best_zeta.items()}, "card": str(card_path)}


def _plot_zeta(path: Path, rows: list[dict], best_zeta: dict) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(5.5, 3.6))
    for R in sorted({r["R"] for r in rows}):
        pts = sorted((r["zeta"], r["nrmse"], r["nrmse_se"]) for r in rows if r["R"] == R)
        z, v, s = map(np.asarray, zip(*pts))
        ax.errorbar(z, v, yerr=s, marker="o", ms=3, capsize=2, label=f"R = {R:g}")
        if np.any(z == 1.0):
            ax.plot([1.0], v[z == 1.0], "s", color="red", ms=7, mfc="none")
        zb = best_zeta[R][0]
        ax.plot([zb], v[z == zb], "*", color="green", ms=11)
    ax.set_xscale("log")
    zetas = sorted({r["zeta"] for r in rows})
    ax.set_xticks(zetas, [f"{z:g}" for z in zetas])
    ax.minorticks_off()
    ax.set_xlabel("data-consistency weight ζ")
    ax.set_ylabel("NRMSE (mean ± SE)")
    ax.set_title("ζ per acceleration (red: ζ = 1, green: best)")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


# ----------------------------------------------------------------------------------------------------------------------
# Experiment 4: fine-tuning from accelerated scans alone (training.undersampled), against fully sampled fine-tuning.

def undersampled(exp: Experiment) -> dict:
    """No fine-tuning vs fine-tuning on the few target subjects fully sampled vs on the same subjects' accelerated
    scans only (EM, :mod:`training.undersampled`), reported at every ζ of ``undersampled.zetas`` on the fully
    sampled slices of the "test" corpus when the config has one (subjects no arm selected on), else of the
    validation corpus; each arm selects its epoch on the validation subjects with the data it would have (fully
    sampled NRMSE, held-out measured lines)."""
    from dpm_core.masks import equispaced_mask
    from dpm_core.seeding import stable_seed
    from .undersampled import finetune_undersampled, load_accelerated, write_accelerated_copy
    cfg = exp.config["undersampled"]
    pretrained = exp.pretrained()
    R, num_acs = float(cfg["acceleration"]), exp.ev.get("num_acs", DEFAULT_NUM_ACS)
    spe = len(exp.dataset("target_few")) // exp.train["batch"]
    steps_per_round, every = cfg["epochs_per_round"] * spe, cfg["eval_every"] * spe
    base = exp.out / "undersampled"

    # The accelerated copies: equispaced at nominal R plus the ACS block, the lattice offset drawn per subject (as
    # fastMRI's equispaced masks draw it per scan), so that the subjects together measure every line.
    copies = {}
    if exp.rank == 0:
        for part, volumes in (("train", exp.volumes("target", exp.config["few_subjects"])),
                              ("val", exp.volumes("validation"))):
            for v in volumes:
                with h5py.File(v.path, "r") as f:
                    H = int(f["kspace"].shape[-1])
                offset = stable_seed("undersampled-offset", v.subject) % int(round(R))
                target = base / "data" / part / Path(v.path).name
                if not target.is_file():
                    write_accelerated_copy(v.path, target, equispaced_mask(H, R, num_acs, offset=offset))
                copies.setdefault(part, []).append(str(target))
    dist_utils.barrier()

    # Arm "full": the paper's recipe on the fully sampled subjects, the same steps and LR as the EM arm in total.
    full = exp.train_run("undersampled/full", "target_few", steps=cfg["rounds"] * steps_per_round, lr=cfg["lr"],
                         eval_every=every, init=pretrained, stage="finetune")
    # Arm "em": the same subjects' accelerated scans only; validation on the same slices, accelerated.
    em = exp.results.get("undersampled/em/done")
    if em is None:
        val_ids = set(exp.fixed_slices().ids)
        val_scans = []
        for scan in load_accelerated(base / "data" / "val"):
            keep = [i for i, name in enumerate(scan.ids) if name in val_ids]
            if keep:
                val_scans.append(scan._replace(kspace=scan.kspace[keep], ids=[scan.ids[i] for i in keep]))
        init_precond, init_card = load_checkpoint(pretrained, device="cpu")
        t0 = time.time()
        result = finetune_undersampled(
            run_dir=base / "em", init_precond=init_precond, init_card=init_card,
            train_scans=load_accelerated(base / "data" / "train"), val_scans=val_scans, rounds=cfg["rounds"],
            steps_per_round=steps_per_round, eval_every_steps=every, batch_size=exp.train["batch"], lr=cfg["lr"],
            crop=exp.train.get("crop"), flip=bool(exp.train.get("flip")), grad_clip=exp.train.get("grad_clip"),
            seed=exp.train.get("seed", 0), estep=cfg.get("estep"),
            validation={"sampler": exp.ev["sampler"], "sampler_options": exp.ev.get("sampler_options"),
                        "zeta": exp.ev.get("zeta", 1.0), "fraction": cfg.get("holdout", 0.2)},
            coil_method=exp.ev.get("coil_method", "fast"), num_acs=num_acs, device=exp.device,
            progress=exp.progress, init_path=str(pretrained))
        em = exp.results.put("undersampled/em/done", {
            "model": result["model"], "seconds": time.time() - t0,
            "rounds": [{k: r[k] for k in ("round", "best_step", "best_score", "estep_seconds", "train_seconds")}
                       for r in result["rounds"]]})
    if exp.rank != 0:
        return {}

    models = {"none": str(pretrained), "full": full["model"], "em": em["model"]}
    labels = {"none": "no fine-tuning (pre-trained)", "full": f"fine-tuned, {exp.config['few_subjects']} subjects "
              f"fully sampled", "em": f"fine-tuned, the same subjects' R = {R:g} scans only (EM)"}
    part = "test" if "test" in exp.config["corpora"] else "validation"
    rows = []
    for arm, path in models.items():
        precond, _ = load_checkpoint(path, device="cpu")
        for z in cfg["zetas"]:
            key = f"undersampled/{arm}/" + ("test/" if part == "test" else "") + f"zeta={_fmt(z)}"
            record = exp.evaluate(key, precond, zeta=float(z), accelerations=[R], part=part)
            m = record["per_R"][_fmt(R)]
            rows.append({"arm": arm, "label": labels[arm], "zeta": float(z), "R": R, **_metric_cols(m),
                         "nrmse_slices": m["nrmse_slices"]})
    best = {arm: min((r for r in rows if r["arm"] == arm), key=lambda r: (r["nrmse"], abs(math.log(r["zeta"]))))
            for arm in models}
    for row in rows:
        for ref in ("none", "full"):
            d = np.asarray(row["nrmse_slices"]) - np.asarray(best[ref]["nrmse_slices"])
            row[f"delta_vs_{ref}"], row[f"delta_vs_{ref}_se"] = float(d.mean()), _se(d)
    summary = {"best": {arm: {k: v for k, v in r.items() if k != "nrmse_slices"} for arm, r in best.items()},
               "em_over_full": best["em"]["nrmse"] / best["full"]["nrmse"],
               "gain_of_em": 1 - best["em"]["nrmse"] / best["none"]["nrmse"],
               "gain_of_full": 1 - best["full"]["nrmse"] / best["none"]["nrmse"],
               "em_rounds": em["rounds"], "full_selected_step": full["best_step"],
               "steps": cfg["rounds"] * steps_per_round, "reported_on": part}
    out = base
    _write_csv(out / "undersampled.csv", [{k: v for k, v in r.items() if k != "nrmse_slices"} for r in rows])
    (out / "undersampled.json").write_text(json.dumps(summary, indent=2, default=_json_default) + "\n")
    _plot_undersampled(out / "undersampled.png", rows, labels)
    _write_undersampled_md(out / "undersampled.md", rows, best, summary, exp)
    return summary


def _plot_undersampled(path: Path, rows: list[dict], labels: dict) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(6, 4))
    for arm, label in labels.items():
        rr = sorted((r for r in rows if r["arm"] == arm), key=lambda r: r["zeta"])
        ax.errorbar([r["zeta"] for r in rr], [r["nrmse"] for r in rr], yerr=[r["nrmse_se"] for r in rr],
                    marker="o", capsize=3, label=label)
    ax.set_xscale("log")
    ax.set_xlabel("ζ (data-consistency weight)")
    ax.set_ylabel(f"NRMSE at nominal R = {rows[0]['R']:g} (held-out subjects)")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _write_undersampled_md(path: Path, rows: list[dict], best: dict, summary: dict, exp: Experiment) -> None:
    R = rows[0]["R"]
    lines = [f"# Fine-tuning from accelerated scans alone ({exp.config['name']})", "",
             f"NRMSE / SSIM at nominal R = {R:g} (effective {rows[0]['R_eff']:g}), mean ± SE over "
             f"{rows[0]['n_slices']} fixed slices of "
             + ("held-out test subjects (no arm selected its epoch on them)" if summary["reported_on"] == "test"
                else "the validation subjects (the full arm selected its epoch on them)")
             + ", at each arm's best ζ; "
             f"Δ = per-slice NRMSE difference, mean ± paired SE. {summary['steps']} optimizer steps per fine-tuned "
             f"arm.",
             "", "| arm | best ζ | NRMSE | SSIM | Δ vs none | Δ vs full |", "|---|---|---|---|---|---|"]
    for arm in ("none", "full", "em"):
        r = best[arm]
        lines.append(f"| {r['label']} | {r['zeta']:g} | {_pm(r['nrmse'], r['nrmse_se'])} | "
                     f"{_pm(r['ssim'], r['ssim_se'], 3)} | {_pm(r['delta_vs_none'], r['delta_vs_none_se'])} | "
                     f"{_pm(r['delta_vs_full'], r['delta_vs_full_se'])} |")
    lines += ["", f"EM / fully sampled NRMSE: {summary['em_over_full']:.3f}; NRMSE gain over no fine-tuning: EM "
                  f"{100 * summary['gain_of_em']:.1f} %, fully sampled {100 * summary['gain_of_full']:.1f} %.", "",
              "EM rounds (held-out-line score of the exported model, seconds):", ""]
    for r in summary["em_rounds"]:
        lines.append(f"- round {r['round']}: selected step {r['best_step']}, score {r['best_score']:.4f}, E-step "
                     f"{r['estep_seconds']:.0f} s, M-step {r['train_seconds']:.0f} s")
    lines += ["", "All ζ:", "", "| arm | " + " | ".join(f"ζ={z:g}" for z in sorted({r['zeta'] for r in rows})) + " |",
              "|---|" + "---|" * len({r['zeta'] for r in rows})]
    for arm in ("none", "full", "em"):
        rr = sorted((r for r in rows if r["arm"] == arm), key=lambda r: r["zeta"])
        lines.append(f"| {arm} | " + " | ".join(_pm(r["nrmse"], r["nrmse_se"]) for r in rr) + " |")
    lines.append("")
    path.write_text("\n".join(lines))


# ----------------------------------------------------------------------------------------------------------------------
# Command line.

RUNNERS = {"finetune-sweep": finetune_sweep, "methods": methods, "zeta": zeta, "undersampled": undersampled}


def run_experiments(names: Sequence[str], config: str, out: str | os.PathLike, device: str = "auto",
                    progress: bool = True) -> dict:
    """Run the named experiments (in order) into ``out``; returns {name: summary, "computed": n, "reused": n}."""
    exp = Experiment(load_config(config, out), out, device=device, progress=progress)
    t0 = time.time()
    exp.ensure_corpora()
    summary = {}
    for name in names:
        t1 = time.time()
        summary[name] = RUNNERS[name](exp)
        dist_utils.print0(f"{name}: done in {time.time() - t1:.0f} s")
    summary.update(computed=exp.results.computed, reused=exp.results.reused, seconds=time.time() - t0)
    if exp.rank == 0:
        with open(exp.out / "timings.csv", "a", newline="") as f:
            csv.writer(f).writerow([time.strftime("%Y-%m-%d %H:%M:%S"), "+".join(names), config,
                                    f"{summary['seconds']:.1f}", exp.results.computed, exp.results.reused])
    dist_utils.print0(f"{'+'.join(names)}: {exp.results.computed} cells computed, {exp.results.reused} reused, "
                      f"{summary['seconds']:.0f} s; outputs in {exp.out}")
    return summary


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="dpm-experiment", description=__doc__.split("\n")[0])
    parser.add_argument("experiment", choices=[*EXPERIMENTS, *EXTRA_EXPERIMENTS, "all"])
    parser.add_argument("--config", default="small", help="tiny, small, full or a JSON file")
    parser.add_argument("--out", required=True, help="run directory (resumable: rerun the same command to continue)")
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch CPU threads (1 is fastest on a shared, oversubscribed CPU; 0: torch default)")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    names = list(EXPERIMENTS) if args.experiment == "all" else [args.experiment]
    try:
        run_experiments(names, args.config, args.out, device=args.device, progress=not args.no_progress)
    except (ValueError, FileNotFoundError) as err:
        parser.error(str(err))
    finally:
        dist_utils.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
