"""Read fastMRI multi-coil HDF5 volumes (real fastMRI brain files or the synthetic corpus) slice by slice.

The fastMRI file layout (facebookresearch/fastMRI, ``mri_data.py``): ``kspace`` [slices, coils, readout, phase]
complex64 with the readout 2x oversampled (encodedSpace.matrixSize.x = 2 * reconSpace.matrixSize.x; e.g. 640 x 320 for
brain), ``reconstruction_rss`` [slices, recon_x, recon_y] float32 (rows = readout), ``ismrmrd_header`` (XML bytes),
attrs ``acquisition`` (AXFLAIR, AXT1, AXT1POST, AXT1PRE, AXT2), ``max``, ``norm``, ``patient_id``. Note that the
readout is the second-to-last axis on disk.

What this module returns is in the project convention (DESIGN.md §2): k-space [C, H, W] complex64 with ky = H the
phase-encode axis and kx = W the readout, readout oversampling removed (central half of the readout in image space,
with dpm_core.fft), i.e. the file's slice transposed over its last two axes after the crop. The target is the file's
``reconstruction_rss`` transposed the same way, [recon_y, recon_x].

The index reads every file's attributes and header once; ``__getitem__`` opens the file and reads one slice.
"""
from __future__ import annotations

import glob
import os
import xml.etree.ElementTree as ET
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from typing import Any, NamedTuple

import h5py
import numpy as np
import torch

from dpm_core import coils

__all__ = ["remove_readout_oversampling", "parse_header", "VolumeInfo", "FastMRIVolumeIndex", "FastMRISample",
           "FastMRISliceDataset"]

_NS = {"m": "http://www.ismrm.org/ISMRMRD"}


def remove_readout_oversampling(kspace: torch.Tensor, readout_size: int) -> torch.Tensor:
    """Keep the central ``readout_size`` samples of the readout FOV (:func:`dpm_core.coils.remove_readout_oversampling`,
    the same operation the gadget applies to scanner data).

    Args:
        kspace: complex [..., H, W_os] k-space, readout on the last axis (project convention).
        readout_size: W, the recon readout size (W <= W_os; W_os = 2 W for fastMRI data).
    Returns: complex64 [..., H, W] k-space of the central W pixels of the readout (image-space crop).
    """
    if not kspace.is_complex() or kspace.ndim < 2:
        raise ValueError(f"kspace must be a complex tensor [..., H, W_os]; got {tuple(kspace.shape)} {kspace.dtype}")
    w_os = kspace.shape[-1]
    if not 0 < readout_size <= w_os:
        raise ValueError(f"readout_size {readout_size} must be within 1..{w_os} (the readout length of kspace)")
    return coils.remove_readout_oversampling(kspace.to(torch.complex64), size=readout_size)


def _find(root: ET.Element, path: str) -> ET.Element | None:
    return root.find("/".join(f"m:{p}" for p in path.split("/")), _NS)


def _num(root: ET.Element, path: str, cast=float):
    el = _find(root, path)
    if el is None or el.text is None:
        return None
    try:
        return cast(el.text.strip()) if cast is not int else int(float(el.text.strip()))
    except ValueError:
        return None


