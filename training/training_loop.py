"""The training loop for EDM denoisers: pre-training and fine-tuning share this one function.

Structure after EDM's ``training/training_loop.py``: one :func:`training_loop` with labelled phases (initialise,
dataset, network, optimizer, resume, loop with maintenance per tick), one keyword argument per line.

Determinism, independent of the number of processes
---------------------------------------------------
The global batch of step ``s`` is fixed by ``seed`` alone: the epoch permutation is :class:`DistributedSampler`'s
(``seed + epoch``), rank r gets global batch positions r, r + W, r + 2W, ... (DistributedSampler's interleaving), and a
rank that splits its share into R accumulation rounds gives round k the positions ≡ r + W·k (mod W·R). Each such
"virtual shard" v = r + W·k draws its σ and noise from a generator seeded by (seed, step, v), and each sample's crop
and flips from (seed, epoch, step, global position). So W processes × R rounds with W·R fixed see the same samples with
the same noise: 2 processes with batch_gpu = B/2 reproduce 1 process with batch_gpu = B/2 (2 rounds) up to float
summation order, and a resumed run reproduces an uninterrupted one exactly (nothing depends on hidden RNG state; the
RNG states are saved and restored anyway).

Checkpoints (resumable, nothing pickled)
----------------------------------------
``RUN/training-state.safetensors``: network, EMA, best-EMA (when evaluating), AdamW moments, RNG states of all ranks.
``RUN/training-state.json``: step, optimizer hyper-parameters, evaluation history, best step, sha256 of the tensors.
The exported model (EMA, or the best-evaluated EMA) goes to ``RUN/model.{safetensors,json}`` with
:func:`dpm_core.checkpoints.save_checkpoint`. Logs: ``RUN/log.csv`` (one row per tick), ``RUN/evaluations.csv``,
TensorBoard events in ``RUN/tensorboard``.
"""
from __future__ import annotations

import copy
import csv
import json
import math
import os
import platform
import time
from pathlib import Path
from typing import Callable

import torch
import torch.distributed as dist
from safetensors.torch import load_file, save_file
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from dpm_core.checkpoints import save_checkpoint, sha256_file
from dpm_core.networks import EDMPrecond, build_network, count_parameters, edm_loss
from dpm_core.seeding import stable_seed

from . import distributed as dist_utils

__all__ = ["training_loop", "STATE_STEM", "MODEL_STEM", "load_training_state", "resolve_init"]

STATE_STEM = "training-state"        # RUN/training-state.{safetensors,json}
MODEL_STEM = "model"                 # RUN/model.{safetensors,json}: exported EMA (or best EMA)
STATE_VERSION = 1


class _DDPPrecond:
    """Calls go through the DDP wrapper (gradient sync); attributes (``loss_weight``, ...) come from the EDMPrecond."""

    def __init__(self, ddp: torch.nn.Module, precond: EDMPrecond):
        self._ddp, self._precond = ddp, precond

    def __call__(self, *args, **kwargs):
        return self._ddp(*args, **kwargs)

    def __getattr__(self, name):
        return getattr(self._precond, name)


def resolve_init(init: str | Path) -> Path:
    """A run directory (its exported ``model.json``) or a model card path -> the card path (``--init`` of
    dpm-pretrain and dpm-finetune)."""
    init = Path(init)
    if init.is_dir():
        card = init / f"{MODEL_STEM}.json"
        if not card.is_file():
            raise FileNotFoundError(f"--init {init} is a directory without {card.name}; finish (or export) the "
                                    f"pre-training run first, or pass a model card .json")
        return card
    return init


def _state_paths(run_dir: Path) -> tuple[Path, Path]:
    return run_dir / f"{STATE_STEM}.json", run_dir / f"{STATE_STEM}.safetensors"


def load_training_state(run_dir: str | os.PathLike) -> tuple[dict, dict[str, torch.Tensor]]:
    """(JSON part, tensors) of ``RUN/training-state``; checks the sha256 recorded in the JSON. Nothing is unpickled."""
    json_path, tensor_path = _state_paths(Path(run_dir))
    if not json_path.is_file() or not tensor_path.is_file():
        raise FileNotFoundError(f"no training state in {run_dir} (expected {json_path.name} and {tensor_path.name}); "
                                f"start without --resume")
    meta = json.loads(json_path.read_text())
    if meta.get("version") != STATE_VERSION:
        raise ValueError(f"{json_path} has state version {meta.get('version')!r}; this code reads {STATE_VERSION}")
    digest = sha256_file(tensor_path)
    if digest != meta["sha256"]:
        raise ValueError(f"{tensor_path} does not match the sha256 in {json_path.name} (interrupted write or replaced "
                         f"file); delete the run directory's training-state files or restore them together")
    return meta, load_file(str(tensor_path), device="cpu")


