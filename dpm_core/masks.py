"""1-D Cartesian undersampling masks over the phase-encode axis (ky = H of k-space [S, C, H, W]).

A mask is a bool numpy array [H]: True where a phase-encode line is measured. Every mask has a fully sampled
auto-calibration (ACS) block of ``num_acs`` lines centred on the k-space centre line ``H // 2`` (the centre of the
centred FFT, see :mod:`dpm_core.fft`).

Two families, as in fastMRI and in csgm-mri-langevin:
- ``equispaced_mask``: every R-th line plus the ACS block. With ``exact=False`` (what scanners and csgm do: GRAPPA-style
  nominal R) the ACS lines come on top, so the *effective* acceleration is lower than R (W=320, R=2/4/8 ->
  1.85/3.23/6.27 with 26 ACS lines). With ``exact=True`` the spacing is stretched, fastMRI's
  ``EquispacedMaskFractionFunc`` rule, so that ACS plus equispaced lines total round(H / R).
- ``random_mask``: the ACS block plus lines drawn uniformly without replacement from the rest, exactly round(H / R) in
  all. Seeded; never touches global random state.
Always report :func:`effective_acceleration`.
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np

__all__ = ["phase_encode_mask", "acs_slice", "equispaced_mask", "random_mask", "effective_acceleration",
           "find_acs_lines", "make_mask", "Sampling", "sampling_of", "acs_of", "readout_block", "samples_of"]

DEFAULT_NUM_ACS = 24   # fastMRI / EDM practice (DESIGN.md §2)


def acs_slice(num_lines: int, num_acs: int) -> slice:
    """Index range of the ACS block: ``num_acs`` lines centred on line ``num_lines // 2``."""
    if not 0 < num_acs <= num_lines:
        raise ValueError(f"num_acs={num_acs} must be between 1 and the number of lines {num_lines}")
    start = num_lines // 2 - num_acs // 2
    return slice(start, start + num_acs)


def _check_acceleration(acceleration: float) -> None:
    if not acceleration >= 1:
        raise ValueError(f"acceleration must be >= 1, got {acceleration}")


