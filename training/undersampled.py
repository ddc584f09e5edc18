"""``dpm-finetune --undersampled``: fine-tune the prior from a site's accelerated scans alone, by EM.

A site rarely owns fully sampled FLAIR, but every exam leaves accelerated multi-coil k-space behind. Fisher's identity,
    ∇θ log pθ(y) = E_{x ~ pθ(x | y)} [∇θ log pθ(x)],
says that the gradient of the likelihood of the *measurements* is the complete-data gradient averaged over the
posterior. Training the denoiser with the ordinary DSM loss on posterior samples of the accelerated scans is therefore
stochastic EM on the measurements' likelihood (Rozet, Andry, Lanusse, Louppe, "Learning diffusion priors from
observations by expectation maximization", NeurIPS 2024; Bai, Wang, Chen, Sun, Bouman et al., "An
expectation-maximization algorithm for training clean diffusion models from corrupted observations", 2024):

    for round r = 1 .. rounds:
        E-step  every training slice -> one posterior sample under the current model, through the scanner's
                Reconstructor (coil maps from its ACS block, the one normalization rule, the sampler with ζ = 1, the
                Gaussian-consistent data weight, so that samples are posterior samples rather than ζ-sharpened
                estimates); sample / scale is the slice's training target, stored like the fully sampled cache
        M-step  training_loop on those targets (the DSM loss, crops, flips and EMA of dpm-finetune), from the model
                the E-step used; its best EMA by the held-out-line score below starts the next round

Why it is unbiased where it matters: when the model equals the true prior, (posterior sample, scan) pairs have exactly
the law of (image, scan) pairs, so any loss of the sample — with any weighting by the scan, such as the per-slice
normalization scale — has the fully sampled expectation; the DSM gradient on E-step samples equals the fully sampled
DSM gradient (tests/test_undersampled.py checks this in closed form on a Gaussian prior). Away from the true prior the
rounds are EM's fixed-point iteration. The sampler's own approximation is the remaining bias: DDS's samples are
slightly under-dispersed at few steps, which is why the E-step runs more steps than validation does.

Why not ambient diffusion or GSURE training (DESIGN.md §3): both learn a denoiser of *further-corrupted* inputs
(conditioned on the mask), which needs a second network input and a second sampling path; EM trains the unconditional
denoiser that the Reconstructor already runs, so a fine-tuned model is a drop-in model card.

Selection without fully sampled data (SSDU-style): on the validation scans a seeded ``holdout_fraction`` of the
measured lines outside the ACS block is withheld, the model reconstructs from the rest, and the score is the relative
squared error of the predicted withheld lines, ‖M_h (A x̂ − y)‖² / ‖M_h y‖² with the withheld lines' noise energy
(known from the measured noise level) removed from both, averaged over slices. It needs only accelerated
data and is what selects the epoch (the validation-chosen epoch of ``dpm-finetune``) and ranks rounds.

Input files: fastMRI-format HDF5 with their ``mask`` dataset (1-D over the phase-encode axis, as in fastMRI's test
files; without it the unmeasured lines are found as the all-zero ones), or ISMRMRD raw files (through
:mod:`gadgets.assembly`, the gadget's own buffering). :func:`write_accelerated_copy` makes a retrospectively
undersampled fastMRI-format copy of a fully sampled file (experiments, site tests).
"""
from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path
from typing import NamedTuple, Sequence

import h5py
import numpy as np
import torch

from dpm_core.checkpoints import load_checkpoint, save_checkpoint
from dpm_core.holdout import HOLDOUT_FRACTION, holdout_candidates, holdout_folds
from dpm_core.masks import DEFAULT_NUM_ACS, effective_acceleration, find_acs_lines
from dpm_core.networks import ComplexDenoiser, EDMPrecond
from dpm_core.normalize import NORMALIZATION_RULE
from dpm_core.operators import SenseOp
from dpm_core.seeding import stable_seed

