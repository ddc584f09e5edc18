"""Model checkpoints: safetensors weights plus a JSON model card. Loading never unpickles.

A checkpoint ``<name>`` is two files side by side:

- ``<name>.safetensors``: the state dict of the raw network (``EDMPrecond.net``); ship the EMA weights.
- ``<name>.json``: the model card, e.g.::

    {"format_version": 1, "arch": "unet", "arch_kwargs": {...}, "sigma_data": 0.5, "sigma_min": 0.002,
     "sigma_max": 80.0, "precond": "edm", "normalization": "p99_rss_acs", "training_data": "...",
     "zeta": {"2": 1.0, "4": 1.0}, "image_size": [320, 320], "parameter_count": 1037598, "training": {...},
     "weights_file": "<name>.safetensors", "sha256": "..."}

:func:`load_checkpoint` checks the card (format, normalization rule), the sha256 of the weights, builds the network
explicitly with :func:`dpm_core.networks.build_network` and loads the weights with strict key and shape checks.
"""
from __future__ import annotations

import bisect
import hashlib
import json
import os
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from .networks import EDMPrecond, build_network, count_parameters
from .normalize import NORMALIZATION_RULE

__all__ = ["FORMAT_VERSION", "DEFAULT_MODEL_PATH", "save_checkpoint", "load_checkpoint", "zeta_for_acceleration",
           "checkpoint_paths", "sha256_file"]

FORMAT_VERSION = 1
DEFAULT_MODEL_PATH = Path(__file__).resolve().parent / "models" / "flair_default.json"

# Card fields the caller provides to save_checkpoint (the rest are filled in from the network).
_CALLER_FIELDS = ("training_data", "zeta", "image_size")


def checkpoint_paths(path: str | os.PathLike) -> tuple[Path, Path]:
    """(card .json, weights .safetensors) for a stem, a .json or a .safetensors path.

    Raises ValueError for any other suffix (.pt, .pth, .ckpt, .pkl: pickles are never read).
    """
    path = Path(path)
    if path.suffix in (".json", ".safetensors"):
        stem = path.with_suffix("")
    elif path.suffix in ("", ) or not path.suffix[1:].isalpha():
        stem = path
    else:
        raise ValueError(f"checkpoint path {str(path)!r} has suffix {path.suffix!r}; give the stem, the .json model "
                         f"card or the .safetensors weights (pickled .pt/.pth/.ckpt/.pkl files are never read; "
                         f"convert them offline with dpm_core.checkpoints.save_checkpoint)")
    return stem.with_name(stem.name + ".json"), stem.with_name(stem.name + ".safetensors")


