"""The Gadgetron external Python gadget: DPM reconstruction of 2-D multi-slice Cartesian k-space.

Two targets (DESIGN.md §4; Gadgetron spawns ``python -m gadgetron <port> gadgets.gadget <target>``):

- :func:`dpm_recon` — input ReconData (after BucketToBufferGadget): the main stream configuration.
- :func:`dpm_recon_acquisitions` — input raw Acquisitions: noise prewhitening, readout-oversampling removal and
  slice accumulation happen here (:mod:`gadgets.assembly`).

Both run generator stages over ``(items, header)`` — items -> :class:`gadgets.assembly.KspaceBuffer` volumes ->
:class:`dpm_core.reconstruct.Reconstructor` -> ISMRMRD images (:mod:`gadgets.images`) — and pass every other message
type through untouched (``connection.filter``).

Configuration: ``<property name=... value=.../>`` children of the ``<configuration>`` element, parsed once into
:class:`GadgetConfig` (see its fields; unknown names and bad values are refused with the list of accepted ones).

Failure behaviour (gadgetron-python never reports errors itself; a Python exception would end the stream with a plain
CLOSE and Gadgetron would see silently missing images):
- bad configuration, unusable header (non-Cartesian, 3-D, no encoding) -> ERROR message (id 8) at once, the input is
  drained, no images;
- a volume with bad input (NaN samples, no ACS block, ...) -> no images for it, logged with its repetition and slices;
- the DPM stage fails (model missing or unloadable, ReconstructionError such as non-finite output, CUDA out of memory)
  -> that volume is still delivered as a SENSE reconstruction, marked "SENSE_FALLBACK" in ImageComment and
  SeriesDescription;
- an empty stream (no k-space at all) is an error.
All per-volume problems are sent as one ERROR message after the last image, just before CLOSE, so that Gadgetron
(which raises RemoteError on ERROR) has received every image that could be made.
"""
from __future__ import annotations

import dataclasses
import os
import logging
import threading
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterable, Iterator

import ismrmrd
import numpy as np

from . import assembly, images as images_mod, protocol

__all__ = ["GadgetConfig", "parse_config", "element_properties", "parse_properties", "DpmGadget", "StreamModel",
           "dpm_recon", "dpm_recon_acquisitions", "send_error", "INJECTABLE_FAILURES", "INJECT_FAILURE_ENV"]

log = logging.getLogger(__name__)

INJECTABLE_FAILURES = ("reconstruction_error", "nan", "out_of_memory")
INJECT_FAILURE_ENV = "DPM_TEST_INJECT_FAILURE"   # tests only, never a property: the DPM stage fails this way


# ---------------------------------------------------------------------------------------------------------------------
# Configuration

def _parse_bool(text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"expected true/false, got {text!r}")


def _optional(convert: Callable) -> Callable:
    def parse(text: str):
        return None if text.strip().lower() in ("", "none", "default", "auto") else convert(text)
    return parse


def _choice(*options: str) -> Callable:
    def parse(text: str) -> str:
        if text not in options:
            raise ValueError(f"expected one of {options}, got {text!r}")
        return text
    return parse


def _num_maps(text: str):
    if text == "auto":
        return "auto"
    value = int(text)
    if value not in (1, 2):
        raise ValueError(f"expected 1, 2 or auto, got {text!r}")
    return value


def _sampler(text: str) -> str:
    from dpm_core.samplers import SAMPLERS
    if text not in SAMPLERS:
        raise ValueError(f"expected one of {sorted(SAMPLERS)}, got {text!r}")
    return text


def _device(text: str) -> str:
    """auto, cpu, cuda or cuda:N, checked against this machine at start: a missing GPU is refused, not a fallback."""
    from dpm_core.reconstruct import resolve_device
    resolve_device(text.strip())
    return text.strip()


def _positive_or(keywords: dict, expected: str) -> Callable[[str], object]:
    """A parser of a positive finite number, or one of ``keywords`` (lower-case word -> value)."""
    def parse(text: str):
        word = text.strip().lower()
        if word in keywords:
            return keywords[word]
        value = float(text)
        if not (value > 0 and value != float("inf")):
            raise ValueError(f"expected {expected}, got {text!r}")
        return value
    return parse


# ζ: a number, "auto" (chosen per scan from the data), or empty/none/default (the model card's table).
_zeta = _positive_or({"": None, "none": None, "default": None, "auto": "auto"},
                     "a positive finite number, auto or default")