from . import distributed as dist_utils
from .preprocess import (CACHE_VERSION, CachedSlices, SliceEntry, SourceVolume, find_volumes, read_kspace,
                         select_volumes)
from .training_loop import MODEL_STEM, training_loop

__all__ = ["AcceleratedScan", "read_accelerated", "load_accelerated", "write_accelerated_copy", "holdout_split",
           "heldout_line_error", "posterior_targets", "finetune_undersampled", "ESTEP_DEFAULTS",
           "HOLDOUT_FRACTION"]

ESTEP_DEFAULTS = {"sampler": "fast", "steps": 30, "zeta": 1.0}   # posterior samples: ζ = 1, more steps than validation


class AcceleratedScan(NamedTuple):
    """One accelerated volume: ``kspace`` [S, C, H, W] complex64 (zero at unmeasured lines, readout oversampling
    removed), ``mask`` [H] bool (measured phase-encode lines, with a fully sampled ACS block around H // 2),
    ``ids`` ["file:slice"] * S, ``contrast``, ``subject``, ``source`` (path)."""
    kspace: torch.Tensor
    mask: np.ndarray
    ids: list
    contrast: str
    subject: str
    source: str


# ----------------------------------------------------------------------------------------------------------------------
# Reading and writing accelerated data.

def read_accelerated(volume: SourceVolume) -> list[AcceleratedScan]:
    """The accelerated scans of one file (one per distinct sampling mask; a fastMRI file is one scan).

    Raises ValueError when a scan has no ACS block around the k-space centre (coil maps and normalization need it).
    """
    name = Path(volume.path).name
    parts = read_kspace(volume)
    if volume.kind == "fastmri":
        (kspace, _, slice_numbers, _), = parts
        H = kspace.shape[2]
        with h5py.File(volume.path, "r") as f:
            mask = np.asarray(f["mask"][()]).astype(bool).reshape(-1) if "mask" in f else None
        if mask is None:
            mask = kspace.abs().amax(dim=(0, 1, 3)).numpy() > 0           # unmeasured lines are all zero
        elif mask.size != H:
            raise ValueError(f"{volume.path}: the mask dataset has {mask.size} entries but the k-space has {H} "
                             f"phase-encode lines; write the mask over the phase-encode (last) axis of kspace")
        parts = [(kspace * torch.from_numpy(mask).view(1, 1, H, 1), mask, slice_numbers, "")]
    scans = []
    for kspace, mask, slice_numbers, _ in parts:
        try:
            find_acs_lines(mask)
        except ValueError as err:
            raise ValueError(f"{volume.path}: {err}") from None
        scans.append(AcceleratedScan(kspace, mask, [f"{name}:{s}" for s in slice_numbers], volume.contrast,
                                     volume.subject, volume.path))
    return scans


def load_accelerated(data, contrasts: Sequence[str] | None = None, subjects: int | Sequence[str] | None = None,
                     skip_subjects: int = 0) -> list[AcceleratedScan]:
    """Every accelerated scan of the selected volumes under ``data`` (directories or files; sorted by path)."""
    volumes = select_volumes(find_volumes(data), contrasts=contrasts, subjects=subjects, skip_subjects=skip_subjects)
    return [scan for v in volumes for scan in read_accelerated(v)]


