"""ISMRMRD images from a :class:`dpm_core.reconstruct.ReconResult`: the one place that builds image headers and meta.

Header rules (DESIGN.md §4, as Gadgetron's GenericReconGadget): geometry (position, read/phase/slice_dir,
patient_table_position), measurement_uid, counters (average, slice, contrast, phase, repetition, set) and time
stamps are copied from the slice's reference acquisition (the imaging line nearest the k-space centre, see
:class:`gadgets.assembly.KspaceBuffer`); matrix_size = (W, H, 1) — x along read_dir, y along phase_dir;
field_of_view from reconSpace (y from encodedSpace when the image spans the encoded ky matrix); channels 1;
data_type / image_type from the pixels; image_series_index and image_index set explicitly.

Numbering: repetition r of a scan goes to series ``series_index + r`` (each repetition is its own image set), its
slices get ``image_index = idx.slice`` (DicomFinishGadget writes InstanceNumber = image_index + 1). The optional
posterior-std series (float32 magnitude) uses ``std_series_index + r``.

Meta: GADGETRON_DataRole=Image, encoding, GADGETRON_ImageComment, GADGETRON_SeqDescription,
GADGETRON_ImageProcessingHistory, plus the Siemens FIRE keys DataRole, ImageComment, SeriesDescription,
Keep_image_geometry=1, ImageRowDir / ImageColumnDir, and DPM_* keys describing the reconstruction: DPM_Method,
DPM_ReconSeconds and the parameters of :func:`recorded_parameters` (ζ, λ, map sets, model, ...), whose short form
(:func:`parameters_text`) is also part of the image comment, so it reaches the DICOM ImageComments and the logs.
"""
from __future__ import annotations

import ismrmrd
import numpy as np

__all__ = ["images_from_result", "image_meta", "field_of_view", "recorded_parameters", "parameters_text",
           "display_orientation", "FALLBACK_TAG", "PIXEL_FORMATS", "to_uint16"]

FALLBACK_TAG = "SENSE_FALLBACK"
PIXEL_FORMATS = ("complex", "uint16")
UINT16_MAX_VALUE = 4095        # uint16 output: magnitudes scaled so the volume's maximum is 4095 (12 bits, as FIRE
                               # modules and scanners store MR magnitude), WindowCenter 2048 / WindowWidth 4096


def to_uint16(values: np.ndarray) -> tuple[np.ndarray, float]:
    """Magnitudes of a volume [S, H, W] -> (uint16 pixels, intensity scale): value = stored x scale, one scale for
    the whole volume so slices stay comparable."""
    magnitude = np.abs(values).astype(np.float64)
    top = float(magnitude.max()) if magnitude.size else 0.0
    scale = top / UINT16_MAX_VALUE if top > 0 else 1.0
    return np.rint(magnitude / scale).astype(np.uint16), scale

# ReconResult.info key -> meta key. Every info key is optional (which are present depends on the method).
RECORDED_INFO_KEYS = {
    "effective_acceleration": "DPM_EffectiveAcceleration",
    "num_maps": "DPM_NumMaps",
    "readout_fraction": "DPM_ReadoutFraction",         # an asymmetric echo: the measured part of the readout
    "calibration": "DPM_Calibration",                  # coil maps from other volumes (interleaved calibration)
    "second_map_energy": "DPM_SecondMapEnergy",        # per slice
    "zeta": "DPM_Zeta",
    "zeta_rule": "DPM_ZetaRule",
    "zeta_holdout_lines": "DPM_ZetaHoldoutLines",      # the held-out rule (pnp): lines it scored ζ on, in all folds
    "zeta_holdout_folds": "DPM_ZetaHoldoutFolds",      # ... and the folds they came in
    "l1_lamda": "DPM_Lambda",                          # one value or one per slice
    "lamda_rule": "DPM_LambdaRule",
    "model": "DPM_Model",
    "model_sha256": "DPM_ModelSHA256",
    "contrast": "DPM_Contrast",                        # the scan's contrast class the model was chosen for
    "model_choice": "DPM_ModelChoice",                 # why that model (dpm_core.model_choice)
    "sampler": "DPM_Sampler",
    "warm_start": "DPM_WarmStartSigma",                # σ of the start from the SENSE image (absent: pure noise)
    "slices_per_call": "DPM_SlicesPerCall",            # the memory budget's batching of the sampler
    "nfe_per_sample": "DPM_NFEPerSample",
    "num_samples": "DPM_NumSamples",
    "measured_noise_std": "DPM_NoiseStd",              # per slice, per real channel, input units (prewhitened: 0.707)
    "noise_source": "DPM_NoiseSource",                 # "given" (the noise scan's level) or "calibration matrix"
    "input_warnings": "DPM_InputWarnings",             # what the assembly repaired (dropped / averaged lines)
}


