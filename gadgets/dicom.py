"""ISMRMRD images -> DICOM MR Image Storage objects (pydicom), de-identification, files on disk.

The one place that turns our reconstructed ``ismrmrd.Image`` objects plus the ISMRMRD XML header into what
radiologists see: classic single-frame MR Image Storage (SOP class 1.2.840.10008.5.1.4.1.1.4), one file per slice.
Sending to a PACS lives in :mod:`gadgets.pacs`.

Geometry (DESIGN.md §6). ISMRMRD patient coordinates and DICOM patient coordinates are the same LPS system
(x towards the patient's Left, y Posterior, z Superior/Head; ISMRMRD defines ``position``/``*_dir`` in "patient
coordinates" exactly as DICOM does, which is why Gadgetron's own DicomFinishGadget copies them without a sign change).
An ISMRMRD image stores ``data[channel, z, y, x]``: x runs along ``read_dir``, y along ``phase_dir`` and ``position``
is the centre of the slice (centre of the FOV box). For DICOM:

* ImageOrientationPatient = read_dir (row direction: step of the column index), phase_dir (column direction);
* PixelSpacing = [fov_y / ny (between rows, along phase), fov_x / nx (between columns, along read)];
* ImagePositionPatient = centre of the first transmitted (top-left) voxel
  = position − (fov_x/2)·read_dir − (fov_y/2)·phase_dir + (dx/2)·read_dir + (dy/2)·phase_dir;
  i.e. ``position`` sits at continuous pixel index ((nx−1)/2, (ny−1)/2), the geometric centre of the pixel grid;
* slice normal n = read_dir × phase_dir (DICOM's normal), SliceLocation = n · position (same as n · IPP),
  SliceThickness = field_of_view[2], SpacingBetweenSlices = median centre-to-centre distance of the series' slices.

Pixel scaling. Complex images are stored as magnitude, float images as they are; both are scaled per *series* (one
factor for all slices so windowing is consistent) into 12-bit unsigned integers 0..4095, and the inverse mapping is
value = stored·slope + intercept (unspecified units),
so the original float intensities are recoverable to 1/4095 of the series range. That mapping is written as
RescaleSlope/Intercept only with ``rescale=True`` (the classic MR IOD has no Modality LUT; dciodvfy warns and some
viewers ignore it); by default it is stated in ImageComments ("value = stored x slope + intercept"). Integer images
(after Gadgetron's FloatToUShort) are stored unchanged. WindowCenter/WindowWidth come from the 1st and 99.5th
percentiles of the series (in the units the viewer windows: stored values unless ``rescale=True``).

Every image is marked as derived from a deep generative model (ImageType DERIVED\\SECONDARY, ImageComments,
DerivationDescription); an image whose Gadgetron comment says it is a SENSE fallback, a posterior-std map, or
(meta DPM_Method) a non-DPM method is marked as such instead - see :func:`_marking`.
"""
from __future__ import annotations

import copy
import datetime as _dt
import hashlib
import hmac
import logging
import os
import re
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, PYDICOM_IMPLEMENTATION_UID, generate_uid
from pydicom.valuerep import format_number_as_ds

from .mrd_io import TICK_MS

__all__ = [
    "MR_IMAGE_STORAGE",
    "DeidentifyOptions",
    "ImageGeometry",
    "image_geometry",
    "images_to_datasets",
    "write_dicom_series",
    "deidentify_dataset",
    "format_ds",
]

log = logging.getLogger(__name__)

MR_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.4"
PRODUCT_NAME = "dpm-flair"                              # Manufacturer when the header names no vendor
PRODUCT_MODEL_NAME = f"{PRODUCT_NAME} DPM reconstruction"  # ManufacturerModelName then
SOFTWARE_VERSION = f"{PRODUCT_NAME} 0.1.0"
DEID_PROFILE_NAME = "dpm-flair de-identification profile v1"
STORED_MAX = 4095                       # 12-bit stored range for float/complex inputs
BITS_STORED_SCALED = 12

# ISMRMRD ImageHeader.image_type values
_IMTYPE_MAGNITUDE, _IMTYPE_PHASE, _IMTYPE_REAL, _IMTYPE_IMAG, _IMTYPE_COMPLEX = 1, 2, 3, 4, 5
_IMTYPE_VALUE3 = {_IMTYPE_MAGNITUDE: "M", _IMTYPE_PHASE: "P", _IMTYPE_REAL: "R", _IMTYPE_IMAG: "I",
                  _IMTYPE_COMPLEX: "M"}

DPM_STATEMENT = ("Reconstructed by diffusion-model posterior sampling (dpm-flair){accel} - a deep generative model "
                 "produced this image; it is not a standard reconstruction.")
FALLBACK_STATEMENT = ("SENSE fallback: the diffusion-model reconstruction (dpm-flair) was not used for this image; "
                      "it is a conventional SENSE reconstruction{accel}.")
STD_STATEMENT = ("Posterior standard deviation map of the diffusion-model reconstruction (dpm-flair){accel} - an "
                 "uncertainty estimate, not an anatomical image.")
