"""Acquisitions (or Gadgetron ReconData) -> per-volume k-space buffers for :class:`dpm_core.reconstruct.Reconstructor`.

This is what Gadgetron's NoiseAdjustGadget -> RemoveROOversamplingGadget -> AcquisitionAccumulateTriggerGadget ->
BucketToBufferGadget chain does, written as generator stages over ``(items, header)`` (gadgetron-python style):

    acquisitions --noise_adjust--> prewhitened --remove_oversampling--> W samples --accumulate--> KspaceBuffer

and, for the main gadget input, :func:`buffers_from_recon_data` turns a ReconData message (``bits[i].data`` and
``bits[i].ref``, arrays ``[RO, E1, E2, CHA, N, S, LOC]``, headers ``[E1, E2, N, S, LOC]``) into the same
:class:`KspaceBuffer`. Every measured line is used — imaging *and* calibration (DESIGN.md §4: ``bit.data`` lacks the
calibration-only lines, which live only in ``bit.ref``).

Conventions: k-space ``[S, C, H, W]`` complex64 with ky = H (``encodedSpace.matrixSize.y``; the encoding-limits centre
line is placed at H // 2 exactly as BucketToBuffer does) and kx = W (``reconSpace.matrixSize.x`` after readout
oversampling removal, centre sample at W // 2). One buffer = one volume: all slices sharing (average, contrast,
phase, repetition, set) — each repetition is its own volume and its own image set.
"""
from __future__ import annotations

import collections
import dataclasses
import logging
from collections.abc import Iterable, Iterator

import ismrmrd
import numpy as np

__all__ = ["KspaceBuffer", "NoiseAdjustCount", "EncodingInfo", "encoding_info", "scan_contrast", "noise_adjust",
           "remove_oversampling", "accumulate", "encoding_zero", "buffers_from_acquisitions", "buffers_from_recon_data",
           "whitening_from_noise", "interleaved_calibration", "calibration_note", "VOLUME_COUNTERS"]

log = logging.getLogger(__name__)

VOLUME_COUNTERS = ("average", "contrast", "phase", "repetition", "set")
_CALIBRATION_FLAGS = (ismrmrd.ACQ_IS_PARALLEL_CALIBRATION, ismrmrd.ACQ_IS_PARALLEL_CALIBRATION_AND_IMAGING)
_SKIP_FLAGS = (ismrmrd.ACQ_IS_NAVIGATION_DATA, ismrmrd.ACQ_IS_PHASECORR_DATA, ismrmrd.ACQ_IS_HPFEEDBACK_DATA,
               ismrmrd.ACQ_IS_DUMMYSCAN_DATA, ismrmrd.ACQ_IS_RTFEEDBACK_DATA,
               ismrmrd.ACQ_IS_SURFACECOILCORRECTIONSCAN_DATA, ismrmrd.ACQ_IS_PHASE_STABILIZATION_REFERENCE,
               ismrmrd.ACQ_IS_PHASE_STABILIZATION)


MAX_MATRIX = 2048                # samples per k-space axis the pipeline accepts (clinical 2-D matrices are <= 1024)
MAX_VOLUME_BYTES = 8 << 30       # complex64 k-space of one volume (slices x coils x lines x readout x 8 bytes)
_INTERLEAVING_DIMENSIONS = ("phase", "repetition", "contrast", "average")   # interleavingDimension values


def _flag(flags: int, bit: int) -> bool:
    return bool(int(flags) & (1 << (bit - 1)))


# ---------------------------------------------------------------------------------------------------------------------
# Header

@dataclasses.dataclass(frozen=True)
class EncodingInfo:
    """What the assembly needs from the ISMRMRD header (encoding 0).

    num_lines: H (encoded ky lines); ky_offset: H // 2 - encodingLimits ky centre (added to idx.kspace_encode_step_1);
    readout: W (recon matrix x); encoded_readout: oversampled x; num_slices: slices per volume (encoding limits; 0
    when the header does not declare them: volumes then end at LAST_IN_REPETITION / LAST_IN_MEASUREMENT; a 3-D
    scan's slabs); calibration_mode: parallelImaging's (None without it); interleaving_dimension: the counter its
    'interleaved' mode spreads the calibration over (``interleavingDimension``; repetition when the header names none
    or 'other'); num_partitions: Z, the encoded kz matrix (1 for 2-D scans); kz_offset: Z // 2 - encodingLimits kz
    centre (added to idx.kspace_encode_step_2); recon_partitions: the partitions per slab an image is made of
    (reconSpace z; fewer than Z with slice oversampling); partition_thickness: mm, reconSpace FOV z / its matrix z.
    """
    num_lines: int
    ky_offset: int
    readout: int
    encoded_readout: int
    num_slices: int
    calibration_mode: str | None
    acceleration: int
    interleaving_dimension: str = "repetition"
    num_partitions: int = 1
    kz_offset: int = 0
    recon_partitions: int = 1
    partition_thickness: float = 0.0


