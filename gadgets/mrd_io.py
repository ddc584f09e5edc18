"""ISMRMRD raw data: build, write and read multi-slice Cartesian acquisitions the way a scanner delivers them.

What a stroke-protocol FLAIR raw file looks like here (all written with the ismrmrd 1.15 Python package, so current
Gadgetron stream tools accept the header, DESIGN.md §4):

- noise-scan acquisitions first (flag NOISE_MEASUREMENT, no geometry), then per repetition and slice the measured
  phase-encode lines (``idx.kspace_encode_step_1`` = ky index of the encoded matrix, ``idx.slice``,
  ``idx.repetition``), each with 2x readout oversampling (``number_of_samples`` = 2 W, ``center_sample`` = W);
- calibration: ``"embedded"`` writes every line once, ACS lines that are also imaging lines flagged
  PARALLEL_CALIBRATION_AND_IMAGING and the ACS-only lines PARALLEL_CALIBRATION; ``"separate"`` writes the ACS block
  first (PARALLEL_CALIBRATION) and then the imaging lines (no calibration flag) — a line in both is written twice;
- FIRST_IN_SLICE / LAST_IN_SLICE on the first / last acquisition of a slice, LAST_IN_REPETITION, and
  LAST_IN_MEASUREMENT on the very last acquisition;
- oblique geometry per slice (position, read/phase/slice_dir, patient_table_position) and time stamps (2.5 ms ticks);
- a full XML header (encodedSpace / reconSpace / encodingLimits with the ky centre, parallelImaging,
  sequenceParameters, acquisitionSystemInformation, measurementInformation, ...).

Layouts: input k-space ``[R, S, C, H, W_os]`` or ``[S, C, H, W_os]`` complex64 (R repetitions, S slices, C coils,
H phase-encode lines, W_os = oversampled readout samples); masks are bool ``[H]``.
"""
from __future__ import annotations

import dataclasses
import datetime
import logging
import re
from collections.abc import Iterable, Sequence

import h5py
import ismrmrd
import ismrmrd.xsd as xsd
import numpy as np
from xsdata.models.datatype import XmlDate, XmlTime

__all__ = ["parse_header", "MrdRaw", "GeometrySpec", "make_header", "make_raw_acquisitions", "write_mrd_raw",
           "read_mrd_raw",
           "convert_ismrmrd_tools_file", "rotation_directions"]

log = logging.getLogger(__name__)

TICK_MS = 2.5            # Siemens-style acquisition_time_stamp unit


# ---------------------------------------------------------------------------------------------------------------------
# The header parser (the one place an ISMRMRD XML header is parsed)

_MISSING_FIELD = re.compile(r"(\w+)\.__init__\(\) missing \d+ required keyword-only argument[s]?: '(\w+)'")


def parse_header(document: str | bytes) -> xsd.ismrmrdHeader:
    """ISMRMRD XML header -> ``ismrmrd.xsd.ismrmrdHeader``, tolerant where C++ Gadgetron is.

    The ismrmrd package's own parser refuses what Gadgetron passes through; here: unknown elements and attributes are
    ignored (warning naming them), a missing ``<encodingLimits>`` becomes an empty one (every limit then comes from
    the matrix sizes, warning), trailing NULs (MRD streaming strings) are stripped. Raises ValueError naming the
    problem for XML that is not well-formed and for a missing required element other than those.
    """
    from xml.etree import ElementTree as ET
    from xsdata.formats.dataclass.parsers import XmlParser
    from xsdata.formats.dataclass.parsers.config import ParserConfig

    if isinstance(document, bytes):
        document = document.split(b"\0", 1)[0].decode("utf-8", errors="replace")
    document = document.split("\0", 1)[0]
    try:
        root = ET.fromstring(document)
    except ET.ParseError as exc:
        raise ValueError(f"the ISMRMRD header is not well-formed XML ({exc}); send the header as the scanner wrote "
                         f"it") from None
    namespace = root.tag[1:].split("}")[0] if root.tag.startswith("{") else ""
    prefix = f"{{{namespace}}}" if namespace else ""
    repaired = False
    for encoding in root.findall(f"{prefix}encoding"):
        if encoding.find(f"{prefix}encodingLimits") is None:
            encoding.append(ET.Element(f"{prefix}encodingLimits"))
            repaired = True
    if repaired:
        log.warning("ISMRMRD header: <encoding> without <encodingLimits>; using an empty one (line and slice ranges "
                    "from the matrix sizes)")
        if namespace:
            ET.register_namespace("", namespace)
        document = ET.tostring(root, encoding="unicode")
    def unreadable(exc: Exception) -> ValueError:
        missing = _MISSING_FIELD.search(str(exc))
        if missing:
            return ValueError(f"the ISMRMRD header lacks the required element <{missing.group(2)}> (in "
                              f"{missing.group(1).removesuffix('Type')}); add it to the header")
        return ValueError(f"the ISMRMRD header could not be read: {type(exc).__name__}: {exc}")

    try:
        return XmlParser(config=ParserConfig(fail_on_unknown_properties=True)).from_string(document, xsd.ismrmrdHeader)
    except TypeError as exc:
        raise unreadable(exc) from None
    except Exception as strict_error:     # noqa: BLE001 - xsdata raises several types for unknown content
        try:
            header = XmlParser(config=ParserConfig(fail_on_unknown_properties=False,
                                                   fail_on_unknown_attributes=False)).from_string(document,
                                                                                                  xsd.ismrmrdHeader)
        except Exception as exc:          # noqa: BLE001
            raise unreadable(exc) from None
        log.warning("ISMRMRD header: ignored content the ISMRMRD schema does not define (%s)", strict_error)
        return header