def equispaced_mask(num_lines: int, acceleration: float, num_acs: int = DEFAULT_NUM_ACS, exact: bool = False,
                    offset: int | None = None) -> np.ndarray:
    """Equispaced lines plus an ACS block. Returns bool [num_lines].

    Args:
        num_lines: H, the number of phase-encode lines.
        acceleration: nominal R (``exact=False``) or the target effective R (``exact=True``).
        num_acs: ACS lines.
        exact: stretch the spacing so that the total number of lines is round(H / R).
        offset: first sampled line of the lattice; default aligns the lattice with the centre line H // 2.
    """
    _check_acceleration(acceleration)
    mask = np.zeros(num_lines, dtype=bool)
    mask[acs_slice(num_lines, num_acs)] = True
    if exact:
        target = int(round(num_lines / acceleration))
        if target <= num_acs:
            return mask
        # Spacing that places (target - num_acs) lines outside the ACS block (fastMRI's fraction rule).
        spacing = (num_lines - num_acs) / (target - num_acs)
    else:
        spacing = float(acceleration)
    if offset is None:
        offset = (num_lines // 2) % max(int(round(spacing)), 1)
    lines = np.round(np.arange(offset, num_lines, spacing)).astype(int)
    mask[lines[lines < num_lines]] = True
    return mask


def random_mask(num_lines: int, acceleration: float, num_acs: int = DEFAULT_NUM_ACS, seed: int = 0) -> np.ndarray:
    """ACS block plus uniformly random lines, exactly round(H / R) lines in all. Returns bool [num_lines]."""
    _check_acceleration(acceleration)
    rng = np.random.default_rng(seed)
    mask = np.zeros(num_lines, dtype=bool)
    mask[acs_slice(num_lines, num_acs)] = True
    target = int(round(num_lines / acceleration))
    free = np.flatnonzero(~mask)
    extra = max(target - num_acs, 0)
    mask[rng.choice(free, size=extra, replace=False)] = True
    return mask


def make_mask(kind: str, num_lines: int, acceleration: float, num_acs: int = DEFAULT_NUM_ACS,
              seed: int = 0) -> np.ndarray:
    """Build a mask by name: 'equispaced' (nominal R), 'equispaced_exact' or 'random'."""
    if kind == "equispaced":
        return equispaced_mask(num_lines, acceleration, num_acs)
    if kind == "equispaced_exact":
        return equispaced_mask(num_lines, acceleration, num_acs, exact=True)
    if kind == "random":
        return random_mask(num_lines, acceleration, num_acs, seed=seed)
    raise ValueError(f"unknown mask kind {kind!r}; use 'equispaced', 'equispaced_exact' or 'random'")


def effective_acceleration(mask: np.ndarray) -> float:
    """H / (number of measured lines) of a 1-D mask [H]."""
    mask = np.asarray(mask).astype(bool).reshape(-1)
    count = int(mask.sum())
    if count == 0:
        raise ValueError("mask samples no line")
    return mask.size / count


def phase_encode_mask(mask, height: int, common: bool = False) -> np.ndarray:
    """The 1-D bool phase-encode mask [H] of a mask given as [H] or [S, 1, H, 1] (numpy or torch, bool or real).

    A per-slice mask [S, 1, H, 1] must be the same for every slice, unless ``common`` is True: then the lines
    measured in every slice are returned (what coil calibration can use).
    """
    if isinstance(mask, Sampling):
        return mask.mask
    m = np.asarray(mask.detach().cpu() if hasattr(mask, "detach") else mask).astype(bool)
    if m.ndim == 4 and m.shape[1] == 1 and m.shape[2] == height and m.shape[3] == 1:
        if common:
            return m.all(axis=0).reshape(height)
        if not np.all(m == m[:1]):
            raise ValueError("mask differs between slices; reconstruct slices with different sampling separately")
        m = m[0, 0, :, 0]
    if m.ndim != 1 or m.shape[0] != height:
        raise ValueError(f"mask must be [H={height}] (measured phase-encode lines) or [S, 1, H, 1]; "
                         f"got shape {m.shape}")
    return m


def find_acs_lines(mask: np.ndarray, missing_ok: bool = False) -> slice:
    """The contiguous run of measured lines that contains the centre line H // 2 (the ACS block).

    Raises ValueError when the centre line is not measured: without it there is no calibration region; with
    ``missing_ok`` (a volume calibrated from other data) the block is then empty, ``slice(H // 2, H // 2)``.
    """
    mask = np.asarray(mask).astype(bool).reshape(-1)
    centre = mask.size // 2
    if not mask[centre] and missing_ok:
        return slice(centre, centre)
    if not mask[centre]:
        raise ValueError(f"the k-space centre line {centre} is not sampled: no ACS block to calibrate coil maps from; "
                         "acquire ACS lines or pass coil maps")
    start = centre
    while start > 0 and mask[start - 1]:
        start -= 1
    stop = centre + 1
    while stop < mask.size and mask[stop]:
        stop += 1
    return slice(start, stop)


class Sampling(NamedTuple):
    """The sampling of one buffer, derived once (:func:`sampling_of`) and passed down as one value: ``mask`` [H] bool
    (the measured phase-encode lines), ``acs`` (the ACS block, :func:`find_acs_lines`), ``effective_acceleration``,
    ``readout`` [W] bool (the readout samples every measured line holds, one contiguous block around W // 2: an
    asymmetric echo) or None when every line holds the whole readout. Every function that takes a mask also takes a
    Sampling and then re-derives nothing; an operator built from it measures exactly :func:`samples_of`."""
    mask: np.ndarray
    acs: slice
    effective_acceleration: float
    readout: np.ndarray | None = None


def readout_block(readout, width: int) -> np.ndarray | None:
    """A readout mask [W] (bool or real, numpy or torch; None: all measured) checked to be what an asymmetric echo
    measures: one contiguous block of samples holding the centre sample W // 2. None when every sample is measured."""
    if readout is None:
        return None
    r = np.asarray(readout.detach().cpu() if hasattr(readout, "detach") else readout).astype(bool).reshape(-1)
    if r.size != width:
        raise ValueError(f"the readout mask has {r.size} samples but the k-space has W={width}")
    if r.all():
        return None
    measured = np.flatnonzero(r)
    if measured.size == 0 or not r[width // 2] or measured[-1] - measured[0] + 1 != measured.size:
        raise ValueError(f"the measured readout samples ({measured.size} of {width}) are not one block holding the "
                         f"centre sample {width // 2}; only an asymmetric echo (samples missing at one or both ends) "
                         f"is supported")
    return r


def sampling_of(mask, height: int, readout=None, calibrated_elsewhere: bool = False) -> Sampling:
    """A mask ([H] or [S, 1, H, 1], see :func:`phase_encode_mask`) and the measured readout samples ([W] bool,
    :func:`readout_block`; None: all) -> its :class:`Sampling`; a Sampling passes through unchanged. Raises
    ValueError when the centre line is not measured (no ACS block), unless ``calibrated_elsewhere`` (the coil maps,
    scale and noise level come from other data, as with interleaved calibration): then a missing block is an empty
    ``acs`` at H // 2."""
    if isinstance(mask, Sampling):
        if mask.mask.size != height:
            raise ValueError(f"the sampling has {mask.mask.size} lines but the k-space has H={height}")
        if readout is not None:
            raise ValueError("sampling_of: a Sampling carries its own readout mask; pass the phase-encode mask instead")
        return mask
    mask_1d = phase_encode_mask(mask, height)
    readout_1d = None if readout is None else readout_block(readout, np.asarray(readout).reshape(-1).size)
    return Sampling(mask_1d, find_acs_lines(mask_1d, missing_ok=calibrated_elsewhere), effective_acceleration(mask_1d),
                    readout_1d)


def samples_of(sampling: Sampling, lines=None) -> np.ndarray:
    """The measured k-space samples of ``sampling`` (or of its readout on other ``lines`` [H] bool) as a mask for
    :class:`dpm_core.operators.SenseOp`: the lines [H] when every readout sample is measured, else lines x readout
    [H, W]."""
    lines = sampling.mask if lines is None else np.asarray(lines).astype(bool).reshape(-1)
    if sampling.readout is None:
        return lines
    return lines[:, None] & sampling.readout[None, :]


def acs_of(mask, height: int) -> slice:
    """The ACS block of a :class:`Sampling` (as derived), or of a mask: the lines measured in every slice around
    H // 2 (what coil calibration can use)."""
    if isinstance(mask, Sampling):
        return mask.acs
    return find_acs_lines(phase_encode_mask(mask, height, common=True))
