"""Anatomy and contrast for the synthetic brain corpus: MNI152 atlas, per-subject anatomy, MR signal equations.

Frames and layouts
------------------
- Atlas: the MNI ICBM152 2009a templates bundled with nilearn (T1 template, GM and WM probability maps; 1 mm voxels,
  RAS mm). The T1 template is skull-stripped, so skull and scalp are built here as shells at given distances from
  the intracranial surface (a signed-distance map of the closed brain mask).
- Subject frame (mm): ``u`` along the phase-encode axis H (patient left-right), ``v`` along the readout axis W
  (anterior-posterior), ``z`` along the slice axis. Pixel (h, w) of an H x W image on a FOV (fov_h, fov_w) sits at
  u = (h - H // 2) * fov_h / H, v = (w - W // 2) * fov_w / W, so the FFT centre is the image centre (dpm_core.fft).
  Displayed with rows = readout (the fastMRI file orientation, ``image.T``) the head is upright, anterior at the top,
  patient right on the viewer's left (radiological).
- Tissue fractions: float32 tensors [K, S, n_sub, Hs, Ws] (K tissue classes in :data:`TISSUES`, S slices, n_sub
  sub-slices across the slice thickness, Hs x Ws the supersampled in-plane grid).

Signal equations (DESIGN.md §8), times in ms:
    spin echo          S = PD (1 - exp(-TR/T1)) exp(-TE/T2)
    inversion recovery S = PD |1 - 2 exp(-TI/T1) + exp(-TR/T1)| exp(-TE/T2)      (FLAIR: TI nulls CSF)
"""
from __future__ import annotations

import dataclasses
import functools
import math
import os
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["TISSUES", "TISSUE_RANGES", "CONTRASTS", "Atlas", "Protocol", "Anatomy", "load_atlas", "atlas_license",
           "sample_tissue_params", "sample_protocol", "signal_weights", "spin_echo_signal", "inversion_recovery_signal",
           "VARIETY", "sample_anatomy", "subject_points", "place_lesions", "render_fractions"]

# ---------------------------------------------------------------------------------------------------------------------
# Tissues and their 3 T parameters (PD relative, T1 ms, T2 ms): (low, high) ranges, drawn per subject.

TISSUES = ("gm", "wm", "csf", "lesion_gm", "lesion_wm", "dura", "bone", "marrow", "muscle", "fat", "skin")
TISSUE_RANGES = {             # PD            T1 (ms)         T2 (ms)
    "gm":     ((0.78, 0.84), (1300., 1600.), (80., 110.)),
    "wm":     ((0.67, 0.73), (800., 900.), (65., 80.)),
    "csf":    ((0.97, 1.00), (3800., 4400.), (1500., 2000.)),
    "dura":   ((0.55, 0.65), (1000., 1200.), (50., 70.)),
    "bone":   ((0.03, 0.08), (300., 500.), (5., 15.)),
    "marrow": ((0.80, 0.90), (380., 450.), (90., 120.)),     # diploe: fatty marrow
    "muscle": ((0.70, 0.75), (1300., 1450.), (40., 50.)),    # galea / temporalis
    "fat":    ((0.90, 1.00), (350., 420.), (100., 140.)),    # subcutaneous fat (bright on TSE T2 and FLAIR)
    "skin":   ((0.75, 0.85), (1000., 1200.), (40., 60.)),
}
# Lesions (acute/subacute ischaemic oedema) are GM or WM with PD, T1 and T2 prolonged; drawn per lesion in
# sample_anatomy. T2 prolongation 20-80 %; T1 prolongation a fraction (0.25-0.6) of it (so 5-48 %), PD +5-15 %:
# lesions stay bright on FLAIR (a T1 prolonged as much as T2 pushes grey-matter lesions towards the CSF null; with
# these ranges under 2 % of grey-matter lesions come out less than 5 % brighter than grey matter).
LESION_T2_FACTOR = (1.2, 1.8)
LESION_T1_SHARE = (0.25, 0.6)
LESION_PD_FACTOR = (1.05, 1.15)
GADOLINIUM_T1_FACTOR = {"lesion": (0.65, 0.9), "dura": (0.4, 0.6)}   # T1 shortening on AXT1POST