def _value_text(value) -> str:
    """A number, a string or a sequence of numbers (one per slice) -> text; numbers to 6 significant digits."""
    if isinstance(value, (list, tuple, np.ndarray)):
        return " ".join(_value_text(v) for v in value)
    if isinstance(value, (bool, str)):
        return str(value)
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    return f"{float(value):.6g}"


def recorded_parameters(info: dict) -> dict[str, str]:
    """The reconstruction parameters recorded with every image: ``ReconResult.info`` -> {meta key: text}.

    Keys as in :data:`RECORDED_INFO_KEYS` (DPM_Zeta, DPM_ZetaRule, DPM_Lambda, DPM_NumMaps, DPM_Model,
    DPM_ModelSHA256, ...); an info key that is absent or None gives no entry. Per-slice values are space-separated.
    """
    return {meta_key: _value_text(info[key]) for key, meta_key in RECORDED_INFO_KEYS.items()
            if info.get(key) is not None}


def parameters_text(parameters: dict[str, str]) -> str:
    """Short human-readable form of :func:`recorded_parameters`, e.g.
    ``"zeta=8 (card), maps=2, model=flair_default sha256 1a2b3c4d for FLAIR"`` ('' when none is known)."""
    parts = []
    for value_key, rule_key, name in (("DPM_Zeta", "DPM_ZetaRule", "zeta"), ("DPM_Lambda", "DPM_LambdaRule", "lambda")):
        if value_key in parameters:
            rule = parameters.get(rule_key)
            parts.append(f"{name}={parameters[value_key]}" + (f" ({rule})" if rule else ""))
    if "DPM_NumMaps" in parameters:
        parts.append(f"maps={parameters['DPM_NumMaps']}")
    if "DPM_Model" in parameters:
        sha = parameters.get("DPM_ModelSHA256")
        parts.append(f"model={parameters['DPM_Model']}" + (f" sha256 {sha[:8]}" if sha else "") +
                     (f" for {parameters['DPM_Contrast']}" if "DPM_Contrast" in parameters else ""))
    if "DPM_InputWarnings" in parameters:
        parts.append(f"input: {parameters['DPM_InputWarnings']}")
    return ", ".join(parts)


def field_of_view(header, num_lines: int) -> tuple[float, float, float]:
    """(x, y, z) mm of an image [H=num_lines, W]: reconSpace x and z; y from reconSpace when its matrix y equals
    ``num_lines``, else the encodedSpace y FOV (the image then spans the encoded ky matrix); z of a 3-D scan's
    partition image is the slab's reconSpace z FOV over its partitions."""
    enc = header.encoding[0]
    fov_r, fov_e = enc.reconSpace.fieldOfView_mm, enc.encodedSpace.fieldOfView_mm
    y = fov_r.y if enc.reconSpace.matrixSize.y == num_lines else fov_e.y * num_lines / enc.encodedSpace.matrixSize.y
    z = fov_r.z / max(enc.reconSpace.matrixSize.z, 1) if enc.encodedSpace.matrixSize.z > 1 else fov_r.z
    return float(fov_r.x), float(y), float(z)


# Radiological display (DICOM patient coordinates LPS: +x patient left, +y posterior, +z head): the patient direction
# the display's columns (left -> right) and rows (top -> bottom) should run along, by the slice normal's main axis.
_DISPLAY_AXES = {2: ((1, 0, 0), (0, 1, 0)),      # axial: patient left on the right, anterior up
                 1: ((1, 0, 0), (0, 0, -1)),     # coronal: patient left on the right, head up
                 0: ((0, 1, 0), (0, 0, -1))}     # sagittal: anterior on the left, head up