def parse_header(xml: bytes | str) -> dict[str, Any]:
    """The header fields used for training and reconstruction, from an ISMRMRD XML header.

    Parsed with ElementTree (tolerant of the older schema of real fastMRI headers). Returns a dict with
    ``encoding_size`` and ``recon_size`` (x = readout, y = phase, z), ``encoded_fov_mm``, ``recon_fov_mm``,
    ``padding_left``/``padding_right`` (measured phase-encode range, as fastMRI computes it), ``TR``, ``TE``, ``TI``,
    ``flip_angle_deg`` (first values, ms/deg, None if absent), ``field_strength_T``, ``receiver_channels``,
    ``protocol_name``, ``system_vendor``, ``system_model``.
    """
    root = ET.fromstring(xml)
    enc = "encoding/encodedSpace"
    rec = "encoding/reconSpace"
    size = lambda base: tuple(_num(root, f"{base}/matrixSize/{a}", int) for a in "xyz")      # noqa: E731
    fov = lambda base: tuple(_num(root, f"{base}/fieldOfView_mm/{a}") for a in "xyz")       # noqa: E731
    out: dict[str, Any] = {"encoding_size": size(enc), "recon_size": size(rec),
                           "encoded_fov_mm": fov(enc), "recon_fov_mm": fov(rec)}
    center = _num(root, "encoding/encodingLimits/kspace_encoding_step_1/center", int)
    maximum = _num(root, "encoding/encodingLimits/kspace_encoding_step_1/maximum", int)
    if center is not None and maximum is not None and out["encoding_size"][1] is not None:
        out["padding_left"] = out["encoding_size"][1] // 2 - center
        out["padding_right"] = out["padding_left"] + maximum + 1
    else:
        out["padding_left"] = out["padding_right"] = None
    for key, path in (("TR", "TR"), ("TE", "TE"), ("TI", "TI"), ("flip_angle_deg", "flipAngle_deg")):
        out[key] = _num(root, f"sequenceParameters/{path}")
    out["field_strength_T"] = _num(root, "acquisitionSystemInformation/systemFieldStrength_T")
    out["receiver_channels"] = _num(root, "acquisitionSystemInformation/receiverChannels", int)
    for key, path in (("protocol_name", "measurementInformation/protocolName"),
                      ("system_vendor", "acquisitionSystemInformation/systemVendor"),
                      ("system_model", "acquisitionSystemInformation/systemModel")):
        el = _find(root, path)
        out[key] = el.text if el is not None else None
    return out


def _attr(value):
    if isinstance(value, bytes):
        return value.decode()
    if isinstance(value, np.generic):
        return value.item()
    return value


class VolumeInfo(NamedTuple):
    """One indexed file: path, ``acquisition`` attribute, slice count, on-disk kspace shape [S, C, RO, PE], parsed
    header fields (:func:`parse_header`) and file attributes."""
    fname: str
    acquisition: str
    num_slices: int
    kspace_shape: tuple[int, ...]
    header: dict[str, Any]
    attrs: dict[str, Any]


def _expand(paths: str | os.PathLike | Iterable[str | os.PathLike]) -> list[str]:
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    files: list[str] = []
    for p in paths:
        p = os.fspath(p)
        if os.path.isdir(p):
            files.extend(sorted(glob.glob(os.path.join(p, "*.h5"))))
        elif os.path.isfile(p):
            files.append(p)
        else:
            raise ValueError(f"{p} is neither an HDF5 file nor a folder; pass fastMRI .h5 files or their folder")
    return files


def _norm_list(names: Sequence[str] | str | None) -> set[str] | None:
    if names is None:
        return None
    if isinstance(names, str):
        names = [n for n in names.split(",") if n.strip()]
    return {n.strip().upper() for n in names}