# σ of the DPM warm start from the SENSE image; default: the Reconstructor's; none/off: start from pure noise.
_warm_start = _positive_or({"none": None, "off": None, "false": None, "no": None, "": "default", "default": "default"},
                           "a positive finite σ, default or none")
# GiB of working memory per sampler call, or auto (what the device has free).
_memory_budget = _positive_or({"": "auto", "auto": "auto"}, "a positive number of GiB or auto")


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise ValueError(f"expected an integer >= 1, got {text!r}")
    return value


def _series(text: str) -> int:
    value = int(text)
    if not 0 <= value <= 65000:
        raise ValueError(f"expected a series number 0..65000, got {text!r}")
    return value


@dataclasses.dataclass(frozen=True)
class GadgetConfig:
    """Gadget settings (``<property name="..." value="..."/>``; defaults in brackets).

    method: dpm | sense | l1_wavelet | zero_filled [dpm].
    model: auto | a registered model's name (e.g. flair_default, foundation_default) | a path to a model card .json
    [auto: chosen per scan from the header's contrast, :mod:`dpm_core.model_choice`].
    model_dirs: comma-separated folders of the site's own model cards, preferred to the shipped ones [none].
    sampler: sampler name [fast].  steps: sampler steps [sampler default].
    zeta: data-consistency ζ, a number | auto (per scan, GCV) | default [default: the model card's table where it
    brackets the scan's R, else auto].
    warm_start: σ at which the DPM starts from the SENSE image | none (from pure noise) | default [default:
    dpm_core.reconstruct.WARM_START_SIGMA].
    memory_budget_gb: GiB of working memory one sampler call may use (a volume runs in as many calls as it needs)
    | auto (what the device has free) [auto].
    seed [0].  device: auto | cpu | cuda | cuda:N [auto].  num_samples: posterior samples [1].
    coil_method: fast | sigpy [fast].  num_maps: 1 | 2 | auto [auto].
    series_index: series of repetition 0 [1].  std_series_index: series of the posterior-std maps [1001].
    pixel_format: complex | uint16 — complex64 images, or magnitudes as uint16 with window meta, as FIRE/OpenRecon
    modules send them [complex].
    send_std: send std maps when num_samples > 1 [true].  fallback: SENSE fallback when DPM fails [true].
    fallback_series_index: series for fallback images [series_index].
    trigger: volume | slice — acquisition input only: reconstruct whole volumes or each slice as it completes [volume].
    """
    method: str = "dpm"
    model: str | None = None
    model_dirs: tuple[str, ...] = ()
    sampler: str = "fast"
    steps: int | None = None
    zeta: float | str | None = None
    warm_start: float | str | None = "default"
    memory_budget_gb: float | str = "auto"
    seed: int = 0
    device: str = "auto"
    num_samples: int = 1
    coil_method: str = "fast"
    num_maps: int | str = "auto"
    series_index: int = 1
    pixel_format: str = "complex"
    std_series_index: int = 1001
    send_std: bool = True
    fallback: bool = True
    fallback_series_index: int | None = None
    trigger: str = "volume"

    def reconstructor_kwargs(self) -> dict:
        """Keyword arguments for :class:`dpm_core.reconstruct.Reconstructor`."""
        options = {} if self.steps is None else {"steps": self.steps}
        return dict(method=self.method, model=self.model, sampler=self.sampler, sampler_options=options,
                    num_samples=self.num_samples, zeta=self.zeta, seed=self.seed, device=self.device,
                    coil_method=self.coil_method, num_maps=self.num_maps,
                    memory_budget="auto" if self.memory_budget_gb == "auto" else int(self.memory_budget_gb * 2 ** 30),
                    **({} if self.warm_start == "default" else {"warm_start": self.warm_start}))


_PARSERS: dict[str, Callable] = {
    "method": _choice("dpm", "sense", "l1_wavelet", "zero_filled"),
    "model": _optional(str),
    "model_dirs": lambda text: tuple(part.strip() for part in text.split(",") if part.strip()),
    "sampler": _sampler,
    "steps": _optional(_positive_int),
    "zeta": _zeta,
    "warm_start": _warm_start,
    "memory_budget_gb": _memory_budget,
    "seed": int,
    "device": _device,
    "num_samples": _positive_int,
    "coil_method": _choice("fast", "sigpy"),
    "num_maps": _num_maps,
    "series_index": _series,
    "pixel_format": _choice("complex", "uint16"),
    "std_series_index": _series,
    "send_std": _parse_bool,
    "fallback": _parse_bool,
    "fallback_series_index": _optional(_series),
    "trigger": _choice("volume", "slice"),
}
ACCEPTED_PROPERTIES = tuple(_PARSERS)