OTHER_STATEMENT = "Reconstructed by {method} in the dpm-flair pipeline{accel} - no deep generative model was used."


# --------------------------------------------------------------------------------------------------------------
# Small formatting helpers
# --------------------------------------------------------------------------------------------------------------
def format_ds(value: float) -> str:
    """A DICOM DS string of at most 16 characters for ``value`` (no float32 reprs, no "-0")."""
    value = float(value)
    if not np.isfinite(value):
        raise ValueError(f"cannot write the non-finite number {value!r} as a DICOM DS; check the image header")
    if abs(value) < 1e-9:
        return "0"
    return format_number_as_ds(value)


def _ds_list(values: Iterable[float]) -> list[str]:
    return [format_ds(v) for v in values]


def _text(value, limit: int) -> str:
    """Header string -> DICOM text of at most ``limit`` characters without backslashes."""
    if value is None:
        return ""
    s = str(value).replace("\\", "/").strip()
    return s[:limit]


def _pn(name) -> str:
    """ISMRMRD free-text patient name -> DICOM PN ('^' separated, max 64 per group)."""
    if not name:
        return ""
    s = str(name).strip()
    if "^" not in s and "," in s:                 # "Family, Given" -> "Family^Given"
        fam, giv = s.split(",", 1)
        s = f"{fam.strip()}^{giv.strip()}"
    return s.replace("\\", "/")[:64]


def _da(value) -> str:
    """xsdata XmlDate / date / 'YYYY-MM-DD' -> 'YYYYMMDD' (or '')."""
    if value is None:
        return ""
    s = re.sub(r"[^0-9]", "", str(value))[:8]
    return s if len(s) == 8 else ""


def _tm(value) -> str:
    """xsdata XmlTime / 'HH:MM:SS(.ffffff)' -> 'HHMMSS(.ffffff)' (or '')."""
    if value is None:
        return ""
    m = re.match(r"(\d{2}):?(\d{2}):?(\d{2})(\.\d{1,6})?", str(value))
    return "".join(g for g in m.groups() if g) if m else ""


def _tm_from_stamp(ticks: int) -> str:
    """ISMRMRD acquisition_time_stamp (2.5 ms ticks since midnight) -> 'HHMMSS.fff' ('' past 24 h: no time of day)."""
    milliseconds = int(round(int(ticks) * TICK_MS))
    if not 0 <= milliseconds < 86_400_000:
        return ""
    seconds, ms = divmod(milliseconds, 1000)
    return f"{seconds // 3600:02d}{seconds // 60 % 60:02d}{seconds % 60:02d}.{ms:03d}"


def _valid_uid(uid) -> str | None:
    if uid is None:
        return None
    s = str(uid).strip()
    return s if re.fullmatch(r"[0-9]+(\.[0-9]+)*", s) and len(s) <= 64 else None


def _meta_str(image, key: str) -> str:
    """A Gadgetron meta attribute as one string ('' if absent). Meta values may be str or list of str."""
    meta = getattr(image, "meta", None) or {}
    try:
        value = meta[key]
    except (KeyError, TypeError):
        return ""
    if isinstance(value, (list, tuple)):
        return " ".join(str(v) for v in value)
    return str(value)


# --------------------------------------------------------------------------------------------------------------
# Header parsing
# --------------------------------------------------------------------------------------------------------------
def _parse_header(header):
    if header is None:
        raise ValueError("images_to_datasets needs the ISMRMRD XML header (string or ismrmrd.xsd.ismrmrdHeader); "
                         "read it with ismrmrd.Dataset.read_xml_header() or connection.header")
    if isinstance(header, bytes):
        header = header.decode("utf-8")
    if isinstance(header, str):
        from .mrd_io import parse_header
        return parse_header(header)
    return header


def _first(values):
    return values[0] if values else None


def _enum_value(v):
    return getattr(v, "value", v)


# --------------------------------------------------------------------------------------------------------------
# Geometry
# --------------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ImageGeometry:
    """DICOM Image Plane values for one ISMRMRD image (all in mm, LPS patient coordinates)."""

    image_position: np.ndarray          # centre of the first transmitted (top-left) voxel
    image_orientation: np.ndarray       # [row dir (read), column dir (phase)], 6 values
    pixel_spacing: tuple[float, float]  # (row spacing = along phase, column spacing = along read)
    slice_thickness: float
    normal: np.ndarray                  # read × phase
    slice_location: float               # normal · position
    rows: int
    columns: int


def _unit(v, name: str, where: str) -> np.ndarray:
    v = np.asarray(v, dtype=np.float64)
    n = np.linalg.norm(v)
    if not np.isfinite(n) or abs(n - 1.0) > 1e-3:
        raise ValueError(f"{where}: {name} = {v.tolist()} is not a unit vector (norm {n:.4g}); the image header "
                         f"must carry the acquisition's direction cosines (copy them from the acquisition header)")
    return v / n