def write_accelerated_copy(source: str | os.PathLike, destination: str | os.PathLike, mask: np.ndarray) -> None:
    """A fastMRI-format copy of a fully sampled fastMRI file, retrospectively undersampled with ``mask`` [H].

    The unmeasured phase-encode columns of ``kspace`` (the last axis on disk) are zeroed, ``mask`` is stored as in
    fastMRI's test files (1-D over the phase-encode axis) with the attributes ``acceleration`` (effective R) and
    ``num_low_frequency`` (ACS width); ``reconstruction_rss`` (a fully sampled image) is not copied.
    """
    source, destination = Path(source), Path(destination)
    mask = np.asarray(mask).astype(bool).reshape(-1)
    destination.parent.mkdir(parents=True, exist_ok=True)
    tmp = destination.with_name(destination.name + ".tmp")
    with h5py.File(source, "r") as src, h5py.File(tmp, "w") as dst:
        kspace = src["kspace"][()]
        if kspace.shape[-1] != mask.size:
            raise ValueError(f"{source}: kspace has {kspace.shape[-1]} phase-encode lines (last axis), the mask "
                             f"{mask.size}")
        dst.create_dataset("kspace", data=kspace * mask.reshape(1, 1, 1, -1))
        dst.create_dataset("mask", data=mask)
        for key in src:
            if key not in ("kspace", "reconstruction_rss", "reconstruction_esc", "mask"):
                src.copy(key, dst)
        dst.attrs.update(dict(src.attrs))
        acs = find_acs_lines(mask)
        dst.attrs.update(acceleration=effective_acceleration(mask), num_low_frequency=acs.stop - acs.start)
    os.replace(tmp, destination)


# ----------------------------------------------------------------------------------------------------------------------
# Selection from the measurements alone.