def element_properties(config) -> dict:
    """``<configuration>`` Element (or None) -> {name: value}: ``<property name="N" value="V"/>`` (attributes) or
    ``<property><name>N</name><value>V</value></property>`` (Gadgetron's older form). The one XML property reader."""
    properties = {}
    if config is None:
        return properties
    for prop in config.iter("property"):
        name = prop.get("name", prop.findtext("name"))
        value = prop.get("value", prop.findtext("value"))
        if name is None:
            raise ValueError(f"gadget configuration: a <property> without a name: {ET.tostring(prop)!r}")
        properties[name] = "" if value is None else value
    return properties


def parse_properties(pairs: list[str]) -> dict:
    """Command-line ``--set`` pairs ["name=value", ...] -> {name: value} (the gadget's properties)."""
    config = {}
    for pair in pairs:
        if "=" not in pair:
            raise ValueError(f"--set expects name=value (a gadget property), got {pair!r}")
        name, value = pair.split("=", 1)
        config[name.strip()] = value.strip()
    return config


def parse_config(config) -> GadgetConfig:
    """``connection.config`` (an ``xml.etree`` Element, XML text, a dict, or None) -> :class:`GadgetConfig`.

    Properties are ``<property name="N" value="V"/>`` (attributes) or ``<property><name>N</name><value>V</value>
    </property>`` (Gadgetron's older form). Raises ValueError naming the property, the bad value and what is accepted.
    """
    if config is None:
        return GadgetConfig()
    if isinstance(config, (str, bytes)):
        config = ET.fromstring(config) if config.strip() else None
        if config is None:
            return GadgetConfig()
    pairs = config if isinstance(config, dict) else element_properties(config)
    values = {}
    for name, value in pairs.items():
        if name not in _PARSERS:
            raise ValueError(f"gadget configuration: unknown property {name!r}; accepted: {', '.join(_PARSERS)}")
        try:
            values[name] = _PARSERS[name](str(value).strip())
        except ValueError as exc:
            raise ValueError(f"gadget configuration: property {name!r} = {value!r} is invalid: {exc}") from exc
    return GadgetConfig(**values)


# ---------------------------------------------------------------------------------------------------------------------
# Errors to the peer

def send_error(connection, text: str) -> None:
    """Report an error on a connection (gadgetron-python has no API), framed for ``connection.peer`` (Gadgetron when
    the connection does not say)."""
    connection.socket.write(protocol.error_frame(text, getattr(connection, "peer", "gadgetron")))


def _drain(items: Iterable) -> int:
    count = 0
    for _ in items:
        count += 1
    return count


# ---------------------------------------------------------------------------------------------------------------------
# The gadget

class _InjectedFailure:
    """Test hook, set only by the environment variable :data:`INJECT_FAILURE_ENV` (the tests set it for the gadget
    process they start): makes the DPM stage fail as named there. No configuration can turn it on."""

    def __init__(self, kind: str):
        if kind not in INJECTABLE_FAILURES:
            raise ValueError(f"{INJECT_FAILURE_ENV}={kind!r} must be one of {INJECTABLE_FAILURES}")
        self.kind = kind

    @classmethod
    def from_environment(cls) -> "_InjectedFailure | None":
        kind = os.environ.get(INJECT_FAILURE_ENV, "")
        return cls(kind) if kind else None

    def apply(self, result):
        from dpm_core.reconstruct import ReconstructionError
        if self.kind == "reconstruction_error":
            raise ReconstructionError(f"injected failure ({INJECT_FAILURE_ENV}=reconstruction_error)")
        if self.kind == "out_of_memory":
            import torch
            raise torch.cuda.OutOfMemoryError(f"injected CUDA out of memory ({INJECT_FAILURE_ENV}=out_of_memory)")
        if self.kind == "nan":
            result.images = np.full_like(result.images, np.nan)
        return result


@dataclasses.dataclass
class StreamModel:
    """What reconstructs one stream: the reconstructor, why its model was chosen, and why DPM is unavailable (if so).

    choice: {"contrast": class, "model_choice": reason} when the model was chosen from the header, else {}.
    """
    reconstructor: object
    choice: dict
    unavailable: str | None = None


PROGRESS_LOG_EVERY = 0.25       # servers and spawned gadgets log sampler progress at every quarter