def image_geometry(head, where: str = "image") -> ImageGeometry:
    """Compute DICOM geometry from an ``ismrmrd.ImageHeader`` (or ``ismrmrd.Image``)."""
    head = head.getHead() if hasattr(head, "getHead") else head
    read = _unit(head.read_dir[:], "read_dir", where)
    phase = _unit(head.phase_dir[:], "phase_dir", where)
    if abs(float(read @ phase)) > 1e-3:
        raise ValueError(f"{where}: read_dir and phase_dir are not orthogonal (dot {float(read @ phase):.3g}); "
                         f"the image header geometry is corrupt")
    nx, ny = int(head.matrix_size[0]), int(head.matrix_size[1])
    fov = np.asarray(head.field_of_view[:], dtype=np.float64)
    if nx <= 0 or ny <= 0 or fov[0] <= 0 or fov[1] <= 0:
        raise ValueError(f"{where}: matrix_size {list(head.matrix_size[:])} / field_of_view {fov.tolist()} must be "
                         f"positive; set field_of_view from the header's reconSpace and matrix_size from the array")
    dx, dy = fov[0] / nx, fov[1] / ny
    pos = np.asarray(head.position[:], dtype=np.float64)
    ipp = pos - (fov[0] / 2) * read - (fov[1] / 2) * phase + (dx / 2) * read + (dy / 2) * phase
    normal = np.cross(read, phase)
    return ImageGeometry(image_position=ipp, image_orientation=np.concatenate([read, phase]),
                         pixel_spacing=(dy, dx), slice_thickness=float(fov[2]), normal=normal,
                         slice_location=float(normal @ pos), rows=ny, columns=nx)


# --------------------------------------------------------------------------------------------------------------
# Pixels
# --------------------------------------------------------------------------------------------------------------
def _image_values(image, where: str) -> np.ndarray:
    """ismrmrd.Image -> 2-D array [rows=y (phase), columns=x (read)], magnitude for complex data."""
    data = np.asarray(image.data)
    if data.ndim == 2:
        data = data[None, None]
    if data.ndim != 4:
        raise ValueError(f"{where}: image data has shape {data.shape}; expected [channels, z, y, x] as ismrmrd.Image")
    if data.shape[0] != 1 or data.shape[1] != 1:
        raise ValueError(f"{where}: image data has {data.shape[0]} channels and {data.shape[1]} partitions; DICOM "
                         f"output needs coil-combined 2-D images (combine coils and split 3-D volumes first)")
    plane = data[0, 0]
    if np.iscomplexobj(plane):
        plane = np.abs(plane)
    head = image.getHead()
    if (plane.shape[1], plane.shape[0]) != (int(head.matrix_size[0]), int(head.matrix_size[1])):
        raise ValueError(f"{where}: data is {plane.shape[0]}x{plane.shape[1]} (y, x) but matrix_size says "
                         f"{head.matrix_size[1]}x{head.matrix_size[0]}; keep the header in step with the array")
    return plane


def _series_scaling(planes: Sequence[np.ndarray]) -> tuple[float, float, int, list[np.ndarray]]:
    """Return (slope, intercept, bits_stored, uint16 planes) with one mapping for the whole series."""
    if all(np.issubdtype(p.dtype, np.integer) for p in planes):
        lo = min(int(p.min()) for p in planes)
        hi = max(int(p.max()) for p in planes)
        if lo >= 0 and hi <= 65535:
            return 1.0, 0.0, 16, [p.astype(np.uint16) for p in planes]
    floats = [np.asarray(p, dtype=np.float64) for p in planes]
    if not all(np.all(np.isfinite(f)) for f in floats):
        raise ValueError("image data contains NaN or Inf; the reconstruction diverged - fix it before DICOM export")
    lo = min(0.0, min(float(f.min()) for f in floats))
    hi = max(float(f.max()) for f in floats)
    span = hi - lo
    slope = span / STORED_MAX if span > 0 else 1.0
    # Round the slope to what the DS string will hold so that stored·slope + intercept is exact to the file.
    slope = float(format_ds(slope))
    stored = [np.clip(np.rint((f - lo) / slope), 0, STORED_MAX).astype(np.uint16) for f in floats]
    return slope, float(format_ds(lo)), BITS_STORED_SCALED, stored


def _window(stored: Sequence[np.ndarray], slope: float, intercept: float) -> tuple[float, float]:
    values = np.concatenate([s.ravel() for s in stored]).astype(np.float64) * slope + intercept
    p_lo, p_hi = np.percentile(values, [1.0, 99.5])
    if p_hi <= p_lo:
        p_lo, p_hi = float(values.min()), float(values.max())
    width = max(p_hi - p_lo, slope if slope > 0 else 1.0)
    return (p_lo + p_hi) / 2.0, width