class Protocol(NamedTuple):
    """Sequence parameters of one contrast (ms, degrees). ``TI`` is None for spin-echo contrasts."""
    contrast: str
    sequence_type: str
    TR: float
    TE: float
    TI: float | None
    flip_angle_deg: float
    echo_train_length: int
    post_contrast: bool


# contrast -> (sequence type, TR range, TE range, TI range or None, flip, echo train length, post contrast)
CONTRASTS = {
    "AXT1":     ("SE", (500., 700.), (10., 15.), None, 90., 1, False),
    "AXT1PRE":  ("SE", (500., 700.), (10., 15.), None, 90., 1, False),
    "AXT1POST": ("SE", (500., 700.), (10., 15.), None, 90., 1, True),
    "AXT2":     ("TSE", (4000., 6000.), (90., 110.), None, 90., 16, False),
    "AXPD":     ("TSE", (2800., 3200.), (10., 20.), None, 90., 8, False),
    "AXFLAIR":  ("IR-TSE", (8500., 9500.), (85., 115.), (2350., 2550.), 90., 16, False),
}


def spin_echo_signal(pd, t1, t2, tr: float, te: float):
    """S = PD (1 - exp(-TR/T1)) exp(-TE/T2); numpy arrays or floats, times in ms."""
    return pd * (1.0 - np.exp(-tr / t1)) * np.exp(-te / t2)


def inversion_recovery_signal(pd, t1, t2, tr: float, te: float, ti: float):
    """S = PD |1 - 2 exp(-TI/T1) + exp(-TR/T1)| exp(-TE/T2) (magnitude IR, long TR); times in ms."""
    return pd * np.abs(1.0 - 2.0 * np.exp(-ti / t1) + np.exp(-tr / t1)) * np.exp(-te / t2)


