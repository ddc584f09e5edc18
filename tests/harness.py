"""A pure-Python "Gadgetron side" for testing the external gadget over the real wire protocol (DESIGN.md §4).

:class:`GadgetronSide` does what Gadgetron's external node does in execute mode: listen on an ephemeral port on
127.0.0.1, spawn ``python -m gadgetron <port> <module> <target>``, accept the connection-back, send CONFIG (id 2,
``uint32 len`` + ``<configuration>`` XML), HEADER (id 3), the items (Acquisitions through
``ismrmrd.ProtocolSerializer``, ReconData through ``gadgetron.types.recon_data.write_recon_data``) and CLOSE from a
writer thread, while the calling thread reads the replies with a deadline: images (1022), ImageArray (1024), passed-
through acquisitions (1008), ERROR (8: ``uint64 len`` + text) and CLOSE (4). Nothing can hang: every socket has a
timeout and the child is killed when the deadline passes.

:func:`bucket_to_buffer` is the Gadgetron-side emulation of NoiseAdjust -> RemoveROOversampling ->
AcquisitionAccumulateTrigger -> BucketToBuffer (split_slices), producing the ReconData messages the main gadget target
receives (ref buffer layout for embedded vs separate calibration as in Gadgetron's BucketToBufferGadget.cpp).
"""
from __future__ import annotations

import ctypes
from pathlib import Path

import ismrmrd
import numpy as np

REPO = Path(__file__).resolve().parents[1]

# The Gadgetron side of the wire protocol is product code (dpm-replay's gadget and client modes use it).
from gadgets.wire import StreamResult, config_xml, run_spawned_gadget  # noqa: E402,F401  (config_xml: for tests)


class GadgetronSide:
    """Spawn and drive one external Python gadget like Gadgetron does (see :func:`gadgets.wire.run_spawned_gadget`).

    Args:
        module, target: the gadget (``python -m gadgetron <port> module target``).
        timeout: seconds for the whole stream (connect-back, send, replies, exit).
        env: extra environment variables for the child.
    """

    def __init__(self, module: str = "gadgets.gadget", target: str = "dpm_recon", timeout: float = 120.0,
                 env: dict | None = None):
        self.module, self.target, self.timeout = module, target, timeout
        self.env = dict(env or {})           # the child inherits this process's environment (thread counts too)

    def run(self, header_xml: str, items: list, config: str | None = None, send_close: bool = True) -> StreamResult:
        """Send CONFIG, HEADER, ``items`` (Acquisition / ReconData / raw bytes) and CLOSE; collect the replies."""
        return run_spawned_gadget(self.module, self.target, header_xml, items, config=config, timeout=self.timeout,
                                  env=self.env, send_close=send_close)


# ---------------------------------------------------------------------------------------------------------------------
# Gadgetron-side BucketToBuffer emulation

def _sampling_description(header, number_of_samples: int, forref: bool, calibration_mode: str | None):
    from gadgetron.types.recon_data import SamplingDescription
    enc = header.encoding[0]
    sd = SamplingDescription()
    sd.encoded_FOV[:] = (enc.reconSpace.fieldOfView_mm.x, enc.encodedSpace.fieldOfView_mm.y,
                         enc.encodedSpace.fieldOfView_mm.z)
    sd.recon_FOV[:] = (enc.reconSpace.fieldOfView_mm.x, enc.reconSpace.fieldOfView_mm.y,
                       enc.reconSpace.fieldOfView_mm.z)
    sd.encoded_matrix[:] = (enc.reconSpace.matrixSize.x, enc.encodedSpace.matrixSize.y, enc.encodedSpace.matrixSize.z)
    sd.recon_matrix[:] = (enc.reconSpace.matrixSize.x, enc.reconSpace.matrixSize.y, enc.reconSpace.matrixSize.z)
    lim = enc.encodingLimits.kspace_encoding_step_1
    sd.sampling_limits[0].min, sd.sampling_limits[0].max = 0, number_of_samples - 1
    sd.sampling_limits[0].center = number_of_samples // 2
    if not forref or calibration_mode == "embedded":
        offset = enc.encodedSpace.matrixSize.y // 2 - lim.center
        sd.sampling_limits[1].min, sd.sampling_limits[1].max = lim.minimum + offset, lim.maximum + offset
        sd.sampling_limits[1].center = enc.encodedSpace.matrixSize.y // 2
    else:
        sd.sampling_limits[1].min, sd.sampling_limits[1].max, sd.sampling_limits[1].center = (
            lim.minimum, lim.maximum, lim.center)
    Z, kz = max(enc.encodedSpace.matrixSize.z, 1), enc.encodingLimits.kspace_encoding_step_2
    if Z > 1 and kz is not None:
        shift = Z // 2 - kz.center
        sd.sampling_limits[2].min, sd.sampling_limits[2].max = kz.minimum + shift, kz.maximum + shift
        sd.sampling_limits[2].center = Z // 2
    return sd


