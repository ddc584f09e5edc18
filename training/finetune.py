"""``dpm-finetune``: fine-tune a pre-trained denoiser on a few FLAIR subjects, keep the best validation epoch.

    dpm-finetune --init RUN_OR_CARD --data DIR --contrasts AXFLAIR --subjects 20 --val-data DIR \\
                 --lr 1e-5 --epochs E --eval-every k --out RUN [--export dpm_core/models/flair_default]
    dpm-finetune --undersampled --rounds 2 ...   # --data / --val-data accelerated only (training.undersampled)

The paper's recipe: start from the pre-trained EMA (it becomes both the starting weights and the starting EMA), train
with a reduced learning rate for a limited number of epochs, and stop where validation is best (too little and too
much fine-tuning both hurt). Every ``k`` epochs (and before the first) the EMA reconstructs held-out, retrospectively
undersampled validation slices with the fast sampler **through** :class:`dpm_core.reconstruct.Reconstructor` at each
acceleration (equispaced + 24 ACS lines) and the mean NRMSE (magnitude, against the MVUE of the fully sampled
k-space) is logged; the epoch with the lowest NRMSE averaged over accelerations is exported. At the end a small ζ sweep
on the same slices picks the data-consistency weight per acceleration, stored in the model card's ``zeta`` table
(keyed by the *effective* acceleration, which is what the Reconstructor looks up).
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path
from typing import NamedTuple, Sequence

import numpy as np
import torch

from dpm_core.checkpoints import load_checkpoint, save_checkpoint
from dpm_core.masks import DEFAULT_NUM_ACS, effective_acceleration, equispaced_mask
from dpm_core.metrics import nrmse, ssim
from dpm_core.networks import ComplexDenoiser, EDMPrecond

from . import distributed as dist_utils
from .preprocess import compute_targets, find_volumes, read_volume, select_volumes
from .pretrain import add_training_arguments, describe_corpus, prepare_dataset
from .training_loop import MODEL_STEM, resolve_init, training_loop
from .undersampled import ESTEP_DEFAULTS, HOLDOUT_FRACTION

__all__ = ["ValidationSet", "load_validation_set", "validate", "zeta_sweep", "finetune",
           "finetune_from_accelerated", "refresh_validation", "main"]


class ValidationSet(NamedTuple):
    """Held-out fully sampled slices: ``kspace`` [N, C, H, W] complex64, ``reference`` [N, H, W] complex64 (MVUE of the
    full k-space, original units), ``ids`` list of "file:slice" strings."""
    kspace: torch.Tensor
    reference: torch.Tensor
    ids: list


def load_validation_set(data, contrasts: Sequence[str] | None = ("AXFLAIR",), num_slices: int = 6,
                        coil_method: str = "fast", num_acs: int = DEFAULT_NUM_ACS) -> ValidationSet:
    """``num_slices`` slices spread evenly over the (sorted) validation volumes, central slices preferred.

    All volumes must share one matrix and coil count (they are reconstructed as one batch).
    """
    volumes = select_volumes(find_volumes(data), contrasts=contrasts)
    pairs = []
    for v in volumes:                                       # the central half of each volume's slices
        lo, hi = v.num_slices // 4, v.num_slices - v.num_slices // 4
        pairs.extend((v, s) for s in range(lo, max(hi, lo + 1)))
    pick = np.linspace(0, len(pairs) - 1, min(num_slices, len(pairs))).round().astype(int)
    chosen = [pairs[i] for i in sorted(set(pick.tolist()))]
    kspace, reference, ids, cache = [], [], [], {}
    for v, s in chosen:
        if v.path not in cache:
            cache[v.path] = read_volume(v)
        k = cache[v.path][s:s + 1]
        target, scale = compute_targets(k, coil_method=coil_method, num_acs=num_acs)
        kspace.append(k)
        reference.append(target * scale.view(-1, 1, 1))
        ids.append(f"{Path(v.path).name}:{s}")
    shapes = {tuple(k.shape[1:]) for k in kspace}
    if len(shapes) != 1:
        raise ValueError(f"validation slices have different shapes {sorted(shapes)}; use volumes with one matrix and "
                         f"coil count in --val-data")
    return ValidationSet(torch.cat(kspace), torch.cat(reference), ids)


def validate(precond: EDMPrecond, valset: ValidationSet, accelerations: Sequence[float],
             zeta: float | dict | None = 1.0,
             sampler: str = "fast", sampler_options: dict | None = None, device="cpu", seed: int = 0,
             num_acs: int = DEFAULT_NUM_ACS) -> dict:
    """Mean NRMSE per nominal acceleration of the DPM reconstruction of the retrospectively undersampled slices.

    Every slice goes through ``Reconstructor(method="dpm", sampler=sampler).reconstruct`` (coil maps from the ACS
    block of the undersampled data, the one normalization rule, the sampler) — the scanner's code path.

    Args:
        precond: the denoiser (EMA) to evaluate.
        valset: from :func:`load_validation_set`.
        accelerations: nominal R of equispaced masks with ``num_acs`` ACS lines.
        zeta: ζ for all accelerations, or a dict R -> ζ.
    Returns: {"nrmse": {R: mean NRMSE}, "nrmse_support": {R: mean NRMSE with the reconstruction zeroed outside its
        coil-map support (a reported variant)}, "effective_acceleration": {R: value}, "score": mean NRMSE over R,
        "per_slice": {"ids": slice ids, "nrmse": {R: [per slice]}, "ssim": {R: [per slice]}} (for error bars)}.
    """
    from dpm_core.reconstruct import Reconstructor

    was_training = precond.training
    denoiser = ComplexDenoiser(precond).eval()
    H = valset.kspace.shape[2]
    out, eff, in_support, slice_nrmse, slice_ssim = {}, {}, {}, {}, {}
    with torch.no_grad():
        for R in accelerations:
            mask = equispaced_mask(H, R, num_acs)
            z = zeta
            if isinstance(zeta, dict):
                z = next((zeta[k] for k in (R, _key(R), str(R)) if k in zeta), None)
                if z is None:
                    raise ValueError(f"the ζ table {zeta} has no entry for acceleration {R}")
            recon = Reconstructor(method="dpm", model=denoiser, sampler=sampler, sampler_options=sampler_options,
                                  zeta=z, seed=seed, device=device, output_guard=False)   # models in training
            result = recon.reconstruct(valset.kspace * torch.from_numpy(mask).view(1, 1, H, 1), mask)
            per_slice = [nrmse(result.images[i], valset.reference[i]) for i in range(len(valset.ids))]
            slice_ssim[_key(R)] = [ssim(result.images[i], valset.reference[i]) for i in range(len(valset.ids))]
            slice_nrmse[_key(R)] = per_slice
            value = float(np.mean(per_slice))
            out[_key(R)] = value if math.isfinite(value) else math.inf
            eff[_key(R)] = round(effective_acceleration(mask), 4)
            # Variant (reported, not used for selection): zero the reconstruction outside the support of the coil
            # maps it used, as the MVUE reference and SENSE are, so null-space content of A does not count.
            support = np.abs(result.maps).sum(axis=(1, 2)) > 0                       # [N, H, W]
            masked = [nrmse(result.images[i] * support[i], valset.reference[i]) for i in range(len(valset.ids))]
            in_support[_key(R)] = float(np.mean(masked))
    precond.train(was_training)
    return {"nrmse": out, "nrmse_support": in_support, "effective_acceleration": eff,
            "score": float(np.mean(list(out.values()))),
            "per_slice": {"ids": list(valset.ids), "nrmse": slice_nrmse, "ssim": slice_ssim}}


def _key(R: float) -> str:
    return f"{float(R):g}"


def zeta_sweep(precond: EDMPrecond, valset: ValidationSet, accelerations: Sequence[float], zetas: Sequence[float],
               **kwargs) -> tuple[dict, dict, dict]:
    """NRMSE for every (R, ζ); returns (table {R: {ζ: NRMSE}}, best ζ per R, card zeta table keyed by effective R).

    Ties go to the ζ closest to 1 (the paper's default). When the first two ζ give bit-identical results the sampler
    ignores ζ and the sweep stops there (the table then lists only the ζ evaluated).
    """
    table, eff, results = {}, {}, []
    for z in zetas:
        res = validate(precond, valset, accelerations, zeta=float(z), **kwargs)
        for R, v in res["nrmse"].items():
            table.setdefault(R, {})[_key(z)] = v
        eff.update(res["effective_acceleration"])
        results.append(res["nrmse"])
        if len(results) == 2 and results[0] == results[1] and len(zetas) > 2:
            # Bit-identical results for two ζ: this sampler does not use ζ (e.g. DDS); the rest would repeat them.
            break
    best = {R: float(min(row, key=lambda k: (row[k], abs(math.log(float(k)))))) for R, row in table.items()}
    card_zeta = {f"{eff[R]:g}": best[R] for R in best}
    return table, best, card_zeta


def finetune(args, evaluate_fn=None) -> dict:
    """The fine-tuning driver behind ``dpm-finetune`` (``args`` as parsed by :func:`build_parser`).

    ``evaluate_fn(precond, step) -> {"score", ...}`` replaces the validation (tests); by default :func:`validate`.
    Returns the training summary plus the ζ sweep and the exported card path.
    """
    device = dist_utils.init(args.device)
    run_dir = Path(args.out)
    init_card_path = resolve_init(args.init)
    precond, init_card = load_checkpoint(init_card_path, device="cpu")
    dataset, index = prepare_dataset(args, run_dir)
    corpus = describe_corpus(index, dataset.slices)
    steps_per_epoch = len(dataset) // args.batch
    if steps_per_epoch < 1:
        raise ValueError(f"{len(dataset)} fine-tuning slices are fewer than one batch of {args.batch}; lower --batch")
    accelerations = [float(R) for R in args.accelerations]

    valset = None
    if evaluate_fn is None:
        if dist_utils.get_rank() == 0:
            valset = load_validation_set(args.val_data, args.val_contrasts or args.contrasts, args.val_slices,
                                         coil_method=args.coil_method, num_acs=args.num_acs)
        sampler_options = json.loads(args.sampler_options) if args.sampler_options else None

        def evaluate_fn(ema, step):
            res = validate(ema, valset, accelerations, zeta=args.eval_zeta, sampler=args.sampler,
                           sampler_options=sampler_options, device=device, seed=args.seed, num_acs=args.num_acs)
            flat = {f"nrmse_R{R}": v for R, v in res["nrmse"].items()}
            flat.update({f"nrmse_support_R{R}": v for R, v in res["nrmse_support"].items()})
            return {"score": res["score"], **flat, "effective_acceleration": res["effective_acceleration"]}

    card = {
        "training_data": (f"{init_card.get('training_data', 'pre-training: see init card')}; fine-tuning: "
                          f"{corpus['num_slices']} slices of {corpus['num_subjects']} subjects, contrasts "
                          f"{', '.join(corpus['contrasts'])}"),
        "image_size": corpus["image_size"],
        "zeta": init_card.get("zeta", {"2": 1.0, "4": 1.0}),
        "training": {"stage": "finetune", "init": str(init_card_path), "init_sha256": init_card.get("sha256"),
                     "pretraining": init_card.get("training", {}), "data": corpus, "data_dirs": args.data,
                     "lr": args.lr, "epochs": args.epochs, "eval_every_epochs": args.eval_every,
                     "crop": args.crop, "flip": args.flip, "phase": args.phase},
    }
    t0 = time.time()
    result = training_loop(
        run_dir=run_dir,
        dataset=dataset,
        init_precond=precond,
        total_steps=args.epochs * steps_per_epoch,
        batch_size=args.batch,
        batch_gpu=args.batch_gpu,
        lr=args.lr,
        lr_rampup_steps=args.lr_rampup,
        weight_decay=args.weight_decay,
        grad_clip=args.grad_clip or None,
        ema_halflife_nimg=args.ema_halflife or 10.0 * args.batch,
        ema_rampup_ratio=None,                        # the pre-trained EMA is carried over, no ramp-up
        P_mean=args.p_mean,
        P_std=args.p_std,
        seed=args.seed,
        device=device,
        use_bf16=not args.no_bf16,
        num_workers=args.workers,
        tick_steps=args.tick or steps_per_epoch,
        snapshot_ticks=args.snapshot_ticks,
        evaluate=evaluate_fn,
        evaluate_every_steps=args.eval_every * steps_per_epoch,
        card=card,
        resume=args.resume,
        max_seconds=args.max_minutes * 60 if args.max_minutes else None,
        progress=not args.no_progress,
        options={"command": "dpm-finetune", "init": str(init_card_path), "epochs": args.epochs,
                 "steps_per_epoch": steps_per_epoch},
    )
    summary = {"steps_per_epoch": steps_per_epoch, "best_step": result["best_step"],
               "best_epoch": None if result["best_step"] is None else result["best_step"] / steps_per_epoch,
               "train_seconds": time.time() - t0}
    if dist_utils.get_rank() == 0:
        best = result["ema"]
        evaluations = [{k: v for k, v in e.items()} for e in result["evaluations"]]
        sweep = {}
        if valset is not None and args.zetas:
            t1 = time.time()
            table, best_zeta, card_zeta = zeta_sweep(best, valset, accelerations, args.zetas, sampler=args.sampler,
                                                     sampler_options=sampler_options, device=device, seed=args.seed,
                                                     num_acs=args.num_acs)
            sweep = {"nrmse": table, "best_zeta": best_zeta, "seconds": time.time() - t1}
            card["zeta"] = card_zeta
        card["training"].update(
            steps_per_epoch=steps_per_epoch, best_epoch=summary["best_epoch"], best_step=result["best_step"],
            validation={"slices": None if valset is None else valset.ids, "accelerations": accelerations,
                        "mask": f"equispaced + {args.num_acs} ACS", "sampler": args.sampler,
                        "zeta_during_training": args.eval_zeta,
                        "metric": ("mean per-slice NRMSE (magnitude) vs MVUE; nrmse_support_*: reconstruction zeroed "
                                   "outside its coil-map support"),
                        "per_epoch": [{"epoch": e["epoch"], "score": e["score"],
                                       **{k: v for k, v in e.items() if k.startswith("nrmse_")}}
                                      for e in evaluations]},
            zeta_sweep=sweep, finetune_seconds=summary["train_seconds"])
        card_path, _ = save_checkpoint(run_dir / MODEL_STEM, best, card)
        summary["model"] = str(card_path)
        if args.export:
            summary["export"] = str(save_checkpoint(args.export, best, card)[0])
        summary.update(evaluations=evaluations, zeta_sweep=sweep)
        (run_dir / "finetune_summary.json").write_text(json.dumps(summary, indent=2, default=str) + "\n")
        dist_utils.print0(f"best epoch {summary['best_epoch']}; model {summary['model']}"
                          + (f"; exported {summary['export']}" if args.export else ""))
    dist_utils.barrier()
    return summary


def refresh_validation(card_path: str | Path, val_data, contrasts=("AXFLAIR",), val_slices: int = 6,
                       accelerations=(2.0, 4.0), zetas=(0.5, 1.0, 2.0), sampler: str = "fast",
                       sampler_options: dict | None = None, device="cpu", seed: int = 0,
                       num_acs: int = DEFAULT_NUM_ACS, note: str = "", training_data: str | None = None) -> dict:
    """Re-run the final validation and ζ sweep of a saved model with the current code; rewrite its card (weights kept).

    For when the reconstruction path changed after fine-tuning: the card's ``zeta`` table and
    ``training.zeta_sweep`` are replaced, and ``training.revalidation`` records the NRMSE per acceleration at the
    chosen ζ, the date and ``note``. The weights file is rewritten byte-identically (same tensors), so its sha256
    does not change.
    """
    precond, card = load_checkpoint(card_path, device="cpu")
    valset = load_validation_set(val_data, contrasts, val_slices, num_acs=num_acs)
    kwargs = dict(sampler=sampler, sampler_options=sampler_options, device=device, seed=seed, num_acs=num_acs)
    table, best_zeta, card_zeta = zeta_sweep(precond, valset, accelerations, zetas, **kwargs)
    final = validate(precond, valset, accelerations, zeta={_key(R): best_zeta[_key(R)] for R in accelerations},
                     **kwargs)
    card = {k: v for k, v in card.items()}
    card["zeta"] = card_zeta
    if training_data is not None:
        card["training_data"] = training_data
    card.setdefault("training", {})["zeta_sweep"] = {"nrmse": table, "best_zeta": best_zeta}
    card["training"]["revalidation"] = {
        "date": time.strftime("%Y-%m-%d %H:%M:%S"), "note": note, "slices": valset.ids,
        "accelerations": list(accelerations), "sampler": sampler, "sampler_options": sampler_options,
        "nrmse_at_best_zeta": final["nrmse"], "nrmse_support_at_best_zeta": final["nrmse_support"],
        "effective_acceleration": final["effective_acceleration"]}
    save_checkpoint(card_path, precond, card)
    return card


def build_parser() -> argparse.ArgumentParser:
    from .preprocess import add_corpus_arguments
    parser = argparse.ArgumentParser(prog="dpm-finetune", description=__doc__.split("\n")[0])
    parser.add_argument("--init", required=True, help="pre-training run directory or model card (.json)")
    add_corpus_arguments(parser, contrasts_default=["AXFLAIR"])
    add_training_arguments(parser, lr=1e-5, batch=8)
    g = parser.add_argument_group("fine-tuning and validation")
    g.add_argument("--epochs", type=int, required=True, help="epoch budget (per EM round with --undersampled)")
    g.add_argument("--eval-every", type=int, default=1, help="validate every k epochs")
    g.add_argument("--val-data", nargs="+", required=True,
                   help="held-out volumes: fully sampled (accelerated with --undersampled)")
    g.add_argument("--val-contrasts", nargs="*", default=None, help="default: --contrasts")
    g.add_argument("--val-slices", type=int, default=6, help="validation slices")
    g.add_argument("--accelerations", type=float, nargs="+", default=[2.0, 4.0], help="nominal R (equispaced + ACS)")
    g.add_argument("--sampler", default="fast", help="sampler of dpm_core.samplers used for validation")
    g.add_argument("--sampler-options", default=None, help="JSON dict of extra sampler options")
    g.add_argument("--eval-zeta", type=float, default=1.0, help="ζ during the per-epoch validation")
    g.add_argument("--zetas", type=float, nargs="*", default=[0.5, 1.0, 2.0],
                   help="final ζ sweep (empty: skip; not with --undersampled, which keeps the init card's ζ table)")
    g.add_argument("--export", default=None, help="also save the best model here (e.g. dpm_core/models/flair_default)")
    u = parser.add_argument_group("from accelerated scans alone (--undersampled; training.undersampled)")
    u.add_argument("--undersampled", action="store_true",
                   help="--data and --val-data are accelerated scans (fastMRI files with their mask, or ISMRMRD raw): "
                        "EM fine-tuning on posterior samples, epochs chosen by held-out measured lines")
    u.add_argument("--rounds", type=int, default=2, help="EM rounds (E-step + --epochs of training each)")
    u.add_argument("--estep-steps", type=int, default=ESTEP_DEFAULTS["steps"], help="sampler steps of the E-step")
    u.add_argument("--estep-zeta", type=float, default=ESTEP_DEFAULTS["zeta"],
                   help="ζ of the E-step (1: posterior samples)")
    u.add_argument("--holdout", type=float, default=HOLDOUT_FRACTION,
                   help="fraction of the measured non-ACS lines of each validation scan withheld for selection")
    parser.set_defaults(tick=0)                    # one log row per epoch
    return parser


def finetune_from_accelerated(args) -> dict:
    """``dpm-finetune --undersampled``: :func:`training.undersampled.finetune_undersampled` from the parsed args."""
    from .undersampled import finetune_undersampled, load_accelerated
    device = dist_utils.init(args.device)
    init_card_path = resolve_init(args.init)
    precond, init_card = load_checkpoint(init_card_path, device="cpu")
    train_scans = load_accelerated(args.data, args.contrasts, args.subjects)
    val_scans = load_accelerated(args.val_data, args.val_contrasts or args.contrasts)
    num_slices = sum(len(s.ids) for s in train_scans)
    steps_per_epoch = num_slices // args.batch
    if steps_per_epoch < 1:
        raise ValueError(f"{num_slices} fine-tuning slices are fewer than one batch of {args.batch}; lower --batch")
    sampler_options = json.loads(args.sampler_options) if args.sampler_options else None
    result = finetune_undersampled(
        run_dir=args.out,
        init_precond=precond,
        init_card=init_card,
        train_scans=train_scans,
        val_scans=val_scans,
        rounds=args.rounds,
        steps_per_round=args.epochs * steps_per_epoch,
        eval_every_steps=args.eval_every * steps_per_epoch,
        batch_size=args.batch,
        lr=args.lr,
        crop=args.crop,
        flip=args.flip,
        ema_halflife_nimg=args.ema_halflife,
        grad_clip=args.grad_clip or None,
        seed=args.seed,
        estep={"steps": args.estep_steps, "zeta": args.estep_zeta},
        validation={"sampler": args.sampler, "sampler_options": sampler_options, "zeta": args.eval_zeta,
                    "fraction": args.holdout},
        coil_method=args.coil_method,
        num_acs=args.num_acs,
        device=device,
        progress=not args.no_progress,
        init_path=str(init_card_path),
    )
    if args.export and dist_utils.get_rank() == 0:
        best, card = load_checkpoint(result["model"], device="cpu")
        result["export"] = str(save_checkpoint(args.export, best, card)[0])
    dist_utils.print0(f"EM fine-tuning: {len(result['rounds'])} round(s), held-out-line score "
                      f"{result['best_score']:.4f}; model {result['model']}")
    return result


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        finetune_from_accelerated(args) if args.undersampled else finetune(args)
    except (ValueError, FileNotFoundError) as err:
        parser.error(str(err))
    finally:
        dist_utils.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