def _sampler_progress():
    """A tqdm bar on a terminal (replay, demo); in a server or a spawned gadget, whose stderr is a log, a log line at
    every quarter of the volume's slice-steps (sampler steps × slices), so that a long volume never runs silent."""
    import sys
    if sys.stderr is not None and sys.stderr.isatty():
        return "auto"

    state = {"quarter": 0, "done": 0}                 # quarters logged so far in this volume, last count

    def log_progress(done: int, total: int) -> None:
        if done <= state["done"]:                      # a new volume (or a new sampler run) starts counting again
            state["quarter"] = 0
        state["done"] = done
        quarter = int(done / total / PROGRESS_LOG_EVERY + 1e-9)
        if quarter > state["quarter"]:
            state["quarter"] = quarter
            log.info("sampling: %.0f %% (%d of %d slice-steps)", 100.0 * done / total, done, total)
    return log_progress


class DpmGadget:
    """Configuration + reconstructors for streams (the server keeps one per configuration, models loaded once).

    With ``model=auto`` the model of each stream is chosen from its header (:meth:`stream_model`): one reconstructor
    per chosen model, built when a stream first needs it and kept. Otherwise one reconstructor, built now.

    Args:
        config: :class:`GadgetConfig`.
        share_with: an existing gadget whose reconstruction settings match ``config``: its reconstructors (and so
            its loaded models) are shared, not rebuilt.
    """

    def __init__(self, config: GadgetConfig, share_with: "DpmGadget | None" = None):
        from dpm_core.model_choice import model_entries

        self.config = config
        self.injected = _InjectedFailure.from_environment()
        if share_with is not None:
            self.models, self._fixed, self._by_model, self._lock = (share_with.models, share_with._fixed,
                                                                     share_with._by_model, share_with._lock)
            return
        self._by_model: dict = {}
        self._lock = threading.Lock()
        self.models = model_entries(config.model_dirs) if config.method == "dpm" else []
        by_name = {entry.name: entry for entry in self.models}
        self._fixed = None
        if config.method != "dpm" or config.model is not None:
            model = config.model
            if model in by_name:
                model = str(by_name[model].card_path)
            elif model is not None and not model.endswith(".json") and "/" not in model:
                raise ValueError(f"model={model!r} is neither a registered model ({sorted(by_name)}) nor a card path "
                                 "(.json); use auto, one of those names or the path of a model card")
            reconstructor, unavailable = self._build(model)
            choice = {"model_choice": f"given: {config.model}"} if config.method == "dpm" else {}
            self._fixed = StreamModel(reconstructor, choice, unavailable)

    def _build(self, model) -> tuple[object, str | None]:
        """(reconstructor with ``model``, None) — or, when the model cannot be loaded and fallback is on, (a SENSE
        reconstructor, the reason). The model is loaded now, so that a bad model shows at once."""
        from dpm_core.reconstruct import Reconstructor

        kwargs = {**self.config.reconstructor_kwargs(), "model": model, "progress": _sampler_progress()}
        try:
            reconstructor = Reconstructor(**kwargs)
            if self.config.method == "dpm":
                reconstructor.denoiser()
            return reconstructor, None
        except (ImportError, OSError, ValueError, KeyError, RuntimeError) as exc:
            if self.config.method != "dpm" or not self.config.fallback:
                raise
            reason = f"DPM model/sampler unavailable: {type(exc).__name__}: {exc}"
            log.error("%s; volumes will be reconstructed with SENSE (fallback)", reason)
            return Reconstructor(**{**kwargs, "method": "sense", "model": None}), reason

    def preload(self) -> None:
        """With model=auto: build the reconstructor of every registered model now (a warm server's first stream
        then loads nothing)."""
        if self._fixed is None:
            with self._lock:
                for entry in self.models:
                    if entry.card_path not in self._by_model:
                        self._by_model[entry.card_path] = self._build(str(entry.card_path))

    @property
    def reconstructor(self):
        """The reconstructor of a fixed model (or non-DPM method); None with model=auto (see :meth:`stream_model`)."""
        return None if self._fixed is None else self._fixed.reconstructor

    @property
    def dpm_unavailable(self) -> str | None:
        return None if self._fixed is None else self._fixed.unavailable

    def stream_model(self, header) -> StreamModel:
        """The reconstructor for a stream with this ISMRMRD header: the fixed one, or the model chosen from the
        header's contrast (logged). Raises ValueError when no registered model serves the scan's contrast."""
        from dpm_core.model_choice import choose_model

        if self._fixed is not None:
            return self._fixed
        contrast, why = assembly.scan_contrast(header)
        entry, reason = choose_model(contrast, self.models)
        with self._lock:                                   # concurrent server streams build each model once
            if entry.card_path not in self._by_model:
                self._by_model[entry.card_path] = self._build(str(entry.card_path))
            reconstructor, unavailable = self._by_model[entry.card_path]
        choice = {"contrast": contrast, "model_choice": f"{reason}; contrast from {why}"}
        log.info("model: %s", choice["model_choice"])
        return StreamModel(reconstructor, choice, unavailable)

    @classmethod
    def from_connection(cls, connection) -> "DpmGadget":
        return cls(parse_config(connection.config))

    # -- one volume ----------------------------------------------------------------------------------------------------
    def reconstruct_buffer(self, buffer: assembly.KspaceBuffer, header, errors: list,
                           model: StreamModel | None = None) -> list:
        """One volume -> its images. Appends a message to ``errors`` for every problem; never raises on bad data.

        ``model``: the stream's :class:`StreamModel` (default: :meth:`stream_model` of ``header``)."""
        from dpm_core.reconstruct import ReconstructionError

        cfg = self.config
        model = self.stream_model(header) if model is None else model
        reconstructor = model.reconstructor
        where = buffer.describe()
        finite = np.isfinite(buffer.kspace).reshape(buffer.kspace.shape[0], -1).all(axis=1)
        if not finite.all():
            bad = [buffer.slices[i] for i in np.flatnonzero(~finite)]
            message = f"{where}: k-space has NaN/Inf samples in slices {bad}; no images for this volume"
            log.error(message)
            errors.append(message)
            return []
        fallback_reason = None
        t0 = time.perf_counter()
        try:
            if model.unavailable is not None:
                raise ReconstructionError(model.unavailable)
            result = reconstructor.reconstruct(buffer.kspace, buffer.mask, slice_ids=buffer.slices)
            if self.injected is not None and cfg.method == "dpm":
                result = self.injected.apply(result)
            if not np.isfinite(result.images).all():
                raise ReconstructionError(f"{result.method} produced non-finite pixels")
        except ValueError as exc:
            message = f"{where}: input not reconstructable: {exc}"
            log.error(message)
            errors.append(message)
            return []
        except Exception as exc:      # ReconstructionError, out of memory, or anything unforeseen: fallback + ERROR
            if cfg.method != "dpm" or not cfg.fallback:
                message = f"{where}: {cfg.method} reconstruction failed: {type(exc).__name__}: {exc}"
                log.error(message)
                errors.append(message)
                return []
            fallback_reason = f"{type(exc).__name__}: {exc}"
            if model.unavailable is None or not errors:
                errors.append(f"{where}: DPM failed ({fallback_reason}); delivered the SENSE fallback")
            log.error("%s: DPM failed (%s); reconstructing with SENSE", where, fallback_reason)
            try:
                result = reconstructor.reconstruct(buffer.kspace, buffer.mask, method="sense")
            except Exception as exc2:
                message = f"{where}: SENSE fallback failed too: {type(exc2).__name__}: {exc2}"
                log.error(message)
                errors.append(message)
                return []
        result.info.update(model.choice)
        if buffer.warnings:
            result.info["input_warnings"] = "; ".join(buffer.warnings)
            log.warning("%s: %s", where, result.info["input_warnings"])
        series = cfg.series_index
        if fallback_reason and cfg.fallback_series_index is not None:
            series = cfg.fallback_series_index
        std_series = cfg.std_series_index if (cfg.send_std and cfg.num_samples > 1 and not fallback_reason) else None
        out = images_mod.images_from_result(result, buffer, header, series_index=series,
                                            std_series_index=std_series, fallback_reason=fallback_reason,
                                            pixel_format=cfg.pixel_format)
        log.info("%s: %s in %.2f s (coil maps %.2f s, sampling %.2f s), %d images; %s", where, result.method,
                 time.perf_counter() - t0, result.timings.get("coil_maps", 0.0), result.timings.get("sampling", 0.0),
                 len(out), images_mod.parameters_text(images_mod.recorded_parameters(result.info)))
        return out

    # -- streams ---------------------------------------------------------------------------------------------------
    def reconstruct_stream(self, buffers: Iterator, header, send: Callable, errors: list) -> int:
        """Reconstruct every buffer of ``buffers`` and ``send`` its images. Returns the number of volumes seen.

        A ValueError raised while *assembling* (malformed acquisitions) is recorded in ``errors`` and ends the
        stream's processing; the caller drains the rest of the input.
        """
        volumes = 0
        try:
            model = self.stream_model(header)
        except ValueError as exc:
            message = f"no model for this scan: {exc}"
            log.error(message)
            errors.append(message)
            return volumes
        try:
            for buffer in buffers:
                volumes += 1
                for image in self.reconstruct_buffer(buffer, header, errors, model):
                    send(image)
        except ValueError as exc:
            message = f"input stream rejected after {volumes} volume(s): {exc}"
            log.error(message)
            errors.append(message)
        except OSError:                # the connection itself failed: nobody is left to tell
            raise
        except Exception as exc:      # e.g. MemoryError while assembling: the stream ends with ERROR, not a crash
            message = f"input stream aborted after {volumes} volume(s): {type(exc).__name__}: {exc}"
            log.exception(message)
            errors.append(message)
        if volumes == 0 and not errors:
            message = ("no imaging k-space in the stream (nothing, or only noise-scan readouts, arrived): check that "
                       "the stream delivers the measurement's data to this gadget")
            log.error(message)
            errors.append(message)
        return volumes

    def run(self, connection, input_kind: str) -> tuple[int, list[str]]:
        """Handle one Gadgetron connection. ``input_kind``: "recon_data" or "acquisitions".

        Returns (volumes seen, error messages sent) for the caller's log (the connect-mode server's stream log)."""
        header = connection.header
        errors: list[str] = []
        start = time.perf_counter()
        if input_kind == "recon_data":
            from gadgetron.types import ReconData
            connection.filter(ReconData)
            items = iter(connection)
            buffers = assembly.group_volumes(_recon_data_buffers(items, header, errors),
                                             assembly.encoding_info(header).num_slices)
        elif input_kind == "acquisitions":
            connection.filter(ismrmrd.Acquisition)
            items = iter(connection)
            buffers = assembly.buffers_from_acquisitions(items, header, trigger=self.config.trigger)
        else:
            raise ValueError(f"input_kind must be 'recon_data' or 'acquisitions'; got {input_kind!r}")
        volumes = self.reconstruct_stream(buffers, header, connection.send, errors)
        leftover = _drain(items)
        if leftover:
            log.warning("discarded %d input item(s) after the stream was rejected", leftover)
        log.info("stream done: %d volume(s) in %.2f s, %d error(s)", volumes, time.perf_counter() - start,
                 len(errors))
        if errors:
            send_error(connection, "dpm_recon: " + " | ".join(errors))
        return volumes, errors