# --------------------------------------------------------------------------------------------------------------
# De-identification
# --------------------------------------------------------------------------------------------------------------
@dataclass
class DeidentifyOptions:
    """How ``deidentify=True`` replaces identifying data (profile documented in docs/dicom.md).

    key: secret for the keyed hash (HMAC-SHA256) that derives the pseudonymous PatientID and the new UIDs. The same
        key gives the same pseudonym and the same new UIDs for the same input, so repeated exports of one exam stay
        linkable; ``None`` draws a random key per call (no linkage).
    patient_name / patient_id: explicit replacements (default: "ANON^<h>" and "ANON-<h>", <h> = 10 hex digits of
        the keyed hash of the original PatientID).
    date_shift_days: ``None`` removes all dates and times; an integer shifts every date by that many days (times
        kept) - the "Retain Longitudinal Temporal Information with Modified Dates" option.
    """

    key: bytes | str | None = None
    patient_name: str | None = None
    patient_id: str | None = None
    date_shift_days: int | None = None

    def _key(self) -> bytes:
        if self.key is None:
            self.key = secrets.token_bytes(32)
        return self.key.encode() if isinstance(self.key, str) else self.key

    def hash_hex(self, value: str) -> str:
        return hmac.new(self._key(), value.encode(), hashlib.sha256).hexdigest()

    def uid(self, original: str) -> str:
        """A new UID derived from the original one (same key -> same new UID)."""
        return generate_uid(entropy_srcs=[self.hash_hex("uid:" + original)])


# Attributes removed by the profile (PS3.15 Annex E basic profile, those our writer can produce).
_DEID_REMOVE = ("PatientWeight", "PatientSize", "PatientAge", "InstitutionName", "InstitutionAddress",
                "StationName", "DeviceSerialNumber", "OperatorsName", "PerformingPhysicianName",
                "OtherPatientIDs", "PatientComments", "RequestingPhysician")
_DEID_EMPTY = ("PatientBirthDate", "PatientSex", "ReferringPhysicianName", "AccessionNumber", "StudyID")
_DATE_TAGS = ("StudyDate", "SeriesDate", "AcquisitionDate", "ContentDate", "InstanceCreationDate")
_TIME_TAGS = ("StudyTime", "SeriesTime", "AcquisitionTime", "ContentTime", "InstanceCreationTime")
_UID_TAGS = ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "FrameOfReferenceUID")


def deidentify_dataset(ds: Dataset, options: DeidentifyOptions | None = None,
                       original_patient_id: str | None = None) -> Dataset:
    """De-identify one dataset in place (and return it); geometry and pixel data are untouched."""
    options = options or DeidentifyOptions()
    pid = original_patient_id if original_patient_id is not None else str(ds.get("PatientID", ""))
    pseudo = options.hash_hex("pid:" + pid)[:10].upper()
    ds.PatientName = options.patient_name or f"ANON^{pseudo}"
    ds.PatientID = options.patient_id or f"ANON-{pseudo}"
    for kw in _DEID_REMOVE:
        if kw in ds:
            delattr(ds, kw)
    for kw in _DEID_EMPTY:
        setattr(ds, kw, "")
    for kw in _DATE_TAGS:
        if kw not in ds:
            continue
        value = str(ds.get(kw) or "")
        if options.date_shift_days is None or len(value) != 8:
            setattr(ds, kw, "")
        else:
            shifted = _dt.datetime.strptime(value, "%Y%m%d") + _dt.timedelta(days=options.date_shift_days)
            setattr(ds, kw, shifted.strftime("%Y%m%d"))
    if options.date_shift_days is None:
        for kw in _TIME_TAGS:
            if kw in ds:
                setattr(ds, kw, "")
    for kw in _UID_TAGS:
        if kw in ds and ds.get(kw):
            setattr(ds, kw, options.uid(str(ds.get(kw))))
    if "SOPInstanceUID" in ds and getattr(ds, "file_meta", None) is not None:
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.PatientIdentityRemoved = "YES"
    dates = ("dates and times removed" if options.date_shift_days is None
             else f"dates shifted by {options.date_shift_days:+d} days")
    # LO is 64 characters per value; the method is multi-valued, one step per value.
    ds.DeidentificationMethod = [DEID_PROFILE_NAME, "name and ID replaced by keyed-hash pseudonym",
                                 "birth date, sex, physician, accession, study ID emptied",
                                 "weight, size, institution, station, device serial removed",
                                 dates, "UIDs regenerated", "descriptions, geometry and pixels kept"]
    return ds


# --------------------------------------------------------------------------------------------------------------
# Dataset construction
# --------------------------------------------------------------------------------------------------------------
_SEQ_TOKENS = (("EPI", "EP"), ("EP", "EP"), ("GRE", "GR"), ("FLASH", "GR"), ("FISP", "GR"), ("SPGR", "GR"),
               ("GR", "GR"), ("TSE", "SE"), ("FSE", "SE"), ("SE", "SE"), ("FLAIR", "SE"))