class FastMRIVolumeIndex:
    """The fastMRI volumes found under ``paths``, selected by their ``acquisition`` attribute.

    Args:
        paths: a folder (all ``*.h5`` in it, sorted), a file, or a list of both.
        include: acquisitions to keep (e.g. ``["AXFLAIR"]``); None keeps all.
        exclude: acquisitions to drop (e.g. ``["AXFLAIR"]`` for a non-FLAIR pre-training corpus).
    Files without a ``kspace`` dataset are refused (ValueError); the comparison is case-insensitive.
    """

    def __init__(self, paths, include: Sequence[str] | str | None = None,
                 exclude: Sequence[str] | str | None = None):
        inc, exc = _norm_list(include), _norm_list(exclude)
        self.volumes: list[VolumeInfo] = []
        for fname in _expand(paths):
            with h5py.File(fname, "r") as f:
                if "kspace" not in f:
                    raise ValueError(f"{fname} has no 'kspace' dataset; it is not a fastMRI file")
                acq = str(_attr(f.attrs.get("acquisition", "")))
                if (inc is not None and acq.upper() not in inc) or (exc is not None and acq.upper() in exc):
                    continue
                shape = tuple(int(n) for n in f["kspace"].shape)
                if len(shape) != 4:
                    raise ValueError(f"{fname}: kspace has shape {shape}; expected multi-coil [S, C, RO, PE]")
                header = parse_header(f["ismrmrd_header"][()]) if "ismrmrd_header" in f else {}
                attrs = {k: _attr(v) for k, v in f.attrs.items()}
            self.volumes.append(VolumeInfo(fname, acq, shape[0], shape, header, attrs))

    def __len__(self) -> int:
        return len(self.volumes)

    def __iter__(self):
        return iter(self.volumes)

    def __getitem__(self, i: int) -> VolumeInfo:
        return self.volumes[i]

    def acquisitions(self) -> dict[str, int]:
        """Number of volumes per acquisition."""
        return dict(Counter(v.acquisition for v in self.volumes))

    @property
    def num_slices(self) -> int:
        return sum(v.num_slices for v in self.volumes)


class FastMRISample(NamedTuple):
    """One slice, project convention.

    Attributes:
        kspace: [C, H, W] complex64, ky = H (phase encode), kx = W (readout, oversampling removed).
        target: [H_r, W_r] float32 reconstruction_rss of the slice (transposed to the same orientation), or None.
        fname: file path.
        slice_idx: slice index in the volume.
        header: parsed header fields (:func:`parse_header`).
        attrs: file attributes (acquisition, max, norm, patient_id, ...).
    """
    kspace: torch.Tensor
    target: torch.Tensor | None
    fname: str
    slice_idx: int
    header: dict[str, Any]
    attrs: dict[str, Any]


class FastMRISliceDataset(torch.utils.data.Dataset):
    """Slices of the indexed volumes; each item is a :class:`FastMRISample`, or ``transform(sample)``.

    Args:
        index: a :class:`FastMRIVolumeIndex`, or paths (then ``include``/``exclude`` build the index).
        include, exclude: acquisition selection when ``index`` is paths.
        transform: callable applied to each :class:`FastMRISample` (e.g. masking, normalization).
        slice_range: (start, stop) slice indices kept in every volume (Python slice semantics, e.g. (0, -2) drops
            the last two); None keeps all.
    """

    def __init__(self, index, include=None, exclude=None, transform: Callable[[FastMRISample], Any] | None = None,
                 slice_range: tuple[int | None, int | None] | None = None):
        self.index = index if isinstance(index, FastMRIVolumeIndex) else FastMRIVolumeIndex(index, include, exclude)
        self.transform = transform
        self.examples: list[tuple[int, int]] = []
        for v, vol in enumerate(self.index.volumes):
            rng = range(vol.num_slices)
            if slice_range is not None:
                rng = rng[slice(*slice_range)]
            self.examples.extend((v, s) for s in rng)

    def __len__(self) -> int:
        return len(self.examples)

    def __getitem__(self, i: int):
        v, s = self.examples[i]
        vol = self.index.volumes[v]
        with h5py.File(vol.fname, "r") as f:
            k = torch.from_numpy(np.asarray(f["kspace"][s], dtype=np.complex64))          # [C, RO_os, PE]
            target = torch.from_numpy(np.asarray(f["reconstruction_rss"][s], dtype=np.float32)).T.contiguous() \
                if "reconstruction_rss" in f else None
        k = k.transpose(-1, -2)                                                             # [C, PE, RO_os]
        recon_x = vol.header.get("recon_size", (None,))[0]
        readout = recon_x if recon_x and recon_x < k.shape[-1] else k.shape[-1]
        sample = FastMRISample(remove_readout_oversampling(k, readout).contiguous(), target, vol.fname, s,
                               vol.header, vol.attrs)
        return self.transform(sample) if self.transform is not None else sample