# ---------------------------------------------------------------------------------------------------------------------
# Containers

@dataclasses.dataclass
class MrdRaw:
    """A raw ISMRMRD measurement: the XML header and the acquisitions in stream order.

    Attributes:
        header_xml: ISMRMRD XML header (str).
        acquisitions: list of ``ismrmrd.Acquisition``; ``acq.data`` is complex64 ``[C, number_of_samples]``.
    """
    header_xml: str
    acquisitions: list

    @property
    def header(self) -> xsd.ismrmrdHeader:
        """The parsed header (xsdata ``ismrmrdHeader``, :func:`parse_header`)."""
        return parse_header(self.header_xml)


AXIAL_FRAME = ((1.0, 0.0, 0.0), (0.0, 1.0, 0.0), (0.0, 0.0, 1.0))    # read = x (left), phase = y (posterior), z


@dataclasses.dataclass
class GeometrySpec:
    """Slice-group geometry in patient coordinates (mm, LPS as Siemens/ISMRMRD).

    Attributes:
        centre: (3,) centre of the slice group.
        angles_deg: (3,) rotations about x, y, z applied to ``frame``.
        frame: (read, phase, slice) directions before the rotation: the axes the k-space's columns (readout),
            rows (phase encoding) and slice index run along. Default the axial frame read=x, phase=y, slice=z; k-space
            whose image content runs otherwise (e.g. training.synth's, :data:`training.synth.IMAGE_FRAME`) needs its
            own, or the images' direction cosines contradict their anatomy.
        slice_thickness: mm.
        slice_gap: mm between slices (centre spacing = thickness + gap).
        table_position: (3,) patient_table_position.
    """
    centre: Sequence[float] = (2.0, -15.0, 30.0)
    angles_deg: Sequence[float] = (12.0, 0.0, 6.0)
    slice_thickness: float = 5.0
    slice_gap: float = 1.0
    table_position: Sequence[float] = (0.0, 0.0, -1250.0)
    frame: Sequence[Sequence[float]] = AXIAL_FRAME