def _recon_data_buffers(messages: Iterable, header, errors: list) -> Iterator[assembly.KspaceBuffer]:
    """ReconData messages -> buffers. A malformed message is logged with its number, recorded in ``errors`` and
    skipped; the following messages are still reconstructed."""
    for number, recon_data in enumerate(messages):
        try:
            buffers = assembly.buffers_from_recon_data(recon_data, header)
        except ValueError as exc:
            message = f"ReconData message {number} rejected: {exc}"
            log.error(message)
            errors.append(message)
            continue
        yield from buffers


def _start(connection, input_kind: str) -> None:
    """Entry shared by both targets: validate config and header first, answer ERROR (and drain) when unusable."""
    try:
        gadget = DpmGadget.from_connection(connection)
        assembly.encoding_info(connection.header)
    except (ValueError, ImportError, OSError, KeyError, RuntimeError) as exc:
        message = f"dpm_recon: cannot start: {type(exc).__name__}: {exc}"
        log.error(message)
        drained = _drain(iter(connection))
        log.info("drained %d input item(s)", drained)
        send_error(connection, message)
        return
    gadget.run(connection, input_kind)


def dpm_recon(connection) -> None:
    """Gadgetron target: ReconData input (after BucketToBufferGadget), ISMRMRD images out."""
    _start(connection, "recon_data")


def dpm_recon_acquisitions(connection) -> None:
    """Gadgetron target: raw Acquisition input (noise scans, oversampled readouts), ISMRMRD images out."""
    _start(connection, "acquisitions")


if __name__ == "__main__":       # debugging outside a chain: Gadgetron connects to this port (connect mode)
    import sys

    import gadgetron.external

    logging.basicConfig(level=logging.INFO)
    port = int(sys.argv[1]) if len(sys.argv) > 1 else 18000
    target = dpm_recon_acquisitions if len(sys.argv) > 2 and sys.argv[2] == "acquisitions" else dpm_recon
    gadgetron.external.listen(port, target)