def sample_tissue_params(rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Per-subject tissue parameters: name -> float64 [3] (PD, T1 ms, T2 ms), uniform within TISSUE_RANGES."""
    return {name: np.array([rng.uniform(*r) for r in ranges]) for name, ranges in TISSUE_RANGES.items()}


def sample_protocol(contrast: str, rng: np.random.Generator) -> Protocol:
    """Draw TR/TE/TI for ``contrast`` (one of :data:`CONTRASTS`) within its clinical range."""
    if contrast not in CONTRASTS:
        raise ValueError(f"contrast {contrast!r} is unknown; use one of {sorted(CONTRASTS)}")
    seq, tr, te, ti, flip, etl, post = CONTRASTS[contrast]
    TR, TE = float(round(rng.uniform(*tr))), float(round(rng.uniform(*te), 1))
    TI = float(round(rng.uniform(*ti))) if ti is not None else None
    return Protocol(contrast, seq, TR, TE, TI, flip, etl, post)


def signal_weights(protocol: Protocol, params: dict[str, np.ndarray], lesion_factors: np.ndarray,
                   gad_factors: np.ndarray) -> np.ndarray:
    """Signal of each tissue class (order :data:`TISSUES`) under ``protocol``: float32 [K].

    Args:
        protocol: sequence parameters.
        params: per-subject tissue parameters from :func:`sample_tissue_params`.
        lesion_factors: [3] multipliers (PD, T1, T2) applied to GM/WM parameters inside lesions.
        gad_factors: [2] T1 multipliers of lesion and dura after gadolinium (used only if ``protocol.post_contrast``).
    """
    table = dict(params)
    table["lesion_gm"] = params["gm"] * lesion_factors
    table["lesion_wm"] = params["wm"] * lesion_factors
    if protocol.post_contrast:
        for name in ("lesion_gm", "lesion_wm"):
            table[name] = table[name] * np.array([1.0, gad_factors[0], 1.0])
        table["dura"] = params["dura"] * np.array([1.0, gad_factors[1], 1.0])
    pd, t1, t2 = np.stack([table[name] for name in TISSUES], axis=1)
    if protocol.TI is None:
        w = spin_echo_signal(pd, t1, t2, protocol.TR, protocol.TE)
    else:
        w = inversion_recovery_signal(pd, t1, t2, protocol.TR, protocol.TE, protocol.TI)
    return w.astype(np.float32)


# ---------------------------------------------------------------------------------------------------------------------
# Atlas

_ATLAS_FILES = {name: f"mni_icbm152_{name}_tal_nlin_sym_09a_converted.nii.gz" for name in ("t1", "gm", "wm")}
_Z_CROP = (20, 178)        # atlas z-voxel slab kept (MNI z -52 .. +106 mm); even length so the 2 mm grid aligns
ATLAS_LICENSE = (
    "MNI ICBM152 non-linear symmetric 2009a templates (as bundled with nilearn). Copyright (C) 1993-2004 Louis "
    "Collins, McConnell Brain Imaging Centre, Montreal Neurological Institute, McGill University. Permission to use, "
    "copy, modify, and distribute this software and its documentation for any purpose and without fee is hereby "
    "granted, provided that the above copyright notice appear in all copies. The authors and McGill University make "
    "no representations about the suitability of this software for any purpose. It is provided \"as is\" without "
    "express or implied warranty.")


def atlas_license() -> str:
    """The copyright/permission notice of the MNI ICBM152 2009 templates (to accompany derived data)."""
    return ATLAS_LICENSE


@dataclasses.dataclass(frozen=True)
class Atlas:
    """The brain atlas on its voxel grid, ready for ``grid_sample``.

    Attributes:
        tissue: float32 [1, 2, Z, Y, X] GM and WM probabilities (1 mm voxels).
        distance: float32 [1, 1, Zc, Yc, Xc] signed distance (mm) to the intracranial surface, positive outside,
            on the 2 mm grid that spans exactly the same extent (so both share normalized coordinates).
        origin_mm: MNI (x, y, z) of voxel (0, 0, 0) of ``tissue``.
        size_mm: extent (x, y, z) in mm between the first and last voxel centres.
    """
    tissue: torch.Tensor
    distance: torch.Tensor
    origin_mm: tuple[float, float, float]
    size_mm: tuple[float, float, float]


def _atlas_dir() -> str:
    try:
        import nilearn.datasets
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError("the synthetic corpus needs the MNI152 templates bundled with nilearn; "
                          "install it with `pip install nilearn` (extra 'atlas' of dpm-flair)") from exc
    return os.path.join(os.path.dirname(nilearn.datasets.__file__), "data")


@functools.lru_cache(maxsize=1)
def load_atlas() -> Atlas:
    """Load and prepare the MNI152 2009a templates once per process (about 1 s)."""
    import nibabel as nib
    from scipy import ndimage as ndi

    folder = _atlas_dir()
    vols, affine = {}, None
    for name, fname in _ATLAS_FILES.items():
        path = os.path.join(folder, fname)
        if not os.path.exists(path):
            raise FileNotFoundError(f"MNI152 template {path} is missing; reinstall nilearn (it ships these files)")
        img = nib.load(path)
        vols[name] = np.asarray(img.dataobj)[:, :, _Z_CROP[0]:_Z_CROP[1] + 1]     # [X, Y, Z] uint8
        affine = img.affine
    diagonal = np.diag(affine)[:3]
    if not np.allclose(np.abs(diagonal), 1.0) or not np.allclose(affine[:3, :3], np.diag(diagonal)):
        raise ValueError("the MNI152 templates are expected on an axis-aligned 1 mm grid")
    gm = vols["gm"].astype(np.float32) / 255.0
    wm = vols["wm"].astype(np.float32) / 255.0
    # Intracranial volume: the skull-stripped brain closed over sulci, holes (ventricles) filled, 1 voxel margin.
    brain = vols["t1"] > 0
    icv = ndi.binary_dilation(ndi.binary_fill_holes(ndi.binary_closing(brain, iterations=3)), iterations=1)
    coarse = icv[::2, ::2, ::2]
    dist = (ndi.distance_transform_edt(~coarse) - ndi.distance_transform_edt(coarse)) * 2.0   # mm, >0 outside
    tissue = torch.from_numpy(np.stack([gm, wm]).transpose(0, 3, 2, 1).copy())[None]          # [1, 2, Z, Y, X]
    distance = torch.from_numpy(dist.astype(np.float32).transpose(2, 1, 0).copy())[None, None]
    shape = gm.shape
    origin = (float(affine[0, 3]), float(affine[1, 3]), float(affine[2, 3] + _Z_CROP[0]))
    size = tuple(float(n - 1) for n in shape)
    assert all((n - 1) % 2 == 0 for n in shape), "2 mm grid must span the 1 mm grid exactly"
    return Atlas(tissue=tissue, distance=distance, origin_mm=origin, size_mm=size)


# ---------------------------------------------------------------------------------------------------------------------
# Per-subject anatomy

@dataclasses.dataclass
class Anatomy:
    """Everything about one subject's head that does not depend on the contrast (drawn by :func:`sample_anatomy`).

    Lengths in mm, angles in degrees. ``lesions`` holds one row per lesion: a uniform draw that picks the centre
    among parenchyma points, two shape phases, semi-axes (3, mm), in-plane angle (rad) and irregularity; empty
    [0, 8] when the subject has none. All lesions of a subject share ``lesion_factors`` (PD, T1, T2 multipliers).
    """
    rotation_deg: np.ndarray        # [3] yaw (in-plane), pitch (about L-R), roll (about A-P)
    scale: np.ndarray               # [3] head size factors along u, v, z
    shift_mm: np.ndarray            # [3] head position in the FOV (u, v) and slab offset (z)
    slab_center_mni_z: float        # MNI z (mm) of the centre of the slice stack
    deform_modes: np.ndarray        # [M, 7] elastic deformation: wave vector (3), phase, amplitude (3)
    texture: torch.Tensor           # [1, 2, Zc, Yc, Xc] signed distance + a random texture field, 2 mm atlas grid
    shell_modes: np.ndarray         # [M, 6] smooth relative thickness changes of skull and scalp
    layers_mm: np.ndarray           # [8] thickness: CSF rim, dura, inner table, diploe, outer table, muscle, fat, skin
    tissue_params: dict[str, np.ndarray]
    lesions: np.ndarray             # [L, 8]
    lesion_factors: np.ndarray      # [3]
    gad_factors: np.ndarray         # [2]
    atrophy_mm: float               # extra subarachnoid CSF (mm)
    lesion_centres: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros((0, 3)))   # [L, 3] mm


def _smooth_modes(rng: np.random.Generator, n: int, wavelength_mm: tuple[float, float], amplitude: float,
                  ncomp: int) -> np.ndarray:
    """Random plane waves: [n, 4 + ncomp] rows (k_u, k_v, k_z, phase, amp_1..amp_ncomp)."""
    direction = rng.normal(size=(n, 3))
    direction /= np.linalg.norm(direction, axis=1, keepdims=True)
    k = direction * (2 * np.pi / rng.uniform(*wavelength_mm, size=(n, 1)))
    phase = rng.uniform(0, 2 * np.pi, size=(n, 1))
    amp = rng.normal(size=(n, ncomp)) * amplitude / math.sqrt(n / 2)
    return np.concatenate([k, phase, amp], axis=1)


def _eval_modes(modes: np.ndarray, pts: torch.Tensor) -> torch.Tensor:
    """Sum of plane waves at points ``pts`` [..., 3] (mm): [..., ncomp]."""
    m = torch.from_numpy(modes.astype(np.float32))
    arg = pts @ m[:, :3].T + m[:, 3]                                   # [..., n]
    return torch.sin(arg) @ m[:, 4:]                                   # [..., ncomp]


# Per-subject variety of the anatomy draws (:func:`sample_anatomy`). Every setting draws the same random numbers in the
# same order and maps them onto its own ranges, so "standard" corpora stay byte-identical to those written before
# "wide" existed. "wide" (pre-training corpora): slabs anywhere from the temporal lobes to the vertex, larger and
# more anisotropic heads, stronger non-rigid warps and atrophy, larger in-plane rotations and tilts.
VARIETY = {
    "standard": {"slab_centre_mni_z": (5.0, 30.0),   # mm: between the basal ganglia and the centrum semiovale
                 "rotation_deg": (12.0, 8.0, 4.0),    # in-plane, pitch, roll: uniform ± these
                 "scale": (0.9, 1.04), "axis_scale_sd": 0.025,
                 "deform_rms_mm": 2.5, "atrophy_mean_mm": 0.8},
    "wide": {"slab_centre_mni_z": (-20.0, 60.0), "rotation_deg": (25.0, 14.0, 6.0),
             "scale": (0.82, 1.12), "axis_scale_sd": 0.06,
             "deform_rms_mm": 4.0, "atrophy_mean_mm": 1.6},
}


def sample_anatomy(rng: np.random.Generator, has_lesion: bool, num_slices: int, slice_spacing_mm: float,
                   variety: str = "standard") -> Anatomy:
    """Draw one subject's pose, deformation, head layers, tissue parameters and lesions (ranges:
    ``VARIETY[variety]``)."""
    if variety not in VARIETY:
        raise ValueError(f"variety {variety!r} is unknown; choose one of {sorted(VARIETY)}")
    v = VARIETY[variety]
    atlas = load_atlas()
    rotation = np.array([rng.uniform(-r, r) for r in v["rotation_deg"]])
    s = rng.uniform(*v["scale"])
    scale = s * np.exp(rng.normal(0, v["axis_scale_sd"], size=3))
    shift = np.array([rng.uniform(-8, 8), rng.uniform(-6, 6), 0.0])
    # Slab: centred in the variety's MNI z range, kept inside MNI z -45 .. +85 mm.
    half = 0.5 * (num_slices - 1) * slice_spacing_mm
    lo, hi = -45 + half, 85 - half
    centre = rng.uniform(*v["slab_centre_mni_z"])
    centre = float(np.clip(centre, lo, hi)) if lo <= hi else 20.0
    deform = _smooth_modes(rng, 8, (60., 160.), v["deform_rms_mm"], 3)
    # Random fields on a 4 mm atlas grid, upsampled to the 2 mm grid of the distance map so that both are read by one
    # grid_sample call: [1, 2, Zc, Yc, Xc] = (signed distance, texture).
    coarse_shape = atlas.distance.shape[2:]
    tex = torch.from_numpy(rng.standard_normal([1, 1] + [(n - 1) // 2 + 1 for n in coarse_shape]).astype(np.float32))
    tex = F.interpolate(tex, size=coarse_shape, mode="trilinear", align_corners=True) * 1.4   # keep std about 1
    texture = torch.cat([atlas.distance, tex], dim=1)
    layers = np.array([rng.uniform(1.0, 2.5), 1.0, rng.uniform(1.5, 2.5), rng.uniform(2.0, 4.0),
                       rng.uniform(1.5, 2.5), rng.uniform(1.5, 3.5), rng.uniform(2.0, 5.0), rng.uniform(1.0, 2.0)])
    shell = _smooth_modes(rng, 6, (50., 150.), 1.0, 2) * np.array([1, 1, 1, 1, 0.15, 0.25])
    params = sample_tissue_params(rng)
    atrophy = float(rng.exponential(v["atrophy_mean_mm"]))
    f2 = rng.uniform(*LESION_T2_FACTOR)
    factors = np.array([rng.uniform(*LESION_PD_FACTOR), 1 + (f2 - 1) * rng.uniform(*LESION_T1_SHARE), f2])
    n_les = int(rng.integers(1, 4))
    lesions = np.array([[rng.uniform(), rng.uniform(), rng.uniform(),                 # centre pick, shape phases
                         rng.uniform(4, 20), rng.uniform(4, 20), rng.uniform(4, 15),  # semi-axes (mm)
                         rng.uniform(0, np.pi), rng.uniform(0.2, 0.45)]               # angle, irregularity
                        for _ in range(n_les)])
    if not has_lesion:
        lesions = lesions[:0]
    gad = np.array([rng.uniform(*GADOLINIUM_T1_FACTOR["lesion"]), rng.uniform(*GADOLINIUM_T1_FACTOR["dura"])])
    return Anatomy(rotation, scale, shift, centre, deform, texture, shell, layers, params, lesions, factors, gad,
                   atrophy)


def _rotation_matrix(deg: np.ndarray) -> np.ndarray:
    yaw, pitch, roll = np.deg2rad(deg)
    rz = np.array([[np.cos(yaw), -np.sin(yaw), 0], [np.sin(yaw), np.cos(yaw), 0], [0, 0, 1]])
    rx = np.array([[1, 0, 0], [0, np.cos(pitch), -np.sin(pitch)], [0, np.sin(pitch), np.cos(pitch)]])
    ry = np.array([[np.cos(roll), 0, np.sin(roll)], [0, 1, 0], [-np.sin(roll), 0, np.cos(roll)]])
    return rz @ rx @ ry


def subject_points(shape_hw: tuple[int, int], fov_mm: tuple[float, float], slice_z_mm: np.ndarray,
                   sub_offsets_mm: np.ndarray) -> torch.Tensor:
    """Sample points in the subject frame: float32 [S, n_sub, Hs, Ws, 3] (u, v, z) mm, centre pixel at 0."""
    hs, ws = shape_hw
    u = (torch.arange(hs, dtype=torch.float32) - hs // 2) * (fov_mm[0] / hs)
    v = (torch.arange(ws, dtype=torch.float32) - ws // 2) * (fov_mm[1] / ws)
    z = torch.from_numpy((slice_z_mm[:, None] + sub_offsets_mm[None, :]).astype(np.float32))     # [S, n_sub]
    S, n = z.shape
    pts = torch.empty(S, n, hs, ws, 3)
    pts[..., 0] = u[:, None]
    pts[..., 1] = v[None, :]
    pts[..., 2] = z[:, :, None, None]
    return pts


def _smoothstep(x: torch.Tensor, width: float) -> torch.Tensor:
    """0 for x << 0, 1 for x >> 0, linear over ``width`` (partial volume of a boundary)."""
    return (x / width + 0.5).clamp_(0.0, 1.0)


def _atlas_grid(anat: Anatomy, pts: torch.Tensor) -> torch.Tensor:
    """Subject-frame points [..., 3] (mm) -> grid_sample coordinates [1, N, 1, 1, 3] in the atlas (x, y, z order).

    Elastic deformation, then pose. u maps to -x (radiological), v to -y (anterior at w = 0), z to z.
    """
    atlas = load_atlas()
    p = pts + _eval_modes(anat.deform_modes, pts)
    p = p - torch.tensor(anat.shift_mm, dtype=torch.float32)
    R = _rotation_matrix(anat.rotation_deg) / anat.scale[None, :]
    flip = np.diag([-1.0, -1.0, 1.0])
    M = torch.from_numpy((flip @ R).astype(np.float32))
    centre = torch.tensor([0.0, -17.0, anat.slab_center_mni_z], dtype=torch.float32)   # MNI brain centre in-plane
    q = p @ M.T + centre                                                               # [..., 3] MNI mm
    origin = torch.tensor(atlas.origin_mm, dtype=torch.float32)
    size = torch.tensor(atlas.size_mm, dtype=torch.float32)
    return ((q - origin) / size * 2 - 1).reshape(1, -1, 1, 1, 3)                        # align_corners=True


def _sample(volume: torch.Tensor, grid: torch.Tensor, shape, padding: str) -> list[torch.Tensor]:
    out = F.grid_sample(volume, grid, mode="bilinear", padding_mode=padding, align_corners=True)
    return [out[0, i, :, 0, 0].reshape(shape) for i in range(volume.shape[1])]


def place_lesions(anat: Anatomy, slice_z_mm: np.ndarray, fov_mm: tuple[float, float]) -> None:
    """Choose lesion centres (subject frame, mm) in deep parenchyma of the imaged slices; sets ``anat.lesion_centres``.

    Candidates are points with GM + WM > 0.95 on a 64 x 64 grid of each slice centre plane, excluding the first and
    last slice when there are more than two, so every lesion shows on at least one slice.
    """
    anat.lesion_centres = np.zeros((len(anat.lesions), 3))
    if len(anat.lesions) == 0:
        return
    pts = subject_points((64, 64), fov_mm, np.asarray(slice_z_mm, dtype=np.float64), np.zeros(1))[:, 0]
    gm, wm = _sample(load_atlas().tissue, _atlas_grid(anat, pts), pts.shape[:-1], "zeros")
    cand_mask = (gm + wm) > 0.95
    if cand_mask.shape[0] > 2:
        cand_mask[0] = False
        cand_mask[-1] = False
    cand = torch.nonzero(cand_mask)
    if len(cand) == 0:                    # no parenchyma in the slab (cannot happen with the MNI slab limits)
        anat.lesions = anat.lesions[:0]
        anat.lesion_centres = np.zeros((0, 3))
        return
    for i, row in enumerate(anat.lesions):
        pick = cand[min(int(row[0] * len(cand)), len(cand) - 1)]
        anat.lesion_centres[i] = pts[pick[0], pick[1], pick[2]].numpy()


def render_fractions(anat: Anatomy, pts: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Tissue fractions of ``anat`` at subject-frame points.

    Args:
        anat: the subject (with lesion centres from :func:`place_lesions`).
        pts: float32 [S, n_sub, Hs, Ws, 3] subject-frame points (mm) from :func:`subject_points`.
    Returns:
        fractions: float32 [K, S, n_sub, Hs, Ws], K = len(TISSUES), summing to <= 1 (the rest is air).
        texture: float32 [S, n_sub, Hs, Ws] zero-mean, unit-variance-ish random field fixed to the anatomy.
    """
    atlas = load_atlas()
    shp = pts.shape[:-1]
    g = _atlas_grid(anat, pts)
    gm, wm = _sample(atlas.tissue, g, shp, "zeros")
    d, t0 = _sample(anat.texture, g, shp, "border")
    idx = {name: i for i, name in enumerate(TISSUES)}
    frac = torch.zeros((len(TISSUES),) + tuple(shp))
    # Brain: inside the intracranial surface (shifted out by the atrophy CSF): GM, WM, lesions, CSF in the rest.
    inside = 1.0 - _smoothstep(d - anat.atrophy_mm, 1.0)
    parench = (gm + wm).clamp(max=1.0)
    lesion = _render_lesions(anat, pts, parench)
    frac[idx["gm"]] = gm * inside * (1 - lesion)
    frac[idx["wm"]] = wm * inside * (1 - lesion)
    frac[idx["lesion_gm"]] = gm * inside * lesion
    frac[idx["lesion_wm"]] = wm * inside * lesion
    frac[idx["csf"]] = (1.0 - parench) * inside
    # Shells outside: CSF rim, dura, inner table, diploe, outer table, muscle, fat, skin; smooth thickness changes.
    shell = _eval_modes(anat.shell_modes, pts)
    mod_skull = 1 + shell[..., 0].clamp(-0.4, 0.4)
    mod_scalp = 1 + shell[..., 1].clamp(-0.6, 0.6)
    names = ("csf", "dura", "bone", "marrow", "bone", "muscle", "fat", "skin")
    edge = anat.atrophy_mm
    lower = _smoothstep(d - edge, 1.0)
    for i, name in enumerate(names):
        mod = mod_skull if 2 <= i <= 4 else (mod_scalp if i >= 5 else 1.0)
        edge = edge + float(anat.layers_mm[i]) * mod
        upper = _smoothstep(d - edge, 1.5 if i < 7 else 2.5)     # the skin-air edge is the least sharp
        frac[idx[name]] += lower - upper
        lower = upper
    return frac, t0