def _optimizer_to_tensors(optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], list]:
    sd = optimizer.state_dict()
    tensors = {}
    for idx, state in sd["state"].items():
        for name, value in state.items():
            tensors[f"opt.{idx}.{name}"] = torch.as_tensor(value).detach().cpu().contiguous()
    groups = [{k: (list(v) if isinstance(v, tuple) else v) for k, v in g.items()} for g in sd["param_groups"]]
    return tensors, groups


def _optimizer_from_tensors(optimizer: torch.optim.Optimizer, tensors: dict, groups: list) -> None:
    state = {}
    for key, value in tensors.items():
        if key.startswith("opt."):
            _, idx, name = key.split(".", 2)
            state.setdefault(int(idx), {})[name] = value
    groups = [{k: (tuple(v) if k == "betas" else v) for k, v in g.items()} for g in groups]
    optimizer.load_state_dict({"state": state, "param_groups": groups})


def _gather_rng_states(device: torch.device) -> dict[str, torch.Tensor]:
    """Torch CPU (and CUDA) RNG state of every rank, collected on all ranks."""
    local = {"torch": torch.get_rng_state()}
    if device.type == "cuda":
        local["cuda"] = torch.cuda.get_rng_state(device)
    out = {}
    world = dist_utils.get_world_size()
    for name, state in local.items():
        if world > 1:
            buf = state.to(device)
            parts = [torch.empty_like(buf) for _ in range(world)]
            dist.all_gather(parts, buf)
            for r, part in enumerate(parts):
                out[f"rng.{name}.rank{r}"] = part.cpu()
        else:
            out[f"rng.{name}.rank0"] = state
    return out


def _append_csv(path: Path, row: dict) -> None:
    new = not path.exists()
    with open(path, "a", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(row))
        if new:
            writer.writeheader()
        writer.writerow(row)


def _lr_at(step: int, lr: float, lr_rampup_steps: int) -> float:
    return lr * min(step / lr_rampup_steps, 1.0) if lr_rampup_steps > 0 else lr


# ----------------------------------------------------------------------------------------------------------------------