def holdout_split(mask: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(fit mask, held-out mask) [H] bool: the first fold of :func:`dpm_core.holdout.holdout_folds` (a seeded
    ``fraction`` of the measured lines outside the ACS block, drawn as the ζ rule and the adapter draw theirs); the
    ACS block always stays in the fit mask. Raises ValueError when no line can be held out."""
    mask = np.asarray(mask).astype(bool).reshape(-1)
    folds = holdout_folds(mask, fraction, torch.Generator().manual_seed(int(seed)))
    if not folds:
        raise ValueError(f"the mask has {holdout_candidates(mask).size} measured lines outside its ACS block, and "
                         f"the held-out fraction {fraction} of them rounds to none; held-out-line validation needs "
                         f"an accelerated scan with more such lines (not a fully sampled or ACS-only one)")
    return mask & ~folds[0], folds[0]


def heldout_line_error(denoiser, scans: Sequence[AcceleratedScan], *, fraction: float = HOLDOUT_FRACTION,
                       seed: int = 0, sampler: str = "fast", sampler_options: dict | None = None,
                       zeta: float = 1.0, device="cpu", coil_method: str = "fast") -> dict:
    """Noise-corrected relative squared error of the withheld measured lines, predicted from the rest: the selection
    score (lower is better; 1 = the withheld lines are not predicted at all, 0 = predicted up to their noise).

    Per slice: fit mask / held-out mask from :func:`holdout_split` (seeded per scan), the DPM reconstruction x̂ from
    the fit lines through the Reconstructor (one map set, as training targets), then
        (‖M_h (F S x̂ − y)‖² − ν) / (‖M_h y‖² − ν),
    S the maps the reconstruction used, ν = 2σ² times the number of withheld samples and σ the measured noise std per
    real channel. The withheld noise is independent of x̂, so ν removes what no model can predict (at clinical SNR
    the high-k lines are mostly noise, and the plain ratio sits near 1 for every model); ν depends on the scan only,
    so an error in σ shifts every model's score alike and never changes which model wins on a slice. The value is
    signed: slightly negative means predicted to within the noise estimate.

    Returns: {"score": mean over slices, "per_slice": {"ids", "error"}, "effective_acceleration": mean R of the fit
    masks}.
    """
    from dpm_core.reconstruct import Reconstructor
    recon = Reconstructor(method="dpm", model=denoiser, sampler=sampler, sampler_options=sampler_options, zeta=zeta,
                          seed=seed, device=device, coil_method=coil_method, num_maps=1, output_guard=False)
    ids, errors, rates = [], [], []
    for scan in scans:
        # seeded by the file's name, not its path: the same scans held out the same way wherever the corpus lies
        fit, held = holdout_split(scan.mask, fraction, stable_seed(seed, "holdout", Path(scan.source).name))
        H = scan.mask.size
        result = recon.reconstruct(scan.kspace * torch.from_numpy(fit).view(1, 1, H, 1), fit,
                                   slice_ids=range(len(scan.ids)))
        maps = torch.from_numpy(result.maps)                                     # [S, 1, C, H, W]
        predicted = SenseOp(maps, held).forward(torch.from_numpy(result.images).unsqueeze(1))
        measured = scan.kspace * torch.from_numpy(held).view(1, 1, H, 1)
        # The withheld lines' own noise is independent of x̂ and adds E‖n‖² = 2σ²·(entries) to both norms; removing
        # it makes the score the signal's relative error (the high-k lines are mostly noise at clinical SNR).
        noise = (torch.as_tensor(result.info["noise_std"]) * torch.as_tensor(result.info["scale"])) ** 2 * 2 * (
            int(held.sum()) * scan.kspace.shape[1] * scan.kspace.shape[3])
        num = (predicted - measured).abs().square().sum(dim=(1, 2, 3)) - noise
        den = (measured.abs().square().sum(dim=(1, 2, 3)) - noise).clamp_min(1e-30)
        errors.extend((num / den).tolist())
        ids.extend(scan.ids)
        rates.append(effective_acceleration(fit))
    score = float(np.mean(errors)) if errors else math.inf
    return {"score": score if math.isfinite(score) else math.inf, "per_slice": {"ids": ids, "error": errors},
            "effective_acceleration": float(np.mean(rates))}


# ----------------------------------------------------------------------------------------------------------------------
# E-step.

def posterior_targets(denoiser, scans: Sequence[AcceleratedScan], out_dir: str | os.PathLike, *, seed: int,
                      sampler: str = ESTEP_DEFAULTS["sampler"], steps: int = ESTEP_DEFAULTS["steps"],
                      zeta: float = ESTEP_DEFAULTS["zeta"], sampler_options: dict | None = None, device="cpu",
                      coil_method: str = "fast", num_acs: int = DEFAULT_NUM_ACS, progress: bool = False) -> Path:
    """One posterior sample per slice, normalized, written as a target cache that :class:`CachedSlices` reads.

    Each scan goes through ``Reconstructor(method="dpm", num_maps=1)`` (its own ACS maps and normalization scale);
    target = sample / scale, the same quantity as a fully sampled cache's MVUE / scale. Slices get distinct random
    streams (their position in ``scans``) under ``seed``. Returns the index path ``out_dir/index.json``; an existing
    complete index is reused (a resumed run repeats no E-step).
    """
    from dpm_core.reconstruct import Reconstructor
    out_dir = Path(out_dir)
    index_path = out_dir / "index.json"
    if index_path.is_file():
        return index_path
    out_dir.mkdir(parents=True, exist_ok=True)
    options = {"steps": int(steps), **(sampler_options or {})}
    recon = Reconstructor(method="dpm", model=denoiser, sampler=sampler, sampler_options=options, zeta=zeta,
                          seed=seed, device=device, coil_method=coil_method, num_maps=1, output_guard=False)
    entries, first, t0 = [], 0, time.time()
    iterator = scans
    if progress:
        from tqdm import tqdm
        iterator = tqdm(scans, desc="E-step", unit="scan", dynamic_ncols=True)
    for number, scan in enumerate(iterator):
        S, _, H, W = scan.kspace.shape
        result = recon.reconstruct(scan.kspace, scan.mask, slice_ids=range(first, first + S))
        scales = np.asarray(result.info["scale"], dtype=np.float32)
        targets = (result.images / scales.reshape(S, 1, 1)).astype(np.complex64)
        shard = f"{number:04d}-{Path(scan.source).stem}.h5"
        with h5py.File(out_dir / shard, "w") as f:
            f.create_dataset("targets", data=targets, chunks=(1, H, W))
            f.create_dataset("scales", data=scales)
            f.attrs.update(source=scan.source, contrast=scan.contrast, subject=scan.subject, kind="posterior sample")
        entries.extend(SliceEntry(scan.source, s, scan.contrast, scan.subject, shard, s, float(scales[s]), H, W)
                       ._asdict() for s in range(S))
        first += S
    index = {"version": CACHE_VERSION, "normalization": NORMALIZATION_RULE, "coil_method": coil_method,
             "num_acs": num_acs, "computed_slices": len(entries), "seconds": time.time() - t0,
             "target": f"one posterior sample per slice ({sampler}, {steps} steps, zeta {zeta:g}) / normalization "
                       f"scale", "slices": entries,
             "volumes": [{"path": s.source, "contrast": s.contrast, "subject": s.subject} for s in scans]}
    tmp = index_path.with_name(index_path.name + ".tmp")
    tmp.write_text(json.dumps(index, indent=1) + "\n")
    os.replace(tmp, index_path)
    return index_path


# ----------------------------------------------------------------------------------------------------------------------
# The driver.

def finetune_undersampled(
    run_dir: str | os.PathLike,                  # RUN: round_<r>/{targets,train}/ and the exported RUN/model.*
    init_precond: EDMPrecond,                    # the pre-trained model (its EMA)
    init_card: dict,                             # its card (ζ table, provenance)
    train_scans: Sequence[AcceleratedScan],      # the site's accelerated training scans
    val_scans: Sequence[AcceleratedScan],        # accelerated validation scans (held-out subjects)
    rounds: int = 2,                             # EM rounds (E-step + M-step)
    steps_per_round: int = 160,                  # optimizer steps of each M-step
    eval_every_steps: int = 40,                  # held-out-line validation every this many steps (and at 0)
    batch_size: int = 8,
    lr: float = 1e-4,
    crop: int | None = None,
    flip: bool = True,
    ema_halflife_nimg: float | None = None,      # default 10 batches, as dpm-finetune
    grad_clip: float | None = 1.0,
    seed: int = 0,
    estep: dict | None = None,                   # sampler, steps, zeta, sampler_options: ESTEP_DEFAULTS
    validation: dict | None = None,              # sampler, sampler_options, zeta (1), fraction of the held-out score
    coil_method: str = "fast",
    num_acs: int = DEFAULT_NUM_ACS,
    device="cpu",
    card: dict | None = None,                    # extra card fields
    progress: bool = True,
    init_path: str | None = None,                # recorded in the card
) -> dict:
    """EM fine-tuning from accelerated scans (module docstring). Resumable: finished E-steps and rounds are reused.

    Returns {"model": exported card path, "rounds": [{"round", "best_step", "best_score", "evaluations",
    "estep_seconds", "train_seconds"}], "best_score"}.
    """
    run_dir = Path(run_dir)
    estep = {**ESTEP_DEFAULTS, **(estep or {})}
    validation = {"sampler": "fast", "sampler_options": None, "zeta": 1.0, "fraction": HOLDOUT_FRACTION,
                  **(validation or {})}
    if rounds < 1 or steps_per_round < 0:
        raise ValueError(f"rounds={rounds} must be >= 1 and steps_per_round={steps_per_round} >= 0")
    if not train_scans or not val_scans:
        raise ValueError(f"need accelerated training and validation scans; got {len(train_scans)} and "
                         f"{len(val_scans)}")
    rank = dist_utils.get_rank()
    score_cache: dict[int, float] = {}

    def evaluate_on(model_round: int):
        def evaluate(ema, step):
            if step == 0 and model_round in score_cache:                  # the previous round's exported model
                return {"score": score_cache[model_round]}
            res = heldout_line_error(ComplexDenoiser(ema).eval(), val_scans, fraction=validation["fraction"],
                                     seed=seed, sampler=validation["sampler"],
                                     sampler_options=validation["sampler_options"], zeta=validation["zeta"],
                                     device=device, coil_method=coil_method)
            return {"score": res["score"], "heldout_R": res["effective_acceleration"]}
        return evaluate

    model, current_card = init_precond, dict(init_card)
    history = []
    for r in range(1, rounds + 1):
        round_dir = run_dir / f"round_{r}"
        done_path = round_dir / "done.json"
        if done_path.is_file():
            done = json.loads(done_path.read_text())
            model, current_card = load_checkpoint(done["model"], device="cpu")
            score_cache[r] = done["best_score"]
            history.append(done)
            continue
        t0 = time.time()
        index_path = round_dir / "targets" / "index.json"
        if rank == 0:
            denoiser = ComplexDenoiser(model.to(device)).eval()
            with torch.no_grad():
                posterior_targets(denoiser, train_scans, round_dir / "targets",
                                  seed=stable_seed(seed, "estep", r), sampler=estep["sampler"], steps=estep["steps"],
                                  zeta=estep["zeta"], sampler_options=estep.get("sampler_options"), device=device,
                                  coil_method=coil_method, num_acs=num_acs, progress=progress)
        dist_utils.barrier()
        estep_seconds = time.time() - t0
        dataset = CachedSlices(index_path, crop=crop, flip=flip)
        round_card = {
            "training_data": (f"{init_card.get('training_data', 'pre-training: see init card')}; fine-tuning from "
                              f"accelerated scans only (EM): {len(dataset)} slices of "
                              f"{len({s.subject for s in train_scans})} subjects, contrasts "
                              f"{', '.join(sorted({s.contrast for s in train_scans}))}"),
            **(card or {}),
            "zeta": current_card.get("zeta", {"2": 1.0, "4": 1.0}),
            "image_size": [int(dataset.slices[0].height), int(dataset.slices[0].width)],
            "training": {"stage": "finetune (undersampled, EM)", "round": r, "rounds": rounds,
                         "init": init_path, "init_sha256": init_card.get("sha256"),
                         "pretraining": init_card.get("training", {}),
                         "estep": {k: v for k, v in estep.items()},
                         "selection": f"held-out measured lines ({validation['fraction']:g} of the non-ACS lines "
                                      f"of {len(val_scans)} validation scans)"}}
        model.train()
        result = training_loop(
            run_dir=round_dir / "train",
            dataset=dataset,
            init_precond=model,
            total_steps=steps_per_round,
            batch_size=batch_size,
            lr=lr,
            grad_clip=grad_clip,
            ema_halflife_nimg=ema_halflife_nimg or 10.0 * batch_size,
            ema_rampup_ratio=None,
            seed=stable_seed(seed, "mstep", r) % (2 ** 31),
            device=device,
            tick_steps=max(1, min(eval_every_steps or steps_per_round or 1, 50)),
            snapshot_ticks=1,
            evaluate=evaluate_on(r - 1),
            evaluate_every_steps=eval_every_steps or steps_per_round or 1,
            card=round_card,
            resume=True,
            progress=progress,
            tensorboard=False,
            options={"command": "dpm-finetune --undersampled", "round": r},
        )
        done = {"round": r, "model": str(result["model"] or round_dir / "train" / f"{MODEL_STEM}.json"),
                "best_step": result["best_step"], "best_score": result["best_score"],
                "evaluations": result["evaluations"], "estep_seconds": estep_seconds,
                "train_seconds": result["seconds"], "train_slices": len(dataset)}
        if rank == 0:
            done_path.write_text(json.dumps(done, indent=2, default=str) + "\n")
        dist_utils.barrier()
        score_cache[r] = result["best_score"]
        model, current_card = result["ema"], json.loads(Path(done["model"]).read_text()) if rank == 0 else {}
        history.append(done)

    final_card = {k: v for k, v in current_card.items()}
    final_card.setdefault("training", {})["em_rounds"] = [
        {k: h[k] for k in ("round", "best_step", "best_score", "estep_seconds", "train_seconds")} for h in history]
    model_path = None
    if rank == 0:
        model_path, _ = save_checkpoint(run_dir / MODEL_STEM, model.cpu().eval(), final_card)
    dist_utils.barrier()
    return {"model": None if model_path is None else str(model_path), "rounds": history,
            "best_score": history[-1]["best_score"]}