def display_orientation(pixels: np.ndarray, read_dir, phase_dir, slice_dir) -> np.ndarray:
    """An image [H, W] (x along read_dir, y along phase_dir; ISMRMRD) turned for radiological display: transposed
    and/or flipped so that its columns run towards the patient's left (axial, coronal) or posterior (sagittal) and
    its rows towards posterior (axial) or feet (coronal, sagittal). Unchanged when the directions are zero or
    unknown (e.g. ismrmrd-tools phantoms)."""
    read, phase, normal = (np.asarray(v, dtype=np.float64).reshape(3) for v in (read_dir, phase_dir, slice_dir))
    if not (np.linalg.norm(read) > 0.5 and np.linalg.norm(phase) > 0.5):
        return pixels
    if np.linalg.norm(normal) < 0.5:
        normal = np.cross(read, phase)
    col_target, row_target = (np.asarray(v, dtype=np.float64) for v in _DISPLAY_AXES[int(np.argmax(np.abs(normal)))])
    out = pixels
    if abs(phase @ col_target) > abs(read @ col_target):       # the columns run along phase_dir: swap the axes
        out, read, phase = out.T, phase, read
    if read @ col_target < 0:
        out = out[:, ::-1]
    if phase @ row_target < 0:
        out = out[::-1, :]
    return np.ascontiguousarray(out)


def _fmt(values) -> list[str]:
    return [f"{float(v):.6f}" for v in values]


def image_meta(*, comment: str, series_description: str, history: list[str], read_dir, phase_dir,
               role: str = "Image", extra: dict | None = None) -> ismrmrd.Meta:
    """The meta attributes of one image (Gadgetron and Siemens FIRE keys)."""
    meta = ismrmrd.Meta()
    meta["GADGETRON_DataRole"] = role
    meta["encoding"] = "0"
    meta["GADGETRON_ImageComment"] = comment
    meta["GADGETRON_SeqDescription"] = "_" + series_description.replace(" ", "_")
    meta["GADGETRON_ImageProcessingHistory"] = list(history)
    meta["DataRole"] = role
    meta["ImageComment"] = comment
    meta["SeriesDescription"] = series_description
    meta["Keep_image_geometry"] = "1"
    meta["ImageRowDir"] = _fmt(read_dir)
    meta["ImageColumnDir"] = _fmt(phase_dir)
    for key, value in (extra or {}).items():
        meta[key] = value if isinstance(value, list) else str(value)
    return meta


def _make_image(pixels: np.ndarray, reference, *, header, image_type: int, series: int, index: int,
                meta: ismrmrd.Meta) -> ismrmrd.Image:
    """pixels: [H, W] complex64, float32 or uint16 -> ismrmrd.Image with matrix_size (W, H, 1)."""
    H, W = pixels.shape
    image = ismrmrd.Image.from_array(np.ascontiguousarray(pixels), acquisition=reference, transpose=False,
                                     image_type=image_type, image_series_index=int(series), image_index=int(index),
                                     field_of_view=field_of_view(header, H))
    image.meta = meta
    return image