def training_loop(
    run_dir: str | os.PathLike,                  # Output directory: logs, training state, exported model.
    dataset: Dataset,                            # Key (index, augmentation seed) -> [2, H, W] float32 normalized image.
    arch: str = "unet",                          # Network architecture for build_network ("unet", "ncsnv2").
    arch_kwargs: dict | None = None,             # Its arguments, e.g. {"preset": "small"}.
    sigma_data: float = 0.5,                     # EDM σ_data of the normalized training images (per real channel).
    sigma_min: float = 0.002,                    # Noise range recorded in the model card for samplers.
    sigma_max: float = 80.0,
    init_precond: EDMPrecond | None = None,      # Start from these weights (fine-tuning); they also start the EMA.
    total_steps: int = 1000,                     # Optimizer steps to train for (including resumed ones).
    batch_size: int = 16,                        # Global batch over all ranks and accumulation rounds.
    batch_gpu: int | None = None,                # Samples per forward pass per rank (None: batch_size / world size).
    lr: float = 2e-4,                            # AdamW learning rate.
    lr_rampup_steps: int = 0,                    # Linear learning-rate warm-up (steps).
    weight_decay: float = 0.0,                   # AdamW decoupled weight decay.
    betas: tuple[float, float] = (0.9, 0.999),   # AdamW moments.
    grad_clip: float | None = 1.0,               # Clip the global gradient norm (None: no clipping).
    ema_halflife_nimg: float = 2000.0,           # EMA half-life in training images.
    ema_rampup_ratio: float | None = 0.05,       # Half-life <= ratio * images seen (EDM); None: no ramp-up.
    P_mean: float = -1.2,                        # EDM training σ distribution: ln σ ~ N(P_mean, P_std²).
    P_std: float = 1.2,
    seed: int = 0,                               # Global seed: initial weights, data order, noise, augmentation.
    device: str | torch.device = "cpu",          # Device of this rank (from distributed.init()).
    use_bf16: bool = True,                       # bf16 autocast on CUDA (never on CPU).
    num_workers: int = 0,                        # DataLoader worker processes per rank.
    tick_steps: int = 50,                        # Maintenance (log, progress) every this many steps.
    snapshot_ticks: int = 10,                    # Save the resumable training state every this many ticks.
    evaluate: Callable[[EDMPrecond, int], dict] | None = None,  # (EMA, step) -> {"score": lower-is-better, ...}.
    evaluate_every_steps: int | None = None,     # Evaluate the EMA every this many steps (and at step 0 and the end).
    card: dict | None = None,                    # Model-card fields for the export (training_data, zeta, ...).
    resume: bool = False,                        # Continue from RUN/training-state if present.
    max_seconds: float | None = None,            # Wall-time budget of this call: stop early (state saved, exported).
    progress: bool = True,                       # tqdm progress bar on rank 0.
    tensorboard: bool = True,                    # Write TensorBoard events.
    options: dict | None = None,                 # JSON-serialisable run options, stored in RUN/training_options.json.
) -> dict:
    """Train an EDM-preconditioned denoiser with DSM (EDM) loss, AdamW, EMA; export the EMA (or best-evaluated EMA).

    Returns (on every rank): {"step", "best_step", "best_score", "evaluations", "model" (exported card path or None
    on ranks > 0), "ema" (the exported EDMPrecond, on rank 0), "seconds", "slices_per_second"}.
    """
    # Initialise. ---------------------------------------------------------------------------------------------------
    t_start = time.time()
    run_dir = Path(run_dir)
    device = torch.device(device)
    rank, world = dist_utils.get_rank(), dist_utils.get_world_size()
    if batch_size % world:
        raise ValueError(f"batch size {batch_size} must be divisible by the number of processes {world}")
    local_batch = batch_size // world
    batch_gpu = local_batch if batch_gpu is None else int(batch_gpu)
    if batch_gpu < 1 or local_batch % batch_gpu:
        raise ValueError(f"batch_gpu {batch_gpu} must divide the per-process batch {local_batch} "
                         f"(= batch {batch_size} / {world} processes)")
    rounds = local_batch // batch_gpu
    if total_steps < 0 or tick_steps < 1 or snapshot_ticks < 1:
        raise ValueError(f"need total_steps >= 0, tick_steps >= 1, snapshot_ticks >= 1; got {total_steps}, "
                         f"{tick_steps}, {snapshot_ticks}")
    if not (P_std > 0 and math.isfinite(P_mean)):
        raise ValueError(f"the training σ distribution needs P_std > 0 and a finite P_mean (--p-std / --p-mean); got "
                         f"{P_mean}, {P_std}")
    if evaluate is not None and not evaluate_every_steps:
        evaluate_every_steps = total_steps or 1
    torch.manual_seed(stable_seed(seed, "rank", rank))           # rank-local randomness (dropout)
    if rank == 0:
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "training_options.json").write_text(json.dumps(
            {"arch": arch, "arch_kwargs": arch_kwargs, "total_steps": total_steps, "batch_size": batch_size,
             "batch_gpu": batch_gpu, "world_size": world, "lr": lr, "lr_rampup_steps": lr_rampup_steps,
             "weight_decay": weight_decay, "betas": list(betas), "grad_clip": grad_clip,
             "ema_halflife_nimg": ema_halflife_nimg, "ema_rampup_ratio": ema_rampup_ratio, "P_mean": P_mean,
             "P_std": P_std, "seed": seed, "device": str(device), "use_bf16": use_bf16,
             "evaluate_every_steps": evaluate_every_steps, **(options or {})}, indent=2, default=str) + "\n")
    dist_utils.barrier()

    # Dataset. ------------------------------------------------------------------------------------------------------
    steps_per_epoch = len(dataset) // batch_size
    if steps_per_epoch < 1:
        raise ValueError(f"the dataset has {len(dataset)} slices, fewer than one global batch of {batch_size}; "
                         f"lower --batch or add data")
    sampler = DistributedSampler(dataset, num_replicas=world, rank=rank, shuffle=True, seed=seed, drop_last=True)

    def epoch_batches(epoch: int, first_step_in_epoch: int):
        """Per-step lists of (dataset index, augmentation seed) for this rank, from ``first_step_in_epoch`` on."""
        sampler.set_epoch(epoch)
        indices = list(iter(sampler))
        for j in range(first_step_in_epoch, steps_per_epoch):
            chunk = indices[j * local_batch:(j + 1) * local_batch]
            yield [(idx, stable_seed(seed, "aug", epoch, j, rank + world * p)) for p, idx in enumerate(chunk)]

    # Network. ------------------------------------------------------------------------------------------------------
    if init_precond is not None:
        precond = copy.deepcopy(init_precond)
        arch, arch_kwargs = precond.net.arch, dict(precond.net.arch_kwargs)
    else:
        torch.manual_seed(stable_seed(seed, "init"))                  # identical initial weights on every rank
        precond = build_network(arch, arch_kwargs or {}, sigma_data=sigma_data, sigma_min=sigma_min,
                                sigma_max=sigma_max)
        torch.manual_seed(stable_seed(seed, "rank", rank))
    precond.use_bf16 = use_bf16
    precond = precond.to(device).train().requires_grad_(True)
    ema = copy.deepcopy(precond).eval().requires_grad_(False)
    ddp = DistributedDataParallel(precond, device_ids=[device.index] if device.type == "cuda" else None,
                                  broadcast_buffers=False) if world > 1 else precond
    loss_model = _DDPPrecond(ddp, precond) if world > 1 else precond
    dist_utils.print0(f"network: {arch} {arch_kwargs}, {count_parameters(precond.net) / 1e6:.2f} M parameters; "
                      f"{len(dataset)} slices, {steps_per_epoch} steps per epoch, global batch {batch_size} = "
                      f"{world} process(es) x {rounds} round(s) x {batch_gpu}")

    # Optimizer. ----------------------------------------------------------------------------------------------------
    optimizer = torch.optim.AdamW(precond.parameters(), lr=lr, betas=tuple(betas), weight_decay=weight_decay)

    # Resume. -------------------------------------------------------------------------------------------------------
    step, evaluations, best = 0, [], {"step": None, "score": math.inf}
    best_state = None
    if resume and _state_paths(run_dir)[0].is_file():
        meta, tensors = load_training_state(run_dir)
        if meta["batch_size"] != batch_size or meta["seed"] != seed:
            raise ValueError(f"cannot resume {run_dir}: it was trained with batch {meta['batch_size']} and seed "
                             f"{meta['seed']}, not batch {batch_size} and seed {seed}; use the same settings or a "
                             f"new --out directory")
        precond.net.load_state_dict({k[4:]: v for k, v in tensors.items() if k.startswith("net.")}, strict=True)
        ema.net.load_state_dict({k[4:]: v for k, v in tensors.items() if k.startswith("ema.")}, strict=True)
        if any(k.startswith("best.") for k in tensors):
            best_state = {k[5:]: v.to(device) for k, v in tensors.items() if k.startswith("best.")}
        _optimizer_from_tensors(optimizer, tensors, meta["optimizer_param_groups"])
        key = f"rng.torch.rank{rank}"
        if key in tensors:
            torch.set_rng_state(tensors[key])
        if device.type == "cuda" and f"rng.cuda.rank{rank}" in tensors:
            torch.cuda.set_rng_state(tensors[f"rng.cuda.rank{rank}"], device)
        step, evaluations, best = int(meta["step"]), list(meta["evaluations"]), dict(meta["best"])
        dist_utils.print0(f"resumed {run_dir} at step {step}")
    elif resume:
        dist_utils.print0(f"--resume: no training state in {run_dir} yet; starting from step 0")

    def save_state() -> None:
        rng = _gather_rng_states(device)
        if rank != 0:
            return
        tensors = {f"net.{k}": v for k, v in precond.net.state_dict().items()}
        tensors.update({f"ema.{k}": v for k, v in ema.net.state_dict().items()})
        if best_state is not None:
            tensors.update({f"best.{k}": v for k, v in best_state.items()})
        opt_tensors, groups = _optimizer_to_tensors(optimizer)
        tensors.update(opt_tensors)
        tensors.update(rng)
        tensors = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
        json_path, tensor_path = _state_paths(run_dir)
        tmp = tensor_path.with_name(tensor_path.name + ".tmp")
        save_file(tensors, str(tmp))
        os.replace(tmp, tensor_path)
        meta = {"version": STATE_VERSION, "step": step, "epoch": step // steps_per_epoch, "batch_size": batch_size,
                "seed": seed, "world_size": world, "arch": arch, "arch_kwargs": arch_kwargs,
                "optimizer_param_groups": groups, "evaluations": evaluations, "best": best,
                "sha256": sha256_file(tensor_path)}
        tmp = json_path.with_name(json_path.name + ".tmp")
        tmp.write_text(json.dumps(meta, indent=2) + "\n")
        os.replace(tmp, json_path)

    def run_evaluation() -> None:
        nonlocal best_state
        if rank == 0:
            result = dict(evaluate(ema, step))
            score = float(result["score"])
            if not math.isfinite(score):
                score = math.inf
            entry = {"step": step, "epoch": step / steps_per_epoch, **result, "score": score}
            evaluations.append(entry)
            if score < best["score"] or best["step"] is None:
                best.update(step=step, score=score)
                best_state = {k: v.detach().clone() for k, v in ema.net.state_dict().items()}
            _append_csv(run_dir / "evaluations.csv", {k: v for k, v in entry.items() if not isinstance(v, dict)})
            if writer is not None:
                for k, v in entry.items():
                    if isinstance(v, (int, float)) and k not in ("step", "epoch") and math.isfinite(v):
                        writer.add_scalar(f"eval/{k}", v, step)
            dist_utils.print0(f"evaluation at step {step} (epoch {entry['epoch']:g}): score {score:.5f}"
                              f"{' (best)' if best['step'] == step else ''}")
        dist_utils.barrier()

    # Loop. ---------------------------------------------------------------------------------------------------------
    writer = None
    if rank == 0 and tensorboard:
        from torch.utils.tensorboard import SummaryWriter
        writer = SummaryWriter(str(run_dir / "tensorboard"))
    bar = None
    if rank == 0 and progress:
        from tqdm import tqdm
        bar = tqdm(total=total_steps, initial=step, unit="step", dynamic_ncols=True)
    evaluated_steps = {int(e["step"]) for e in evaluations}
    if evaluate is not None and step == 0 and 0 not in evaluated_steps:
        run_evaluation()

    tick_loss, tick_count, tick_start, tick_grad = 0.0, 0, time.time(), 0.0
    trained_slices, train_seconds = 0, 0.0

    def batches_from(first_step: int):
        """Every step's batch from ``first_step`` on, epoch after epoch (the same batches as epoch by epoch)."""
        epoch, offset = divmod(first_step, steps_per_epoch)
        while True:
            yield from epoch_batches(epoch, offset)
            epoch, offset = epoch + 1, 0

    # One loader for the whole run: its workers start once, not at every epoch (refilling their queues at each short
    # epoch of a small corpus would leave a fast GPU waiting).
    batches = iter(DataLoader(dataset, batch_sampler=batches_from(step), num_workers=num_workers)) \
        if step < total_steps else iter(())
    for batch in batches:
        t_step = time.time()
        batch = batch.to(device, torch.float32)                               # [local_batch, 2, H, W]
        optimizer.zero_grad(set_to_none=True)
        for k in range(rounds):
            x = batch[k::rounds]                                              # virtual shard v = rank + W·k
            gen = torch.Generator(device=device).manual_seed(stable_seed(seed, "noise", step, rank + world * k))
            sync = k == rounds - 1 or world == 1
            ctx = ddp.no_sync() if not sync else _nullcontext()
            with ctx:
                loss = edm_loss(loss_model, x, generator=gen, P_mean=P_mean, P_std=P_std)   # [batch_gpu]
                loss.sum().mul(1.0 / local_batch).backward()
            tick_loss += float(loss.detach().sum())
            tick_count += x.shape[0]
        for g in optimizer.param_groups:
            g["lr"] = _lr_at(step, lr, lr_rampup_steps)
        for p in precond.parameters():
            if p.grad is not None:
                torch.nan_to_num(p.grad, nan=0, posinf=0, neginf=0, out=p.grad)
        if grad_clip is not None:
            tick_grad = float(torch.nn.utils.clip_grad_norm_(precond.parameters(), grad_clip))
        optimizer.step()

        # EMA update (EDM: half-life in images, ramped up with the number of images seen).
        nimg = (step + 1) * batch_size
        halflife = ema_halflife_nimg
        if ema_rampup_ratio is not None:
            halflife = min(halflife, nimg * ema_rampup_ratio)
        beta = 0.5 ** (batch_size / max(halflife, 1e-8))
        with torch.no_grad():
            for p_ema, p in zip(ema.parameters(), precond.parameters()):
                p_ema.copy_(p.detach().lerp(p_ema, beta))
        step += 1
        trained_slices += batch_size
        train_seconds += time.time() - t_step
        if bar is not None:
            bar.update(1)

        # Evaluation (rank 0), then per-tick maintenance.
        if evaluate is not None and step not in evaluated_steps and (
                step % evaluate_every_steps == 0 or step == total_steps):
            run_evaluation()
            evaluated_steps.add(step)
        if step % tick_steps == 0 or step == total_steps:
            stats = torch.tensor([tick_loss, float(tick_count)], dtype=torch.float64, device=device)
            if world > 1:
                dist.all_reduce(stats)
            elapsed = time.time() - tick_start
            row = {"step": step, "epoch": round(step / steps_per_epoch, 4), "nimg": step * batch_size,
                   "loss": float(stats[0] / max(stats[1], 1)), "lr": _lr_at(step - 1, lr, lr_rampup_steps),
                   "grad_norm": tick_grad, "ema_beta": beta, "sec_per_step": elapsed / max(tick_count /
                                                                                         local_batch, 1),
                   "slices_per_second": float(stats[1]) / max(elapsed, 1e-9), "time": time.time() - t_start}
            if rank == 0:
                _append_csv(run_dir / "log.csv", row)
                if writer is not None:
                    for k in ("loss", "lr", "grad_norm", "slices_per_second"):
                        writer.add_scalar(f"train/{k}", row[k], step)
                if bar is not None:
                    bar.set_postfix(loss=f"{row['loss']:.4f}", sps=f"{row['slices_per_second']:.1f}")
            tick_loss, tick_count, tick_start = 0.0, 0, time.time()
            if (step // tick_steps) % snapshot_ticks == 0 or step == total_steps:
                save_state()
        if max_seconds is not None and step < total_steps:
            over = time.time() - t_start > max_seconds
            if world > 1:                                            # every rank stops at the same step
                flag = torch.tensor([float(over)], device=device)
                dist.all_reduce(flag, op=dist.ReduceOp.MAX)
                over = bool(flag.item())
            if over:
                dist_utils.print0(f"wall-time budget of {max_seconds:.0f} s reached at step {step}: stopping")
                total_steps = step
                save_state()
                if evaluate is not None and step not in evaluated_steps:
                    run_evaluation()
                    evaluated_steps.add(step)
                    save_state()
        if step >= total_steps:
            break
    del batches                                                          # stops the loader's workers
    if step == 0 and total_steps == 0:
        save_state()
    if bar is not None:
        bar.close()
    if writer is not None:
        writer.close()

    # Export: the best-evaluated EMA when evaluating, else the final EMA.
    export = copy.deepcopy(ema).cpu()
    if best_state is not None:
        export.net.load_state_dict({k: v.cpu() for k, v in best_state.items()})
    model_path = None
    if rank == 0:
        image_size = list(dataset[0].shape[-2:]) if len(dataset) else [0, 0]
        full_card = {"training_data": "unspecified", "zeta": {"2": 1.0, "4": 1.0}, "image_size": image_size,
                     **(card or {})}
        full_card["training"] = {
            **full_card.get("training", {}), "steps": step, "epochs": step / steps_per_epoch, "batch_size": batch_size,
            "lr": lr, "weight_decay": weight_decay, "grad_clip": grad_clip, "ema_halflife_nimg": ema_halflife_nimg,
            "P_mean": P_mean, "P_std": P_std, "seed": seed, "world_size": world, "exported_step":
                best["step"] if best_state is not None else step, "torch": torch.__version__,
            "host": platform.node()}
        model_path, _ = save_checkpoint(run_dir / MODEL_STEM, export, full_card)
    dist_utils.barrier()
    seconds = time.time() - t_start
    return {"step": step, "best_step": best["step"], "best_score": best["score"], "evaluations": evaluations,
            "model": model_path, "ema": export, "seconds": seconds,
            "slices_per_second": trained_slices / train_seconds if train_seconds > 0 else float("nan")}


class _nullcontext:
    def __enter__(self):
        return None

    def __exit__(self, *exc):
        return False