def _scanning_sequence(sequence_type: str | None, has_ti: bool) -> list[str]:
    """ISMRMRD sequence_type (free text, e.g. 'TSE', 'FLAIR', 'GRE') -> DICOM ScanningSequence terms."""
    terms: list[str] = []
    s = (sequence_type or "").upper()
    for token, term in _SEQ_TOKENS:
        if token in s and term not in terms:
            terms.append(term)
            break
    if has_ti or "IR" in s or "FLAIR" in s:
        terms.append("IR")
    return terms or ["RM"]   # RM = research mode: the honest term when the sequence family is unknown


def _fallback_comment(comment: str) -> bool:
    c = comment.lower()
    return "fallback" in c and "sense" in c


def _marking(image, accel_txt: str) -> tuple[str, str, str]:
    """(kind, ImageType value 4, statement) for one image from its Gadgetron meta.

    kind is "fallback" (comment says SENSE fallback / SENSE_FALLBACK), "std" (posterior std map: history has STD or
    the comment says "posterior std"), "other" (meta DPM_Method names a non-DPM method such as "sense"), else "dpm".
    """
    comment = _meta_str(image, "GADGETRON_ImageComment") or _meta_str(image, "ImageComment")
    history = _meta_str(image, "GADGETRON_ImageProcessingHistory").upper().split()
    method = _meta_str(image, "DPM_Method").strip()
    if _fallback_comment(comment):
        return "fallback", "SENSE_FALLBACK", FALLBACK_STATEMENT.format(accel=accel_txt)
    if "STD" in history or "posterior std" in comment.lower():
        return "std", "DPM_STD", STD_STATEMENT.format(accel=accel_txt)
    if method and not method.lower().startswith("dpm"):
        tag = re.sub(r"[^A-Z0-9_]", "_", method.upper())[:16]
        return "other", tag, OTHER_STATEMENT.format(method=method, accel=accel_txt)
    return "dpm", "DPM", DPM_STATEMENT.format(accel=accel_txt)


_MARK_SUFFIX = {"dpm": "DPM", "fallback": "SENSE_FALLBACK", "std": "DPM_STD"}


def _default_series_description(image, meas, kind: str, method_tag: str) -> str:
    """Meta SeriesDescription (FIRE key, full text) as sent; else GADGETRON_SeqDescription (without Gadgetron's
    leading '_') or the header's series description / protocol, with the marking suffix appended if missing."""
    full = _meta_str(image, "SeriesDescription").strip()
    if full:
        return full
    base = (_meta_str(image, "GADGETRON_SeqDescription").strip().lstrip("_") or getattr(meas, "seriesDescription", None)
            or getattr(meas, "protocolName", None) or "FLAIR")
    suffix = _MARK_SUFFIX.get(kind, method_tag)
    return base if suffix.upper() in base.upper() else f"{base}_{suffix}"


def _acceleration(hdr) -> float | None:
    try:
        pi = hdr.encoding[0].parallelImaging
        af = pi.accelerationFactor
        r = af.kspace_encoding_step_1 * af.kspace_encoding_step_2
        return float(r) if r and r > 1 else None
    except (AttributeError, IndexError, TypeError):
        return None


def images_to_datasets(header, images: Sequence, *, deidentify: bool | DeidentifyOptions = False,
                       series_description: str | None = None, acceleration: float | None = None,
                       study_instance_uid: str | None = None, body_part: str = "BRAIN",
                       rescale: bool = False, now: _dt.datetime | None = None) -> list[Dataset]:
    """Build one MR Image Storage dataset per ``ismrmrd.Image``.

    Args:
        header: ISMRMRD XML header, as a string/bytes or an ``ismrmrd.xsd.ismrmrdHeader``.
        images: ``ismrmrd.Image`` objects (coil-combined 2-D; complex, float or uint16 data), each with
            image_series_index, image_index, position, read/phase/slice_dir, field_of_view, matrix_size set and
            optionally meta GADGETRON_ImageComment / GADGETRON_SeqDescription / GADGETRON_DataRole.
        deidentify: ``True`` or a :class:`DeidentifyOptions` applies the de-identification profile.
        series_description: SeriesDescription for every series (default: meta GADGETRON_SeqDescription, else the
            header's seriesDescription/protocolName, with "_DPM" appended).
        acceleration: nominal acceleration quoted in the "reconstructed by" statement (default: the header's
            parallelImaging acceleration factor; omitted when unknown).
        study_instance_uid: override the header's studyInstanceUID (default: header, else a new UID).
        body_part: BodyPartExamined when the header has none.
        rescale: write RescaleSlope/Intercept/Type (a Modality LUT back to the float intensities). Off by default:
            the classic MR IOD has no Modality LUT and viewers that ignore it would misapply the window; the
            scaling is then stated in ImageComments instead.
        now: creation time stamp (default: current local time); also the StudyDate of a header without
            studyDate and seriesDate.

    StudyDate/StudyTime and Manufacturer/ManufacturerModelName follow the rules of :func:`_study_level`: the
    header's values, else the images' earliest acquisition time stamp (time) and ``now`` (date), else the
    product's name.

    Returns:
        Datasets sorted by (SeriesNumber, InstanceNumber), each with file_meta ready for :func:`write_dicom_series`.
    """
    hdr = _parse_header(header)
    if not images:
        raise ValueError("images_to_datasets got no images; the reconstruction produced nothing to export")
    now = now or _dt.datetime.now()
    deid = (deidentify if isinstance(deidentify, DeidentifyOptions)
            else DeidentifyOptions() if deidentify else None)

    subj = hdr.subjectInformation
    study = hdr.studyInformation
    meas = hdr.measurementInformation
    system = hdr.acquisitionSystemInformation
    seq = hdr.sequenceParameters
    enc = hdr.encoding[0] if hdr.encoding else None
    if acceleration is None:
        acceleration = _acceleration(hdr)

    study_uid = (_valid_uid(study_instance_uid) or _valid_uid(getattr(study, "studyInstanceUID", None))
                 or generate_uid())
    for_uid = _valid_uid(getattr(meas, "frameOfReferenceUID", None)) or generate_uid()

    # Group by series; geometry and pixels first so that series-wide values (scaling, spacing) are consistent.
    by_series: dict[int, list[tuple[object, ImageGeometry, np.ndarray]]] = {}
    for k, image in enumerate(images):
        head = image.getHead()
        where = f"image {k} (series {head.image_series_index}, index {head.image_index})"
        by_series.setdefault(int(head.image_series_index), []).append(
            (image, image_geometry(head, where), _image_values(image, where)))

    first_stamp = min(int(image.getHead().acquisition_time_stamp) for image in images)
    base_ds = _study_level(hdr, subj, study, meas, system, seq, enc, study_uid, for_uid, body_part, now,
                           first_stamp)
    out: list[Dataset] = []
    for series_number in sorted(by_series):
        entries = by_series[series_number]
        out.extend(_series_datasets(base_ds, hdr, meas, entries, series_number, series_description,
                                    acceleration, now, rescale))
    if deid is not None:
        pid = _text(getattr(subj, "patientID", None), 64)
        for ds in out:
            deidentify_dataset(ds, deid, original_patient_id=pid)
    return out