def encoding_info(header) -> EncodingInfo:
    """Validate the header for a 2-D Cartesian reconstruction and extract :class:`EncodingInfo`.

    A 3-D encoding (encodedSpace z > 1) is reconstructed slab by slab as a stack of partitions (:func:`accumulate`):
    it must not be accelerated along kz. Raises ValueError (naming the field and what is supported) for non-Cartesian
    trajectories, kz acceleration, or missing encoding sections.
    """
    if header is None or not getattr(header, "encoding", None):
        raise ValueError("the ISMRMRD header has no <encoding> section; send a complete header (HEADER message)")
    enc = header.encoding[0]
    trajectory = getattr(enc.trajectory, "value", enc.trajectory)
    if trajectory != "cartesian":
        raise ValueError(f"encoding trajectory is {trajectory!r}; the DPM reconstruction supports only 'cartesian' "
                         "2-D acquisitions (use a non-Cartesian recon chain for this protocol)")
    H, Z = int(enc.encodedSpace.matrixSize.y), max(int(enc.encodedSpace.matrixSize.z), 1)
    Zr = max(int(enc.reconSpace.matrixSize.z), 1) if Z > 1 else 1
    sizes = {"encodedSpace.matrixSize.y": (H, MAX_MATRIX),         # readout oversampling up to 4x is allowed
             "encodedSpace.matrixSize.x": (int(enc.encodedSpace.matrixSize.x), 4 * MAX_MATRIX),
             "reconSpace.matrixSize.x": (int(enc.reconSpace.matrixSize.x), MAX_MATRIX),
             "encodedSpace.matrixSize.z": (Z, MAX_MATRIX), "reconSpace.matrixSize.z": (Zr, Z)}
    for name, (value, limit) in sizes.items():
        if not 1 <= value <= limit:
            raise ValueError(f"{name} = {value} is outside 1..{limit}; the header declares an impossible matrix "
                             f"(check the encoding section of the protocol)")
    limits = enc.encodingLimits
    centre = limits.kspace_encoding_step_1.center if limits and limits.kspace_encoding_step_1 else H // 2
    kz_centre = limits.kspace_encoding_step_2.center if Z > 1 and limits and limits.kspace_encoding_step_2 else Z // 2
    num_slices = limits.slice.maximum + 1 if limits and limits.slice else 0      # 0: not declared
    pi = enc.parallelImaging
    mode = getattr(pi.calibrationMode, "value", None) if pi is not None and pi.calibrationMode is not None else None
    accel = pi.accelerationFactor.kspace_encoding_step_1 if pi is not None else 1
    accel_kz = int(pi.accelerationFactor.kspace_encoding_step_2 or 1) if pi is not None else 1
    if Z > 1 and accel_kz > 1:
        raise ValueError(f"parallelImaging accelerationFactor.kspace_encoding_step_2 = {accel_kz}: a 3-D scan "
                         "accelerated along kz (2-D undersampling, CAIPIRINHA) is not supported; this reconstruction "
                         "separates a slab into its partitions and needs every kz measured (accelerate along ky only)")
    dimension = getattr(pi.interleavingDimension, "value", None) if pi is not None else None
    return EncodingInfo(num_lines=H, ky_offset=H // 2 - int(centre), readout=int(enc.reconSpace.matrixSize.x),
                        encoded_readout=int(enc.encodedSpace.matrixSize.x), num_slices=int(num_slices),
                        calibration_mode=mode, acceleration=int(accel),
                        interleaving_dimension=dimension if dimension in _INTERLEAVING_DIMENSIONS else "repetition",
                        num_partitions=Z, kz_offset=Z // 2 - int(kz_centre), recon_partitions=Zr,
                        partition_thickness=float(enc.reconSpace.fieldOfView_mm.z) / Zr if Z > 1 else 0.0)


def scan_contrast(header) -> tuple[str, str]:
    """The scan's contrast class and why (:func:`dpm_core.model_choice.classify_contrast`), from the header's
    sequenceParameters (first TR, TE, TI; sequence_type) and measurementInformation.protocolName; any may be absent."""
    from dpm_core.model_choice import classify_contrast

    seq = getattr(header, "sequenceParameters", None)
    meas = getattr(header, "measurementInformation", None)

    def first(name):
        values = getattr(seq, name, None) if seq is not None else None
        return values[0] if values else None

    return classify_contrast(protocol_name=getattr(meas, "protocolName", None) if meas is not None else None,
                             sequence_type=getattr(seq, "sequence_type", None) if seq is not None else None,
                             tr_ms=first("TR"), te_ms=first("TE"), ti_ms=first("TI"))


# ---------------------------------------------------------------------------------------------------------------------
# Buffer

@dataclasses.dataclass
class KspaceBuffer:
    """One volume ready for ``Reconstructor.reconstruct(buffer.kspace, buffer.mask)``.

    Attributes:
        kspace: [S, C, H, W] complex64: every measured line (imaging + calibration), zero elsewhere; readout
            oversampling removed; prewhitened when a noise scan was present.
        mask: [H] bool, the measured phase-encode lines (identical for every slice of the buffer).
        calibration: [H] bool, lines that arrived flagged as calibration (PARALLEL_CALIBRATION[_AND_IMAGING]).
        reference_headers: S ``ismrmrd.AcquisitionHeader``, per slice the imaging acquisition closest to the k-space
            centre line (a calibration-only line only when the slice has no imaging line): geometry, counters and
            time stamps for the image header, as GenericReconGadget takes them.
        slices: S ints, ``idx.slice`` of each slice.
        counters: {"average", "contrast", "phase", "repetition", "set"} shared by the volume.
        complete: False when the stream ended before LAST_IN_SLICE of some slice.
        warnings: what the assembly repaired (lines dropped for NaN/Inf samples, repeated lines averaged), for the
            log and the image comment.
        noise_std: the noise std per real channel of ``kspace`` when it is known: 1/√2 when a noise scan prewhitened
            every line (:data:`dpm_core.noise.PREWHITENED_NOISE_STD`); None when the Reconstructor must estimate it
            (no noise scan, or data prewhitened upstream with a scaling we do not know, as Gadgetron's ReconData).
        readout: [W] bool, the readout samples every measured line holds (an asymmetric echo: the zero-padded rest
            is not data), for ``Reconstructor.reconstruct(..., readout=)``; None when every line holds all W.
        interleaved_calibration: [S, C, H, W] complex64 under calibrationMode 'interleaved' when the volume has no
            ACS block of its own: the lines of the volumes interleaved with it put together
            (:func:`interleaved_calibration`), for ``Reconstructor.reconstruct(..., calibration=)``; else None.
        noise_scale: the noise std of ``kspace`` relative to the acquired samples' (``noise_std`` includes it): 1,
            except for the partitions of a slab with partial Fourier along kz (√(measured kz planes / Z)).

    A 3-D scan's slab arrives as its partitions (:meth:`_SliceAccumulator.partitions`): S = partitions, ``slices``
    their numbers, each partition's reference header at its own position.
    """
    kspace: np.ndarray
    mask: np.ndarray
    calibration: np.ndarray
    reference_headers: list
    slices: list
    counters: dict
    complete: bool = True
    warnings: list = dataclasses.field(default_factory=list)
    noise_std: float | None = None
    readout: np.ndarray | None = None
    interleaved_calibration: np.ndarray | None = None
    noise_scale: float = 1.0

    @property
    def repetition(self) -> int:
        return int(self.counters.get("repetition", 0))

    @property
    def shape(self) -> tuple:
        return tuple(self.kspace.shape)

    def describe(self) -> str:
        """Short identification for logs and error messages."""
        c = self.counters
        return (f"repetition {c.get('repetition', 0)} (average {c.get('average', 0)}, contrast {c.get('contrast', 0)},"
                f" set {c.get('set', 0)}), slices {self.slices}")


