"""Synthetic brain corpus in the fastMRI multi-coil HDF5 format: in-memory subjects, file writer and the CLI.

A subject is the MNI152 brain (training.phantom) under a random elastic deformation and head pose, with skull and
scalp shells, optional stroke-like lesions, per-subject tissue parameters, a contrast from its signal equation, a
smooth transmit bias and image phase, coil sensitivities of loop coils around the head and complex Gaussian noise.

Layouts
-------
In memory (project convention, DESIGN.md §2):
    SyntheticSubject.kspace  [S, C, H, 2W] complex64   ky = H phase encode (patient L-R), readout kx with 2x
                                                       oversampling (anterior-posterior); the object lies in the
                                                       central half of the readout FOV
    SyntheticSubject.image   [S, H, W] complex64       noise-free ground truth on the recon FOV, with its phase and
                                                       intensity bias (coil images = image * maps)
    SyntheticSubject.maps    [S, C, H, W] complex64    coil maps on the recon FOV, sum_c |maps|^2 = 1
On disk (exactly the fastMRI layout, which stores the readout on the second-to-last axis):
    kspace                   [S, C, 2W, H] complex64   = SyntheticSubject.kspace.transpose(-1, -2)
    reconstruction_rss       [S, W, H] float32         RSS of the recon-FOV k-space (noisy, as fastMRI), rows = readout
    ismrmrd_header           bytes, ISMRMRD XML (valid for ismrmrd.xsd); attrs acquisition, max, norm, patient_id,
                             seed, generator, plus snr, num_lesions, slice_z_mm
    lesion_mask              [S, W, H] uint8 (extra, not in fastMRI): lesion fraction > 0.5
Use training.fastmri_data to read files back in the project convention.

Determinism: everything is drawn from numpy/torch generators seeded by ``seed`` (same seed, same bytes). Anatomy,
coil set-up and contrast draw from separate streams, so the same seed gives the same head in every contrast.
"""
from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import math
import os
import time
import zlib
from collections.abc import Sequence

import h5py
import numpy as np
import torch

from dpm_core.combine import rss
from dpm_core.fft import fft2c, ifft2c

from . import phantom
from .fastmri_data import remove_readout_oversampling

__all__ = ["GENERATOR_VERSION", "SyntheticSubject", "generate_subject", "build_header", "write_fastmri_h5",
           "subject_seed", "generate_corpus", "acquire", "main", "IMAGE_FRAME"]

GENERATOR_VERSION = "dpm-flair.training.synth/1"
_STREAM_ANATOMY, _STREAM_SESSION, _STREAM_CONTRAST = 0, 1, 2
# Where the generated images run in patient coordinates (DICOM LPS), before the subject's pose: rows (phase encoding)
# towards the patient's left, columns (readout) towards posterior, the slice index towards the head
# (phantom._atlas_grid: u -> -x, v -> -y in MNI RAS, z -> z). The (read, phase, slice) frame of
# gadgets.mrd_io.GeometrySpec for raw files written from this k-space.
IMAGE_FRAME = ((0.0, 1.0, 0.0), (1.0, 0.0, 0.0), (0.0, 0.0, 1.0))
_RSS_SCALE = 1e-4          # target 99.5th percentile of |image| (fastMRI-like magnitudes), times a random gain