def _make_recon_buffer(acqs: list, header, forref: bool, n_of, num_n: int):
    from gadgetron.types.recon_data import ReconBuffer
    enc = header.encoding[0]
    mode = enc.parallelImaging.calibrationMode.value if enc.parallelImaging else None
    H, NE2 = enc.encodedSpace.matrixSize.y, max(enc.encodedSpace.matrixSize.z, 1)
    offset = H // 2 - enc.encodingLimits.kspace_encoding_step_1.center
    kz_limits = enc.encodingLimits.kspace_encoding_step_2
    kz_offset = NE2 // 2 - kz_limits.center if NE2 > 1 and kz_limits is not None else 0
    ro, cha = acqs[0].number_of_samples, acqs[0].active_channels
    separate = forref and mode in ("separate", "external")
    if separate:
        e1s = [a.idx.kspace_encode_step_1 for a in acqs]
        e1_min, NE1 = min(e1s), max(e1s) - min(e1s) + 1
    else:
        NE1 = H
    data = np.zeros((ro, NE1, NE2, cha, num_n, 1, 1), dtype=np.complex64, order="F")
    headers = np.empty((NE1, NE2, num_n, 1, 1), dtype=object)
    for index in np.ndindex(headers.shape):
        headers[index] = ismrmrd.AcquisitionHeader()
    for a in acqs:
        if separate:
            e1 = a.idx.kspace_encode_step_1 - (e1_min if e1_min > 0 else 0)
        else:
            e1 = a.idx.kspace_encode_step_1 + offset
        n, e2 = n_of(a), a.idx.kspace_encode_step_2 + kz_offset
        data[:, e1, e2, :, n, 0, 0] = a.data.T
        headers[e1, e2, n, 0, 0] = a.getHead()
    return ReconBuffer(data, None, None, headers, _sampling_description(header, ro, forref, mode))


def asymmetric_echo_adjust(acquisitions, header):
    """Gadgetron's AsymmetricEchoAdjustROGadget: a readout shorter than the encoded one is zero-padded to it — before
    the samples when ``center_sample`` lies in their first half, else after them — with the padding recorded in
    ``discard_pre`` / ``discard_post`` and ``center_sample`` set to the middle; noise readouts pass."""
    encoded = header.encoding[0].encodedSpace.matrixSize.x
    for a in acquisitions:
        n, centre = a.number_of_samples, a.center_sample
        if (not a.is_flag_set(ismrmrd.ACQ_IS_NOISE_MEASUREMENT) and n < encoded and 2 * centre != n
                and centre < n):
            data = a.data.copy()
            a.resize(number_of_samples=encoded, active_channels=a.active_channels,
                     trajectory_dimensions=a.trajectory_dimensions)
            a.data[:] = 0
            if 2 * centre < n:
                a.data[:, encoded - n:] = data
                a.discard_pre, a.discard_post = encoded - n, 0
            else:
                a.data[:, :n] = data
                a.discard_pre, a.discard_post = 0, encoded - n
            a.center_sample = encoded // 2
        yield a


def bucket_to_buffer(acquisitions: list, header, n_dimension: str = "") -> list:
    """Gadgetron side: acquisitions -> ReconData messages as NoiseAdjust -> AsymmetricEchoAdjustRO ->
    RemoveROOversampling -> AcquisitionAccumulateTrigger(trigger_dimension=repetition) ->
    BucketToBuffer(split_slices=true, N_dimension).

    Calibration lines go to ``ref`` (PARALLEL_CALIBRATION only there; PARALLEL_CALIBRATION_AND_IMAGING in both).
    One ReconData per (slice, average, contrast, phase, repetition, set) key, repetition folded into N when
    ``n_dimension == "repetition"``. Returns the list of ReconData in key order within each bucket.
    """
    from gadgetron.types.recon_data import ReconBit, ReconData
    from gadgets import assembly

    stream = list(assembly.remove_oversampling(
        asymmetric_echo_adjust(assembly.noise_adjust(iter(acquisitions), header), header), header))
    fold_rep = n_dimension == "repetition"
    reps = sorted({a.idx.repetition for a in stream})
    buckets = [stream] if fold_rep else [[a for a in stream if a.idx.repetition == r] for r in reps]
    messages = []
    for bucket in buckets:
        keys: dict = {}
        for a in bucket:
            i = a.idx
            key = (i.slice, i.average, i.contrast, i.phase, 0 if fold_rep else i.repetition, i.set)
            calib = a.is_flag_set(ismrmrd.ACQ_IS_PARALLEL_CALIBRATION)
            both = a.is_flag_set(ismrmrd.ACQ_IS_PARALLEL_CALIBRATION_AND_IMAGING)
            entry = keys.setdefault(key, {"data": [], "ref": []})
            if calib or both:
                entry["ref"].append(a)
            if both or not calib:
                entry["data"].append(a)
        num_n = (max(reps) + 1) if fold_rep else 1

        def n_of(a):
            return a.idx.repetition if fold_rep else 0

        for key in sorted(keys):
            entry = keys[key]
            if not entry["data"]:
                continue
            data = _make_recon_buffer(entry["data"], header, False, n_of, num_n)
            ref = _make_recon_buffer(entry["ref"], header, True, n_of, num_n) if entry["ref"] else None
            messages.append(ReconData([ReconBit(data, ref)]))
    return messages