def sha256_file(path: str | os.PathLike) -> str:
    """Hex sha256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _check_zeta_table(zeta) -> dict[str, float]:
    if not isinstance(zeta, dict):
        raise ValueError(f"card['zeta'] must be a dict acceleration -> ζ, e.g. {{'2': 1.0, '4': 1.0}}; got {zeta!r}")
    table = {}
    for key, value in zeta.items():
        try:
            R, z = float(key), float(value)
        except (TypeError, ValueError):
            raise ValueError(f"card['zeta'] entry {key!r}: {value!r} is not a number pair (acceleration, ζ)") from None
        if not (R >= 1 and z > 0):
            raise ValueError(f"card['zeta'] entry {key!r}: {value!r} needs acceleration >= 1 and ζ > 0")
        table[f"{R:g}"] = z
    return table


def save_checkpoint(path: str | os.PathLike, precond: EDMPrecond, card: dict) -> tuple[Path, Path]:
    """Write ``<name>.safetensors`` (weights of ``precond.net``) and ``<name>.json`` (model card).

    Args:
        path: stem, or a .json / .safetensors path (both files are written next to each other).
        precond: the denoiser to save (pass the EMA copy for shipping). Its network must come from
            :func:`dpm_core.networks.build_network` classes (it carries ``arch`` and ``arch_kwargs``).
        card: caller-provided fields: ``training_data`` (str, description of the data), ``zeta`` (dict
            acceleration -> ζ), ``image_size`` ([H, W] trained on); optional ``training`` (dict, free-form: epochs,
            lr, EMA, git commit, ...) and any other JSON-serialisable notes. A ``normalization`` entry, if given,
            must equal :data:`dpm_core.normalize.NORMALIZATION_RULE`.
    Returns: (card path, weights path).
    """
    card_path, weights_path = checkpoint_paths(path)
    missing = [k for k in _CALLER_FIELDS if k not in card]
    if missing:
        raise ValueError(f"the model card is missing {missing}; provide training_data (str), zeta (e.g. "
                         f"{{'2': 1.0, '4': 1.0}}) and image_size ([H, W]) when saving")
    if card.get("normalization", NORMALIZATION_RULE) != NORMALIZATION_RULE:
        raise ValueError(f"card['normalization'] is {card['normalization']!r} but this code normalizes with "
                         f"{NORMALIZATION_RULE!r}; a model is only valid under the rule it was trained with")
    image_size = card["image_size"]
    if not (isinstance(image_size, (list, tuple)) and len(image_size) == 2 and all(int(s) > 0 for s in image_size)):
        raise ValueError(f"card['image_size'] must be [H, W] positive integers; got {image_size!r}")
    net = precond.net
    if not hasattr(net, "arch") or not hasattr(net, "arch_kwargs"):
        raise ValueError(f"cannot save a {type(net).__name__}: only networks of dpm_core.networks (UNet, NCSNv2) "
                         f"that record arch and arch_kwargs can be rebuilt at load time")

    # Weights first (atomic rename), then the card that carries their hash.
    card_path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().to("cpu", copy=True).contiguous() for k, v in net.state_dict().items()}
    tmp = weights_path.with_name(weights_path.name + ".tmp")
    # One metadata key: safetensors writes metadata in hash-map order, so two keys made the bytes (and the card's
    # sha256) differ between saves of the same tensors. The card carries the architecture.
    save_file(tensors, str(tmp), metadata={"format": "pt"})
    os.replace(tmp, weights_path)

    full = {k: v for k, v in card.items() if k not in ("sha256", "weights_file")}
    full.update(
        format_version=FORMAT_VERSION,
        arch=net.arch,
        arch_kwargs=net.arch_kwargs,
        sigma_data=precond.sigma_data,
        sigma_min=precond.sigma_min,
        sigma_max=precond.sigma_max,
        precond=precond.precond,
        normalization=NORMALIZATION_RULE,
        zeta=_check_zeta_table(card["zeta"]),
        image_size=[int(s) for s in image_size],
        parameter_count=count_parameters(net),
        training=card.get("training", {}),
        weights_file=weights_path.name,
        sha256=sha256_file(weights_path),
    )
    tmp = card_path.with_name(card_path.name + ".tmp")
    tmp.write_text(json.dumps(full, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, card_path)
    return card_path, weights_path


def load_checkpoint(path: str | os.PathLike, device: str | torch.device = "cpu") -> tuple[EDMPrecond, dict]:
    """Load a denoiser and its model card (safetensors only; nothing is unpickled).

    Args:
        path: stem, .json card or .safetensors weights of a checkpoint written by :func:`save_checkpoint`.
        device: where to put the network.
    Returns: (precond, card): the :class:`EDMPrecond` in eval mode with parameters frozen (``requires_grad`` False;
        fine-tuning calls ``.train().requires_grad_(True)``), and the card dict.
    Raises:
        FileNotFoundError: no card or weights file (for :data:`DEFAULT_MODEL_PATH`: says how to create it).
        ValueError: unsupported format, other normalization rule, sha256 mismatch, or card and weights that do not
            fit (missing, unexpected or shape-mismatched keys).
    """
    card_path, weights_path = checkpoint_paths(path)
    if not card_path.is_file():
        if card_path.resolve() == DEFAULT_MODEL_PATH:
            raise FileNotFoundError(
                f"the default model {DEFAULT_MODEL_PATH} does not exist yet: train one (dpm-pretrain, then "
                f"dpm-finetune) and save it there with dpm_core.checkpoints.save_checkpoint("
                f"'{DEFAULT_MODEL_PATH.with_suffix('')}', ema_precond, card), or pass the path of another model")
        raise FileNotFoundError(f"model card {card_path} not found (a checkpoint is <name>.json + <name>.safetensors)")
    try:
        card = json.loads(card_path.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"model card {card_path} is not valid JSON: {err}") from err

    # Card checks.
    if not isinstance(card, dict) or card.get("format_version") != FORMAT_VERSION:
        got = card.get("format_version") if isinstance(card, dict) else type(card).__name__
        raise ValueError(f"model card {card_path} has format_version {got!r}; this code reads version "
                         f"{FORMAT_VERSION}")
    missing = [k for k in ("arch", "arch_kwargs", "sigma_data", "sigma_min", "sigma_max", "normalization", "sha256")
               if k not in card]
    if missing:
        raise ValueError(f"model card {card_path} lacks the fields {missing}; re-save it with save_checkpoint")
    if card["normalization"] != NORMALIZATION_RULE:
        raise ValueError(f"model card {card_path} was trained with normalization {card['normalization']!r} but this "
                         f"code normalizes with {NORMALIZATION_RULE!r}; the model would see wrongly scaled images. "
                         f"Retrain or fine-tune it under the current rule")
    weights_path = card_path.with_name(card.get("weights_file", weights_path.name))
    if not weights_path.is_file():
        raise FileNotFoundError(f"weights {weights_path} named by model card {card_path} not found")

    # Integrity: the hash of the exact bytes we are about to read.
    digest = sha256_file(weights_path)
    if digest != card["sha256"]:
        raise ValueError(f"sha256 mismatch for weights file {weights_path}: the card {card_path.name} records "
                         f"{card['sha256']} but the file hashes to {digest}; the file is corrupt or was replaced")

    # Build explicitly from the card, then load with strict key and shape checks.
    precond = build_network(card["arch"], card["arch_kwargs"], sigma_data=card["sigma_data"],
                            sigma_min=card["sigma_min"], sigma_max=card["sigma_max"])
    if card.get("precond", precond.precond) != precond.precond:
        raise ValueError(f"model card {card_path} says precond {card['precond']!r} but architecture "
                         f"{card['arch']!r} uses {precond.precond!r}")
    try:
        state = load_file(str(weights_path), device="cpu")
    except SafetensorError as err:
        raise ValueError(f"weights file {weights_path} is not a readable safetensors file: {err}") from err
    expected = precond.net.state_dict()
    missing_keys = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    shape_mismatch = sorted(f"{k}: card {tuple(expected[k].shape)} vs weights {tuple(state[k].shape)}"
                            for k in set(expected) & set(state) if expected[k].shape != state[k].shape)
    if missing_keys or unexpected or shape_mismatch:
        def head(items):
            return items[:8] + ([f"... {len(items) - 8} more"] if len(items) > 8 else [])
        raise ValueError(f"model card {card_path.name} (arch {card['arch']!r}, arch_kwargs {card['arch_kwargs']}) "
                         f"does not fit weights {weights_path.name}: missing keys {head(missing_keys)}, unexpected "
                         f"keys {head(unexpected)}, shape mismatches {head(shape_mismatch)}")
    precond.net.load_state_dict(state, strict=True)
    precond.requires_grad_(False)
    return precond.to(device).eval(), card


def zeta_for_acceleration(card: dict, R: float) -> float:
    """Data-consistency weight ζ for acceleration ``R`` from the card's ``zeta`` table.

    Linear interpolation in R between table entries, the nearest endpoint outside the table, 1.0 when the card has
    no table (the paper's default).
    """
    table = card.get("zeta") or {}
    if not table:
        return 1.0
    points = sorted((float(k), float(v)) for k, v in table.items())
    Rs = [p[0] for p in points]
    R = float(R)
    if R <= Rs[0]:
        return points[0][1]
    if R >= Rs[-1]:
        return points[-1][1]
    i = bisect.bisect_right(Rs, R)
    (R0, z0), (R1, z1) = points[i - 1], points[i]
    return z0 + (z1 - z0) * (R - R0) / (R1 - R0)
