"""Which model reconstructs which exam: the contrast from the sequence parameters, then a model that serves it.

A FLAIR prior must not reconstruct a T1-weighted exam. The contrast class of a scan (:data:`CONTRASTS`, or
"unknown") comes first from its timing — TR, TE, TI in ms, what the physics of the image depends on — and, where the
header has no usable timing, from its protocol name and sequence type (:func:`classify_contrast`). Every model card
says which classes it serves (card key ``"serves"``; a card without one serves the classes of the contrasts it was
trained on, ``training.data.contrasts``). :func:`choose_model` takes a site's own models before the shipped ones and
a fine-tuned model before a pre-trained one; a scan of unknown contrast gets the model that serves "unknown" (the
pre-trained foundation model, trained on several contrasts), never a single-contrast fine-tune.

Shipped models: ``dpm_core/models/*.json`` (each next to its ``.safetensors``). A site registers models by putting
their cards in a folder and naming that folder (the gadget's ``model_dirs`` property).
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

__all__ = ["CONTRASTS", "UNKNOWN", "classify_contrast", "ModelEntry", "model_entries", "choose_model",
           "SHIPPED_MODELS_DIR", "FLAIR_TI_MIN_MS", "STIR_TI_MAX_MS"]

CONTRASTS = ("FLAIR", "T1", "T2", "PD")
UNKNOWN = "unknown"
SHIPPED_MODELS_DIR = Path(__file__).resolve().parent / "models"

# Timing rules (ms). CSF (T1 ≈ 4000 ms at 1.5–3 T) is nulled at TI ≈ ln 2 · T1 ≈ 2000–2800 ms with a long TR: FLAIR.
# Fat (T1 ≈ 250–350 ms) is nulled at TI ≈ 150–250 ms: STIR, T2-like. An inversion in between (MPRAGE, T1-FLAIR,
# TI ≈ 700–1200 ms) gives T1 contrast. Without an inversion, spin-echo weighting follows TR and TE.
FLAIR_TI_MIN_MS = 1500.0        # TI at or above: fluid-attenuated (with TR >= FLAIR_TR_MIN_MS)
FLAIR_TR_MIN_MS = 4000.0
STIR_TI_MAX_MS = 300.0          # TI at or below: short-tau inversion recovery (T2-like)
T1_TR_MAX_MS = 1200.0           # short TR ...
T1_TE_MAX_MS = 30.0             # ... and short TE: T1-weighted
LONG_TR_MIN_MS = 2000.0         # long TR with
T2_TE_MIN_MS = 60.0             # long TE: T2-weighted; with
PD_TE_MAX_MS = 40.0             # short TE: proton-density weighted

# Name rules, tried in this order (a "T1 FLAIR" is T1-weighted; "T2 FLAIR" and "dark fluid" are FLAIR).
_NAME_RULES = (
    ("T1", re.compile(r"T1|MPRAGE|MP-RAGE|SPGR|FLASH|TFL|BRAVO|VIBE", re.I)),
    ("FLAIR", re.compile(r"FLAIR|DARK.?FLUID|TIRM|T2F", re.I)),
    ("T2", re.compile(r"T2|STIR", re.I)),
    ("PD", re.compile(r"PD|PROTON", re.I)),
)


def _positive(value) -> float | None:
    try:
        value = float(value)
    except (TypeError, ValueError):
        return None
    return value if value > 0 else None


def classify_contrast(protocol_name: str | None = None, sequence_type: str | None = None, tr_ms=None, te_ms=None,
                      ti_ms=None) -> tuple[str, str]:
    """The contrast class of a scan and why: (one of :data:`CONTRASTS` or "unknown", reason).

    Args: the header's measurementInformation.protocolName, sequenceParameters.sequence_type and the first TR, TE,
    TI (ms; None, 0 or missing mean "not given").
    """
    tr, te, ti = _positive(tr_ms), _positive(te_ms), _positive(ti_ms)
    if ti is not None:
        if ti >= FLAIR_TI_MIN_MS and (tr is None or tr >= FLAIR_TR_MIN_MS):
            return "FLAIR", f"inversion TI {ti:g} ms nulls fluid (TR {tr:g} ms)" if tr else f"inversion TI {ti:g} ms"
        if ti <= STIR_TI_MAX_MS:
            return "T2", f"short-tau inversion TI {ti:g} ms (STIR)"
        return "T1", f"inversion TI {ti:g} ms" + (f" with TR {tr:g} ms" if tr else "") + " gives T1 contrast"
    if tr is not None and te is not None:
        if tr <= T1_TR_MAX_MS and te <= T1_TE_MAX_MS:
            return "T1", f"short TR {tr:g} ms and TE {te:g} ms"
        if tr >= LONG_TR_MIN_MS and te >= T2_TE_MIN_MS:
            return "T2", f"long TR {tr:g} ms and TE {te:g} ms"
        if tr >= LONG_TR_MIN_MS and te <= PD_TE_MAX_MS:
            return "PD", f"long TR {tr:g} ms, short TE {te:g} ms"
    for field, text in (("protocol name", protocol_name), ("sequence type", sequence_type)):
        for contrast, pattern in _NAME_RULES:
            if text and pattern.search(str(text)):
                return contrast, f"{field} {str(text)!r}"
    timing = ", ".join(f"{k} {v:g} ms" for k, v in (("TR", tr), ("TE", te), ("TI", ti)) if v is not None)
    return UNKNOWN, (f"{'timing ' + timing if timing else 'no TR/TE/TI'}, protocol name {protocol_name!r}, "
                     f"sequence type {sequence_type!r}: no rule names a contrast")


@dataclass(frozen=True)
class ModelEntry:
    """One registered model: its card, the contrast classes it serves, and where it comes from."""
    name: str
    card_path: Path
    serves: tuple[str, ...]
    stage: str              # "finetune" | "pretrain" | ... (card training.stage)
    site: bool              # registered by the site (True) or shipped with dpm_core (False)


def _served_classes(card: dict, path: Path) -> tuple[str, ...]:
    serves = card.get("serves")
    if serves is None:
        trained = (card.get("training") or {}).get("data", {}).get("contrasts") or []
        serves = sorted({classify_contrast(protocol_name=c)[0] for c in trained} - {UNKNOWN})
    serves = tuple(str(s) for s in serves)
    bad = [s for s in serves if s not in CONTRASTS + (UNKNOWN,)]
    if bad or not serves:
        raise ValueError(f"model card {path}: 'serves' must list classes of {CONTRASTS + (UNKNOWN,)}; got "
                         f"{list(serves)} (or give the card training.data.contrasts)")
    return serves


def model_entries(site_dirs: Iterable[str | Path] = ()) -> list[ModelEntry]:
    """Every registered model: the site's folders (in the order given) first, then the shipped models.

    A folder's models are its ``*.json`` cards that have a ``.safetensors`` beside them. Raises ValueError for a folder
    that does not exist or a card that cannot be read.
    """
    entries = []
    for folder, site in [(Path(d), True) for d in site_dirs] + [(SHIPPED_MODELS_DIR, False)]:
        if not folder.is_dir():
            raise ValueError(f"model folder {folder} does not exist; model_dirs must name folders of model cards "
                             "(.json next to .safetensors)")
        for card_path in sorted(folder.glob("*.json")):
            if not card_path.with_suffix(".safetensors").exists():
                continue
            try:
                card = json.loads(card_path.read_text())
            except (OSError, json.JSONDecodeError) as exc:
                raise ValueError(f"model card {card_path} cannot be read: {exc}") from exc
            entries.append(ModelEntry(card_path.stem, card_path, _served_classes(card, card_path),
                                      str((card.get("training") or {}).get("stage", "")), site))
    return entries


def choose_model(contrast: str, entries: Sequence[ModelEntry]) -> tuple[ModelEntry, str]:
    """The model for a scan of class ``contrast`` and why: (entry, reason).

    Among the entries that serve ``contrast``: site models before shipped ones, fine-tuned before pre-trained, then
    the registration order. Raises ValueError when none serves it (name the model with the ``model`` property, or
    register one whose card serves the class).
    """
    candidates = [e for e in entries if contrast in e.serves]
    if not candidates:
        raise ValueError(f"no registered model serves {contrast} scans (models: "
                         f"{ {e.name: list(e.serves) for e in entries} }); set the model property to a card, or add "
                         f"a model whose card lists {contrast!r} in 'serves' to model_dirs")
    order = sorted(range(len(candidates)), key=lambda i: (not candidates[i].site,
                                                          candidates[i].stage != "finetune", i))
    entry = candidates[order[0]]
    return entry, f"{contrast} scan -> {entry.name} ({'site' if entry.site else 'shipped'} model serving " \
                  f"{'/'.join(entry.serves)})"