def _render_lesions(anat: Anatomy, pts: torch.Tensor, parench: torch.Tensor) -> torch.Tensor:
    """Lesion fraction [S, n_sub, Hs, Ws] in [0, 1]: lobulated ellipsoids around the placed centres, in parenchyma."""
    out = torch.zeros(pts.shape[:-1])
    z_lo, z_hi = float(pts[..., 2].min()), float(pts[..., 2].max())
    for row, c in zip(anat.lesions, anat.lesion_centres):
        reach = float(np.max(row[3:6])) * (1 + row[7]) + 2.0       # no voxel of this lesion beyond this distance
        if c[2] + reach < z_lo or c[2] - reach > z_hi:
            continue
        semi = torch.tensor(row[3:6], dtype=torch.float32)
        ang, irregular = float(row[6]), float(row[7])
        rot = torch.tensor([[math.cos(ang), math.sin(ang), 0], [-math.sin(ang), math.cos(ang), 0], [0, 0, 1]],
                           dtype=torch.float32)
        rel = (pts - torch.tensor(c, dtype=torch.float32)) @ rot.T / semi
        r = rel.norm(dim=-1)
        # Irregular boundary: radius modulated by low-order angular harmonics (a lobulated blob).
        theta = torch.atan2(rel[..., 1], rel[..., 0])
        phi = torch.atan2(rel[..., 2], rel[..., :2].norm(dim=-1))
        wobble = (math.sin(row[1] * 6.28) * torch.cos(2 * theta + row[2] * 6.28)
                  + 0.7 * torch.cos(3 * theta + row[1] * 9.0) * torch.cos(phi)
                  + 0.5 * torch.sin(2 * phi + row[2] * 5.0))
        radius = 1 + irregular * wobble / 2.2
        out = torch.maximum(out, _smoothstep((radius - r) * semi.min(), 1.5))
    # Oedema stays in tissue: fades out where the voxel is mostly CSF.
    return out * ((parench - 0.2) / 0.3).clamp(0.0, 1.0)
