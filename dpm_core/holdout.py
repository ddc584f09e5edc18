"""Held-out phase-encode lines: the one split behind every check that scores a reconstruction without a reference.

Measured lines are set aside, the reconstruction is made from the others, and it is scored by how well it predicts
the lines it did not see (an SSDU-style split: Yaman et al. 2020). Three parts of the product do this, all with
:func:`holdout_folds`:
- the held-out ζ rule of the pnp sampler (:func:`dpm_core.zeta_rules.holdout_zeta`, several folds on small matrices);
- dds_lora's adapter check (:mod:`dpm_core.samplers.dds_lora`: a step is kept only if the held-out error falls);
- the undersampled fine-tune's epoch selection (``training.undersampled.heldout_line_error``).

Only lines outside the ACS block are held out: the coil maps are calibrated from that block, and a reconstruction
scored on lines its maps were fitted to would be scored on data it has seen.
"""
from __future__ import annotations

import numpy as np
import torch

from .masks import find_acs_lines

__all__ = ["HOLDOUT_FRACTION", "holdout_candidates", "holdout_folds"]

HOLDOUT_FRACTION = 0.2    # of the measured lines outside the ACS block, per fold (SSDU's split is 0.4 for training)


def holdout_candidates(lines: np.ndarray) -> np.ndarray:
    """Indices of the measured lines outside the ACS block (:func:`dpm_core.masks.find_acs_lines`; every measured line
    when the centre line is not measured: a volume calibrated from other data, as with interleaved calibration).

    lines: [H] bool, the measured phase-encode lines of one slice. Returns int indices, ascending.
    """
    lines = np.asarray(lines).astype(bool).reshape(-1)
    measured = np.flatnonzero(lines)
    acs = find_acs_lines(lines, missing_ok=True)
    return measured[(measured < acs.start) | (measured >= acs.stop)]


def holdout_folds(lines: np.ndarray, fraction: float, generator: torch.Generator,
                  min_lines: int = 1) -> list[np.ndarray]:
    """Disjoint seeded sets of the measured lines outside the ACS block, each round(``fraction`` · n) of the n.

    The folds are consecutive runs of one seeded permutation of the candidates (``torch.randperm`` with
    ``generator``, so a draw is reproducible on every device); they are added until together they hold out at least
    ``min_lines`` lines or no whole fold is left. Fold 0 is the same draw for every ``min_lines``.

    lines: [H] bool, the measured phase-encode lines of one slice. Returns the folds as [H] bool arrays; none when
    round(fraction · n) is 0 (2 or fewer candidate lines at the default fraction).
    """
    if not 0 < fraction < 1:
        raise ValueError(f"held-out fraction {fraction} must be in (0, 1)")
    lines = np.asarray(lines).astype(bool).reshape(-1)
    candidates = holdout_candidates(lines)
    count = int(round(fraction * candidates.size))
    if count == 0:
        return []
    order = candidates[torch.randperm(candidates.size, generator=generator).numpy()]
    folds = []
    for start in range(0, candidates.size - count + 1, count):
        if folds and len(folds) * count >= min_lines:
            break
        held = np.zeros_like(lines)
        held[order[start:start + count]] = True
        folds.append(held)
    return folds