def rotation_directions(angles_deg: Sequence[float], frame: Sequence[Sequence[float]] = AXIAL_FRAME
                        ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(read_dir, phase_dir, slice_dir): Rz Ry Rx applied to the frame's three directions (default axial: the
    columns of Rz Ry Rx). Orthonormal, float32."""
    ax, ay, az = np.deg2rad(np.asarray(angles_deg, dtype=np.float64))
    rx = np.array([[1, 0, 0], [0, np.cos(ax), -np.sin(ax)], [0, np.sin(ax), np.cos(ax)]])
    ry = np.array([[np.cos(ay), 0, np.sin(ay)], [0, 1, 0], [-np.sin(ay), 0, np.cos(ay)]])
    rz = np.array([[np.cos(az), -np.sin(az), 0], [np.sin(az), np.cos(az), 0], [0, 0, 1]])
    r = rz @ ry @ rx
    read, phase, normal = (r @ np.asarray(v, dtype=np.float64) for v in frame)
    return read.astype(np.float32), phase.astype(np.float32), normal.astype(np.float32)


# ---------------------------------------------------------------------------------------------------------------------
# XML header

def _limit(maximum: int, center: int = 0, minimum: int = 0) -> xsd.limitType:
    return xsd.limitType(minimum=int(minimum), maximum=int(maximum), center=int(center))


def make_header(*, num_lines: int, readout: int, num_coils: int, num_slices: int = 1, num_repetitions: int = 1,
                oversampling: int = 2, fov_mm: Sequence[float] = (220.0, 220.0), slice_thickness: float = 5.0,
                acceleration: int = 1, calibration: str | None = "embedded", trajectory: str = "cartesian",
                tr_ms: float = 9000.0, te_ms: float = 90.0, ti_ms: float | None = 2500.0, flip_deg: float = 150.0,
                echo_train_length: int = 16, protocol: str = "AX FLAIR", field_strength_t: float = 3.0,
                measurement_id: str = "45678_123456789_123456789_1", patient_id: str = "SYNTH0001",
                study_uid: str = "1.2.826.0.1.3680043.8.498.1",
                frame_of_reference_uid: str = "1.2.826.0.1.3680043.8.498.2") -> xsd.ismrmrdHeader:
    """A complete ISMRMRD header for a 2-D multi-slice Cartesian scan.

    Args:
        num_lines: H, phase-encode lines of the encoded matrix (ky centre = H // 2).
        readout: W, readout samples of the *reconstructed* matrix; encoded x = ``oversampling * W``.
        num_coils: C receiver channels.
        num_slices, num_repetitions: S and R (encodingLimits slice / repetition).
        oversampling: readout oversampling factor (encoded FOV x = oversampling * recon FOV x).
        fov_mm: (x, y) reconstructed field of view in mm; z is ``slice_thickness``.
        acceleration: nominal ky acceleration (parallelImaging.accelerationFactor.kspace_encoding_step_1).
        calibration: "embedded" | "separate" | "interleaved" | "external" | "other" | None (no parallelImaging).
        trajectory: "cartesian" (anything else is valid ISMRMRD but our gadget refuses it).
        tr_ms, te_ms, ti_ms, flip_deg: sequenceParameters (TI omitted when None).
    """
    if oversampling < 1 or num_lines < 1 or readout < 1:
        raise ValueError(f"make_header: need num_lines, readout, oversampling >= 1; got {num_lines}, {readout}, "
                         f"{oversampling}")
    fx, fy = float(fov_mm[0]), float(fov_mm[1])
    encoded = xsd.encodingSpaceType(
        matrixSize=xsd.matrixSizeType(x=readout * oversampling, y=num_lines, z=1),
        fieldOfView_mm=xsd.fieldOfViewMm(x=fx * oversampling, y=fy, z=float(slice_thickness)))
    recon = xsd.encodingSpaceType(
        matrixSize=xsd.matrixSizeType(x=readout, y=num_lines, z=1),
        fieldOfView_mm=xsd.fieldOfViewMm(x=fx, y=fy, z=float(slice_thickness)))
    limits = xsd.encodingLimitsType(
        kspace_encoding_step_0=_limit(readout * oversampling - 1, readout * oversampling // 2),
        kspace_encoding_step_1=_limit(num_lines - 1, num_lines // 2),
        kspace_encoding_step_2=_limit(0),
        average=_limit(0), slice=_limit(num_slices - 1), contrast=_limit(0), phase=_limit(0),
        repetition=_limit(num_repetitions - 1), set=_limit(0), segment=_limit(0))
    parallel = None
    if calibration is not None:
        parallel = xsd.parallelImagingType(
            accelerationFactor=xsd.accelerationFactorType(kspace_encoding_step_1=int(acceleration),
                                                          kspace_encoding_step_2=1),
            calibrationMode=xsd.calibrationModeType(calibration))
    encoding = xsd.encodingType(encodedSpace=encoded, reconSpace=recon, encodingLimits=limits,
                                trajectory=xsd.trajectoryType(trajectory), parallelImaging=parallel,
                                echoTrainLength=int(echo_train_length))
    now = datetime.datetime(2024, 3, 14, 10, 30, 0)
    return xsd.ismrmrdHeader(
        subjectInformation=xsd.subjectInformationType(patientName="Synthetic^Subject", patientID=patient_id,
                                                      patientGender="O", patientWeight_kg=70.0),
        studyInformation=xsd.studyInformationType(
            studyDate=XmlDate(now.year, now.month, now.day), studyTime=XmlTime(now.hour, now.minute, now.second),
            studyInstanceUID=study_uid, studyDescription="STROKE MRI", bodyPartExamined="BRAIN"),
        measurementInformation=xsd.measurementInformationType(
            measurementID=measurement_id, patientPosition=xsd.patientPositionType.HFS, protocolName=protocol,
            sequenceName="tse2d1_16", seriesDescription=protocol.replace(" ", "_"), initialSeriesNumber=1,
            frameOfReferenceUID=frame_of_reference_uid, seriesInstanceUIDRoot="1.2.826.0.1.3680043.8.498.3"),
        acquisitionSystemInformation=xsd.acquisitionSystemInformationType(
            systemVendor="SYNTHETIC", systemModel="dpm-flair simulator", systemFieldStrength_T=field_strength_t,
            relativeReceiverNoiseBandwidth=0.793, receiverChannels=int(num_coils),
            coilLabel=[xsd.coilLabelType(coilNumber=c, coilName=f"HC{c:02d}") for c in range(num_coils)],
            institutionName="dpm-flair test site", stationName="SIM01"),
        experimentalConditions=xsd.experimentalConditionsType(
            H1resonanceFrequency_Hz=int(round(42.576e6 * field_strength_t))),
        encoding=[encoding],
        sequenceParameters=xsd.sequenceParametersType(
            TR=[float(tr_ms)], TE=[float(te_ms)], TI=[] if ti_ms is None else [float(ti_ms)],
            flipAngle_deg=[float(flip_deg)], sequence_type="TurboSpinEcho", echo_spacing=[9.0]))


# ---------------------------------------------------------------------------------------------------------------------
# Acquisitions

def _as_5d(kspace: np.ndarray) -> np.ndarray:
    kspace = np.asarray(kspace)
    if kspace.ndim == 4:
        kspace = kspace[None]
    if kspace.ndim != 5 or not np.iscomplexobj(kspace):
        raise ValueError(f"kspace must be complex [R, S, C, H, W_os] or [S, C, H, W_os]; got shape {kspace.shape} "
                         f"dtype {kspace.dtype}")
    return kspace.astype(np.complex64, copy=False)


def make_raw_acquisitions(kspace: np.ndarray, imaging_mask: np.ndarray, *, num_acs: int = 24,
                          calibration: str = "embedded", oversampling: int = 2, noise: np.ndarray | None = None,
                          noise_readouts: int = 8, noise_sample_time_us: float = 5.0, sample_time_us: float = 5.0,
                          order: str = "sequential", geometry: GeometrySpec | None = None,
                          header: xsd.ismrmrdHeader | str | None = None, acceleration: int | None = None,
                          measurement_uid: int = 4242, start_time_ms: float = 36_000_000.0,
                          header_kwargs: dict | None = None) -> MrdRaw:
    """Turn (oversampled) multi-slice k-space into the acquisition stream a scanner would send.

    Args:
        kspace: [R, S, C, H, W_os] or [S, C, H, W_os] complex64, readout still oversampled (W_os = oversampling * W).
            Only the measured lines are written, so unmeasured lines may hold anything.
        imaging_mask: bool [H], the imaging (accelerated) lines. The ACS block is ``num_acs`` lines centred on H // 2
            (``dpm_core.masks.acs_slice``); the lines measured in all are ``imaging_mask | acs``.
        num_acs: ACS lines (0: no calibration lines at all, which our gadget must reject).
        calibration: "embedded" (each line once, ACS flagged) or "separate" (ACS block first, then imaging lines).
        noise: complex64 [C, N] noise samples written as ``noise_readouts`` NOISE_MEASUREMENT acquisitions
            (N divisible by noise_readouts), or None for no noise scan.
        order: "sequential" (slice by slice) or "interleaved" (for each line, all slices — multi-slice TSE order).
        geometry: slice geometry (default: an oblique :class:`GeometrySpec`).
        header: an ISMRMRD header to use instead of :func:`make_header` (xsdata object or XML string).
        acceleration: nominal R for the header (default: H / imaging lines, rounded).
        header_kwargs: extra keyword arguments for :func:`make_header`.
    Returns: :class:`MrdRaw`.
    """
    from dpm_core.masks import acs_slice

    k = _as_5d(kspace)
    R, S, C, H, W_os = k.shape
    if W_os % oversampling:
        raise ValueError(f"readout length {W_os} is not divisible by the oversampling factor {oversampling}")
    imaging = np.asarray(imaging_mask, dtype=bool).reshape(-1)
    if imaging.size != H:
        raise ValueError(f"imaging_mask has {imaging.size} entries but kspace has H={H} phase-encode lines")
    if calibration not in ("embedded", "separate"):
        raise ValueError(f"calibration must be 'embedded' or 'separate'; got {calibration!r}")
    if order not in ("sequential", "interleaved"):
        raise ValueError(f"order must be 'sequential' or 'interleaved'; got {order!r}")
    acs = np.zeros(H, dtype=bool)
    if num_acs > 0:
        acs[acs_slice(H, num_acs)] = True
    geometry = geometry or GeometrySpec()

    if header is None:
        if acceleration is None:
            acceleration = max(int(round(H / max(int(imaging.sum()), 1))), 1)
        kw = dict(num_lines=H, readout=W_os // oversampling, num_coils=C, num_slices=S, num_repetitions=R,
                  oversampling=oversampling, slice_thickness=geometry.slice_thickness, acceleration=acceleration,
                  calibration=calibration if num_acs > 0 else None)
        kw.update(header_kwargs or {})
        header = make_header(**kw)
    header_xml = header if isinstance(header, str) else header.toXML()

    read_dir, phase_dir, slice_dir = rotation_directions(geometry.angles_deg, geometry.frame)
    spacing = float(geometry.slice_thickness + geometry.slice_gap)
    centre = np.asarray(geometry.centre, dtype=np.float64)

    # Per slice: the list of (ky, flags) in acquisition order.
    def slice_lines() -> list[tuple[int, int]]:
        lines: list[tuple[int, int]] = []
        if calibration == "separate":
            lines += [(int(ky), 1 << (ismrmrd.ACQ_IS_PARALLEL_CALIBRATION - 1)) for ky in np.flatnonzero(acs)]
            lines += [(int(ky), 0) for ky in np.flatnonzero(imaging)]
        else:
            for ky in np.flatnonzero(imaging | acs):
                if acs[ky] and imaging[ky]:
                    flag = 1 << (ismrmrd.ACQ_IS_PARALLEL_CALIBRATION_AND_IMAGING - 1)
                elif acs[ky]:
                    flag = 1 << (ismrmrd.ACQ_IS_PARALLEL_CALIBRATION - 1)
                else:
                    flag = 0
                lines.append((int(ky), flag))
        return lines

    lines = slice_lines()
    if not lines:
        raise ValueError("neither imaging_mask nor the ACS block selects any line: nothing to write")

    # Stream order: list of (rep, slice, line_number_within_slice).
    events: list[tuple[int, int, int]] = []
    for r in range(R):
        if order == "sequential":
            events += [(r, s, j) for s in range(S) for j in range(len(lines))]
        else:
            events += [(r, s, j) for j in range(len(lines)) for s in range(S)]

    acquisitions: list[ismrmrd.Acquisition] = []
    scan_counter = 0
    time_ticks = start_time_ms / TICK_MS

    if noise is not None:
        noise = np.asarray(noise, dtype=np.complex64)
        if noise.ndim != 2 or noise.shape[0] != C or noise.shape[1] % noise_readouts:
            raise ValueError(f"noise must be complex [C={C}, N] with N divisible by noise_readouts={noise_readouts}; "
                             f"got {noise.shape}")
        for chunk in np.split(noise, noise_readouts, axis=1):
            acq = ismrmrd.Acquisition.from_array(np.ascontiguousarray(chunk))
            acq.set_flag(ismrmrd.ACQ_IS_NOISE_MEASUREMENT)
            acq.measurement_uid = measurement_uid
            acq.scan_counter = scan_counter
            acq.acquisition_time_stamp = int(time_ticks)
            acq.sample_time_us = noise_sample_time_us
            acq.center_sample = chunk.shape[1] // 2
            acquisitions.append(acq)
            scan_counter += 1
            time_ticks += 1

    n_lines = len(lines)
    line_time_ticks = 9000.0 / TICK_MS / max(n_lines, 1)     # one TR (9 s) spreads over the lines of all slices
    for e, (r, s, j) in enumerate(events):
        ky, calib_flag = lines[j]
        acq = ismrmrd.Acquisition.from_array(np.ascontiguousarray(k[r, s, :, ky, :]))
        acq.flags = calib_flag
        if j == 0:
            acq.set_flag(ismrmrd.ACQ_FIRST_IN_SLICE)
            if s == 0:
                acq.set_flag(ismrmrd.ACQ_FIRST_IN_REPETITION)
        if j == n_lines - 1:
            acq.set_flag(ismrmrd.ACQ_LAST_IN_SLICE)
        if e == len(events) - 1 or events[e + 1][0] != r:
            acq.set_flag(ismrmrd.ACQ_LAST_IN_REPETITION)
        if e == len(events) - 1:
            acq.set_flag(ismrmrd.ACQ_LAST_IN_MEASUREMENT)
        acq.measurement_uid = measurement_uid
        acq.scan_counter = scan_counter
        acq.acquisition_time_stamp = int(time_ticks)
        acq.physiology_time_stamp[0] = int(time_ticks) % 400
        acq.sample_time_us = sample_time_us
        acq.center_sample = W_os // 2
        acq.encoding_space_ref = 0
        acq.available_channels = C
        offset = (s - (S - 1) / 2.0) * spacing
        acq.position[:] = (centre + offset * slice_dir).astype(np.float32)
        acq.read_dir[:] = read_dir
        acq.phase_dir[:] = phase_dir
        acq.slice_dir[:] = slice_dir
        acq.patient_table_position[:] = np.asarray(geometry.table_position, dtype=np.float32)
        acq.idx.kspace_encode_step_1 = ky
        acq.idx.kspace_encode_step_2 = 0
        acq.idx.slice = s
        acq.idx.repetition = r
        for c in range(min(C, 64)):
            acq.channel_mask[0] |= 1 << c
        acquisitions.append(acq)
        scan_counter += 1
        time_ticks += line_time_ticks / max(S, 1) if order == "interleaved" else line_time_ticks
    return MrdRaw(header_xml=header_xml, acquisitions=acquisitions)


# ---------------------------------------------------------------------------------------------------------------------
# HDF5

def write_mrd_raw(path: str, raw: MrdRaw, dataset: str = "dataset") -> None:
    """Write header + acquisitions to an ISMRMRD HDF5 file in one bulk write (overwrites ``path``)."""
    from ismrmrd.hdf5 import acquisition_dtype, acquisition_header_dtype

    rows = np.empty(len(raw.acquisitions), dtype=acquisition_dtype)
    for i, acq in enumerate(raw.acquisitions):
        rows[i]["head"] = np.frombuffer(acq.getHead(), dtype=acquisition_header_dtype)[0]
        rows[i]["data"] = np.ascontiguousarray(acq.data, dtype=np.complex64).view(np.float32).reshape(-1)
        rows[i]["traj"] = np.ascontiguousarray(acq.traj, dtype=np.float32).reshape(-1)
    with h5py.File(path, "w") as f:
        group = f.create_group(dataset)
        xml = group.create_dataset("xml", shape=(1,), dtype=h5py.special_dtype(vlen=bytes))
        xml[0] = raw.header_xml.encode("utf-8")
        group.create_dataset("data", data=rows, maxshape=(None,), chunks=True)


def read_mrd_raw(path: str, dataset: str = "dataset") -> MrdRaw:
    """Read header + all acquisitions of an ISMRMRD HDF5 file in bulk (one HDF5 read, not one per row).

    Raises ValueError naming the file when it is not readable HDF5 (not HDF5, truncated) or when the dataset, its
    header or its acquisitions are missing.
    """
    from ismrmrd.hdf5 import acquisition_header_dtype

    try:
        f = h5py.File(path, "r")
    except OSError as exc:                      # not HDF5, truncated, unreadable
        raise ValueError(f"{path}: not a readable ISMRMRD HDF5 file ({exc}); pass the raw file as the scanner or "
                         f"siemens_to_ismrmrd wrote it (a copy cut short cannot be read)") from None
    with f:
        if dataset not in f:
            raise ValueError(f"{path}: no group {dataset!r}; groups present: {list(f.keys())}")
        group = f[dataset]
        if "xml" not in group:
            raise ValueError(f"{path}/{dataset}: no 'xml' header dataset")
        xml = group["xml"][0]
        xml = xml.decode("utf-8") if isinstance(xml, bytes) else str(xml)
        if "data" not in group:
            raise ValueError(f"{path}/{dataset}: no 'data' (acquisition) dataset")
        rows = group["data"][:]
    acquisitions = []
    heads = rows["head"].astype(acquisition_header_dtype)
    for i in range(rows.shape[0]):
        head = ismrmrd.AcquisitionHeader.from_buffer_copy(heads[i].tobytes())
        acq = ismrmrd.Acquisition(head)
        acq.data[:] = rows[i]["data"].view(np.complex64).reshape(head.active_channels, head.number_of_samples)
        if head.trajectory_dimensions:
            acq.traj[:] = rows[i]["traj"].reshape(head.number_of_samples, head.trajectory_dimensions)
        acquisitions.append(acq)
    return MrdRaw(header_xml=xml, acquisitions=acquisitions)


def convert_ismrmrd_tools_file(src: str, dst: str, dataset: str = "dataset",
                               geometry: GeometrySpec | None = None) -> MrdRaw:
    """Make the output of Debian's ``ismrmrd_generate_cartesian_shepp_logan`` usable by current tools and our gadget.

    That tool (ismrmrd 1.8) writes an old-schema header (version 8, no measurement/sequence information) and zero
    direction vectors. This rewrites the header with :func:`make_header` (same matrix, FOV, limits, acceleration and
    calibration mode), and gives every non-noise acquisition the axial geometry of ``geometry`` (slice 0 at its
    centre). Flags, counters and samples are kept. Returns what was written.
    """
    raw = read_mrd_raw(src, dataset)
    old = raw.header
    enc = old.encoding[0]
    reps = enc.encodingLimits.repetition.maximum + 1 if enc.encodingLimits.repetition else 1
    slices = enc.encodingLimits.slice.maximum + 1 if enc.encodingLimits.slice else 1
    pi = enc.parallelImaging
    header = make_header(
        num_lines=enc.encodedSpace.matrixSize.y, readout=enc.reconSpace.matrixSize.x,
        num_coils=raw.acquisitions[-1].active_channels, num_slices=slices, num_repetitions=reps,
        oversampling=max(enc.encodedSpace.matrixSize.x // enc.reconSpace.matrixSize.x, 1),
        fov_mm=(enc.reconSpace.fieldOfView_mm.x, enc.reconSpace.fieldOfView_mm.y),
        slice_thickness=enc.reconSpace.fieldOfView_mm.z,
        acceleration=pi.accelerationFactor.kspace_encoding_step_1 if pi else 1,
        calibration=(pi.calibrationMode.value if pi and pi.calibrationMode else None), protocol="SHEPP LOGAN")
    geometry = geometry or GeometrySpec(angles_deg=(0.0, 0.0, 0.0))
    read_dir, phase_dir, slice_dir = rotation_directions(geometry.angles_deg, geometry.frame)
    for n, acq in enumerate(raw.acquisitions):
        acq.scan_counter = n
        if acq.is_flag_set(ismrmrd.ACQ_IS_NOISE_MEASUREMENT):
            continue
        acq.read_dir[:] = read_dir
        acq.phase_dir[:] = phase_dir
        acq.slice_dir[:] = slice_dir
        acq.position[:] = np.asarray(geometry.centre, dtype=np.float32)
        acq.patient_table_position[:] = np.asarray(geometry.table_position, dtype=np.float32)
    raw = MrdRaw(header_xml=header.toXML(), acquisitions=raw.acquisitions)
    write_mrd_raw(dst, raw, dataset)
    return raw


def iter_acquisitions(raw: MrdRaw | Iterable) -> Iterable[ismrmrd.Acquisition]:
    """Acquisitions of an :class:`MrdRaw` (or pass an iterable through)."""
    return raw.acquisitions if isinstance(raw, MrdRaw) else raw