@dataclasses.dataclass
class SyntheticSubject:
    """One synthetic volume (one subject, one contrast).

    Attributes:
        kspace: [S, C, H, 2W] complex64 fully sampled k-space with 2x readout oversampling, noise included.
        image: [S, H, W] complex64 noise-free ground truth on the recon FOV.
        maps: [S, C, H, W] complex64 coil sensitivities on the recon FOV, normalized (sum_c |maps|^2 = 1).
        segmentation: name -> [S, H, W] float32 fractions on the recon grid: gm, wm, csf (incl. the subarachnoid
            rim), lesion, head (any tissue).
        header_xml: ISMRMRD XML header (str).
        attrs: the fastMRI file attributes (acquisition, max, norm, patient_id, seed, generator, ...).
        protocol: the sequence parameters used.
        noise_std: std of the complex k-space noise per sample (E|n|^2 = noise_std^2).
        slice_z_mm: [S] slice positions (mm) relative to the slab centre.
    """
    kspace: torch.Tensor
    image: torch.Tensor
    maps: torch.Tensor
    segmentation: dict[str, torch.Tensor]
    header_xml: str
    attrs: dict
    protocol: phantom.Protocol
    noise_std: float
    slice_z_mm: np.ndarray

    @property
    def contrast(self) -> str:
        return self.protocol.contrast

    def recon_kspace(self) -> torch.Tensor:
        """k-space on the recon FOV (readout oversampling removed): [S, C, H, W] complex64."""
        return remove_readout_oversampling(self.kspace, self.image.shape[-1])

    def reconstruction_rss(self) -> torch.Tensor:
        """RSS of the recon-FOV k-space, project orientation: [S, H, W] float32 (the file stores its transpose).

        Computed once from the oversampled coil images cropped to the recon FOV (equal, to float rounding, to
        ``rss(ifft2c(self.recon_kspace()))``) and cached.
        """
        cached = getattr(self, "_rss", None)
        if cached is None or cached.shape[0] != self.kspace.shape[0]:
            W = self.image.shape[-1]
            start = self.kspace.shape[-1] // 2 - W // 2
            cached = rss(ifft2c(self.kspace)[..., start:start + W]).float()
            self._rss = cached
        return cached


def subject_seed(base_seed: int, index: int, contrast: str | None = None) -> int:
    """Seed of subject ``index`` of a corpus: independent streams per (base_seed, index[, contrast]), 63-bit int."""
    key = [int(base_seed), int(index)] + ([zlib.crc32(contrast.encode())] if contrast else [])
    return int(np.random.SeedSequence(key).generate_state(2, np.uint32).astype(np.uint64) @ np.array([1, 2 ** 31],
                                                                                                      np.uint64))


def _rng(seed: int, *stream: int) -> np.random.Generator:
    return np.random.default_rng([int(seed) & 0xFFFFFFFF, int(seed) >> 32, *stream])


def _parse_snr(snr, rng: np.random.Generator) -> float:
    if isinstance(snr, (tuple, list)):
        lo, hi = float(snr[0]), float(snr[1])
        if not 0 < lo <= hi:
            raise ValueError(f"snr range {snr} must satisfy 0 < low <= high")
        return float(math.exp(rng.uniform(math.log(lo), math.log(hi))))
    if not float(snr) > 0:
        raise ValueError(f"snr must be > 0 (or a (low, high) range); got {snr}")
    return float(snr)