def _counters(idx) -> tuple:
    return tuple(int(getattr(idx, name)) for name in VOLUME_COUNTERS)


class _SliceAccumulator:
    """Lines of one slice (of a 3-D scan: one slab): kspace [C, Z, H, W] (Z = 1 for 2-D), measured / calibration
    masks [Z, H], the header of the measured line nearest the k-space centre."""

    def __init__(self, channels: int, info: EncodingInfo):
        Z = info.num_partitions
        volume_bytes = 8 * channels * Z * info.num_lines * info.readout * max(info.num_slices, 1)
        if volume_bytes > MAX_VOLUME_BYTES:
            partitions = f"{Z} partitions x " if Z > 1 else ""
            raise ValueError(f"a volume of {info.num_slices} slice(s) x {channels} coils x {partitions}"
                             f"{info.num_lines} lines x {info.readout} samples needs {volume_bytes / 2 ** 30:.1f} GiB "
                             f"of k-space, more than the {MAX_VOLUME_BYTES / 2 ** 30:.0f} GiB budget: check the "
                             f"header's matrix and slice count (or compress the coils upstream)")
        self.info = info
        self.kspace = np.zeros((channels, Z, info.num_lines, info.readout), dtype=np.complex64)
        self.measured = np.zeros((Z, info.num_lines), dtype=bool)
        self.imaging = np.zeros((Z, info.num_lines), dtype=bool)
        self.calibration = np.zeros((Z, info.num_lines), dtype=bool)
        self.copies = np.zeros((Z, info.num_lines), dtype=np.int32)   # copies averaged into each line
        self.readout = None                 # [W] bool: the readout samples the slice's lines hold (one echo for all)
        self.dropped: list[int] = []       # scan counters of lines dropped for NaN/Inf samples
        self.averaged_lines: set[tuple[int, int]] = set()
        self.best_header = None            # (distance, header)
        self.complete = False

    def add(self, head, data: np.ndarray, ky: int, is_calibration: bool, is_imaging: bool, kz: int = 0,
            measured: tuple[int, int] | None = None) -> None:
        """data: [C, W'] complex64 line (W' = W after oversampling removal; asymmetric echoes are zero-padded).
        measured: (lo, hi), the readout samples of a full-length line that are data, when upstream zero-padding
        filled the rest (Gadgetron's AsymmetricEchoAdjustROGadget, the ReconData path); None: the line's own."""
        C, Z, H, W = self.kspace.shape
        if data.shape[0] != C:
            raise ValueError(f"acquisition scan_counter {head.scan_counter} has {data.shape[0]} channels but the "
                             f"slice started with {C}")
        if not 0 <= ky < H:
            raise ValueError(f"acquisition scan_counter {head.scan_counter}: kspace_encode_step_1 maps to line {ky}, "
                             f"outside the encoded matrix of {H} lines; check encodingLimits.kspace_encoding_step_1")
        if not 0 <= kz < Z:
            raise ValueError(f"acquisition scan_counter {head.scan_counter}: kspace_encode_step_2 maps to partition "
                             f"{kz}, outside the encoded matrix of {Z}; check encodedSpace.matrixSize.z and "
                             f"encodingLimits.kspace_encoding_step_2")
        n = data.shape[1]
        start = W // 2 - int(head.center_sample) if n != W or head.center_sample != n // 2 else 0
        if start < 0 or start + n > W:
            raise ValueError(f"acquisition scan_counter {head.scan_counter}: {n} samples with centre "
                             f"{head.center_sample} do not fit a readout of {W} (readout oversampling not removed?)")
        if not np.isfinite(data).all():
            # One corrupt readout must not cost the volume: the line counts as not measured.
            self.dropped.append(int(head.scan_counter))
            return
        covered = np.zeros(W, dtype=bool)
        lo, hi = (start, start + n) if measured is None else measured
        covered[lo:hi] = True                              # an asymmetric echo: the zero-padded rest is not measured
        if self.readout is None:
            self.readout = covered
        elif not np.array_equal(covered, self.readout):
            have = np.flatnonzero(self.readout)
            raise ValueError(f"acquisition scan_counter {head.scan_counter}: its {hi - lo} samples cover readout samples "
                             f"{lo}..{hi - 1}, the slice's earlier lines {have[0]}..{have[-1]}; every line "
                             f"of a slice must have the same echo (check number_of_samples and center_sample)")
        line = np.zeros((C, W), dtype=np.complex64)
        line[:, lo:hi] = data[:, lo - start:hi - start]
        if self.measured[kz, ky] and is_imaging == bool(self.imaging[kz, ky]):
            # Repeated copies of a line (averages, re-acquisitions) are averaged, never silently overwritten.
            k = self.copies[kz, ky]
            self.kspace[:, kz, ky, :] = (self.kspace[:, kz, ky, :] * k + line) / (k + 1)
            self.copies[kz, ky] = k + 1
            self.averaged_lines.add((kz, ky))
        elif is_imaging or not self.measured[kz, ky]:
            # imaging copies take precedence over separate calibration copies of the same line
            self.kspace[:, kz, ky, :] = line
            self.copies[kz, ky] = 1
        self.measured[kz, ky] = True
        self.imaging[kz, ky] |= is_imaging
        self.calibration[kz, ky] |= is_calibration
        # imaging lines first, as GenericReconGadget (bit.data)
        distance = (not is_imaging, abs(ky - H // 2) + abs(kz - Z // 2))
        if self.best_header is None or distance < self.best_header[0]:
            self.best_header = (distance, head)

    def partitions(self, slice_index: int) -> list[_Partition]:
        """The slice as 2-D k-space: itself for a 2-D scan; for a slab, its kz transformed to partitions.

        A slab's partitions: inverse FFT along kz (:func:`dpm_core.fft.ifftc`, kz centre at Z // 2), the centred
        ``recon_partitions`` kept (slice oversampling removed), partition p at (p - recon_partitions // 2) x the
        partition thickness along slice_dir from the slab's position and numbered ``slice_index * recon_partitions +
        p`` (idx.slice of its header). Every measured kz plane must hold the same ky lines (a slab accelerated along
        ky only); planes with no line at all (partial Fourier along kz; at least half must be measured) stay zero,
        and the partitions' noise std is then √(measured planes / Z) of the samples' (``noise_scale``)."""
        head = _copy_header(self.best_header[1])
        if self.kspace.shape[1] == 1:
            return [_Partition(slice_index, self.kspace[:, 0], self.measured[0].copy(), self.calibration[0].copy(),
                               head, 1.0)]
        import torch
        from dpm_core.fft import ifftc

        Z, Zr = self.kspace.shape[1], self.info.recon_partitions
        planes = self.measured.any(axis=1)                                  # [Z]
        if 2 * planes.sum() < Z:
            raise ValueError(f"slab {slice_index}: only {int(planes.sum())} of {Z} kz partitions hold lines; a slab "
                             f"needs at least half of them (partial Fourier along kz down to 1/2): check "
                             f"encodedSpace.matrixSize.z and idx.kspace_encode_step_2 (a 2-D scan declared as 3-D?), "
                             f"or the stream ended inside the slab")
        lines = self.measured[planes]
        differing = np.flatnonzero((lines != lines[0]).any(axis=1))
        if differing.size:
            kz = np.flatnonzero(planes)
            raise ValueError(f"slab {slice_index}: partition kz {kz[differing[0]] - self.info.kz_offset} measures "
                             f"{int(lines[differing[0]].sum())} ky lines, partition kz "
                             f"{kz[0] - self.info.kz_offset} {int(lines[0].sum())}: a 3-D scan accelerated along kz "
                             f"(2-D undersampling, CAIPIRINHA, elliptical scanning) is not supported; every measured "
                             f"partition must hold the same ky lines (accelerate along ky only)")
        images = ifftc(torch.from_numpy(self.kspace), dim=1).numpy()       # [C, Z, H, W]: kz -> partitions
        first = Z // 2 - Zr // 2
        thickness = self.info.partition_thickness
        out = []
        for p in range(Zr):
            part = _copy_header(head)
            offset = (p - Zr // 2) * thickness
            for axis in range(3):
                part.position[axis] = head.position[axis] + offset * head.slice_dir[axis]
            number = slice_index * Zr + p
            part.idx.slice = number
            out.append(_Partition(number, np.ascontiguousarray(images[:, first + p]), lines[0].copy(),
                                  self.calibration[planes].any(axis=0), part, float(np.sqrt(planes.sum() / Z))))
        return out


@dataclasses.dataclass
class _Partition:
    """One 2-D slice of a volume: kspace [C, H, W], measured / calibration lines [H], its reference header."""
    number: int
    kspace: np.ndarray
    measured: np.ndarray
    calibration: np.ndarray
    header: object
    noise_scale: float


def _encode_steps(idx, info: EncodingInfo) -> tuple[int, int]:
    """(ky, kz) of a line in the accumulator's matrix: ``idx.kspace_encode_step_1`` / ``_2`` plus the offsets that put
    the encoding-limits centres at H // 2 and Z // 2 (kz 0 for a 2-D scan)."""
    kz = int(idx.kspace_encode_step_2) + info.kz_offset if info.num_partitions > 1 else 0
    return int(idx.kspace_encode_step_1) + info.ky_offset, kz


def _line_kind(flags: int) -> tuple[bool, bool]:
    """(is_calibration, is_imaging) from the acquisition flags."""
    calib_only = _flag(flags, ismrmrd.ACQ_IS_PARALLEL_CALIBRATION)
    calib_and_imaging = _flag(flags, ismrmrd.ACQ_IS_PARALLEL_CALIBRATION_AND_IMAGING)
    return calib_only or calib_and_imaging, calib_and_imaging or not calib_only


def _copy_header(head) -> ismrmrd.AcquisitionHeader:
    return ismrmrd.AcquisitionHeader.from_buffer_copy(bytes(head))


def _volume_buffers(key: tuple, slices: dict[int, _SliceAccumulator]) -> list[KspaceBuffer]:
    """Stack the slices of a volume (a 3-D scan's: the partitions of its slabs); slices with different sampling
    patterns go to separate buffers."""
    counters = dict(zip(VOLUME_COUNTERS, key))
    groups: dict[bytes, list[tuple[int, _Partition]]] = {}
    empty = [s for s in sorted(slices) if slices[s].best_header is None]
    for s in sorted(slices):
        if s not in empty:
            for part in slices[s].partitions(s):
                pattern = part.measured.tobytes() + slices[s].readout.tobytes() + np.float64(part.noise_scale).tobytes()
                groups.setdefault(pattern, []).append((s, part))
    if empty:
        dropped = sum(len(slices[s].dropped) for s in empty)
        message = (f"volume {counters}: slice(s) {empty} have no usable line ({dropped} line(s) with NaN/Inf samples "
                   f"dropped)")
        if not groups:
            raise ValueError(message + "; nothing to reconstruct")
        log.warning("%s; reconstructing the other slices", message)
    buffers = []
    for members in groups.values():
        accs = {s: slices[s] for s, _ in members}
        warnings = []
        for s, a in accs.items():
            if a.dropped:
                warnings.append(f"slice {s}: {len(a.dropped)} line(s) with NaN/Inf samples dropped (scan_counter "
                                f"{', '.join(map(str, a.dropped[:5]))}{', ...' if len(a.dropped) > 5 else ''})")
            if a.averaged_lines:
                warnings.append(f"slice {s}: {len(a.averaged_lines)} repeated line(s) averaged")
            planes = a.measured.any(axis=1)
            if not planes.all():
                warnings.append(f"slab {s}: {int(planes.sum())} of {planes.size} kz partitions measured (partial "
                                f"Fourier along kz), the others zero-filled")
        parts = [part for _, part in members]
        first = next(iter(accs.values()))
        buffers.append(KspaceBuffer(
            kspace=np.stack([p.kspace for p in parts]), mask=parts[0].measured.copy(),
            calibration=np.logical_or.reduce([p.calibration for p in parts]),
            reference_headers=[p.header for p in parts], slices=[p.number for p in parts],
            counters=counters, complete=all(a.complete for a in accs.values()), warnings=warnings,
            readout=None if first.readout.all() else first.readout.copy(), noise_scale=parts[0].noise_scale))
    if len(buffers) > 1:
        log.info("volume %s: slices differ in sampling pattern, split into %d buffers", counters, len(buffers))
    return buffers


# ---------------------------------------------------------------------------------------------------------------------
# Stages over acquisitions

def whitening_from_noise(noise: np.ndarray, dwell_time_ratio: float = 1.0) -> np.ndarray:
    """Noise samples [C, N] complex -> whitening matrix [C, C] complex64 (W Ψ Wᴴ = I), via :mod:`dpm_core.coils`.

    ``dwell_time_ratio`` = noise dwell / acquisition dwell (noise variance scales with bandwidth). Raises ValueError
    when samples are not finite or the covariance is singular (a dead or duplicated channel).
    """
    import torch
    from dpm_core.coils import noise_covariance, whitening_matrix

    noise = np.asarray(noise, dtype=np.complex64)
    if not np.isfinite(noise).all():
        raise ValueError("noise scan contains NaN or Inf samples; cannot compute the noise covariance")
    cov = noise_covariance(torch.from_numpy(noise), dwell_time_ratio=dwell_time_ratio)
    return whitening_matrix(cov).numpy()


@dataclasses.dataclass
class NoiseAdjustCount:
    """What :func:`noise_adjust` did to the imaging acquisitions it passed on so far."""
    whitened: int = 0
    unwhitened: int = 0

    @property
    def noise_std(self) -> float | None:
        """The noise std per real channel when every acquisition so far was prewhitened, else None."""
        from dpm_core.noise import PREWHITENED_NOISE_STD
        return PREWHITENED_NOISE_STD if self.whitened and not self.unwhitened else None


def noise_adjust(acquisitions: Iterable, header, count: NoiseAdjustCount | None = None) -> Iterator:
    """Consume NOISE_MEASUREMENT acquisitions, prewhiten the rest (as Gadgetron's NoiseAdjustGadget).

    All noise readouts seen before the first non-noise acquisition form the covariance, scaled by noise dwell /
    acquisition dwell, so the noise in the whitened imaging data has unit variance per channel.
    Without a noise scan, acquisitions pass unchanged (logged once). ``count``, when given, is updated per acquisition.
    """
    noise_chunks: list[np.ndarray] = []
    noise = None
    noise_dwell = 1.0
    whitening: dict[float, np.ndarray] = {}           # per acquisition dwell time
    warned = False
    for acq in acquisitions:
        if acq.is_flag_set(ismrmrd.ACQ_IS_NOISE_MEASUREMENT):
            noise_chunks.append(np.array(acq.data, dtype=np.complex64))
            noise_dwell = float(acq.sample_time_us or 1.0)
            whitening, noise = {}, None
            continue
        if noise is None and noise_chunks:
            noise = np.concatenate(noise_chunks, axis=1)
            log.info("noise prewhitening from %d noise readouts (%d samples)", len(noise_chunks), noise.shape[1])
            noise_chunks = []
        if noise is not None:
            if noise.shape[0] != acq.active_channels:
                raise ValueError(f"acquisition scan_counter {acq.scan_counter} has {acq.active_channels} channels "
                                 f"but the noise scan had {noise.shape[0]}")
            dwell = float(acq.sample_time_us or noise_dwell)
            if dwell not in whitening:
                whitening[dwell] = whitening_from_noise(noise, dwell_time_ratio=noise_dwell / dwell)
            if np.isfinite(acq.data).all():     # a corrupt readout passes as it is: accumulation drops the line
                acq.data[:] = (whitening[dwell] @ acq.data).astype(np.complex64)
            if count is not None:
                count.whitened += 1
        else:
            if not warned:
                log.info("no noise scan before the first acquisition: data are not prewhitened")
                warned = True
            if count is not None:
                count.unwhitened += 1
        yield acq


def remove_readout_oversampling_line(data: np.ndarray, readout: int) -> np.ndarray:
    """[C, W_os] k-space line(s) -> [C, readout] with :func:`dpm_core.coils.remove_readout_oversampling` (centred
    orthonormal iFFT, keep the central ``readout`` samples, FFT) — the same operation training data go through."""
    import torch
    from dpm_core.coils import remove_readout_oversampling

    n = data.shape[-1]
    if n % readout:
        raise ValueError(f"readout of {n} samples is not an integer multiple of the recon matrix x = {readout}")
    line = remove_readout_oversampling(torch.from_numpy(np.ascontiguousarray(data, dtype=np.complex64)), n // readout)
    return line.numpy().astype(np.complex64, copy=False)


ASYMMETRIC_ECHO_MARGIN = 3   # recon samples next to an asymmetric echo's missing end that are not kept as data: the
                             # oversampling removal spreads the zero-padded part into them (relative error 12 / 5 / 4 %
                             # at 0.5 / 2.5 / 3.5 samples from the cut on a synthetic FLAIR slice, 1/distance after)


def remove_oversampling(acquisitions: Iterable, header) -> Iterator:
    """Crop readout oversampling (encodedSpace.x -> reconSpace.x) of every non-noise acquisition, like Gadgetron's
    RemoveROOversamplingGadget; ``center_sample`` is rescaled. Acquisitions already at the recon size pass.

    An asymmetric echo (fewer samples than the encoded readout, its ``center_sample`` off the middle) is zero-padded
    to the encoded readout first, as Gadgetron's AsymmetricEchoAdjustROGadget does, and after the crop only its
    measured part is kept, less :data:`ASYMMETRIC_ECHO_MARGIN` samples at the missing end: the acquisition leaves
    with those samples and the recon-grid ``center_sample``, so the assembly knows which readout samples are data."""
    info = encoding_info(header)
    for acq in acquisitions:
        n = int(acq.number_of_samples)
        if (not acq.is_flag_set(ismrmrd.ACQ_IS_NOISE_MEASUREMENT) and info.encoded_readout != info.readout
                and info.readout < n <= info.encoded_readout):        # at the recon size or below: already cropped
            factor = info.encoded_readout / info.readout
            start = info.encoded_readout // 2 - int(acq.center_sample) if n < info.encoded_readout else 0
            if start < 0 or start + n > info.encoded_readout:
                raise ValueError(f"acquisition scan_counter {acq.scan_counter}: {n} samples with centre "
                                 f"{acq.center_sample} do not fit the encoded readout of {info.encoded_readout}")
            if n < info.encoded_readout:                                   # an asymmetric echo
                padded = np.zeros((acq.active_channels, info.encoded_readout), dtype=np.complex64)
                padded[:, start:start + n] = acq.data
            else:
                padded = acq.data
            line = remove_readout_oversampling_line(padded, info.readout)
            lo, hi = 0, info.readout
            if start > 0:
                lo = int(np.ceil(start / factor)) + ASYMMETRIC_ECHO_MARGIN
            if start + n < info.encoded_readout:
                hi = int(np.floor((start + n) / factor)) - ASYMMETRIC_ECHO_MARGIN
            if not lo <= info.readout // 2 < hi:
                raise ValueError(f"acquisition scan_counter {acq.scan_counter}: the echo of {n} of "
                                 f"{info.encoded_readout} samples does not hold the k-space centre; only an "
                                 f"asymmetric echo around the centre can be reconstructed")
            acq.resize(number_of_samples=hi - lo, active_channels=line.shape[0],
                       trajectory_dimensions=acq.trajectory_dimensions)
            acq.data[:] = line[:, lo:hi]
            acq.center_sample = info.readout // 2 - lo
            acq.discard_pre = int(acq.discard_pre // factor)
            acq.discard_post = int(acq.discard_post // factor)
        yield acq


def accumulate(acquisitions: Iterable, header, trigger: str = "volume") -> Iterator[KspaceBuffer]:
    """Group acquisitions into :class:`KspaceBuffer` volumes (AcquisitionAccumulateTrigger + BucketToBuffer).

    A slice is complete at its LAST_IN_SLICE acquisition. ``trigger="volume"`` emits a volume when all
    ``encodingLimits.slice`` slices of its (average, contrast, phase, repetition, set) are complete, or at
    LAST_IN_REPETITION / LAST_IN_MEASUREMENT for it; ``trigger="slice"`` emits every slice on its own. At the end
    of the stream, whatever is left is emitted with ``complete=False`` and a warning naming the slices.
    Navigation, phase-correction, dummy and feedback readouts are skipped; noise readouts must be removed before.
    """
    if trigger not in ("volume", "slice"):
        raise ValueError(f"trigger must be 'volume' or 'slice'; got {trigger!r}")
    info = encoding_info(header)
    open_volumes: dict[tuple, dict[int, _SliceAccumulator]] = {}

    def flush(key) -> list[KspaceBuffer]:
        return _volume_buffers(key, open_volumes.pop(key))

    for acq in acquisitions:
        flags = int(acq.flags)
        if _flag(flags, ismrmrd.ACQ_IS_NOISE_MEASUREMENT):
            raise ValueError(f"noise readout scan_counter {acq.scan_counter} reached accumulation: run noise_adjust "
                             "first")
        if any(_flag(flags, f) for f in _SKIP_FLAGS):
            continue
        key = _counters(acq.idx)
        slices = open_volumes.setdefault(key, {})
        s = int(acq.idx.slice)
        if s not in slices or slices[s].complete:
            if s in slices:             # a complete slice restarting within an open volume: emit what we have
                log.warning("slice %d of volume %s restarted before the volume was emitted; emitting it", s, key)
                yield from flush(key)
                slices = open_volumes.setdefault(key, {})
            slices[s] = _SliceAccumulator(acq.active_channels, info)
        is_calibration, is_imaging = _line_kind(flags)
        ky, kz = _encode_steps(acq.idx, info)
        slices[s].add(acq.getHead(), np.asarray(acq.data), ky, is_calibration, is_imaging, kz=kz)
        if _flag(flags, ismrmrd.ACQ_LAST_IN_SLICE):
            slices[s].complete = True
            if trigger == "slice":
                done = {s: slices.pop(s)}
                if not slices:
                    open_volumes.pop(key)
                yield from _volume_buffers(key, done)
                continue
        volume_done = (_flag(flags, ismrmrd.ACQ_LAST_IN_REPETITION) or _flag(flags, ismrmrd.ACQ_LAST_IN_MEASUREMENT)
                       or (0 < info.num_slices <= len(slices) and all(a.complete for a in slices.values())))
        if volume_done and key in open_volumes:
            incomplete = [i for i, a in slices.items() if not a.complete]
            if incomplete and not _flag(flags, ismrmrd.ACQ_LAST_IN_MEASUREMENT):
                continue   # LAST_IN_REPETITION before every LAST_IN_SLICE (interleaved order): wait
            yield from flush(key)
        if _flag(flags, ismrmrd.ACQ_LAST_IN_MEASUREMENT):
            for other in list(open_volumes):
                yield from _emit_incomplete(other, open_volumes, flush)
    for key in list(open_volumes):
        yield from _emit_incomplete(key, open_volumes, flush)


def _emit_incomplete(key, open_volumes, flush) -> Iterator[KspaceBuffer]:
    slices = open_volumes[key]
    incomplete = [s for s, a in slices.items() if not a.complete]
    if incomplete:
        log.warning("stream ended before LAST_IN_SLICE of volume %s slices %s: reconstructing the lines received",
                    dict(zip(VOLUME_COUNTERS, key)), incomplete)
    for buffer in flush(key):
        buffer.complete = not incomplete
        yield buffer


def encoding_zero(acquisitions: Iterable, skipped: collections.Counter) -> Iterator:
    """The acquisitions of encoding space 0, the one this reconstruction reads (:func:`encoding_info`); readouts of
    other encoding spaces (``encoding_space_ref`` > 0: a second encoding's calibration or navigator scans) are
    counted per space in ``skipped`` and dropped, never placed into encoding 0's k-space (noise readouts pass: they
    belong to no encoding)."""
    for acq in acquisitions:
        space = int(acq.encoding_space_ref)
        if space != 0 and not _flag(int(acq.flags), ismrmrd.ACQ_IS_NOISE_MEASUREMENT):
            if not skipped:
                log.warning("readouts of encoding space %d skipped: this reconstruction uses encoding 0 only", space)
            skipped[space] += 1
            continue
        yield acq


def _skipped_encodings_warning(skipped: collections.Counter) -> str:
    return (", ".join(f"{n} readout(s) of encoding space {space}" for space, n in sorted(skipped.items()))
            + " skipped: this reconstruction uses encoding 0 only")


def buffers_from_acquisitions(acquisitions: Iterable, header, trigger: str = "volume") -> Iterator[KspaceBuffer]:
    """The whole acquisition path: encoding_zero -> noise_adjust -> remove_oversampling -> accumulate ->
    interleaved_calibration. A buffer whose
    lines were all prewhitened by the stream's noise scan carries the known noise level (unchanged by the orthonormal
    oversampling removal); a buffer emitted after readouts of other encoding spaces were skipped says so in its
    warnings."""
    count, skipped = NoiseAdjustCount(), collections.Counter()
    stream = encoding_zero(acquisitions, skipped)
    stream = noise_adjust(stream, header, count)
    stream = remove_oversampling(stream, header)
    for buffer in interleaved_calibration(accumulate(stream, header, trigger=trigger), header):
        buffer.noise_std = None if count.noise_std is None else count.noise_std * buffer.noise_scale
        if skipped:
            buffer.warnings.append(_skipped_encodings_warning(skipped))
        yield buffer


INTERLEAVED_ACS_LINES = 24      # the ACS block the interleaved volumes must hold together before calibrating from them
OWN_ACS_LINES = 12              # a volume's own ACS block at least this wide is used as it is (ESPIRiT needs > 6)


def interleaved_calibration(buffers: Iterable[KspaceBuffer], header) -> Iterator[KspaceBuffer]:
    """Coil calibration for ``parallelImaging.calibrationMode`` 'interleaved' (TSENSE / TGRAPPA; ismrmrd-tools'
    accelerated phantoms): the volumes of the interleaving dimension (``interleavingDimension``; repetition when the
    header names none or 'other') measure shifted lattices, and only together hold an ACS block.

    A volume with an ACS block of its own of :data:`OWN_ACS_LINES` lines or more passes unchanged (its lines still
    join its group's), as every volume in the other modes. For the others, per group (the volumes that share every
    counter but the interleaving dimension, and their slices) the newest copy of each measured line is kept — the
    group's lines put together, each from one acquisition, so their noise is a single measurement's — and a volume
    leaves with that k-space as its ``interleaved_calibration`` once it holds a centred block of
    :data:`INTERLEAVED_ACS_LINES` lines: the first volumes of a group wait for the later ones (the stream's end
    releases whatever waits). The volume's own lines stay its only data; the calibration gives the coil maps, the
    scale and the noise level (``Reconstructor.reconstruct(..., calibration=)``), as Gadgetron's reference
    preparation does for this mode.
    """
    from dpm_core.masks import find_acs_lines
    info = encoding_info(header)
    if info.calibration_mode != "interleaved":
        yield from buffers
        return
    dimension = info.interleaving_dimension

    def acs_width(lines: np.ndarray) -> int:
        block = find_acs_lines(lines, missing_ok=True)
        return block.stop - block.start

    groups: dict[tuple, dict] = {}
    for buffer in buffers:
        key = (tuple(sorted((k, v) for k, v in buffer.counters.items() if k != dimension)), tuple(buffer.slices))
        group = groups.setdefault(key, {"kspace": np.zeros_like(buffer.kspace),
                                        "lines": np.zeros(buffer.mask.size, dtype=bool), "waiting": []})
        if group["kspace"].shape != buffer.kspace.shape:
            raise ValueError(f"{buffer.describe()}: its k-space {buffer.kspace.shape} differs from the volumes it is "
                             f"interleaved with {group['kspace'].shape}")
        group["kspace"][:, :, buffer.mask] = buffer.kspace[:, :, buffer.mask]       # the newest copy of each line
        group["lines"] |= buffer.mask
        if acs_width(buffer.mask) >= OWN_ACS_LINES:       # calibrates itself (and lends its lines to the group)
            yield buffer
            continue
        group["waiting"].append(buffer)
        if acs_width(group["lines"]) >= INTERLEAVED_ACS_LINES:
            for waiting in group["waiting"]:
                waiting.interleaved_calibration = group["kspace"].copy()
                yield waiting
            group["waiting"] = []
    for group in groups.values():                     # the stream ended before some group held an ACS block
        for waiting in group["waiting"]:
            waiting.interleaved_calibration = group["kspace"].copy()
            yield waiting


def calibration_note(header, buffer: KspaceBuffer) -> str:
    """The header's explanation, for the error of a volume that could not be calibrated: a volume without any
    calibration-flagged line under parallelImaging calibrationMode 'interleaved' (the calibration data are spread
    over the volumes of the interleaving dimension, as TSENSE / TGRAPPA and ismrmrd-tools' accelerated phantoms
    acquire them) cannot have its own ACS block; "" otherwise."""
    if encoding_info(header).calibration_mode != "interleaved" or buffer.calibration.any():
        return ""
    return ("; the header declares parallelImaging calibrationMode 'interleaved' (calibration lines spread over the "
            "interleaved volumes, as TSENSE/TGRAPPA acquire them), and the volumes interleaved with this one did not "
            f"hold a centred ACS block of {INTERLEAVED_ACS_LINES} lines together (stream ended early, or another "
            "interleaving than the header's interleavingDimension); acquire them all, or with calibrationMode "
            "'embedded' or 'separate'")


# ---------------------------------------------------------------------------------------------------------------------
# ReconData (BucketToBufferGadget output)

def buffers_from_recon_data(recon_data, header) -> list[KspaceBuffer]:
    """A Gadgetron ReconData message -> :class:`KspaceBuffer` volumes (one per volume key present).

    Each ``bit.data`` / ``bit.ref`` ReconBuffer has ``data [RO, E1, E2, CHA, N, S, LOC]`` and ``headers
    [E1, E2, N, S, LOC]``. Every filled entry (header ``number_of_samples > 0``) is placed at its own
    ``idx.kspace_encode_step_1`` + ky offset — valid for embedded refs (full E1) and separate refs (E1 spans only the
    reference lines) alike. Imaging lines take precedence over reference copies of the same line. Each (N, S, LOC)
    entry is one slice; slices are grouped into volumes by their (average, contrast, phase, repetition, set).
    Readout oversampling still present (RO == encodedSpace.x) is removed here.

    A 3-D scan's E2 entries are the kz of a slab (``idx.kspace_encode_step_2``), as on the acquisition path.
    Raises ValueError for an empty message.
    """
    info = encoding_info(header)
    volumes: dict[tuple, dict[int, _SliceAccumulator]] = {}
    skipped = collections.Counter()
    for b, bit in enumerate(recon_data.bits):
        for buffer, is_ref in ((bit.data, False), (bit.ref, True)):
            if buffer is None:
                continue
            data, headers = buffer.data, buffer.headers
            if data.ndim != 7 or headers.ndim != 5:
                raise ValueError(f"ReconData bit {b} {'ref' if is_ref else 'data'}: expected data [RO,E1,E2,CHA,N,S,"
                                 f"LOC] and headers [E1,E2,N,S,LOC]; got {data.shape} and {headers.shape}")
            RO, E1, E2, CHA, N, S, LOC = data.shape
            for n in range(N):
                for s in range(S):
                    for loc in range(LOC):
                        _add_recon_buffer_slice(volumes, info, data[:, :, :, :, n, s, loc], headers[:, :, n, s, loc],
                                                is_ref, b, skipped)
    if not volumes:
        raise ValueError("ReconData message holds no filled acquisition header of encoding space 0: nothing to "
                         "reconstruct")
    buffers = []
    for key in list(volumes):
        for acc in volumes[key].values():
            acc.complete = True
        buffers.extend(_volume_buffers(key, volumes[key]))
    if skipped:
        log.warning("ReconData: %s", _skipped_encodings_warning(skipped))
        for buffer in buffers:
            buffer.warnings.append(_skipped_encodings_warning(skipped))
    return buffers


def _same_readout(a: np.ndarray | None, b: np.ndarray | None) -> bool:
    return (a is None and b is None) or (a is not None and b is not None and np.array_equal(a, b))


def group_volumes(buffers: Iterable[KspaceBuffer], num_slices: int) -> Iterator[KspaceBuffer]:
    """Merge consecutive buffers of one volume (Gadgetron's BucketToBuffer with ``split_slices`` sends one ReconData
    per slice) so the Reconstructor batches the slices of a volume.

    A volume is complete when ``num_slices`` (> 0) distinct slices with the same counters and sampling mask have
    arrived; a buffer with other counters or another mask, or the end of the stream, flushes what is pending (so a
    volume is never held back). Slices come out in slice order.
    """
    pending: list[KspaceBuffer] = []

    def flush() -> Iterator[KspaceBuffer]:
        if not pending:
            return
        rows = sorted(((s, b.kspace[i], b.reference_headers[i]) for b in pending for i, s in enumerate(b.slices)),
                      key=lambda row: row[0])
        yield KspaceBuffer(kspace=np.stack([r[1] for r in rows]), mask=pending[0].mask.copy(),
                           calibration=np.logical_or.reduce([b.calibration for b in pending]),
                           reference_headers=[r[2] for r in rows], slices=[r[0] for r in rows],
                           counters=dict(pending[0].counters), complete=all(b.complete for b in pending),
                           warnings=[w for b in pending for w in b.warnings],
                           noise_std=pending[0].noise_std if len({b.noise_std for b in pending}) == 1 else None,
                           readout=pending[0].readout, noise_scale=pending[0].noise_scale)
        pending.clear()

    for buffer in buffers:
        if pending and (buffer.counters != pending[0].counters or not np.array_equal(buffer.mask, pending[0].mask)
                        or not _same_readout(buffer.readout, pending[0].readout)
                        or buffer.noise_scale != pending[0].noise_scale
                        or set(buffer.slices) & {s for b in pending for s in b.slices}):
            yield from flush()
        pending.append(buffer)
        if 0 < num_slices <= len({s for b in pending for s in b.slices}):
            yield from flush()
    yield from flush()


def _add_recon_buffer_slice(volumes, info: EncodingInfo, data: np.ndarray, headers: np.ndarray, is_ref: bool,
                            bit: int, skipped: collections.Counter) -> None:
    """data: [RO, E1, E2, CHA] of one (n, s, loc); headers: [E1, E2] AcquisitionHeader objects. Lines of encoding
    spaces other than 0 are counted in ``skipped`` and left out (as :func:`encoding_zero` does)."""
    for e1, e2 in np.ndindex(*headers.shape):
        head = headers[e1, e2]
        if head is None or int(head.number_of_samples) == 0:
            continue
        if int(head.encoding_space_ref) != 0:
            skipped[int(head.encoding_space_ref)] += 1
            continue
        line = np.ascontiguousarray(data[:, e1, e2, :].T)                               # [CHA, RO]
        measured = _echo_of_padded_line(head, info, line.shape[1], bit)
        if line.shape[1] == info.encoded_readout and info.encoded_readout != info.readout:
            line = remove_readout_oversampling_line(line, info.readout)
            head = _copy_header(head)
            head.center_sample = info.readout // 2
        elif line.shape[1] != info.readout:
            raise ValueError(f"ReconData bit {bit}: readout of {line.shape[1]} samples matches neither the recon "
                             f"matrix ({info.readout}) nor the encoded matrix ({info.encoded_readout})")
        else:
            head = _copy_header(head)
            head.center_sample = info.readout // 2     # BucketToBuffer has centred the samples in the buffer
        key = _counters(head.idx)
        slices = volumes.setdefault(key, {})
        s = int(head.idx.slice)
        if s not in slices:
            slices[s] = _SliceAccumulator(line.shape[0], info)
        flags = int(head.flags)
        is_calibration, is_imaging = _line_kind(flags)
        if is_ref:
            is_calibration, is_imaging = True, False
        ky, kz = _encode_steps(head.idx, info)
        slices[s].add(head, line, ky, is_calibration, is_imaging, kz=kz, measured=measured)


def _echo_of_padded_line(head, info: EncodingInfo, samples: int, bit: int) -> tuple[int, int] | None:
    """The recon-grid readout samples (lo, hi) of a ReconData line that hold data, from the zero-padding Gadgetron's
    AsymmetricEchoAdjustROGadget records in ``discard_pre`` / ``discard_post`` (RemoveROOversamplingGadget rescales
    them; BucketToBuffer's sampling_limits RO are the same numbers); None for a whole echo. Where the oversampling
    was removed after the padding (upstream, or here for a line of ``samples`` = encoded readout), the crop spreads
    the padding into the samples next to it, and :data:`ASYMMETRIC_ECHO_MARGIN` of them are not kept, as on the
    acquisition path (:func:`remove_oversampling`)."""
    pre, post = int(head.discard_pre), int(head.discard_post)
    if pre == 0 and post == 0:
        return None
    W = info.readout
    factor = samples / W                                  # > 1: the oversampling is removed here, after the padding
    margin = ASYMMETRIC_ECHO_MARGIN if info.encoded_readout != info.readout else 0
    lo = int(np.ceil(pre / factor)) + margin if pre else 0
    hi = W - (int(np.ceil(post / factor)) + margin) if post else W
    if not lo <= W // 2 < hi:
        raise ValueError(f"ReconData bit {bit}: the line's echo (discard_pre {pre}, discard_post {post} of {samples} "
                         f"samples) does not hold the k-space centre; only an asymmetric echo around the centre can "
                         f"be reconstructed")
    return lo, hi