# ---------------------------------------------------------------------------------------------------------------------
# Test scans

def asymmetric_echo(acquisitions: list, cut: int) -> list:
    """The acquisitions with the first ``cut`` samples of every non-noise readout never recorded, as a scanner writes
    an asymmetric echo (fewer samples, ``center_sample`` moved); changed in place and returned."""
    for a in acquisitions:
        if not a.is_flag_set(ismrmrd.ACQ_IS_NOISE_MEASUREMENT):
            data, centre = a.data[:, cut:].copy(), a.center_sample - cut
            a.resize(number_of_samples=data.shape[1], active_channels=a.active_channels,
                     trajectory_dimensions=a.trajectory_dimensions)
            a.data[:] = data
            a.center_sample = centre
    return acquisitions


def slices_as_slab(lines: list, centre) -> list:
    """Imaging readouts of 2-D slices relabelled as the kz partitions of one slab: ``idx.kspace_encode_step_2`` =
    the slice, ``idx.slice`` 0, every line at ``centre``, calibration flags kept and the slab's FIRST_IN_SLICE /
    LAST_IN_SLICE / LAST_IN_REPETITION / LAST_IN_MEASUREMENT on its first and last line; changed in place."""
    keep = (ismrmrd.ACQ_IS_PARALLEL_CALIBRATION, ismrmrd.ACQ_IS_PARALLEL_CALIBRATION_AND_IMAGING)
    for n, a in enumerate(lines):
        a.idx.kspace_encode_step_2, a.idx.slice = a.idx.slice, 0
        a.position[:] = centre
        a.flags = sum(1 << (f - 1) for f in keep if a.is_flag_set(f))
        if n == 0:
            a.set_flag(ismrmrd.ACQ_FIRST_IN_SLICE)
        if n == len(lines) - 1:
            for f in (ismrmrd.ACQ_LAST_IN_SLICE, ismrmrd.ACQ_LAST_IN_REPETITION, ismrmrd.ACQ_LAST_IN_MEASUREMENT):
                a.set_flag(f)
    return lines