def _coil_sensitivities(rng: np.random.Generator, num_coils: int, pts: torch.Tensor, head_scale: float) -> torch.Tensor:
    """Loop coils on an ellipse around the head: complex64 [C, *pts.shape[:-1]].

    Each loop is two antiparallel wires along z (2-D Biot-Savart: the receive field B_x - i B_y of a wire at p is
    proportional to 1 / (q - p) with q = u + i v), softened within 8 mm of the wire, times a through-plane
    profile a^2 / (a^2 + dz^2). Coils of more than 8 channels are split over two rings.
    """
    q = torch.complex(pts[..., 0], pts[..., 1])
    z = pts[..., 2]
    rings = 2 if num_coils >= 8 else 1
    per_ring = [num_coils // rings + (1 if r < num_coils % rings else 0) for r in range(rings)]
    a_u, a_v = head_scale * rng.uniform(112, 122), head_scale * rng.uniform(130, 140)
    out = []
    for r, n in enumerate(per_ring):
        z_ring = (0.0 if rings == 1 else (-22.0 if r == 0 else 22.0)) + rng.uniform(-6, 6)
        offset = rng.uniform(0, 2 * np.pi)
        for k in range(n):
            ang = offset + 2 * np.pi * k / n + rng.normal(0, 0.08) + (np.pi / n if r == 1 else 0.0)
            centre = complex(a_u * np.cos(ang), a_v * np.sin(ang))
            tangent = complex(-a_u * np.sin(ang), a_v * np.cos(ang))
            tangent /= abs(tangent)
            half = 0.5 * min(90.0, 2 * np.pi * 0.5 * (a_u + a_v) / n * 1.05)
            d1, d2 = q - (centre + half * tangent), q - (centre - half * tangent)
            soft = 8.0 ** 2
            field = d1.conj() / (d1.abs() ** 2 + soft) - d2.conj() / (d2.abs() ** 2 + soft)
            a = 1.5 * half
            profile = a ** 2 / (a ** 2 + (z - z_ring) ** 2)
            out.append(field * profile * complex(np.exp(1j * rng.uniform(0, 2 * np.pi))))
    return torch.stack(out).to(torch.complex64)


def _modes_field(rng: np.random.Generator, pts: torch.Tensor, n: int, wavelength: tuple[float, float],
                 amplitude: float) -> torch.Tensor:
    """A smooth random scalar field at ``pts`` [..., 3]: sum of ``n`` plane waves, std about ``amplitude``."""
    modes = phantom._smooth_modes(rng, n, wavelength, amplitude, 1)
    return phantom._eval_modes(modes, pts)[..., 0]


def _bandlimit(x: torch.Tensor, out_hw: tuple[int, int]) -> torch.Tensor:
    """Supersampled real maps [..., Hs, Ws] -> [..., H, W] complex64 by cropping the centre of k-space.

    Intensities are preserved (orthonormal FFT: the crop scales amplitude by sqrt(H W / (Hs Ws)), undone here).
    """
    hs, ws = x.shape[-2:]
    h, w = out_hw
    k = fft2c(x.to(torch.complex64))
    k = k[..., hs // 2 - h // 2: hs // 2 - h // 2 + h, ws // 2 - w // 2: ws // 2 - w // 2 + w]
    return ifft2c(k) * math.sqrt((hs * ws) / (h * w))


def generate_subject(seed: int, contrast: str = "AXFLAIR", matrix: int = 128, coils: int = 8, slices: int = 8, *,
                     fov_mm: float = 240.0, slice_thickness_mm: float = 5.0, slice_gap_mm: float = 1.0,
                     snr: float | tuple[float, float] = (25.0, 60.0), lesion_fraction: float = 0.5,
                     lesion: bool | None = None, supersample: int | None = None, subslices: int = 2,
                     variety: str = "standard", threads: int | None = 1) -> SyntheticSubject:
    """Simulate one fully sampled multi-coil volume in memory.

    Args:
        seed: subject seed (non-negative int < 2**63); fixes anatomy, coils and, per contrast, protocol and noise.
        contrast: one of ``phantom.CONTRASTS`` (AXT1, AXT1PRE, AXT1POST, AXT2, AXPD, AXFLAIR).
        matrix: recon matrix H = W (even); the readout is sampled at 2W.
        coils: number of receive channels C.
        slices: number of consecutive axial slices S (a volume).
        fov_mm: square recon FOV (mm); the readout FOV is twice this.
        slice_thickness_mm, slice_gap_mm: slice geometry; slice spacing = thickness + gap.
        snr: mean ground-truth magnitude in the brain divided by the noise std, or a (low, high) range drawn
            log-uniformly per subject and contrast.
        lesion_fraction: probability that the subject has 1-3 stroke-like lesions.
        lesion: force lesions on (True) or off (False) regardless of ``lesion_fraction``.
        supersample: in-plane supersampling of the anatomy before band-limiting to the matrix (Gibbs ringing as on
            a scanner); 1 disables it. None: 2 for pixels of 1.2 mm or more, else 1 (finer than the 1 mm atlas
            gains nothing).
        subslices: samples across the slice thickness averaged for through-plane partial volume.
        variety: per-subject anatomy ranges, a key of ``phantom.VARIETY``: "standard" (mid-brain slabs, mild warps)
            or "wide" (slabs from the temporal lobes to the vertex, larger heads and warps: pre-training corpora).
        threads: torch intra-op threads while generating (restored afterwards); 1 is fastest on a shared CPU
            (OpenMP oversubscription costs 10x there); None keeps the current setting.
    Returns:
        :class:`SyntheticSubject`.
    """
    if not isinstance(matrix, (int, np.integer)) or matrix < 16 or matrix % 2:
        raise ValueError(f"matrix must be an even int >= 16 (recon matrix H = W); got {matrix!r}")
    if not 1 <= int(coils) <= 64:
        raise ValueError(f"coils must be between 1 and 64; got {coils}")
    if not 1 <= int(slices) <= 40:
        raise ValueError(f"slices must be between 1 and 40; got {slices}")
    if contrast not in phantom.CONTRASTS:
        raise ValueError(f"contrast {contrast!r} is unknown; use one of {sorted(phantom.CONTRASTS)}")
    if not 0.0 <= lesion_fraction <= 1.0:
        raise ValueError(f"lesion_fraction must be within [0, 1]; got {lesion_fraction}")
    if not (isinstance(seed, (int, np.integer)) and 0 <= seed < 2 ** 63):
        raise ValueError(f"seed must be an int in [0, 2**63); got {seed!r}")
    if variety not in phantom.VARIETY:
        raise ValueError(f"variety {variety!r} is unknown; use one of {sorted(phantom.VARIETY)}")
    if supersample is None:
        supersample = 2 if fov_mm / matrix >= 1.2 else 1
    if int(supersample) < 1 or int(subslices) < 1:
        raise ValueError(f"supersample and subslices must be >= 1; got {supersample}, {subslices}")
    if threads is None:
        return _generate(seed, contrast, matrix, coils, slices, fov_mm, slice_thickness_mm, slice_gap_mm, snr,
                         lesion_fraction, lesion, supersample, subslices, variety)
    before = torch.get_num_threads()
    torch.set_num_threads(int(threads))
    try:
        return _generate(seed, contrast, matrix, coils, slices, fov_mm, slice_thickness_mm, slice_gap_mm, snr,
                         lesion_fraction, lesion, supersample, subslices, variety)
    finally:
        torch.set_num_threads(before)


def _generate(seed, contrast, matrix, coils, slices, fov_mm, slice_thickness_mm, slice_gap_mm, snr, lesion_fraction,
              lesion, supersample, subslices, variety) -> SyntheticSubject:
    H = W = int(matrix)
    C, S = int(coils), int(slices)
    ss = int(supersample)

    # --- Anatomy (contrast independent) ----------------------------------------------------------------------------
    rng_a = _rng(seed, _STREAM_ANATOMY)
    has_lesion = bool(rng_a.uniform() < lesion_fraction) if lesion is None else bool(lesion)
    spacing = slice_thickness_mm + slice_gap_mm
    anat = phantom.sample_anatomy(rng_a, has_lesion, S, spacing, variety)
    slice_z = (np.arange(S) - (S - 1) / 2) * spacing
    sub_off = ((np.arange(subslices) + 0.5) / subslices - 0.5) * slice_thickness_mm
    fov = (float(fov_mm), float(fov_mm))
    phantom.place_lesions(anat, slice_z, fov)

    # --- Contrast ---------------------------------------------------------------------------------------------------
    rng_c = _rng(seed, _STREAM_CONTRAST, zlib.crc32(contrast.encode()))
    protocol = phantom.sample_protocol(contrast, rng_c)
    weights = torch.from_numpy(phantom.signal_weights(protocol, anat.tissue_params, anat.lesion_factors,
                                                      anat.gad_factors))
    idx = {name: i for i, name in enumerate(phantom.TISSUES)}
    brain_cls = [idx[n] for n in ("gm", "wm", "lesion_gm", "lesion_wm")]

    # --- Render slice by slice (bounded memory), band-limit to the matrix ------------------------------------------
    maps_hi = []              # per slice [6, Hs, Ws]: signal, gm, wm, csf, lesion, head
    for s in range(S):
        pts = phantom.subject_points((ss * H, ss * W), fov, slice_z[s:s + 1], sub_off)      # [1, n_sub, Hs, Ws, 3]
        frac, tex = phantom.render_fractions(anat, pts)                                     # [K, 1, n_sub, Hs, Ws]
        sig = torch.einsum("k...,k->...", frac, weights)
        brain = frac[brain_cls].sum(0)
        sig = sig * (1 + 0.035 * tex.clamp(-3, 3) * brain)                 # tissue texture in the parenchyma
        seg = torch.stack([sig, frac[idx["gm"]] + frac[idx["lesion_gm"]], frac[idx["wm"]] + frac[idx["lesion_wm"]],
                           frac[idx["csf"]], frac[idx["lesion_gm"]] + frac[idx["lesion_wm"]], frac.sum(0)])
        maps_hi.append(seg.mean(dim=2)[:, 0])                              # average over the slice thickness
    low = _bandlimit(torch.stack(maps_hi, dim=1), (H, W)) if ss > 1 else torch.stack(maps_hi, 1).to(torch.complex64)
    obj = low[0]                                                           # [S, H, W] complex (≈ real)
    segmentation = {name: low[i + 1].real.clamp(0, 1).float().contiguous()
                    for i, name in enumerate(("gm", "wm", "csf", "lesion", "head"))}

    brain_mask = (segmentation["gm"] + segmentation["wm"] + segmentation["lesion"]) > 0.5
    kspace, image, maps, noise_std, snr_value = acquire(obj, slice_z, fov, C, float(np.mean(anat.scale[:2])),
                                                        brain_mask, snr, _rng(seed, _STREAM_SESSION), rng_c)
    patient_id = hashlib.sha256(f"dpm-synth:{seed}".encode()).hexdigest()
    subject = SyntheticSubject(kspace=kspace, image=image, maps=maps, segmentation=segmentation, header_xml="",
                               attrs={}, protocol=protocol, noise_std=noise_std, slice_z_mm=slice_z)
    target = subject.reconstruction_rss()
    subject.attrs = {"acquisition": contrast, "max": float(target.max()), "norm": float(target.norm()),
                     "patient_id": patient_id, "seed": int(seed), "generator": GENERATOR_VERSION,
                     "snr": snr_value, "num_lesions": int(len(anat.lesions)),
                     "slice_z_mm": slice_z.astype(np.float32)}
    subject.header_xml = build_header(protocol, matrix=H, coils=C, slices=S, fov_mm=fov_mm,
                                      slice_thickness_mm=slice_thickness_mm, patient_id=patient_id, seed=seed)
    return subject


def acquire(obj: torch.Tensor, slice_z_mm: np.ndarray, fov_mm: tuple[float, float], coils: int, head_scale: float,
            brain_mask: torch.Tensor, snr, rng_session: np.random.Generator, rng_contrast: np.random.Generator
            ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, float, float]:
    """The simulated scanner: an object on the recon grid -> fully sampled multi-coil k-space with readout oversampling.

    Loop-coil receive fields (a partial receive-intensity bias), a smooth transmit bias, a smooth image phase, a random
    gain to fastMRI-like magnitudes and complex Gaussian noise at ``snr`` (mean |image| in ``brain_mask`` / noise std).
    ``rng_session`` draws the coils and transmit bias (shared by a subject's contrasts), ``rng_contrast`` the phase,
    gain, SNR and noise, in that order.

    Args:
        obj: [S, H, W] complex64 (≈ real) object on the recon FOV ``fov_mm`` (phase, readout).
        slice_z_mm: [S] slice positions (mm) relative to the slab centre.
        head_scale: head size relative to the atlas (the coil ellipse scales with it).
        brain_mask: [S, H, W] bool, where the SNR is defined (all pixels when empty).
    Returns: (kspace [S, C, H, 2W] complex64 noisy, image [S, H, W] complex64 noise-free, maps [S, C, H, W] complex64,
        noise_std, snr).
    """
    S, H, W = obj.shape
    pts_os = phantom.subject_points((H, 2 * W), (fov_mm[0], 2 * fov_mm[1]), slice_z_mm, np.zeros(1))[:, 0]
    sens = _coil_sensitivities(rng_session, coils, pts_os, head_scale)                                # [C, S, H, 2W]
    sens = sens.permute(1, 0, 2, 3)                                                                   # [S, C, H, 2W]
    rss_sens = rss(sens).clamp_min(1e-12)                                                             # [S, H, 2W]
    maps_os = (sens / rss_sens[:, None]).to(torch.complex64)
    off = W - W // 2                                                        # recon FOV = readout [off, off + W)
    pts = pts_os[:, :, off:off + W]
    recv = rss_sens[:, :, off:off + W]
    recv = (recv / recv[:, H // 2, W // 2].mean()).clamp(0.3, 5.0) ** 0.4   # partial receive-intensity bias
    b1 = torch.exp(_modes_field(rng_session, pts, 6, (180., 400.), 0.12))   # transmit/flip-angle intensity bias

    phase = rng_contrast.uniform(-np.pi, np.pi) + _modes_field(rng_contrast, pts, 6, (150., 400.), 0.6)
    image = obj * (b1 * recv) * torch.polar(torch.ones_like(phase), phase)
    gain = math.exp(rng_contrast.uniform(math.log(0.5), math.log(2.0)))
    ref = float(torch.quantile(image.abs().flatten()[::7], 0.995))
    image = (image * (_RSS_SCALE * gain / max(ref, 1e-20))).to(torch.complex64)
    snr_value = _parse_snr(snr, rng_contrast)
    noise_std = float(image.abs()[brain_mask].mean()) / snr_value if brain_mask.any() else \
        float(image.abs().mean()) / snr_value
    img_os = torch.zeros(S, H, 2 * W, dtype=torch.complex64)
    img_os[:, :, off:off + W] = image
    kspace = fft2c(img_os[:, None] * maps_os)                               # [S, C, H, 2W]
    gen = torch.Generator().manual_seed(int(rng_contrast.integers(0, 2 ** 62)))
    noise = torch.randn((2,) + tuple(kspace.shape), generator=gen) * (noise_std / math.sqrt(2))
    kspace = (kspace + torch.complex(noise[0], noise[1])).to(torch.complex64)
    return kspace, image, maps_os[..., off:off + W].contiguous(), noise_std, snr_value


def build_header(protocol: phantom.Protocol, *, matrix: int, coils: int, slices: int, fov_mm: float,
                 slice_thickness_mm: float, patient_id: str, seed: int) -> str:
    """ISMRMRD XML header of a synthetic fully sampled Cartesian 2-D multi-slice scan (valid for ismrmrd.xsd).

    encodedSpace: matrix (2W, H, 1) and FOV (2 fov, fov, thickness) — readout oversampled; reconSpace: (W, H, 1) and
    (fov, fov, thickness); encodingLimits: ky 0..H-1 with centre H // 2, slice 0..S-1.
    """
    import ismrmrd.xsd as xsd
    from xsdata.models.datatype import XmlDate, XmlTime

    def limit(maximum: int, center: int = 0) -> xsd.limitType:
        return xsd.limitType(minimum=0, maximum=int(maximum), center=int(center))

    W = H = int(matrix)
    encoding = xsd.encodingType(
        encodedSpace=xsd.encodingSpaceType(matrixSize=xsd.matrixSizeType(x=2 * W, y=H, z=1),
                                           fieldOfView_mm=xsd.fieldOfViewMm(x=2 * fov_mm, y=fov_mm,
                                                                            z=slice_thickness_mm)),
        reconSpace=xsd.encodingSpaceType(matrixSize=xsd.matrixSizeType(x=W, y=H, z=1),
                                         fieldOfView_mm=xsd.fieldOfViewMm(x=fov_mm, y=fov_mm, z=slice_thickness_mm)),
        encodingLimits=xsd.encodingLimitsType(
            kspace_encoding_step_0=limit(2 * W - 1, W), kspace_encoding_step_1=limit(H - 1, H // 2),
            kspace_encoding_step_2=limit(0), average=limit(0), slice=limit(slices - 1, slices // 2),
            contrast=limit(0), phase=limit(0), repetition=limit(0), set=limit(0), segment=limit(0)),
        trajectory=xsd.trajectoryType.CARTESIAN,
        echoTrainLength=protocol.echo_train_length)
    seq = xsd.sequenceParametersType(TR=[protocol.TR], TE=[protocol.TE], TI=[protocol.TI] if protocol.TI else [],
                                     flipAngle_deg=[protocol.flip_angle_deg], sequence_type=protocol.sequence_type)
    header = xsd.ismrmrdHeader(
        version=2,
        subjectInformation=xsd.subjectInformationType(patientID=patient_id[:16], patientGender="O"),
        studyInformation=xsd.studyInformationType(studyDate=XmlDate(2024, 1, 1), studyTime=XmlTime(12, 0, 0),
                                                  studyID=f"synth{seed % 100000:05d}", bodyPartExamined="BRAIN",
                                                  studyDescription="synthetic brain (dpm-flair)"),
        measurementInformation=xsd.measurementInformationType(
            measurementID=f"synth_{patient_id[:8]}_{protocol.contrast}", patientPosition=xsd.patientPositionType.HFS,
            protocolName=protocol.contrast, sequenceName=protocol.sequence_type,
            seriesDescription=f"{protocol.contrast} synthetic"),
        acquisitionSystemInformation=xsd.acquisitionSystemInformationType(
            systemVendor="dpm-flair synthetic", systemModel=GENERATOR_VERSION, systemFieldStrength_T=3.0,
            relativeReceiverNoiseBandwidth=0.793, receiverChannels=int(coils),
            coilLabel=[xsd.coilLabelType(coilNumber=c, coilName=f"H{c:02d}") for c in range(coils)]),
        experimentalConditions=xsd.experimentalConditionsType(H1resonanceFrequency_Hz=127_728_000),
        encoding=[encoding], sequenceParameters=seq)
    return xsd.ToXML(header)


def write_fastmri_h5(path: str | os.PathLike, subject: SyntheticSubject) -> None:
    """Write ``subject`` as a fastMRI multi-coil file (layout in the module docstring)."""
    kspace = subject.kspace.transpose(-1, -2).contiguous().numpy()               # [S, C, 2W, H]
    target = subject.reconstruction_rss().transpose(-1, -2).contiguous().numpy()  # [S, W, H]
    with h5py.File(path, "w") as f:
        f.create_dataset("kspace", data=kspace.astype(np.complex64))
        f.create_dataset("reconstruction_rss", data=target.astype(np.float32))
        f.create_dataset("ismrmrd_header", data=np.bytes_(subject.header_xml.encode()))
        f.create_dataset("lesion_mask", data=(subject.segmentation["lesion"] > 0.5).transpose(-1, -2).numpy()
                         .astype(np.uint8))
        for key, value in subject.attrs.items():
            f.attrs[key] = value


def generate_corpus(out_dir: str | os.PathLike, subjects: int, contrasts: Sequence[str], *, seed: int = 0,
                    shared_anatomy: bool = False, progress: bool = True, **kwargs) -> list[dict]:
    """Write ``subjects`` x ``len(contrasts)`` files DIR/synth_<CONTRAST>_s<index>.h5 and DIR/manifest.json.

    With ``shared_anatomy`` subject i is the same head in every contrast (a multi-contrast exam); by default every
    (subject, contrast) file is a different head, so corpora split by contrast share no anatomy (like fastMRI, where
    each file is a different patient). ``kwargs`` go to :func:`generate_subject`. Returns the manifest entries.
    """
    from tqdm import tqdm

    for c in contrasts:
        if c not in phantom.CONTRASTS:
            raise ValueError(f"contrast {c!r} is unknown; use one of {sorted(phantom.CONTRASTS)}")
    if subjects < 1:
        raise ValueError(f"subjects must be >= 1; got {subjects}")
    os.makedirs(out_dir, exist_ok=True)
    jobs = [(i, c) for i in range(subjects) for c in contrasts]
    entries = []
    t0 = time.perf_counter()
    for i, c in tqdm(jobs, desc="dpm-synth", unit="vol", disable=not progress):
        s_seed = subject_seed(seed, i, None if shared_anatomy else c)
        subj = generate_subject(s_seed, c, **kwargs)
        fname = f"synth_{c}_s{i:04d}.h5"
        write_fastmri_h5(os.path.join(out_dir, fname), subj)
        entries.append({"file": fname, "acquisition": c, "subject": i, "seed": s_seed,
                        "patient_id": subj.attrs["patient_id"], "num_lesions": subj.attrs["num_lesions"],
                        "snr": round(subj.attrs["snr"], 2), "kspace_shape": list(subj.kspace.transpose(-1, -2).shape),
                        "TR": subj.protocol.TR, "TE": subj.protocol.TE, "TI": subj.protocol.TI})
    manifest = {"generator": GENERATOR_VERSION, "seed": seed, "shared_anatomy": shared_anatomy,
                "options": {k: (list(v) if isinstance(v, tuple) else v) for k, v in kwargs.items()},
                "atlas": "MNI ICBM152 2009a (nilearn); " + phantom.atlas_license(),
                "seconds": round(time.perf_counter() - t0, 2), "files": entries}
    with open(os.path.join(out_dir, "manifest.json"), "w") as f:
        json.dump(manifest, f, indent=1)
    return entries


def _snr_arg(text: str):
    try:
        parts = [float(p) for p in text.replace(",", ":").split(":")]
    except ValueError:
        parts = []
    if len(parts) not in (1, 2):
        raise argparse.ArgumentTypeError(f"--snr takes a number or a range low:high, got {text!r}")
    return parts[0] if len(parts) == 1 else (parts[0], parts[1])


def main(argv: Sequence[str] | None = None) -> int:
    """CLI ``dpm-synth``: write a synthetic fastMRI-format multi-coil brain corpus."""
    p = argparse.ArgumentParser(prog="dpm-synth", description=__doc__.split("\n")[0])
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--subjects", type=int, default=4, help="subjects per contrast")
    p.add_argument("--contrasts", default="AXT1,AXT2,AXFLAIR",
                   help=f"comma-separated, from {','.join(phantom.CONTRASTS)}")
    p.add_argument("--matrix", type=int, default=128, help="recon matrix H = W (readout sampled at 2W)")
    p.add_argument("--coils", type=int, default=8)
    p.add_argument("--slices", type=int, default=8, help="slices per volume")
    p.add_argument("--seed", type=int, default=0, help="corpus seed (use different seeds for disjoint corpora)")
    p.add_argument("--lesion-fraction", type=float, default=0.5, help="fraction of subjects with lesions")
    p.add_argument("--snr", type=_snr_arg, default=(25.0, 60.0), help="SNR or range low:high (default 25:60)")
    p.add_argument("--fov", type=float, default=240.0, help="recon FOV (mm)")
    p.add_argument("--slice-thickness", type=float, default=5.0)
    p.add_argument("--slice-gap", type=float, default=1.0)
    p.add_argument("--shared-anatomy", action="store_true",
                   help="subject i has the same head in every contrast (default: a new head per file)")
    p.add_argument("--variety", choices=sorted(phantom.VARIETY), default="standard",
                   help="anatomy ranges per subject: standard (mid-brain slabs) or wide (temporal lobes to vertex, "
                        "larger heads and warps; for pre-training)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    a = p.parse_args(argv)
    contrasts = [c.strip() for c in a.contrasts.split(",") if c.strip()]
    try:
        entries = generate_corpus(a.out, a.subjects, contrasts, seed=a.seed, shared_anatomy=a.shared_anatomy,
                                  progress=not a.quiet, matrix=a.matrix, coils=a.coils, slices=a.slices,
                                  lesion_fraction=a.lesion_fraction, snr=a.snr, fov_mm=a.fov,
                                  slice_thickness_mm=a.slice_thickness, slice_gap_mm=a.slice_gap,
                                  variety=a.variety)
    except ValueError as exc:
        p.error(str(exc))
    print(f"wrote {len(entries)} files and manifest.json to {a.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
