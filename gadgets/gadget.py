"""The Gadgetron external Python gadget: DPM reconstruction of 2-D multi-slice Cartesian k-space.

Two targets (DESIGN.md §4; Gadgetron spawns ``python -m gadgetron <port> gadgets.gadget <target>``):

- :func:`dpm_recon` — input ReconData (after BucketToBufferGadget): the main stream configuration.
- :func:`dpm_recon_acquisitions` — input raw Acquisitions: noise prewhitening, readout-oversampling removal and
  slice accumulation happen here (:mod:`gadgets.assembly`).

This module is only the transport: a gadgetron-python connection's items become :class:`gadgets.assembly.KspaceBuffer`
volumes, the one pipeline (:class:`gadgets.pipeline.Pipeline`) reconstructs them and ``connection.send`` returns the
images; every other message type passes through untouched (``connection.filter``). dpm-server runs its connect-mode
streams through :func:`run_connection` too.

Configuration: ``<property name=... value=.../>`` children of the ``<configuration>`` element
(:mod:`gadgets.config`; unknown names and bad values are refused with the list of accepted ones).

Errors (gadgetron-python never reports them itself; a Python exception would end the stream with a plain CLOSE and
Gadgetron would see silently missing images): a bad configuration or an unusable header (non-Cartesian, 3-D, no
encoding) -> ERROR (id 8) at once, the input drained, no images; per-volume problems (the pipeline's failure rules,
including a delivered SENSE fallback) -> one ERROR after the last image, just before CLOSE — or, with the property
``error_report=log`` (offline ``gadgetron --from_stream``, which aborts on ERROR and loses the images already sent),
only the log and the images' SENSE_FALLBACK flags, unless no image at all was sent.
"""
from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Iterator

import ismrmrd

from . import assembly
from .config import parse_config
from .pipeline import Pipeline
from .protocol import peer_of, send_error

__all__ = ["run_connection", "dpm_recon", "dpm_recon_acquisitions"]

log = logging.getLogger(__name__)


def _drain(items: Iterable) -> int:
    count = 0
    for _ in items:
        count += 1
    return count


def run_connection(pipeline: Pipeline, connection, input_kind: str) -> tuple[int, list[str]]:
    """One Gadgetron connection (execute mode, or a connect-mode stream of dpm-server) through ``pipeline``.

    ``input_kind``: "recon_data" or "acquisitions". Items of other types pass through untouched
    (``connection.filter``); the collected errors go to the peer as one message after the last image.

    Returns (volumes seen, error messages sent) for the caller's log (the connect-mode server's stream log)."""
    header = connection.header
    errors: list[str] = []
    start = time.perf_counter()
    if input_kind == "recon_data":
        from gadgetron.types import ReconData
        connection.filter(ReconData)
        items = iter(connection)
        buffers = assembly.interleaved_calibration(
            assembly.group_volumes(_recon_data_buffers(items, header, errors),
                                   assembly.encoding_info(header).num_slices), header)
    elif input_kind == "acquisitions":
        connection.filter(ismrmrd.Acquisition)
        items = iter(connection)
        buffers = assembly.buffers_from_acquisitions(items, header, trigger=pipeline.config.trigger)
    else:
        raise ValueError(f"input_kind must be 'recon_data' or 'acquisitions'; got {input_kind!r}")
    sent = [0]

    def send(image) -> None:
        connection.send(image)
        sent[0] += 1
    volumes = pipeline.reconstruct_stream(buffers, header, send, errors)
    leftover = _drain(items)
    if leftover:
        log.warning("discarded %d input item(s) after the stream was rejected", leftover)
    log.info("stream done: %d volume(s), %d image(s) in %.2f s, %d error(s)", volumes, sent[0],
             time.perf_counter() - start, len(errors))
    if errors:
        report = "dpm_recon: " + " | ".join(errors)
        if pipeline.config.error_report == "log" and sent[0] > 0 and peer_of(connection) != "mrd":
            # gadgetron --from_stream aborts on ERROR and loses what was sent: the images carry their flags instead
            log.error("%s (error_report=log: not sent as ERROR, so that the %d image(s) sent are kept)", report,
                      sent[0])
        else:
            send_error(connection, report)
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
        pipeline = Pipeline(parse_config(connection.config))
        assembly.encoding_info(connection.header)
    except (ValueError, ImportError, OSError, KeyError, RuntimeError) as exc:
        message = f"dpm_recon: cannot start: {type(exc).__name__}: {exc}"
        log.error(message)
        drained = _drain(iter(connection))
        log.info("drained %d input item(s)", drained)
        send_error(connection, message)
        return
    run_connection(pipeline, connection, input_kind)


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