def slab_acquisitions(kspace: np.ndarray, imaging_mask: np.ndarray, *, num_acs: int = 24, oversampling: int = 1,
                      recon_partitions: int | None = None, slab_thickness_mm: float = 64.0,
                      noise: np.ndarray | None = None, measured_partitions: np.ndarray | None = None):
    """A 3-D slab as a scanner streams it: every (ky, kz) line of ``kspace`` [C, Z, H, W_os] with ky in
    ``imaging_mask`` | the ACS block, in kz-outer order, ``idx.kspace_encode_step_2`` = kz, one slice (idx.slice 0)
    at the slab centre; the header encodes Z partitions (encodingLimits kz centre Z // 2), ``recon_partitions``
    (default Z) of them reconstructed over ``slab_thickness_mm``. ``measured_partitions`` [Z] bool leaves the other
    kz planes unacquired (partial Fourier along kz). Returns :class:`gadgets.mrd_io.MrdRaw`.

    Written with the product's 2-D writer (:func:`gadgets.mrd_io.make_raw_acquisitions`, each kz plane as a
    "slice") and relabelled (:func:`slices_as_slab`), so every other field is what the 2-D tests use."""
    from gadgets.mrd_io import GeometrySpec, MrdRaw, _limit, make_header, make_raw_acquisitions

    C, Z, H, W_os = kspace.shape
    Zr = recon_partitions or Z
    header = make_header(num_lines=H, readout=W_os // oversampling, num_coils=C, oversampling=oversampling,
                         slice_thickness=slab_thickness_mm, calibration="embedded",
                         acceleration=max(int(round(H / max(int(np.asarray(imaging_mask).sum()), 1))), 1))
    enc = header.encoding[0]
    enc.encodedSpace.matrixSize.z, enc.reconSpace.matrixSize.z = Z, Zr
    enc.encodedSpace.fieldOfView_mm.z = slab_thickness_mm * Z / Zr
    enc.encodingLimits.kspace_encoding_step_2 = _limit(Z - 1, Z // 2)
    raw = make_raw_acquisitions(np.moveaxis(kspace, 1, 0), imaging_mask, num_acs=num_acs, oversampling=oversampling,
                                header=header, noise=noise)
    planes = np.ones(Z, bool) if measured_partitions is None else np.asarray(measured_partitions, bool)
    noise_acqs = [a for a in raw.acquisitions if a.is_flag_set(ismrmrd.ACQ_IS_NOISE_MEASUREMENT)]
    lines = [a for a in raw.acquisitions if not a.is_flag_set(ismrmrd.ACQ_IS_NOISE_MEASUREMENT) and planes[a.idx.slice]]
    slices_as_slab(lines, np.asarray(GeometrySpec().centre, dtype=np.float32))   # the writer's default geometry
    return MrdRaw(header_xml=header.toXML(), acquisitions=noise_acqs + lines)


def oversampled_phantom(height: int = 64, width: int = 64, coils: int = 8, slices: int = 2, seed: int = 0,
                        oversampling: int = 2) -> tuple[np.ndarray, np.ndarray]:
    """Birdcage Shepp-Logan k-space with readout oversampling.

    Returns (kspace_os [S, C, H, oversampling * W], kspace [S, C, H, W]) complex64; removing the oversampling from
    the first gives the second.
    """
    import sigpy as sp
    import sigpy.mri as mr
    import torch
    from dpm_core.fft import fft2c

    rng = np.random.default_rng(seed)
    base = sp.shepp_logan((height, width)).astype(np.complex64)
    yy, xx = np.meshgrid(np.linspace(-1, 1, height), np.linspace(-1, 1, width), indexing="ij")
    stack = []
    for s in range(slices):
        a, b = rng.normal(size=2)
        image = base * (1.0 - 0.1 * s) * np.exp(1j * (0.5 * a * xx + 0.5 * b * yy))
        maps = mr.birdcage_maps((coils, height, width), r=1.2 + 0.1 * s)
        maps /= np.sqrt((np.abs(maps) ** 2).sum(0, keepdims=True))
        stack.append((maps * image[None]).astype(np.complex64))
    coil_images = torch.from_numpy(np.stack(stack))                       # [S, C, H, W]
    kspace = fft2c(coil_images)
    padded = torch.zeros(slices, coils, height, oversampling * width, dtype=torch.complex64)
    start = oversampling * width // 2 - width // 2
    padded[..., start:start + width] = coil_images
    return fft2c(padded).numpy(), kspace.numpy()


def correlated_noise(coils: int, samples: int, sigma: float, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(noise [C, samples], mixing [C, C]): complex Gaussian noise with covariance sigma² · mixing mixingᴴ."""
    rng = np.random.default_rng(seed)
    mixing = (np.eye(coils) + 0.15 * rng.standard_normal((coils, coils))).astype(np.complex64)
    white = (rng.standard_normal((coils, samples)) + 1j * rng.standard_normal((coils, samples))) / np.sqrt(2)
    return (sigma * mixing @ white).astype(np.complex64), mixing


def noisy_phantom(height: int, width: int, coils: int, slices: int, seed: int, noise_samples: int,
                  sigma: float = 2e-3) -> tuple[np.ndarray, np.ndarray]:
    """(oversampled k-space [S, C, H, 2W] complex64 with correlated noise, a noise scan [C, noise_samples] of the same
    covariance): :func:`oversampled_phantom` (seed), :func:`correlated_noise` (seed + 1), the k-space noise seed + 2."""
    kos, _ = oversampled_phantom(height, width, coils, slices, seed=seed)
    noise, mixing = correlated_noise(coils, noise_samples, sigma, seed=seed + 1)
    rng = np.random.default_rng(seed + 2)
    white = (rng.standard_normal(kos.shape) + 1j * rng.standard_normal(kos.shape)) / np.sqrt(2)
    return (kos + np.einsum("dc,schw->sdhw", mixing, sigma * white)).astype(np.complex64), noise


def image_geometry(image) -> dict:
    """Geometry and counters of an ismrmrd.Image as plain Python values (for comparisons)."""
    return {"position": tuple(np.round(image.position, 4)), "read_dir": tuple(np.round(image.read_dir, 5)),
            "phase_dir": tuple(np.round(image.phase_dir, 5)), "slice_dir": tuple(np.round(image.slice_dir, 5)),
            "slice": image.slice, "repetition": image.repetition}


def header_bytes(struct_value) -> bytes:
    return bytes(ctypes.string_at(ctypes.addressof(struct_value), ctypes.sizeof(struct_value)))