def images_from_result(result, buffer, header, *, series_index: int = 1, std_series_index: int | None = None,
                       protocol: str | None = None, fallback_reason: str | None = None,
                       extra_meta: dict | None = None, pixel_format: str = "complex") -> list[ismrmrd.Image]:
    """Build the output images of one reconstructed volume.

    Args:
        result: ReconResult with ``images [S, H, W]`` complex64 and optionally ``std [S, H, W]`` float32.
        buffer: the :class:`gadgets.assembly.KspaceBuffer` it came from (reference headers, slices, counters).
        header: the ISMRMRD xsdata header (FOV, protocol name).
        series_index: series of repetition 0; repetition r uses ``series_index + r``.
        std_series_index: series of the std maps (repetition 0), or None to send no std series.
        protocol: base series description (default measurementInformation.protocolName or "MR").
        fallback_reason: set when the DPM stage failed and ``result`` is the SENSE fallback: the images are marked
            in ImageComment and SeriesDescription.
        extra_meta: more meta keys for every image.
        pixel_format: "complex" (complex64 images, float32 std maps) or "uint16" (magnitudes as uint16, see
            :func:`to_uint16`, with WindowCenter / WindowWidth, SequenceDescriptionAdditional and DPM_IntensityScale
            in the meta, as FIRE/OpenRecon modules send images; std maps likewise with their own scale).
    Returns: S images (slice order of the buffer), then S std images when requested and available.
    """
    if pixel_format not in PIXEL_FORMATS:
        raise ValueError(f"pixel_format {pixel_format!r} must be one of {PIXEL_FORMATS}")
    images = np.asarray(result.images)
    if images.ndim != 3 or images.shape[0] != len(buffer.reference_headers):
        raise ValueError(f"result.images must be [S={len(buffer.reference_headers)}, H, W]; got {images.shape}")
    if protocol is None:
        info = getattr(header, "measurementInformation", None)
        protocol = (info.protocolName if info is not None and info.protocolName else None) or "MR"
    method = result.method
    acceleration = result.info.get("effective_acceleration")
    accel_text = f" R={acceleration:.2f}" if isinstance(acceleration, (int, float)) else ""
    parameters = recorded_parameters(result.info)
    summary = parameters_text(parameters)
    summary_text = f"; {summary}" if summary else ""
    if fallback_reason:
        comment = f"{FALLBACK_TAG} ({method}){accel_text}{summary_text}: DPM failed: {fallback_reason}"[:200]
        description = f"{protocol} {FALLBACK_TAG}"
        history = ["GADGETRON", "DPM_FAILED", method.upper()]
    else:
        comment = f"{method.upper()}{accel_text}{summary_text}"
        description = f"{protocol} {method.split(':')[0].upper()}"
        history = ["GADGETRON", method.upper()]
    extra = {"DPM_Method": method, **parameters}
    if "total" in result.timings:
        extra["DPM_ReconSeconds"] = f"{float(result.timings['total']):.3f}"
    extra.update(extra_meta or {})

    def pixels(values: np.ndarray, image_type: int, dtype) -> tuple[np.ndarray, int, dict]:
        """The volume's pixels, image type and the meta that goes with the pixel format."""
        if pixel_format == "complex":
            return values.astype(dtype), image_type, {}
        stored, scale = to_uint16(values)
        return stored, ismrmrd.IMTYPE_MAGNITUDE, {
            "WindowCenter": str((UINT16_MAX_VALUE + 1) // 2), "WindowWidth": str(UINT16_MAX_VALUE + 1),
            "SequenceDescriptionAdditional": "DPM", "DPM_IntensityScale": f"{scale:.9g}"}

    repetition = buffer.repetition
    out = []
    volume, image_type, format_meta = pixels(images, ismrmrd.IMTYPE_COMPLEX, np.complex64)
    for s, reference in enumerate(buffer.reference_headers):
        meta = image_meta(comment=comment, series_description=description, history=history,
                          read_dir=reference.read_dir, phase_dir=reference.phase_dir, extra={**extra, **format_meta})
        out.append(_make_image(volume[s], reference, header=header, image_type=image_type,
                               series=series_index + repetition, index=buffer.slices[s], meta=meta))
    if std_series_index is not None and result.std is not None:
        std, image_type, format_meta = pixels(np.asarray(result.std, dtype=np.float32), ismrmrd.IMTYPE_MAGNITUDE,
                                              np.float32)
        for s, reference in enumerate(buffer.reference_headers):
            meta = image_meta(comment=f"posterior std ({method}){summary_text}",
                              series_description=f"{protocol} DPM_STD", history=history + ["STD"],
                              read_dir=reference.read_dir, phase_dir=reference.phase_dir,
                              extra={**extra, **format_meta})
            out.append(_make_image(std[s], reference, header=header, image_type=image_type,
                                   series=std_series_index + repetition, index=buffer.slices[s], meta=meta))
    return out