def _study_level(hdr, subj, study, meas, system, seq, enc, study_uid, for_uid, body_part, now,
                 first_stamp: int) -> Dataset:
    """Attributes shared by every image of the exam.

    StudyDate: studyInformation/studyDate, else measurementInformation/seriesDate, else the date of ``now``.
    StudyTime: studyInformation/studyTime, else ``first_stamp`` (the earliest acquisition_time_stamp of the images,
    i.e. of their reference acquisitions; 2.5 ms ticks since midnight).
    Manufacturer / ManufacturerModelName: acquisitionSystemInformation systemVendor / systemModel when the header
    names a vendor (the model is then omitted if the header has none); else :data:`PRODUCT_NAME` /
    :data:`PRODUCT_MODEL_NAME`, so that a scanner's model is never paired with another vendor.
    """
    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 192"        # UTF-8: names from the scanner may be non-ASCII
    ds.SOPClassUID = MR_IMAGE_STORAGE
    ds.InstanceCreationDate = now.strftime("%Y%m%d")
    ds.InstanceCreationTime = now.strftime("%H%M%S")
    # Patient
    ds.PatientName = _pn(getattr(subj, "patientName", None))
    ds.PatientID = _text(getattr(subj, "patientID", None), 64)
    ds.PatientBirthDate = _da(getattr(subj, "patientBirthdate", None))
    sex = _text(getattr(subj, "patientGender", None), 16).upper()
    ds.PatientSex = sex if sex in ("M", "F", "O") else ""
    weight = getattr(subj, "patientWeight_kg", None)
    if weight:
        ds.PatientWeight = format_ds(weight)
    height = getattr(subj, "patientHeight_m", None)
    if height:
        ds.PatientSize = format_ds(height)
    # General Study
    ds.StudyInstanceUID = study_uid
    ds.StudyDate = (_da(getattr(study, "studyDate", None)) or _da(getattr(meas, "seriesDate", None))
                    or now.strftime("%Y%m%d"))
    ds.StudyTime = _tm(getattr(study, "studyTime", None)) or _tm_from_stamp(first_stamp)
    ds.ReferringPhysicianName = _pn(getattr(study, "referringPhysicianName", None))
    ds.StudyID = _text(getattr(study, "studyID", None), 16)
    acc = getattr(study, "accessionNumber", None)
    ds.AccessionNumber = _text(acc, 16) if acc is not None else ""
    if getattr(study, "studyDescription", None):
        ds.StudyDescription = _text(study.studyDescription, 64)
    # General Series (study-level parts), Frame of Reference, Equipment
    ds.Modality = "MR"
    ppos = _enum_value(getattr(meas, "patientPosition", None))
    ds.PatientPosition = ppos if ppos else ""
    if getattr(meas, "protocolName", None):
        ds.ProtocolName = _text(meas.protocolName, 64)
    ds.BodyPartExamined = _text(getattr(study, "bodyPartExamined", None) or body_part, 16).upper()
    ds.FrameOfReferenceUID = for_uid
    ds.PositionReferenceIndicator = ""
    vendor = _text(getattr(system, "systemVendor", None), 64)
    if vendor:
        ds.Manufacturer = vendor
        if getattr(system, "systemModel", None):
            ds.ManufacturerModelName = _text(system.systemModel, 64)
    else:
        ds.Manufacturer = PRODUCT_NAME
        ds.ManufacturerModelName = PRODUCT_MODEL_NAME
    if getattr(system, "institutionName", None):
        ds.InstitutionName = _text(system.institutionName, 64)
    if getattr(system, "stationName", None):
        ds.StationName = _text(system.stationName, 16)
    if getattr(system, "deviceSerialNumber", None):
        ds.DeviceSerialNumber = _text(system.deviceSerialNumber, 64)
    ds.SoftwareVersions = SOFTWARE_VERSION
    # MR Image: sequence parameters
    tr, te, ti = _first(getattr(seq, "TR", None)), _first(getattr(seq, "TE", None)), _first(getattr(seq, "TI", None))
    flip = _first(getattr(seq, "flipAngle_deg", None))
    seq_type = getattr(seq, "sequence_type", None)
    ds.ScanningSequence = _scanning_sequence(seq_type, bool(ti))
    ds.SequenceVariant = "NONE"
    ds.ScanOptions = ""          # Type 2; "IR" is not a defined term here, the inversion is in ScanningSequence
    is_3d = bool(enc is not None and enc.encodedSpace.matrixSize.z > 1)
    ds.MRAcquisitionType = "3D" if is_3d else "2D"
    ds.RepetitionTime = format_ds(tr) if tr is not None else ""
    ds.EchoTime = format_ds(te) if te is not None else ""
    if "IR" in ds.ScanningSequence:
        ds.InversionTime = format_ds(ti) if ti else ""
    etl = getattr(enc, "echoTrainLength", None) if enc is not None else None
    ds.EchoTrainLength = int(etl) if etl else ""
    if flip is not None:
        ds.FlipAngle = format_ds(flip)
    if seq_type:
        ds.SequenceName = _text(seq_type, 16)
    ds.ImagedNucleus = "1H"
    freq = getattr(getattr(hdr, "experimentalConditions", None), "H1resonanceFrequency_Hz", None)
    if freq:
        ds.ImagingFrequency = format_ds(freq / 1e6)
    b0 = getattr(system, "systemFieldStrength_T", None)
    if b0:
        ds.MagneticFieldStrength = format_ds(b0)
    if enc is not None:
        em = enc.encodedSpace.matrixSize
        ds.InPlanePhaseEncodingDirection = "COL"     # phase runs along the column direction (phase_dir)
        # [frequency rows, frequency columns, phase rows, phase columns]: read runs along a row, phase down a column
        ds.AcquisitionMatrix = [0, int(enc.reconSpace.matrixSize.x), int(em.y), 0]
    ds.EchoNumbers = 1
    return ds


