"""``dpm-pretrain``: pre-train an EDM denoiser on a (non-FLAIR) brain corpus.

    dpm-pretrain --data DIR --exclude-contrasts AXFLAIR --out RUN --arch unet --preset small \\
                 --steps N --batch B --lr 2e-4 [--crop 64] [--flip] [--resume]

Multi-process: ``torchrun --nproc_per_node=K -m training.pretrain ...`` (gloo on CPU, nccl on CUDA); the global batch
B is split across processes. Outputs in RUN: ``cache/`` (targets, unless --cache), ``log.csv``, ``tensorboard/``,
``training-state.*`` (resumable), ``model.{json,safetensors}`` (the EMA, loadable with
:func:`dpm_core.checkpoints.load_checkpoint`).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from . import distributed as dist_utils
from .preprocess import PHASE_MODES, CachedSlices, add_corpus_arguments, cache_from_args, load_index
from .training_loop import resolve_init, training_loop

__all__ = ["main", "add_training_arguments", "estimate_sigma_data", "describe_corpus"]


def add_training_arguments(parser: argparse.ArgumentParser, lr: float, batch: int) -> None:
    g = parser.add_argument_group("training")
    g.add_argument("--out", required=True, help="run directory")
    g.add_argument("--batch", type=int, default=batch, help="global batch (all processes)")
    g.add_argument("--batch-gpu", type=int, default=None, help="samples per forward pass per process (accumulation)")
    g.add_argument("--lr", type=float, default=lr, help="AdamW learning rate")
    g.add_argument("--lr-rampup", type=int, default=0, help="linear LR warm-up steps")
    g.add_argument("--weight-decay", type=float, default=0.0)
    g.add_argument("--grad-clip", type=float, default=1.0, help="global gradient-norm clip (0: off)")
    g.add_argument("--ema-halflife", type=float, default=None, help="EMA half-life in training images")
    g.add_argument("--crop", type=int, default=None, help="random square crops of this side (e.g. 64)")
    g.add_argument("--flip", action="store_true", help="random horizontal/vertical flips")
    g.add_argument("--p-mean", type=float, default=-1.2,
                   help="training noise levels: ln σ ~ N(P_mean, P_std²) (EDM's -1.2 / 1.2 by default)")
    g.add_argument("--p-std", type=float, default=1.2, help="see --p-mean")
    g.add_argument("--phase", choices=PHASE_MODES, default="keep",
                   help="keep the targets' phase; random: their magnitude with a random smooth phase (magnitude "
                        "corpora); detail: their phase plus a random fine-scale (gradient-echo-like) phase field")
    g.add_argument("--seed", type=int, default=0)
    g.add_argument("--device", default="auto", help="auto, cpu or cuda")
    g.add_argument("--no-bf16", action="store_true", help="disable bf16 autocast on CUDA")
    g.add_argument("--workers", type=int, default=0, help="DataLoader workers per process")
    g.add_argument("--threads", type=int, default=1,
                   help="torch CPU threads per process (1 is fastest on a shared, oversubscribed CPU; 0: default)")
    g.add_argument("--tick", type=int, default=50, help="log every this many steps")
    g.add_argument("--snapshot-ticks", type=int, default=4, help="save the resumable state every this many ticks")
    g.add_argument("--resume", action="store_true", help="continue RUN from its training state")
    g.add_argument("--max-minutes", type=float, default=None,
                   help="wall-time budget: stop early at this many minutes (state saved, model exported)")
    g.add_argument("--no-progress", action="store_true", help="no progress bars (target cache, training)")


def estimate_sigma_data(dataset: CachedSlices, max_slices: int = 64) -> float:
    """RMS of the real and imaginary parts over up to ``max_slices`` evenly spaced cached slices (EDM's σ_data)."""
    idx = np.linspace(0, len(dataset) - 1, min(max_slices, len(dataset))).round().astype(int)
    sq = [float(np.mean(np.abs(dataset.target(int(i))) ** 2) / 2) for i in idx]
    return float(np.sqrt(np.mean(sq)))


def describe_corpus(index: dict, slices: Sequence) -> dict:
    """Contrasts, subject ids, slice and volume counts of the selected cached slices."""
    contrasts = sorted({e.contrast for e in slices})
    subjects = sorted({e.subject for e in slices})
    volumes = sorted({e.source for e in slices})
    return {"contrasts": contrasts, "num_subjects": len(subjects), "subjects": subjects, "num_volumes": len(volumes),
            "num_slices": len(slices), "image_size": [int(slices[0].height), int(slices[0].width)],
            "coil_maps": f"ESPIRiT ({index['coil_method']}) from {index['num_acs']} ACS lines, 1 map",
            "target": "MVUE / normalization_scale(fully sampled k-space)"}


def prepare_dataset(args, run_dir: Path, index_name: str | None = None) -> tuple[CachedSlices, dict]:
    """Rank 0 builds (or reuses) the target cache, the others wait; every rank opens the dataset.

    The selection's index is ``CACHE/index-<run name>.json`` so runs can share one cache directory (and its shards).
    """
    cache_dir = Path(args.cache) if args.cache else run_dir / "cache"
    index_name = index_name or f"index-{run_dir.resolve().name}.json"
    if dist_utils.get_rank() == 0:
        cache_from_args(args, cache_dir, index_name=index_name, progress=not args.no_progress)
    dist_utils.barrier()
    dataset = CachedSlices(cache_dir / index_name, crop=args.crop, flip=args.flip, phase=args.phase)
    return dataset, load_index(cache_dir / index_name)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="dpm-pretrain", description="Pre-train an EDM denoiser on a brain corpus.")
    add_corpus_arguments(parser)
    add_training_arguments(parser, lr=2e-4, batch=16)
    g = parser.add_argument_group("network")
    g.add_argument("--arch", default="unet", choices=["unet", "ncsnv2"])
    g.add_argument("--preset", default="small", help="network preset (dpm_core.networks UNET_PRESETS / NCSNV2_PRESETS)")
    g.add_argument("--sigma-data", type=float, default=None, help="EDM σ_data (default: measured on the cache)")
    g.add_argument("--sigma-max", type=float, default=80.0)
    g.add_argument("--sigma-min", type=float, default=0.002)
    g.add_argument("--steps", type=int, required=True, help="optimizer steps")
    g.add_argument("--init", default=None,
                   help="continue pre-training from this model card (.json) or finished run: its network and σ_data "
                        "are kept (--arch and --preset are ignored; --sigma-data is refused); the optimizer starts "
                        "afresh")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    device = dist_utils.init(args.device)
    run_dir = Path(args.out)
    try:
        dataset, index = prepare_dataset(args, run_dir)
    except (ValueError, FileNotFoundError) as err:
        parser.error(str(err))
    corpus = describe_corpus(index, dataset.slices)
    init_precond, init_card = None, None
    if args.init is not None:
        from dpm_core.checkpoints import load_checkpoint
        if args.sigma_data is not None:
            parser.error("--init keeps the initial model's σ_data; do not give --sigma-data")
        init_path = resolve_init(args.init)
        init_precond, init_card = load_checkpoint(init_path, device="cpu")
        sigma_data = float(init_precond.sigma_data)
    else:
        sigma_data = args.sigma_data or round(estimate_sigma_data(dataset), 3)
    dist_utils.print0(f"corpus: {corpus['num_slices']} slices, {corpus['num_subjects']} subjects, contrasts "
                      f"{corpus['contrasts']}; sigma_data {sigma_data}")
    card = {
        "training_data": (f"pre-training: {corpus['num_slices']} slices of {corpus['num_volumes']} volumes "
                          f"({corpus['num_subjects']} subjects), contrasts {', '.join(corpus['contrasts'])}"),
        "image_size": corpus["image_size"],
        "zeta": {"2": 1.0, "4": 1.0},
        "training": {"stage": "pretrain", "data": {k: v for k, v in corpus.items() if k != "subjects"},
                     "data_dirs": [str(d) for d in args.data], "crop": args.crop, "flip": args.flip,
                     "phase": args.phase},
    }
    if init_card is not None:
        card["training_data"] = f"{init_card.get('training_data', 'see the init card')}; then {card['training_data']}"
        card["training"].update(init=str(init_path), init_sha256=init_card.get("sha256"),
                                init_training=init_card.get("training", {}))
    result = training_loop(
        run_dir=run_dir,
        dataset=dataset,
        arch=args.arch,
        arch_kwargs={"preset": args.preset},
        sigma_data=sigma_data,
        sigma_min=args.sigma_min,
        sigma_max=args.sigma_max,
        init_precond=init_precond,
        total_steps=args.steps,
        batch_size=args.batch,
        batch_gpu=args.batch_gpu,
        lr=args.lr,
        lr_rampup_steps=args.lr_rampup,
        weight_decay=args.weight_decay,
        grad_clip=args.grad_clip or None,
        ema_halflife_nimg=args.ema_halflife or max(500.0, 0.1 * args.steps * args.batch),
        ema_rampup_ratio=0.05,
        P_mean=args.p_mean,
        P_std=args.p_std,
        seed=args.seed,
        device=device,
        use_bf16=not args.no_bf16,
        num_workers=args.workers,
        tick_steps=args.tick,
        snapshot_ticks=args.snapshot_ticks,
        card=card,
        resume=args.resume,
        max_seconds=args.max_minutes * 60 if args.max_minutes else None,
        progress=not args.no_progress,
        options={"command": "dpm-pretrain", "argv": list(sys.argv[1:] if argv is None else argv)},
    )
    dist_utils.print0(f"done: {result['step']} steps in {result['seconds']:.0f} s "
                      f"({result['slices_per_second']:.2f} slices/s); model {result['model']}")
    dist_utils.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
