"""Corpus -> cached training targets (the normalized MVUE image of every fully sampled slice), and a Dataset over them.

A target is exactly what inference sees, computed once so that epochs never redo ESPIRiT:

    k-space [S, C, H, W] (fully sampled, readout oversampling removed)
      -> coil maps  = dpm_core.coils.estimate_coil_maps(k, mask=None, method, num_maps=1)   ESPIRiT from the ACS block
      -> image      = dpm_core.combine.mvue(k, maps)                                        [S, H, W] complex64
      -> target     = image / dpm_core.normalize.normalization_scale(k)                     the one normalization rule

Sources: fastMRI-format multi-coil HDF5 (``kspace`` + ``acquisition`` attribute; DESIGN.md §7) and ISMRMRD raw .h5
(through :mod:`gadgets.assembly`, the same acquisition-to-buffer code the gadget uses; fully sampled buffers only).

Cache layout (``CACHE/``): one shard per source volume, ``<stem>-<key>.h5`` with dataset ``targets`` complex64
[S, H, W] and ``scales`` float32 [S]; ``index.json`` lists every slice (source file, slice, contrast, subject id, shard,
row, scale). A shard is reused when its key (source path, size, mtime, coil method, ACS width, normalization rule)
matches, so pre-training and fine-tuning corpora can share one cache directory.

:class:`CachedSlices` streams from the shards (lazy HDF5 reads, files opened per worker) and returns [2, H, W] float32
(real, imaginary), optionally a random ``crop`` x ``crop`` window and random flips, drawn from a per-sample seed.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import sys
import time
from pathlib import Path
from typing import NamedTuple, Sequence

import h5py
import numpy as np
import torch
from torch.utils.data import Dataset

from dpm_core.coils import estimate_coil_maps
from dpm_core.combine import mvue
from dpm_core.masks import DEFAULT_NUM_ACS
from dpm_core.normalize import NORMALIZATION_RULE, normalization_scale

__all__ = ["CACHE_VERSION", "SourceVolume", "SliceEntry", "find_volumes", "select_volumes", "read_kspace",
           "read_volume", "compute_targets", "build_cache", "load_index", "CachedSlices", "add_corpus_arguments",
           "cache_from_args", "main"]

log = logging.getLogger(__name__)

CACHE_VERSION = 1
INDEX_NAME = "index.json"


class SourceVolume(NamedTuple):
    """One volume of the corpus: ``path`` (str), ``contrast`` (e.g. "AXFLAIR"), ``subject`` (id str), ``kind``
    ("fastmri" or "ismrmrd"), ``num_slices`` (int)."""
    path: str
    contrast: str
    subject: str
    kind: str
    num_slices: int


class SliceEntry(NamedTuple):
    """One cached slice (a row of index.json)."""
    source: str
    slice: int
    contrast: str
    subject: str
    shard: str
    row: int
    scale: float
    height: int
    width: int


# ----------------------------------------------------------------------------------------------------------------------
# Finding and reading source volumes.

def _h5_kind(f: h5py.File) -> str | None:
    if "kspace" in f:
        return "fastmri"
    if "dataset" in f and "data" in f["dataset"] and "xml" in f["dataset"]:
        return "ismrmrd"
    return None


def _describe_ismrmrd(path: str) -> tuple[str, str]:
    """(contrast, subject) of an ISMRMRD file from its header (protocol name, patient id), else from the file name."""
    import ismrmrd
    with h5py.File(path, "r") as f:
        xml = f["dataset"]["xml"][0]
    xml = xml.decode() if isinstance(xml, bytes) else str(xml)
    try:
        header = ismrmrd.xsd.CreateFromDocument(xml)
    except Exception as err:                                              # noqa: BLE001 - schema errors vary
        raise ValueError(f"{path}: the ISMRMRD XML header does not parse ({err}); fix or regenerate the file") from err
    mi, si = header.measurementInformation, header.subjectInformation
    contrast = (getattr(mi, "protocolName", None) if mi is not None else None) or "UNKNOWN"
    subject = (getattr(si, "patientID", None) if si is not None else None) or Path(path).stem
    return str(contrast).upper(), str(subject)


def find_volumes(data: str | os.PathLike | Sequence[str | os.PathLike]) -> list[SourceVolume]:
    """All .h5 volumes under one or more directories (or files), sorted by path.

    fastMRI files give ``contrast`` from the ``acquisition`` attribute and ``subject`` from ``patient_id`` (else the
    file stem); ISMRMRD files from the header's protocol name and patient id.
    """
    roots = [data] if isinstance(data, (str, os.PathLike)) else list(data)
    paths = []
    for root in roots:
        root = Path(root)
        if root.is_dir():
            paths.extend(sorted(root.rglob("*.h5")))
        elif root.is_file():
            paths.append(root)
        else:
            raise ValueError(f"data path {root} does not exist; pass a directory of .h5 volumes (fastMRI or ISMRMRD)")
    volumes = []
    for path in sorted(set(paths)):
        with h5py.File(path, "r") as f:
            kind = _h5_kind(f)
            if kind == "fastmri":
                attrs = f.attrs
                contrast = attrs.get("acquisition", "UNKNOWN")
                contrast = contrast.decode() if isinstance(contrast, bytes) else str(contrast)
                subject = attrs.get("patient_id", path.stem)
                subject = subject.decode() if isinstance(subject, bytes) else str(subject)
                volumes.append(SourceVolume(str(path), contrast, subject, kind, int(f["kspace"].shape[0])))
                continue
        if kind == "ismrmrd":
            contrast, subject = _describe_ismrmrd(str(path))
            volumes.append(SourceVolume(str(path), contrast, subject, kind, -1))
        else:
            log.warning("skipping %s: neither a fastMRI (kspace) nor an ISMRMRD (dataset/data) file", path)
    return volumes


def select_volumes(volumes: Sequence[SourceVolume], contrasts: Sequence[str] | None = None,
                   exclude_contrasts: Sequence[str] | None = None, subjects: int | Sequence[str] | None = None,
                   skip_subjects: int = 0) -> list[SourceVolume]:
    """Filter by contrast (include list, then exclude list; case-insensitive) and by subject.

    ``subjects``: an int keeps the first N subjects in sorted id order (after skipping ``skip_subjects``), a list keeps
    those ids. Raises ValueError when nothing is left.
    """
    inc = {c.upper() for c in contrasts} if contrasts else None
    exc = {c.upper() for c in exclude_contrasts} if exclude_contrasts else set()
    out = [v for v in volumes if (inc is None or v.contrast.upper() in inc) and v.contrast.upper() not in exc]
    if subjects is not None:
        ids = sorted({v.subject for v in out})
        if isinstance(subjects, int):
            if len(ids) - skip_subjects < subjects:
                raise ValueError(f"asked for {subjects} subjects (after skipping {skip_subjects}) but the selection "
                                 f"has only {len(ids)}; lower --subjects or add data")
            keep = set(ids[skip_subjects:skip_subjects + subjects])
        else:
            keep = set(subjects)
        out = [v for v in out if v.subject in keep]
    if not out:
        found = sorted({v.contrast for v in volumes})
        raise ValueError(f"no volumes left after selecting contrasts {sorted(inc) if inc else 'all'} excluding "
                         f"{sorted(exc)}; the data has contrasts {found}")
    return out


def read_kspace(volume: SourceVolume) -> list[tuple[torch.Tensor, np.ndarray | None, list[int], str]]:
    """The k-space of one file, readout oversampling removed: [(kspace [S, C, H, W] complex64, measured lines [H]
    bool or None, slice numbers, description)], one entry per buffer.

    fastMRI files carry 2x readout oversampling (the recon FOV is the central half of the readout, DESIGN.md §7) and
    give one entry whose mask is None (the file's own ``mask`` dataset, if any, is for the caller to read); ISMRMRD
    files go through :func:`gadgets.assembly.buffers_from_acquisitions` (noise prewhitening, oversampling removal,
    accumulation), exactly as the gadget does, one entry per assembled buffer with its mask (a 3-D slab: its
    partitions); a buffer with an asymmetric echo or a slab with partial Fourier along kz is refused (ValueError):
    the training paths take every readout sample and every kz as measured.
    """
    if volume.kind == "fastmri":
        from .fastmri_data import FastMRISliceDataset, FastMRIVolumeIndex
        slices = FastMRISliceDataset(FastMRIVolumeIndex([volume.path]))
        kspace = torch.stack([slices[s].kspace for s in range(len(slices))]).to(torch.complex64)   # [S, C, H, W]
        return [(kspace, None, list(range(kspace.shape[0])), "the volume")]
    from gadgets.assembly import buffers_from_acquisitions
    from gadgets.mrd_io import iter_acquisitions, read_mrd_raw
    raw = read_mrd_raw(volume.path)
    buffers = list(buffers_from_acquisitions(iter_acquisitions(raw), raw.header))
    for b in buffers:
        if b.readout is not None:
            raise ValueError(f"{volume.path}: {b.describe()} has an asymmetric echo ({int(b.readout.sum())} of "
                             f"{b.readout.size} readout samples measured); training reads whole echoes only")
        if b.noise_scale != 1.0:
            raise ValueError(f"{volume.path}: {b.describe()} is a 3-D slab with partial Fourier along kz (kz planes "
                             f"zero-filled); training reads whole slabs only")
    parts = [(torch.from_numpy(np.asarray(b.kspace, dtype=np.complex64)), np.asarray(b.mask, dtype=bool),
              list(b.slices), b.describe()) for b in buffers]
    if not parts:
        raise ValueError(f"{volume.path}: no imaging data assembled from the ISMRMRD acquisitions")
    return parts


def read_volume(volume: SourceVolume) -> torch.Tensor:
    """Fully sampled k-space [S, C, H, W] complex64 with readout oversampling removed (:func:`read_kspace`); an
    undersampled ISMRMRD buffer is refused (training targets need fully sampled k-space)."""
    parts = read_kspace(volume)
    for _, mask, _, where in parts:
        if mask is not None and not np.all(mask):
            raise ValueError(f"{volume.path}: {where} is undersampled ({int(mask.sum())} of {mask.size} lines); "
                             f"training targets need fully sampled k-space")
    return torch.cat([kspace for kspace, _, _, _ in parts])


def compute_targets(kspace: torch.Tensor, coil_method: str = "fast", num_acs: int = DEFAULT_NUM_ACS,
                    chunk: int = 8) -> tuple[torch.Tensor, torch.Tensor]:
    """Normalized MVUE targets of fully sampled k-space.

    Args:
        kspace: [S, C, H, W] complex64, fully sampled, oversampling removed.
        coil_method: ESPIRiT implementation for :func:`dpm_core.coils.estimate_coil_maps` ("fast" or "sigpy").
        num_acs: calibration width (the ACS block inference would see).
        chunk: slices per ESPIRiT call (memory bound).
    Returns: (targets [S, H, W] complex64 = MVUE / scale, scales [S] float32).
    """
    if kspace.ndim != 4 or not kspace.is_complex():
        raise ValueError(f"kspace must be complex [S, C, H, W]; got {tuple(kspace.shape)} {kspace.dtype}")
    targets, scales = [], []
    for s0 in range(0, kspace.shape[0], chunk):
        k = kspace[s0:s0 + chunk]
        maps = estimate_coil_maps(k, None, method=coil_method, num_maps=1, num_acs=num_acs)   # [s, 1, C, H, W]
        image = mvue(k, maps)                                                                   # [s, H, W]
        scale = normalization_scale(k, None, num_acs=num_acs)                                   # [s]
        targets.append((image / scale.view(-1, 1, 1)).to(torch.complex64))
        scales.append(scale)
    return torch.cat(targets), torch.cat(scales)


# ----------------------------------------------------------------------------------------------------------------------
# The cache.

def _volume_key(volume: SourceVolume, coil_method: str, num_acs: int) -> str:
    st = os.stat(volume.path)
    text = json.dumps([CACHE_VERSION, os.path.abspath(volume.path), st.st_size, st.st_mtime_ns, coil_method, num_acs,
                       NORMALIZATION_RULE])
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def build_cache(volumes: Sequence[SourceVolume], cache_dir: str | os.PathLike, coil_method: str = "fast",
                num_acs: int = DEFAULT_NUM_ACS, index_name: str = INDEX_NAME, progress: bool = True) -> Path:
    """Compute (or reuse) one target shard per volume and write the index of the selection.

    Args:
        volumes: from :func:`select_volumes`.
        cache_dir: output directory (shared between selections; shards are keyed by source and settings).
        coil_method, num_acs: see :func:`compute_targets`.
        index_name: file name of the index for this selection (several selections can share a cache directory).
    Returns: path of the index JSON: {"version", "normalization", "coil_method", "num_acs", "slices": [SliceEntry
        as dict, ...], "volumes": [...], "seconds"}.
    """
    cache_dir = Path(cache_dir)
    cache_dir.mkdir(parents=True, exist_ok=True)
    entries, computed, t0 = [], 0, time.time()
    iterator = volumes
    if progress:
        from tqdm import tqdm
        iterator = tqdm(volumes, desc="targets", unit="vol", dynamic_ncols=True)
    for volume in iterator:
        key = _volume_key(volume, coil_method, num_acs)
        shard = f"{Path(volume.path).stem}-{key}.h5"
        shard_path = cache_dir / shard
        if not shard_path.is_file():
            targets, scales = compute_targets(read_volume(volume), coil_method=coil_method, num_acs=num_acs)
            tmp = shard_path.with_name(shard_path.name + ".tmp")
            with h5py.File(tmp, "w") as f:
                f.create_dataset("targets", data=targets.numpy(), chunks=(1,) + tuple(targets.shape[1:]))
                f.create_dataset("scales", data=scales.numpy())
                f.attrs.update(source=volume.path, contrast=volume.contrast, subject=volume.subject,
                               coil_method=coil_method, num_acs=num_acs, normalization=NORMALIZATION_RULE,
                               version=CACHE_VERSION)
            os.replace(tmp, shard_path)
            computed += targets.shape[0]
        with h5py.File(shard_path, "r") as f:
            S, H, W = f["targets"].shape
            scales = f["scales"][()]
        entries.extend(SliceEntry(volume.path, s, volume.contrast, volume.subject, shard, s, float(scales[s]), H, W)
                       ._asdict() for s in range(S))
    seconds = time.time() - t0
    index = {"version": CACHE_VERSION, "normalization": NORMALIZATION_RULE, "coil_method": coil_method,
             "num_acs": num_acs, "computed_slices": computed, "seconds": seconds,
             "volumes": [v._asdict() for v in volumes], "slices": entries}
    path = cache_dir / index_name
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(index, indent=1) + "\n")
    os.replace(tmp, path)
    log.info("cache %s: %d slices (%d computed) in %.1f s", path, len(entries), computed, seconds)
    return path


def load_index(index_path: str | os.PathLike) -> dict:
    """Read and check an index JSON written by :func:`build_cache`."""
    index_path = Path(index_path)
    if index_path.is_dir():
        index_path = index_path / INDEX_NAME
    if not index_path.is_file():
        raise FileNotFoundError(f"no cache index at {index_path}; build it with build_cache() or dpm-preprocess")
    index = json.loads(index_path.read_text())
    if index.get("version") != CACHE_VERSION or index.get("normalization") != NORMALIZATION_RULE:
        raise ValueError(f"cache {index_path} was written with version {index.get('version')} / normalization "
                         f"{index.get('normalization')!r}; this code needs version {CACHE_VERSION} / "
                         f"{NORMALIZATION_RULE!r}: delete the cache directory and rebuild it")
    return index


PHASE_ORDER = 2          # random phase: polynomial in (x, y) on [-1, 1]^2 up to this total degree (B0 and coil-like)
PHASE_STD_RAD = 1.0      # std of the phase variation over the image (radians), on top of a uniform global phase
# phase="detail": a Gaussian random phase field on top of the target's own phase. Gradient-echo phase is
# 2π·ΔB0·TE, and ΔB0 changes over millimetres to centimetres near air-tissue and vessel boundaries; the synthetic
# corpus draws only slow phase (wavelengths 150-400 mm), and a prior that has never seen finer phase takes it for
# noise (benchmarks/results/prior_fit.md: on the real slice it damaged the image at σ <= 0.01, and denoised it
# better than wavelet shrinkage once the phase was removed).
DETAIL_PHASE_LENGTH_PX = (1.5, 12.0)   # correlation length (Gaussian kernel sd), log-uniform, in pixels
DETAIL_PHASE_MAX_RAD = 0.6             # the field's std, uniform in [0, this] (radians)
PHASE_MODES = ("keep", "random", "detail")


def random_smooth_phase(height: int, width: int, rng: np.random.Generator, order: int = PHASE_ORDER,
                        std: float = PHASE_STD_RAD) -> np.ndarray:
    """A random smooth phase map [H, W] float32 (radians): a uniform global phase plus a polynomial of total degree
    1..``order`` in x, y ∈ [-1, 1] whose coefficients are N(0, std² / number of terms) — the slow variation that
    B0 off-resonance and receive-coil phase give real MRI images (phase augmentation for magnitude training data,
    as in Luo, Blumenthal, Heide, Uecker, mrirecon/image-priors)."""
    y, x = np.meshgrid(np.linspace(-1, 1, height), np.linspace(-1, 1, width), indexing="ij")
    terms = [(p, q) for p in range(order + 1) for q in range(order + 1 - p) if p + q > 0]
    coefficients = rng.normal(0.0, std / np.sqrt(len(terms)), size=len(terms))
    phase = np.full((height, width), rng.uniform(0.0, 2 * np.pi))
    for c, (p, q) in zip(coefficients, terms):
        phase += c * x ** p * y ** q
    return phase.astype(np.float32)


def random_detail_phase(height: int, width: int, rng: np.random.Generator,
                        length_px: tuple[float, float] = DETAIL_PHASE_LENGTH_PX,
                        max_std: float = DETAIL_PHASE_MAX_RAD) -> np.ndarray:
    """A random fine-scale phase field [H, W] float32 (radians): white Gaussian noise smoothed by a periodic Gaussian
    kernel of correlation length ℓ (log-uniform in ``length_px``), scaled to a std drawn uniformly in [0, max_std].
    The mm-to-cm phase of gradient-echo images (:data:`DETAIL_PHASE_LENGTH_PX`)."""
    length = float(np.exp(rng.uniform(np.log(length_px[0]), np.log(length_px[1]))))
    std = float(rng.uniform(0.0, max_std))
    ky = np.fft.fftfreq(height)[:, None]
    kx = np.fft.fftfreq(width)[None, :]
    kernel = np.exp(-2 * (np.pi * length) ** 2 * (ky ** 2 + kx ** 2))          # FT of a Gaussian of sd ℓ pixels
    field = np.fft.ifft2(np.fft.fft2(rng.standard_normal((height, width))) * kernel).real
    return (field * (std / max(float(field.std()), 1e-12))).astype(np.float32)


class CachedSlices(Dataset):
    """Cached targets as a Dataset of [2, H, W] float32 (real, imaginary) images; lazy HDF5 reads.

    Args:
        index_path: index JSON (or its cache directory, for ``index.json``).
        crop: side of a random square crop (None: whole slice). Needs crop <= H, W.
        flip: random horizontal and vertical flips.
        contrasts, subjects: optional further selection of the indexed slices.
        phase: "keep" (the target's own phase); "random": the target's magnitude with a random smooth phase
            (:func:`random_smooth_phase`), so that magnitude-only images can train a complex-image prior; without a
            seed (evaluation keys) the magnitude with zero phase; "detail": the target's own phase plus a random
            fine-scale phase field (:func:`random_detail_phase`), the target itself for evaluation keys.
    Keys: an int i (slice i, no augmentation; ``dataset[i]`` is deterministic) or a tuple (i, seed) (crop offset,
    flips and phase drawn from ``numpy.random.default_rng(seed)``, as :func:`training.training_loop.training_loop`
    passes).
    """

    def __init__(self, index_path: str | os.PathLike, crop: int | None = None, flip: bool = False,
                 contrasts: Sequence[str] | None = None, subjects: Sequence[str] | None = None, phase: str = "keep"):
        if phase not in PHASE_MODES:
            raise ValueError(f"phase={phase!r} must be one of {PHASE_MODES}")
        index_path = Path(index_path)
        self.index = load_index(index_path)
        self.cache_dir = index_path if index_path.is_dir() else index_path.parent
        slices = [SliceEntry(**e) for e in self.index["slices"]]
        if contrasts:
            wanted = {c.upper() for c in contrasts}
            slices = [e for e in slices if e.contrast.upper() in wanted]
        if subjects:
            slices = [e for e in slices if e.subject in set(subjects)]
        if not slices:
            raise ValueError(f"cache {index_path} has no slices for contrasts {contrasts} and subjects {subjects}")
        if crop is not None:
            small = min(min(e.height, e.width) for e in slices)
            if crop > small:
                raise ValueError(f"crop {crop} is larger than the smallest cached slice side ({small}); lower --crop")
        self.slices, self.crop, self.flip, self.phase = slices, crop, flip, phase
        self._files: dict[str, h5py.File] = {}
        self._pid = os.getpid()

    def __len__(self) -> int:
        return len(self.slices)

    def __getstate__(self):
        state = dict(self.__dict__)
        state["_files"] = {}                                    # h5py handles do not cross process boundaries
        return state

    def _file(self, shard: str) -> h5py.File:
        if self._pid != os.getpid():                            # forked worker: reopen
            self._files, self._pid = {}, os.getpid()
        f = self._files.get(shard)
        if f is None:
            if len(self._files) >= 64:
                for old in list(self._files.values()):
                    old.close()
                self._files.clear()
            f = self._files[shard] = h5py.File(self.cache_dir / shard, "r")
        return f

    def target(self, i: int) -> np.ndarray:
        """Complex64 [H, W] target of slice i."""
        e = self.slices[i]
        return np.asarray(self._file(e.shard)["targets"][e.row], dtype=np.complex64)

    def __getitem__(self, key) -> torch.Tensor:
        i, seed = (key, None) if isinstance(key, (int, np.integer)) else (int(key[0]), key[1])
        e = self.slices[i]
        dset = self._file(e.shard)["targets"]
        rng = np.random.default_rng(seed) if seed is not None else None
        if self.crop is not None:
            c = self.crop
            if rng is not None:
                y0, x0 = int(rng.integers(0, e.height - c + 1)), int(rng.integers(0, e.width - c + 1))
            else:
                y0, x0 = (e.height - c) // 2, (e.width - c) // 2
            img = np.asarray(dset[e.row, y0:y0 + c, x0:x0 + c], dtype=np.complex64)
        else:
            img = np.asarray(dset[e.row], dtype=np.complex64)
        if self.flip and rng is not None:
            if rng.random() < 0.5:
                img = img[::-1]
            if rng.random() < 0.5:
                img = img[:, ::-1]
        if self.phase == "random":
            phase = random_smooth_phase(*img.shape, rng) if rng is not None else 0.0
            img = np.abs(img) * np.exp(1j * phase)
        elif self.phase == "detail" and rng is not None:
            img = img * np.exp(1j * random_detail_phase(*img.shape, rng))
        x = np.stack([img.real, img.imag]).astype(np.float32)            # [2, H, W]
        return torch.from_numpy(np.ascontiguousarray(x))


# ----------------------------------------------------------------------------------------------------------------------
# Command line (shared by dpm-pretrain, dpm-finetune and python -m training.preprocess).

def add_corpus_arguments(parser: argparse.ArgumentParser, contrasts_default=None) -> None:
    g = parser.add_argument_group("corpus")
    g.add_argument("--data", nargs="+", required=True, help="directories (or files) of fastMRI / ISMRMRD .h5 volumes")
    g.add_argument("--contrasts", nargs="*", default=contrasts_default, help="keep only these acquisitions")
    g.add_argument("--exclude-contrasts", nargs="*", default=None, help="drop these acquisitions (e.g. AXFLAIR)")
    g.add_argument("--subjects", type=int, default=None, help="keep the first N subjects (sorted ids)")
    g.add_argument("--cache", default=None, help="target cache directory (default RUN/cache)")
    g.add_argument("--coil-method", default="fast", choices=["fast", "sigpy"], help="ESPIRiT implementation")
    g.add_argument("--num-acs", type=int, default=DEFAULT_NUM_ACS, help="calibration (ACS) width for ESPIRiT")


def cache_from_args(args, default_cache: str | os.PathLike, index_name: str = INDEX_NAME,
                    progress: bool = True) -> Path:
    volumes = select_volumes(find_volumes(args.data), args.contrasts, args.exclude_contrasts, args.subjects)
    return build_cache(volumes, args.cache or default_cache, coil_method=args.coil_method, num_acs=args.num_acs,
                       index_name=index_name, progress=progress)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m training.preprocess --data DIR [--contrasts ...] [--exclude-contrasts ...] --cache DIR``."""
    parser = argparse.ArgumentParser(description="Compute the training-target cache of a corpus.")
    add_corpus_arguments(parser)
    parser.add_argument("--index-name", default=INDEX_NAME)
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (0: torch default)")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if not args.cache:
        parser.error("--cache DIR is required")
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    path = cache_from_args(args, args.cache, args.index_name)
    index = load_index(path)
    print(f"{path}: {len(index['slices'])} slices ({index['computed_slices']} computed) in {index['seconds']:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