def _series_datasets(base_ds: Dataset, hdr, meas, entries, series_number: int, series_description,
                     acceleration, now, rescale: bool) -> list[Dataset]:
    series_uid = generate_uid()
    # Instance numbers: image_index + 1; if indices repeat in the series, number by (slice location, order).
    indices = [int(img.getHead().image_index) for img, _, _ in entries]
    if len(set(indices)) == len(indices):
        numbers = [i + 1 for i in indices]
    else:
        log.warning("series %d: image_index values repeat (%s); numbering instances by slice location",
                    series_number, indices)
        order = sorted(range(len(entries)), key=lambda k: (entries[k][1].slice_location, k))
        numbers = [0] * len(entries)
        for n, k in enumerate(order):
            numbers[k] = n + 1
    # Series-wide spacing between slices (centre to centre) and pixel scaling.
    locs = sorted({round(g.slice_location, 4) for _, g, _ in entries})
    spacing = float(np.median(np.diff(locs))) if len(locs) > 1 else None
    slope, intercept, bits, stored = _series_scaling([p for _, _, p in entries])
    # Windows are in the units a viewer applies them to: rescaled values with a Modality LUT, stored ones without.
    wc, ww = _window(stored, slope, intercept) if rescale else _window(stored, 1.0, 0.0)

    first_img = entries[0][0]
    accel_txt = f" from {acceleration:g}x accelerated k-space" if acceleration else ""
    effective = _meta_str(first_img, "DPM_EffectiveAcceleration")
    try:
        if effective:
            accel_txt += f" (effective R {float(effective):.2f})" if accel_txt else \
                f" from accelerated k-space (effective R {float(effective):.2f})"
    except ValueError:
        pass
    if series_description is None:
        kind0, tag0, _ = _marking(first_img, accel_txt)
        series_description = _default_series_description(first_img, meas, kind0, tag0)

    out = []
    for (image, geom, _), number, pixels in zip(entries, numbers, stored):
        head = image.getHead()
        ds = copy.deepcopy(base_ds)       # own elements: Dataset.update would share DataElement objects
        ds.SOPInstanceUID = generate_uid()
        ds.SeriesInstanceUID = series_uid
        ds.SeriesNumber = series_number
        ds.SeriesDescription = _text(series_description, 64)
        ds.SeriesDate = _da(getattr(meas, "seriesDate", None)) or ds.StudyDate
        ds.SeriesTime = _tm(getattr(meas, "seriesTime", None)) or ds.StudyTime
        # Laterality (Type 2C) stays absent: the brain is not a paired body part.
        ds.InstanceNumber = number
        ds.AcquisitionNumber = int(head.repetition) + 1
        ds.ContentDate = now.strftime("%Y%m%d")
        ds.ContentTime = now.strftime("%H%M%S")
        # Marking: deep generative model, or SENSE fallback
        comment = _meta_str(image, "GADGETRON_ImageComment") or _meta_str(image, "ImageComment")
        _, tag, statement = _marking(image, accel_txt)
        value3 = _IMTYPE_VALUE3.get(int(head.image_type), "M")
        ds.ImageType = ["DERIVED", "SECONDARY", value3, tag]
        ds.DerivationDescription = statement[:1024]
        scale_txt = "" if rescale or (slope == 1.0 and intercept == 0.0) else (
            f" Intensity scale: value = stored x {format_ds(slope)} + {format_ds(intercept)} (arbitrary units).")
        ds.ImageComments = (statement + (f" [{comment}]" if comment else "") + scale_txt)[:10240]
        ds.BurnedInAnnotation = "NO"
        ds.LossyImageCompression = "00"
        # Image Plane
        ds.ImagePositionPatient = _ds_list(geom.image_position)
        ds.ImageOrientationPatient = _ds_list(geom.image_orientation)
        ds.PixelSpacing = _ds_list(geom.pixel_spacing)
        ds.SliceThickness = format_ds(geom.slice_thickness)
        if spacing is not None:
            ds.SpacingBetweenSlices = format_ds(spacing)
        ds.SliceLocation = format_ds(geom.slice_location)
        # Image Pixel
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.Rows, ds.Columns = geom.rows, geom.columns
        ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, bits, bits - 1
        ds.PixelRepresentation = 0
        ds.PixelData = np.ascontiguousarray(pixels, dtype="<u2").tobytes()
        if rescale:
            ds.RescaleIntercept = format_ds(intercept)
            ds.RescaleSlope = format_ds(slope)
            ds.RescaleType = "US"
        ds.WindowCenter = format_ds(wc)
        ds.WindowWidth = format_ds(ww)
        ds.WindowCenterWidthExplanation = "robust 1-99.5 percentile"
        # File meta
        fm = FileMetaDataset()
        fm.MediaStorageSOPClassUID = MR_IMAGE_STORAGE
        fm.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        fm.TransferSyntaxUID = ExplicitVRLittleEndian
        fm.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
        fm.ImplementationVersionName = "DPMFLAIR_010"
        ds.file_meta = fm
        out.append(ds)
    out.sort(key=lambda d: int(d.InstanceNumber))
    return out


