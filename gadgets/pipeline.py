"""The one reconstruction pipeline behind every transport: k-space buffers -> Reconstructor -> ISMRMRD images.

The execute-mode gadget (:mod:`gadgets.gadget`), the connect-mode / MRD server (:mod:`gadgets.server`) and replay
(:mod:`gadgets.replay`) only move messages; what happens to a volume is decided here, once:

    KspaceBuffer (gadgets.assembly)  ->  the stream's model (chosen from the header, or fixed)  ->  Reconstructor
    ->  images + meta (gadgets.images)  ->  send(image)

Failure behaviour, the same on every transport:
- a volume with bad input (NaN samples, no ACS block, ...) -> no images for it, an error message naming it;
- the DPM stage fails (model missing or unloadable, ReconstructionError such as non-finite output or a failed output
  guard, CUDA out of memory) -> that volume is still delivered as a SENSE reconstruction, marked "SENSE_FALLBACK" in
  ImageComment and SeriesDescription, and an error message says so;
- an empty stream (no k-space at all) is an error.
The caller sends the collected messages to its peer after the last image (ERROR to Gadgetron, TEXT "ERROR: ..." to an
MRD client; :func:`gadgets.protocol.error_frame`), so that the peer has received every image that could be made.
"""
from __future__ import annotations

import dataclasses
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator

import numpy as np

from . import assembly, images as images_mod
from .config import GadgetConfig

__all__ = ["Pipeline", "StreamModel", "INJECTABLE_FAILURES", "INJECT_FAILURE_ENV", "PROGRESS_LOG_EVERY"]

log = logging.getLogger(__name__)

INJECTABLE_FAILURES = ("reconstruction_error", "nan", "out_of_memory")
INJECT_FAILURE_ENV = "DPM_TEST_INJECT_FAILURE"   # tests only, never a property: the DPM stage fails this way


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


class Pipeline:
    """One configuration's reconstruction of streams: buffers -> Reconstructor -> images, SENSE fallback, errors.

    Transport-free: the execute-mode gadget, the server (one pipeline per configuration, models loaded once) and
    replay hand it buffers and a ``send`` callable (:meth:`reconstruct_stream`) and report the errors it collects.

    With ``model=auto`` the model of each stream is chosen from its header (:meth:`stream_model`): one reconstructor
    per chosen model, built when a stream first needs it and kept. Otherwise one reconstructor, built now.

    Args:
        config: :class:`GadgetConfig`.
        share_with: an existing pipeline whose reconstruction settings match ``config``: its reconstructors (and so
            its loaded models) are shared, not rebuilt.
    """

    def __init__(self, config: GadgetConfig, share_with: "Pipeline | None" = None):
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
            result = reconstructor.reconstruct(buffer.kspace, buffer.mask, slice_ids=buffer.slices,
                                               noise_std=buffer.noise_std, readout=buffer.readout,
                                               calibration=buffer.interleaved_calibration)
            if self.injected is not None and cfg.method == "dpm":
                result = self.injected.apply(result)
            if not np.isfinite(result.images).all():
                raise ReconstructionError(f"{result.method} produced non-finite pixels")
        except ValueError as exc:
            message = f"{where}: input not reconstructable: {exc}{assembly.calibration_note(header, buffer)}"
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
                result = reconstructor.reconstruct(buffer.kspace, buffer.mask, method="sense", readout=buffer.readout,
                                                   calibration=buffer.interleaved_calibration)
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
