"""Real brain anatomy that the package registries ship, as a fastMRI-format multi-coil corpus (``dpm-real-anatomy``).

The synthetic corpus (:mod:`training.synth`) is one template brain under warps. The registries carry a few real
magnitude brain images besides the reserved Colin27: dipy's bundled test data (BSD licence, in every dipy wheel,
nothing is downloaded):

    t1_coronal_slice.npy   1 coronal T1-weighted slice, skull-stripped, 256 x 256, 1 mm (contrast AXT1)
    S0_10slices.nii.gz     10 axial b = 0 slices of a diffusion scan (T2-weighted spin-echo EPI), 128 x 128, 2 mm
                           (contrast AXT2)

Both are single acquisitions (white-matter SNR about 34 in the T1w slice), not the 27-scan average Colin27 that is
reserved for validation. dipy's ``test_piesno.nii.gz`` (one 96 x 96 diffusion slice) is left out: it was resampled
onto a rotated grid and carries that grid's straight border.

A file of this corpus is one augmented head: a random similarity transform, axis scaling and smooth non-rigid warp of
one source, an intensity gamma, rendered at twice the recon matrix and band-limited to it (Gibbs ringing as on a
scanner), then the simulated scanner of :func:`training.synth.acquire` (loop coils, transmit bias, smooth image
phase, noise, 2x readout oversampling). The magnitudes are real; the phase, coils and noise are simulated. Files use
the layout of :func:`training.synth.write_fastmri_h5`, so ``dpm-pretrain --data`` reads them like any corpus.

Determinism: file i draws from ``subject_seed(seed, i)``; the same seed gives the same bytes.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import time
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F

from . import phantom
from .synth import (_STREAM_ANATOMY, _STREAM_CONTRAST, _STREAM_SESSION, GENERATOR_VERSION, SyntheticSubject, _bandlimit,
                    _rng, acquire, build_header, subject_seed, write_fastmri_h5)

__all__ = ["RealSource", "load_sources", "SOURCE_NAMES", "augmented_subject", "generate_real_corpus", "main"]

GENERATOR = "dpm-flair.training.real_anatomy/1"
TISSUE_FRACTION = 0.12     # |source| above this fraction of its 99.5th percentile counts as tissue (the SNR region)
ROTATION_DEG = 25.0        # in-plane rotation, uniform ± this
SCALE_RANGE = (0.85, 1.15)  # isotropic head-size factor, uniform
AXIS_SCALE_SD = 0.06       # per-axis scale factor, log-normal sd
SHIFT_MM = 10.0            # in-plane translation, uniform ± this per axis
WARP_RMS_MM = 3.0          # smooth non-rigid displacement, rms per axis
WARP_WAVELENGTH_MM = (40.0, 120.0)
GAMMA_RANGE = (0.8, 1.25)  # intensity gamma on the source normalized to its 99.5th percentile


class RealSource(NamedTuple):
    """One real magnitude brain source: ``slices`` float32 [N, H, W] (>= 0, rows and columns at ``pixel_mm``),
    the contrast it serves as (a key of ``phantom.CONTRASTS``), its origin and licence."""
    name: str
    contrast: str
    slices: np.ndarray
    pixel_mm: float
    origin: str


def _dipy_file(name: str) -> str:
    try:
        import dipy
    except ImportError as exc:
        raise ImportError("the real-anatomy corpus reads dipy's bundled test images; install dipy "
                          "(`pip install dipy`; dpm-flair's install requires it)") from exc
    path = os.path.join(os.path.dirname(dipy.__file__), "data", "files", name)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path} is missing from the dipy installation (dipy {dipy.__version__}); "
                                f"reinstall dipy, whose wheels ship it")
    return path


def _load_dipy() -> list[RealSource]:
    import dipy
    import nibabel as nib
    origin = f"dipy {dipy.__version__} bundled test data (BSD licence)"
    t1 = np.load(_dipy_file("t1_coronal_slice.npy")).astype(np.float32)[None]                 # [1, 256, 256]
    s0 = np.asarray(nib.load(_dipy_file("S0_10slices.nii.gz")).dataobj, dtype=np.float32)[..., 0]   # [128, 128, 10]
    return [RealSource("dipy_t1_coronal", "AXT1", t1, 1.0, origin),
            RealSource("dipy_s0_axial", "AXT2", np.moveaxis(s0, -1, 0).copy(), 2.0, origin)]


SOURCE_NAMES = ("dipy_t1_coronal", "dipy_s0_axial")


def load_sources(names: Sequence[str] = SOURCE_NAMES) -> list[RealSource]:
    """The real sources by name (default: all), each normalized to its 99.5th percentile."""
    unknown = sorted(set(names) - set(SOURCE_NAMES))
    if unknown:
        raise ValueError(f"unknown real-anatomy sources {unknown}; available: {list(SOURCE_NAMES)}")
    out = []
    for src in _load_dipy():
        if src.name in names:
            ref = float(np.percentile(src.slices, 99.5))
            out.append(src._replace(slices=np.clip(src.slices / max(ref, 1e-20), 0, None).astype(np.float32)))
    return out


def _warp_grid(rng: np.random.Generator, shape_hw: tuple[int, int], fov_mm: float, source: RealSource) -> torch.Tensor:
    """Sampling grid [1, Hs, Ws, 2] (grid_sample's x = column, y = row in [-1, 1]) of the source for one head."""
    pts3 = phantom.subject_points(shape_hw, (fov_mm, fov_mm), np.zeros(1), np.zeros(1))[0, 0]   # [Hs, Ws, 3], z = 0
    pts = pts3[..., :2]                                                                          # (row, column) mm
    angle = math.radians(rng.uniform(-ROTATION_DEG, ROTATION_DEG))
    scale = rng.uniform(*SCALE_RANGE) * np.exp(rng.normal(0, AXIS_SCALE_SD, size=2))
    shift = rng.uniform(-SHIFT_MM, SHIFT_MM, size=2)
    rot = torch.tensor([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]], dtype=torch.float32)
    modes = phantom._smooth_modes(rng, 8, WARP_WAVELENGTH_MM, WARP_RMS_MM, 2)
    displaced = pts + phantom._eval_modes(modes, pts3)
    # output point -> source point: undo the head's pose and size (the head is the source scaled by `scale`).
    src_mm = ((displaced - torch.from_numpy(shift).float()) @ rot) / torch.from_numpy(scale).float()
    # source pixel index n // 2 sits at 0 mm (the FFT-centre convention); grid_sample puts index i at (2i + 1) / n - 1.
    n_rows, n_cols = source.slices.shape[1:]
    rows = (src_mm[..., 0] / source.pixel_mm + n_rows // 2 + 0.5) * (2 / n_rows) - 1
    cols = (src_mm[..., 1] / source.pixel_mm + n_cols // 2 + 0.5) * (2 / n_cols) - 1
    return torch.stack([cols, rows], -1)[None]


def augmented_subject(seed: int, source: RealSource, matrix: int = 128, coils: int = 8, slices: int = 8, *,
                      fov_mm: float = 240.0, slice_thickness_mm: float = 5.0, slice_gap_mm: float = 1.0,
                      snr: float | tuple[float, float] = (25.0, 60.0)) -> SyntheticSubject:
    """One augmented head from ``source`` through the simulated scanner (module docstring).

    A multi-slice source gives ``slices`` consecutive source slices (cyclically from a random start) under one
    transform; a single-slice source gives ``slices`` independently warped copies.
    Returns: a :class:`training.synth.SyntheticSubject` (segmentation: ``head`` only, from the source's tissue).
    """
    if not isinstance(matrix, (int, np.integer)) or matrix < 16 or matrix % 2:
        raise ValueError(f"matrix must be an even int >= 16; got {matrix!r}")
    H = W = int(matrix)
    S = int(slices)
    rng_a, rng_c = _rng(seed, _STREAM_ANATOMY), _rng(seed, _STREAM_CONTRAST)
    supersampled = (2 * H, 2 * W)
    n_src = source.slices.shape[0]
    start = int(rng_a.integers(0, n_src))
    grid = _warp_grid(rng_a, supersampled, fov_mm, source)
    rendered = []
    for s in range(S):
        if n_src == 1 and s > 0:
            grid = _warp_grid(rng_a, supersampled, fov_mm, source)
        img = torch.from_numpy(source.slices[(start + s) % n_src])[None, None]
        rendered.append(F.grid_sample(img, grid, mode="bilinear", padding_mode="zeros", align_corners=False)[0, 0])
    hi = torch.stack(rendered).clamp_min(0) ** float(rng_a.uniform(*GAMMA_RANGE))            # [S, 2H, 2W]
    head_hi = (hi > TISSUE_FRACTION).float()
    low = _bandlimit(torch.stack([hi, head_hi]), (H, W))                                       # [2, S, H, W]
    obj, head = low[0], low[1].real.clamp(0, 1).float().contiguous()

    protocol = phantom.sample_protocol(source.contrast, rng_c)
    spacing = slice_thickness_mm + slice_gap_mm
    slice_z = (np.arange(S) - (S - 1) / 2) * spacing
    fov = (float(fov_mm), float(fov_mm))
    kspace, image, maps, noise_std, snr_value = acquire(obj, slice_z, fov, int(coils), 1.0, head > 0.5, snr,
                                                        _rng(seed, _STREAM_SESSION), rng_c)
    patient_id = hashlib.sha256(f"dpm-real-anatomy:{source.name}:{seed}".encode()).hexdigest()
    subject = SyntheticSubject(kspace=kspace, image=image, maps=maps, segmentation={"head": head,
                                                                                    "lesion": torch.zeros_like(head)},
                               header_xml="", attrs={}, protocol=protocol, noise_std=noise_std, slice_z_mm=slice_z)
    target = subject.reconstruction_rss()
    subject.attrs = {"acquisition": source.contrast, "max": float(target.max()), "norm": float(target.norm()),
                     "patient_id": patient_id, "seed": int(seed), "generator": f"{GENERATOR} ({GENERATOR_VERSION})",
                     "source": source.name, "snr": snr_value, "num_lesions": 0,
                     "slice_z_mm": slice_z.astype(np.float32)}
    subject.header_xml = build_header(protocol, matrix=H, coils=int(coils), slices=S, fov_mm=fov_mm,
                                      slice_thickness_mm=slice_thickness_mm, patient_id=patient_id, seed=seed)
    return subject


def generate_real_corpus(out_dir: str | os.PathLike, heads_per_source: int, *, seed: int = 0,
                         sources: Sequence[str] = SOURCE_NAMES, progress: bool = True, **kwargs) -> list[dict]:
    """Write ``heads_per_source`` augmented heads of every source as DIR/real_<source>_h<i>.h5 and DIR/manifest.json.

    ``kwargs`` go to :func:`augmented_subject`. Returns the manifest entries.
    """
    from tqdm import tqdm

    if heads_per_source < 1:
        raise ValueError(f"heads_per_source must be >= 1; got {heads_per_source}")
    loaded = load_sources(sources)
    os.makedirs(out_dir, exist_ok=True)
    jobs = [(i, src) for src in loaded for i in range(heads_per_source)]
    entries = []
    t0 = time.perf_counter()
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for n, (i, src) in enumerate(tqdm(jobs, desc="dpm-real-anatomy", unit="vol", disable=not progress)):
            s_seed = subject_seed(seed, n)
            subj = augmented_subject(s_seed, src, **kwargs)
            fname = f"real_{src.name}_h{i:04d}.h5"
            write_fastmri_h5(os.path.join(out_dir, fname), subj)
            entries.append({"file": fname, "acquisition": src.contrast, "source": src.name, "subject": n,
                            "seed": s_seed, "patient_id": subj.attrs["patient_id"], "snr": round(subj.attrs["snr"], 2),
                            "kspace_shape": list(subj.kspace.transpose(-1, -2).shape)})
    finally:
        torch.set_num_threads(before)
    manifest = {"generator": GENERATOR, "seed": seed, "sources": {s.name: s.origin for s in loaded},
                "options": {k: (list(v) if isinstance(v, tuple) else v) for k, v in kwargs.items()},
                "seconds": round(time.perf_counter() - t0, 2), "files": entries}
    with open(os.path.join(out_dir, "manifest.json"), "w") as f:
        json.dump(manifest, f, indent=1)
    return entries


def main(argv: Sequence[str] | None = None) -> int:
    """CLI ``dpm-real-anatomy``: write the real-anatomy corpus."""
    from .synth import _snr_arg
    p = argparse.ArgumentParser(prog="dpm-real-anatomy", description=__doc__.split("\n")[0])
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--heads", type=int, default=16, help="augmented heads (files) per source")
    p.add_argument("--sources", default=",".join(SOURCE_NAMES), help="comma-separated, from " + ",".join(SOURCE_NAMES))
    p.add_argument("--matrix", type=int, default=128, help="recon matrix H = W (readout sampled at 2W)")
    p.add_argument("--coils", type=int, default=8)
    p.add_argument("--slices", type=int, default=8, help="slices per file")
    p.add_argument("--fov", type=float, default=240.0, help="recon FOV (mm)")
    p.add_argument("--snr", type=_snr_arg, default=(25.0, 60.0), help="SNR or range low:high (default 25:60)")
    p.add_argument("--seed", type=int, default=0, help="corpus seed")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    a = p.parse_args(argv)
    try:
        entries = generate_real_corpus(a.out, a.heads, seed=a.seed, progress=not a.quiet,
                                       sources=[s.strip() for s in a.sources.split(",") if s.strip()],
                                       matrix=a.matrix, coils=a.coils, slices=a.slices, fov_mm=a.fov, snr=a.snr)
    except (ValueError, ImportError, FileNotFoundError) as exc:
        p.error(str(exc))
    print(f"wrote {len(entries)} files and manifest.json to {a.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