# --------------------------------------------------------------------------------------------------------------
# Files
# --------------------------------------------------------------------------------------------------------------
def write_dicom_series(datasets: Sequence[Dataset], out_dir: str | os.PathLike) -> list[Path]:
    """Write datasets as ``out_dir/series_<SeriesNumber:03d>/image_<InstanceNumber:04d>.dcm`` (Part-10 files).

    Series of the same number but different SeriesInstanceUID get a ``_<k>`` folder suffix, and images that repeat an
    InstanceNumber within a series an ``image_<n>_<k>.dcm`` name (warning); nothing is overwritten silently (a file
    left in the folder by an earlier export raises ``FileExistsError``).
    """
    out_dir = Path(out_dir)
    folder_of: dict[str, Path] = {}
    used_folders: set[Path] = set()
    paths: list[Path] = []
    written: set[Path] = set()
    for ds in datasets:
        suid = str(ds.SeriesInstanceUID)
        if suid not in folder_of:
            base = f"series_{int(ds.get('SeriesNumber') or 0):03d}"
            folder, k = out_dir / base, 1
            while folder in used_folders:
                folder, k = out_dir / f"{base}_{k}", k + 1
            used_folders.add(folder)
            folder_of[suid] = folder
            folder.mkdir(parents=True, exist_ok=True)
        stem = f"image_{int(ds.get('InstanceNumber') or 0):04d}"
        path, k = folder_of[suid] / f"{stem}.dcm", 1
        while path in written:               # a repeated InstanceNumber in one series: keep every image
            path, k = folder_of[suid] / f"{stem}_{k}.dcm", k + 1
        if k > 1:
            log.warning("series %s: InstanceNumber %s repeats; writing %s", ds.get("SeriesNumber"),
                        ds.get("InstanceNumber"), path.name)
        if path.exists():
            raise FileExistsError(f"{path} exists already; write each export into an empty folder")
        written.add(path)
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths
