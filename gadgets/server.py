"""dpm-server: the long-lived reconstruction server for Gadgetron's connect mode (and MRD/FIRE-style clients).

    dpm-server --port 18000 [--host 127.0.0.1] [--set method=dpm --set device=cuda ...]
               [--input auto|recon_data|acquisitions] [--max-queue 16] [--config-dir configs_xml]
               [--grace 5] [--idle-timeout 3600]

Gadgetron's ``<external><connect port="P" address="A"/>`` node connects to this server at the start of every stream and
speaks exactly what it speaks to a spawned gadget (DESIGN.md §4): CONFIG (id 2, ``uint32 len`` + the
``<configuration>`` XML), HEADER (3), the items, CLOSE (4). Each connection becomes a gadgetron-python ``Connection``
(:class:`ServerConnection`) and is reconstructed by the very code a spawned gadget runs,
:func:`gadgets.gadget.run_connection` over :class:`gadgets.pipeline.Pipeline` — there is no second
reconstruction path.

What the server adds:
- the model is loaded once: one :class:`~gadgets.pipeline.Pipeline` per distinct configuration, sharing one
  ``Reconstructor`` (and so one loaded model) per distinct set of reconstruction settings; the default configuration
  (``--set`` values) is built before the port opens, so a bad model or setting shows at start;
- connections are accepted concurrently (a short handshake thread reads CONFIG and HEADER) and queued for ONE worker
  thread that owns the GPU; the log gives each stream's queue position; ``--max-queue`` bounds the waiting streams
  (one more is answered with ERROR "busy");
- every stream is logged: peer, configuration, input kind, volumes, images, seconds (queue wait and service), errors;
- the client protocol's CONFIG_FILE (id 1, a 1024-byte NUL-padded name) selects a configuration known to the server:
  ``dpm_recon`` (or ``default`` or an empty name) = the server's defaults; any other name = the ``<external>``
  ``<configuration>`` properties of ``<config-dir>/<name>.xml``, over the defaults. gadgetron-python asserts CONFIG
  (id 2) as the first message, so :class:`ServerConnection` reads the first message itself (the "pre-reading step");
- TEXT messages (id 5) after the header are read and logged; a FIRE client's JSON parameters among them choose the
  configuration and override properties (:func:`text_parameters`); unknown configuration names are refused, or
  replaced by ``--default-config`` (the client is told in a TEXT);
- with ``--input auto`` (the default) the first item's message id decides the input: ReconData (1023) ->
  :func:`~gadgets.gadget.dpm_recon` semantics, anything else (Acquisitions) -> ``dpm_recon_acquisitions`` semantics;
- stream properties (``<property name= value=/>`` in CONFIG) override the server's ``--set`` defaults;
- SIGTERM/SIGINT: stop accepting (the port closes at once), answer every queued stream with ERROR, let the running
  stream finish for ``--grace`` seconds, then abort it with ERROR + CLOSE, close the sockets and exit 0;
- socket reads have an idle timeout and a peer that disappears ends its stream (gadgetron-python's own socket wrapper
  spins forever on a closed peer, so :class:`StreamSocket` replaces it).

Errors a stream sees (ERROR message, id 8, then CLOSE; to an MRD streaming-format client — one whose strings arrive
NUL-terminated, as FIRE/OpenRecon clients send them — TEXT "ERROR: ...", id 5, since that protocol has no ERROR):
bad CONFIG/HEADER, unknown configuration name, bad property values (as a spawned gadget reports them), busy server,
shutdown, and every per-volume error of the gadget.
"""
from __future__ import annotations

import argparse
import collections
import dataclasses
import itertools
import json
import logging
import os
import signal
import socket
import struct
import sys
import threading
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import ismrmrd
from gadgetron.external import Connection

from . import assembly
from .mrd_io import parse_header
from .config import GadgetConfig, element_properties, parse_config, parse_properties, text_parameters
from .gadget import run_connection
from .pipeline import Pipeline
from .protocol import (CONFIG_FILE, CONFIG_FILE_NAME_BYTES, CONFIG_TEXT, HEADER, RECON_DATA, TEXT, close_frame,
                       decode_string, error_frame, send_error, text_frame)

__all__ = ["DpmServer", "ServerConnection", "StreamSocket", "ProtocolError", "main"]

log = logging.getLogger("dpm.server")

MAX_TEXT_BYTES = 16 << 20             # CONFIG, HEADER and TEXT messages larger than this are refused
DEFAULT_CONFIG_NAMES = ("", "default", "dpm_recon")
INPUT_KINDS = ("auto", "recon_data", "acquisitions")
REPO = Path(__file__).resolve().parents[1]


class ProtocolError(ValueError):
    """The peer did not open the stream with CONFIG/CONFIG_FILE and HEADER as the protocol requires."""


_CLOSE_FRAME = close_frame()


# ---------------------------------------------------------------------------------------------------------------------
# One connection

class StreamSocket:
    """Stands in for gadgetron-python's ``Connection.SocketWrapper`` (same ``read``/``write``/``close``).

    Differences a long-lived server needs: reads have a timeout and raise ConnectionError when the peer closes (the
    original loops forever on a closed peer); writes hold :attr:`lock` (re-entrant: :meth:`ServerConnection.send`
    holds it for a whole message, which gadgetron-python writes in several pieces) so that :meth:`abort` (shutdown,
    from another thread) never lands inside an image; after an abort every write raises.
    """

    def __init__(self, sock: socket.socket, timeout: float | None):
        self.sock = sock
        self.sock.settimeout(timeout)
        self.lock = threading.RLock()
        self.aborted = False
        self.closed = False
        self.peer = "gadgetron"     # how errors are framed (gadgets.protocol.error_frame); set by ServerConnection

    def read(self, nbytes: int) -> bytes:
        buffer = bytearray(nbytes)
        view = memoryview(buffer)
        got = 0
        while got < nbytes:
            count = self.sock.recv_into(view[got:])
            if count == 0:
                raise ConnectionError(f"the peer closed the connection while {nbytes - got} of {nbytes} bytes of a "
                                      "message were still expected")
            got += count
        return bytes(buffer)

    def peek(self, nbytes: int) -> bytes:
        """The next ``nbytes`` without consuming them (waits for them, within the socket timeout)."""
        while True:
            data = self.sock.recv(nbytes, socket.MSG_PEEK | socket.MSG_WAITALL)
            if not data:
                raise ConnectionError("the peer closed the connection before sending any item or CLOSE")
            if len(data) == nbytes:
                return data
            time.sleep(0.001)

    def write(self, data) -> None:
        with self.lock:
            if self.aborted:
                raise ConnectionAbortedError("the stream was aborted by the server (shutdown)")
            self.sock.sendall(data)

    def close(self) -> None:
        """End the stream: CLOSE (unless aborted) and close the socket."""
        with self.lock:
            if not (self.aborted or self.closed):
                try:
                    self.sock.sendall(_CLOSE_FRAME)
                except OSError:
                    pass
            self.closed = True
        self.sock.close()

    def abort(self, message: str) -> bool:
        """From another thread: send ERROR + CLOSE now and refuse further writes. False if already closed."""
        locked = self.lock.acquire(timeout=2.0)
        try:
            if self.closed or self.aborted:
                return False
            self.aborted = True
            if locked:                                  # else the worker is stuck in a send: do not interleave
                try:
                    self.sock.sendall(error_frame(message, self.peer) + _CLOSE_FRAME)
                except OSError:
                    pass
            try:
                self.sock.shutdown(socket.SHUT_WR if locked else socket.SHUT_RDWR)
            except OSError:
                pass
            return True
        finally:
            if locked:
                self.lock.release()


class ServerConnection(Connection):
    """A gadgetron-python ``Connection`` for a server-side socket.

    Reads the first message itself: CONFIG (id 2, as gadgetron-python does; unlike it, XML that does not parse is
    refused instead of silently becoming "no configuration") or CONFIG_FILE (id 1, a 1024-byte NUL-padded name, kept
    in :attr:`config_name` for the server to resolve; :attr:`config` is then None). Then HEADER (id 3). Everything
    else — readers, writers, ``filter``, iteration, ``send`` — is gadgetron-python's (1.4.1) own.

    Args:
        sock: the accepted socket.
        timeout: idle timeout of every later read (seconds; None = wait forever).
        handshake_timeout: seconds allowed for CONFIG and HEADER.
    """

    def __init__(self, sock: socket.socket, timeout: float | None = 3600.0, handshake_timeout: float = 30.0):
        # Connection.__init__ would wrap the socket in its own SocketWrapper; the same attributes, set here.
        self.socket = StreamSocket(sock, handshake_timeout)
        self.readers = Connection._default_readers()
        self.writers = Connection._default_writers()
        self.raw_bytes = Connection.Struct(config=None, header=None)
        self.config_name: str | None = None
        self.peer = "gadgetron"                         # "mrd" once a string arrives NUL-terminated (see _read_string)
        self.config, self.raw_bytes.config = self._read_config()
        self.header, self.raw_bytes.header = self._read_header()
        self.filters = []
        self.images_sent = 0
        self.waveforms_ignored = 0
        sock.settimeout(timeout)

    def send(self, item):
        if self.peer == "mrd" and isinstance(item, ismrmrd.Waveform):
            # gadgetron-python's filter hands every item it does not deliver back to the peer (Gadgetron's
            # convention: downstream gadgets may want them); an MRD/FIRE client sent its waveforms to be consumed.
            self.waveforms_ignored += 1
            return None
        with self.socket.lock:                          # one whole message, never split by an abort
            result = super().send(item)
        if isinstance(item, ismrmrd.Image):
            self.images_sent += 1
        return result

    def _read_config(self):
        mid = self._read_message_identifier()
        if mid == CONFIG_FILE:
            raw = self.socket.read(CONFIG_FILE_NAME_BYTES)
            self.config_name = decode_string(raw).strip()
            return None, raw
        if mid != CONFIG_TEXT:
            raise ProtocolError(f"the stream must start with CONFIG (id 2) or CONFIG_FILE (id 1); got message id {mid}")
        config_bytes = self._read_string("CONFIG")
        if not config_bytes.strip(b"\0 \t\r\n"):
            return None, config_bytes
        try:
            return ET.fromstring(config_bytes), config_bytes
        except ET.ParseError as exc:
            raise ProtocolError(f"CONFIG is not well-formed XML ({exc}); expected a <configuration> element with "
                                "<property name=... value=.../> children") from exc

    def _read_string(self, what: str) -> bytes:
        """A length-prefixed string. The MRD streaming format (FIRE/OpenRecon clients) ends it with a NUL counted in
        the length, Gadgetron and its client do not: the text ends at the first NUL, so both parse, and a
        NUL-terminated string marks the peer as an MRD client (:attr:`peer`), whose protocol has no ERROR message."""
        (length,) = struct.unpack("<I", self.socket.read(4))
        if length > MAX_TEXT_BYTES:
            raise ProtocolError(f"{what} claims {length} bytes (more than {MAX_TEXT_BYTES}); the peer does not speak "
                                "the Gadgetron protocol")
        raw = self.socket.read(length)
        if raw.endswith(b"\0"):
            self.peer = self.socket.peer = "mrd"
        return raw.split(b"\0", 1)[0]

    def _read_header(self):
        mid = self._read_message_identifier()
        if mid != HEADER:
            raise ProtocolError(f"expected HEADER (id 3) after the configuration; got message id {mid}")
        header_bytes = self._read_string("HEADER")
        try:
            return parse_header(header_bytes), header_bytes
        except ValueError as exc:
            raise ProtocolError(f"HEADER is not a usable ISMRMRD XML header: {exc}") from exc


def _drain_and_close(sock: socket.socket, drain_s: float) -> None:
    """Read (and drop) what the peer still sends until it closes or ``drain_s`` passes, then close. Closing with
    unread input would reset the connection, and the peer could lose the ERROR it has not read yet."""
    try:
        sock.settimeout(drain_s)
        deadline = time.monotonic() + drain_s
        while time.monotonic() < deadline and sock.recv(1 << 16):
            pass
    except OSError:
        pass
    finally:
        sock.close()


def _refuse(sock: socket.socket, message: str, drain_s: float = 5.0, peer: str = "gadgetron") -> None:
    """Answer ERROR + CLOSE on a raw socket (TEXT + CLOSE to an MRD peer), then drain and close."""
    try:
        sock.settimeout(drain_s)
        sock.sendall(error_frame(message, peer) + _CLOSE_FRAME)
        sock.shutdown(socket.SHUT_WR)
    except OSError:
        pass
    _drain_and_close(sock, drain_s)


@dataclasses.dataclass
class _Stream:
    number: int
    peer: str
    connection: ServerConnection
    accepted: float
    started: float | None = None


# ---------------------------------------------------------------------------------------------------------------------
# The server

class DpmServer:
    """Accept loop + one reconstruction worker.

    Args:
        defaults: gadget properties for every stream ({name: value}; a stream's own properties override them).
        host, port: where to listen (port 0: an ephemeral port, see :attr:`port`).
        input_kind: "auto" (decided per stream by its first item), "recon_data" or "acquisitions".
        max_queue: streams allowed to wait while one is reconstructed; more are answered with ERROR.
        config_dir: where CONFIG_FILE names are looked up (``<name>.xml``).
        grace: seconds the running stream may take to finish after SIGTERM before it is aborted.
        idle_timeout: seconds a stream may stay silent before it is ended as failed.
        handshake_timeout: seconds for CONFIG and HEADER after connecting.
        max_reconstructors: distinct reconstruction settings kept loaded (least recently used one dropped).
        default_config: configuration used for names the server does not know (None: they are refused), as the
            reference MRD server falls back to its default; the client is told in a TEXT message.
    """

    def __init__(self, defaults: dict | None = None, *, host: str = "127.0.0.1", port: int = 18000,
                 input_kind: str = "auto", max_queue: int = 16, config_dir: str | Path = REPO / "configs_xml",
                 grace: float = 5.0, idle_timeout: float = 3600.0, handshake_timeout: float = 30.0,
                 max_reconstructors: int = 4, default_config: str | None = None):
        if input_kind not in INPUT_KINDS:
            raise ValueError(f"input kind {input_kind!r} is unknown; choose one of {INPUT_KINDS}")
        if max_queue < 0:
            raise ValueError(f"--max-queue must be >= 0, got {max_queue}")
        self.defaults = dict(defaults or {})
        self.host, self.port = host, port
        self.input_kind = input_kind
        self.max_queue = max_queue
        self.config_dir = Path(config_dir)
        self.grace, self.idle_timeout, self.handshake_timeout = grace, idle_timeout, handshake_timeout
        self.max_reconstructors = max_reconstructors
        self.default_config = default_config
        if default_config is not None:
            self.named_properties(default_config)            # refuse a default that does not exist, at start
        self.stop_requested = threading.Event()
        self._lock = threading.Lock()
        self._closed = False
        self._waiting: collections.deque[_Stream] = collections.deque()
        self._wakeup = threading.Condition(self._lock)
        self._current: _Stream | None = None
        self._pipelines: collections.OrderedDict = collections.OrderedDict()        # GadgetConfig -> Pipeline
        self._shared: collections.OrderedDict = collections.OrderedDict()         # reconstructor key -> Pipeline
        self._numbers = itertools.count(1)
        self._listener: socket.socket | None = None
        self._worker: threading.Thread | None = None
        self.streams_served = 0

    # -- configurations ------------------------------------------------------------------------------------------------
    def known_config_names(self) -> list[str]:
        files = sorted(p.stem for p in self.config_dir.glob("*.xml")) if self.config_dir.is_dir() else []
        return ["dpm_recon (server defaults)"] + [n for n in files if n != "dpm_recon"]

    def named_properties(self, name: str) -> dict:
        """CONFIG_FILE name -> properties: the defaults' names -> {}; else the file's external <configuration>."""
        if name in DEFAULT_CONFIG_NAMES or name in ("dpm_recon.xml", "default.xml"):
            return {}
        if "/" in name or "\\" in name or name.startswith("."):
            raise ValueError(f"CONFIG_FILE name {name!r} must be a plain configuration name (no directories); "
                             f"known: {', '.join(self.known_config_names())}")
        stem = name[:-4] if name.endswith(".xml") else name
        path = self.config_dir / f"{stem}.xml"
        if not path.is_file():
            raise ValueError(f"CONFIG_FILE names an unknown configuration {name!r}; this server knows: "
                             f"{', '.join(self.known_config_names())} (files in {self.config_dir})")
        try:
            root = ET.parse(path).getroot()
        except ET.ParseError as exc:
            raise ValueError(f"configuration file {path} is not well-formed XML: {exc}") from exc
        external = root.find(".//external/configuration")
        if external is None:
            raise ValueError(f"configuration file {path} has no <external><configuration> element, so it does not "
                             "configure this reconstruction")
        return element_properties(external)

    def stream_properties(self, connection: ServerConnection, texts: list[str] = ()) -> tuple[dict, str]:
        """The stream's properties and a description for the log: the server defaults, overridden by the named
        configuration's (or CONFIG's) properties, overridden by the JSON parameters of the client's TEXT messages
        (:func:`text_parameters`).

        A configuration name the server does not know is refused, or — with ``default_config`` set — replaced by
        that configuration, which is logged and said to the client in a TEXT message."""
        json_name, json_properties, ignored = text_parameters(list(texts))
        if ignored:
            log.info("JSON parameters that are not gadget properties (ignored): %s", ", ".join(ignored))
        name = json_name or connection.config_name
        if name is not None:
            try:
                properties = self.named_properties(name)
            except ValueError:
                if self.default_config is None or name == self.default_config:
                    raise
                message = (f"dpm-server: configuration {name!r} is unknown here; reconstructing with "
                           f"{self.default_config!r} (known: {', '.join(self.known_config_names())})")
                log.warning("%s", message)
                connection.socket.write(text_frame(message, connection.peer))
                name, properties = self.default_config, self.named_properties(self.default_config)
            where = f"CONFIG_FILE {name!r}"
        else:
            properties = element_properties(connection.config)
            where = "CONFIG"
        properties = {**properties, **json_properties}
        return {**self.defaults, **properties}, f"{where} {json.dumps(properties, sort_keys=True)}"

    @staticmethod
    def _settings_key(config: GadgetConfig) -> str:
        """Configurations with equal keys can share reconstructors (and loaded models)."""
        return json.dumps({**config.reconstructor_kwargs(), "model_dirs": list(config.model_dirs)}, sort_keys=True,
                          default=str)

    def pipeline_for(self, config: GadgetConfig) -> Pipeline:
        """The cached pipeline for ``config``; a new config with known reconstruction settings shares that model."""
        if config in self._pipelines:
            self._pipelines.move_to_end(config)
            return self._pipelines[config]
        key = self._settings_key(config)
        shared = self._shared.get(key)
        if shared is None:
            t0 = time.perf_counter()
            pipeline = Pipeline(config)
            log.info("built reconstructor (%s) in %.2f s%s", key, time.perf_counter() - t0,
                     f"; {pipeline.dpm_unavailable}" if pipeline.dpm_unavailable else "")
            self._shared[key] = pipeline
            while len(self._shared) > self.max_reconstructors:
                dropped, _ = self._shared.popitem(last=False)
                self._pipelines = collections.OrderedDict(
                    (c, p) for c, p in self._pipelines.items()
                    if self._settings_key(c) != dropped)
                log.info("dropped the least recently used reconstructor (%s)", dropped)
        else:
            self._shared.move_to_end(key)
            pipeline = Pipeline(config, share_with=shared)
        self._pipelines[config] = pipeline
        while len(self._pipelines) > 8 * self.max_reconstructors:
            self._pipelines.popitem(last=False)
        return pipeline

    # -- lifecycle -----------------------------------------------------------------------------------------------------
    def start(self) -> None:
        """Build the default configuration (loads the model), open the port, start the worker."""
        default = self.pipeline_for(parse_config(self.defaults))
        default.preload()
        if default.dpm_unavailable:
            log.error("default configuration: %s -- streams get SENSE fallback images", default.dpm_unavailable)
        listener = socket.socket(socket.AF_INET6 if ":" in self.host else socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            listener.bind((self.host, self.port))
        except OSError as exc:
            listener.close()
            raise OSError(f"cannot listen on {self.host}:{self.port}: {exc}; is another server using the port?") \
                from exc
        listener.listen(64)
        listener.settimeout(0.2)
        self._listener = listener
        self.port = listener.getsockname()[1]
        self._worker = threading.Thread(target=self._work, name="dpm-worker", daemon=True)
        self._worker.start()
        log.info("dpm-server listening on %s:%d (input %s, max queue %d, defaults %s)", self.host, self.port,
                 self.input_kind, self.max_queue, json.dumps(self.defaults, sort_keys=True))

    def serve_forever(self) -> None:
        """Accept connections until :attr:`stop_requested` is set, then :meth:`shutdown`."""
        try:
            while not self.stop_requested.is_set():
                try:
                    sock, address = self._listener.accept()
                except socket.timeout:
                    continue
                number = next(self._numbers)
                peer = f"{address[0]}:{address[1]}"
                threading.Thread(target=self._handshake, args=(sock, peer, number), name=f"handshake-{number}",
                                 daemon=True).start()
        finally:
            self.shutdown()

    def shutdown(self) -> None:
        """Stop accepting, refuse the queued streams, give the running one ``grace`` seconds, then abort it."""
        if self._listener is not None:
            self._listener.close()
            self._listener = None
        log.info("shutting down: port closed, no new streams")
        with self._lock:
            self._closed = True
            pending = list(self._waiting)
            self._waiting.clear()
            self._wakeup.notify_all()
        drainers = []
        for stream in pending:
            log.warning("stream %d from %s: refused (server shutting down while it waited in the queue)",
                        stream.number, stream.peer)
            stream.connection.socket.abort("dpm-server is shutting down; this stream waited in the queue and was "
                                           "not reconstructed: send it again")
            drainers.append(threading.Thread(target=_drain_and_close, args=(stream.connection.socket.sock, 2.0),
                                             daemon=True))
            drainers[-1].start()
        for drainer in drainers:
            drainer.join(3.0)
        if self._worker is None:
            return
        self._worker.join(self.grace)
        if self._worker.is_alive():
            with self._lock:
                current = self._current
            if current is not None:
                elapsed = time.monotonic() - (current.started or current.accepted)
                log.warning("stream %d from %s: aborted after %.1f s (shutdown, --grace %.1f s)", current.number,
                            current.peer, elapsed, self.grace)
                current.connection.socket.abort(
                    f"dpm-server is shutting down: the stream was aborted after {elapsed:.1f} s of reconstruction "
                    f"(grace {self.grace:g} s); images sent so far are complete, the rest is missing")
                self._worker.join(1.0)
                if self._worker.is_alive():              # still reading: end its input so it stops
                    try:
                        current.connection.socket.sock.shutdown(socket.SHUT_RDWR)
                    except OSError:
                        pass
            self._worker.join(3.0)
        if self._worker.is_alive():
            log.error("the worker is still inside a reconstruction; exiting without waiting for it")
            logging.shutdown()
            os._exit(0)
        log.info("stopped after %d stream(s)", self.streams_served)

    # -- connections ---------------------------------------------------------------------------------------------------
    def _handshake(self, sock: socket.socket, peer: str, number: int) -> None:
        try:
            connection = ServerConnection(sock, timeout=self.idle_timeout, handshake_timeout=self.handshake_timeout)
        except (ProtocolError, OSError, struct.error) as exc:
            log.error("stream %d from %s: refused: %s", number, peer, exc)
            _refuse(sock, f"dpm-server: {exc}")
            return
        except Exception as exc:               # a bug: answer and log it rather than leave the peer hanging
            log.exception("stream %d from %s: handshake failed", number, peer)
            _refuse(sock, f"dpm-server: internal error during the handshake: {type(exc).__name__}: {exc}")
            return
        config = (f"CONFIG_FILE {connection.config_name!r}" if connection.config_name is not None
                  else f"CONFIG {json.dumps(element_properties_or_text(connection), sort_keys=True)}")
        stream = _Stream(number, peer, connection, time.monotonic())
        with self._lock:
            refusal = None
            if self._closed:
                refusal = "dpm-server is shutting down; send the stream again when it is back"
            elif len(self._waiting) >= self.max_queue:
                refusal = (f"dpm-server is busy: {len(self._waiting)} stream(s) already wait for the GPU "
                           f"(--max-queue {self.max_queue}); send the stream again later")
            else:
                ahead = len(self._waiting) + (self._current is not None)
                log.info("stream %d from %s: %s, queue position %d (%s)", number, peer, config, ahead,
                         "served now" if ahead == 0 else f"{ahead} stream(s) ahead")
                self._waiting.append(stream)
                self._wakeup.notify()
        if refusal:
            log.error("stream %d from %s (%s): refused: %s", number, peer, config, refusal)
            _refuse(sock, refusal, peer=connection.peer)

    def _work(self) -> None:
        while True:
            with self._lock:
                while not self._waiting and not self._closed:
                    self._wakeup.wait()
                if not self._waiting:
                    return
                stream = self._waiting.popleft()
                self._current = stream
            try:
                self._serve(stream)
            finally:
                with self._lock:
                    self._current = None
                    self.streams_served += 1

    def _input_kind(self, connection: ServerConnection, number: int) -> tuple[str, list[str]]:
        """Consume leading TEXT messages (logged, returned) and decide the input kind from the first item's id."""
        texts = []
        while True:
            (mid,) = struct.unpack("<H", connection.socket.peek(2))
            if mid != TEXT:
                break
            connection.socket.read(2)
            (length,) = struct.unpack("<I", connection.socket.read(4))
            if length > MAX_TEXT_BYTES:
                raise ProtocolError(f"a TEXT message claims {length} bytes (more than {MAX_TEXT_BYTES})")
            text = decode_string(connection.socket.read(length))
            log.info("stream %d: TEXT from the client: %s", number, text[:500])
            texts.append(text)
        if self.input_kind != "auto":
            return self.input_kind, texts
        return ("recon_data" if mid == RECON_DATA else "acquisitions"), texts

    def _serve(self, stream: _Stream) -> None:
        """One stream on the worker: configuration -> run_connection (the spawned gadget's own code) -> log."""
        connection = stream.connection
        stream.started = time.monotonic()
        waited = stream.started - stream.accepted
        volumes, errors, kind, description = 0, [], "?", "?"
        try:
            try:
                if connection.config_name is not None:
                    description = f"CONFIG_FILE {connection.config_name!r}"
                kind, texts = self._input_kind(connection, stream.number)
                properties, description = self.stream_properties(connection, texts)
                pipeline = self.pipeline_for(parse_config(properties))
                assembly.encoding_info(connection.header)
            except (ValueError, ImportError, OSError, KeyError, RuntimeError) as exc:
                message = f"dpm_recon: cannot start: {type(exc).__name__}: {exc}"
                errors.append(message)
                log.error("stream %d: %s", stream.number, message)
                drained = sum(1 for _ in connection)
                log.info("stream %d: drained %d input item(s)", stream.number, drained)
                send_error(connection, message)
            else:
                log.info("stream %d: reconstructing (%s input, %s)", stream.number, kind, description)
                volumes, errors = run_connection(pipeline, connection, kind)
        except OSError as exc:                 # peer gone, idle timeout, aborted by shutdown
            errors.append(f"stream ended: {type(exc).__name__}: {exc}")
            log.error("stream %d from %s: ended: %s: %s", stream.number, stream.peer, type(exc).__name__, exc)
            _try_send_error(connection, f"dpm-server: stream ended: {type(exc).__name__}: {exc}")
        except Exception as exc:               # a bug: report it to Gadgetron rather than a silent CLOSE
            errors.append(f"internal error: {type(exc).__name__}: {exc}")
            log.exception("stream %d from %s: internal error", stream.number, stream.peer)
            _try_send_error(connection, f"dpm-server: internal error: {type(exc).__name__}: {exc}")
        finally:
            connection.socket.close()
        log.info("stream %d from %s done: %s, %s input, %d volume(s), %d image(s), %.2f s (+ %.2f s queued), "
                 "%d error(s)%s%s", stream.number, stream.peer, description, kind, volumes, connection.images_sent,
                 time.monotonic() - stream.started, waited, len(errors),
                 f", {connection.waveforms_ignored} waveform(s) ignored" if connection.waveforms_ignored else "",
                 (": " + " | ".join(errors)) if errors else "")


def element_properties_or_text(connection: ServerConnection):
    try:
        return element_properties(connection.config)
    except ValueError:
        return connection.raw_bytes.config.decode("utf-8", errors="replace")[:300]


def _try_send_error(connection: ServerConnection, message: str) -> None:
    try:
        send_error(connection, message)
    except OSError:
        pass


# ---------------------------------------------------------------------------------------------------------------------
# Command line

def main(argv=None) -> int:

    parser = argparse.ArgumentParser(prog="dpm-server", description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, required=True, help="TCP port (0: any free port, printed in the log)")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on [127.0.0.1]")
    parser.add_argument("--set", action="append", default=[], metavar="NAME=VALUE",
                        help="default gadget property for every stream, e.g. --set method=dpm (repeatable)")
    parser.add_argument("--input", choices=INPUT_KINDS, default="auto",
                        help="stream input: recon_data (after BucketToBuffer), acquisitions, or auto (by the first "
                             "item) [auto]")
    parser.add_argument("--max-queue", type=int, default=16, help="streams allowed to wait for the GPU [16]")
    parser.add_argument("--config-dir", default=str(REPO / "configs_xml"),
                        help="where CONFIG_FILE names are looked up as NAME.xml [configs_xml]")
    parser.add_argument("--grace", type=float, default=5.0,
                        help="seconds the running stream may finish after SIGTERM before it is aborted [5]")
    parser.add_argument("--idle-timeout", type=float, default=3600.0,
                        help="seconds a stream may stay silent before it is ended [3600]")
    parser.add_argument("--default-config", default=None, metavar="NAME",
                        help="configuration for CONFIG_FILE names the server does not know (e.g. dpm_recon; the "
                             "client is told in a TEXT message) [refuse unknown names]")
    parser.add_argument("--log-level", default="INFO", choices=("DEBUG", "INFO", "WARNING", "ERROR"))
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level, stream=sys.stderr,
                        format="%(asctime)s %(name)s %(levelname)s [%(threadName)s] %(message)s")
    try:
        defaults = parse_properties(args.set)
        parse_config(defaults)
        server = DpmServer(defaults, host=args.host, port=args.port, input_kind=args.input,
                           max_queue=args.max_queue, config_dir=args.config_dir, grace=args.grace,
                           idle_timeout=args.idle_timeout, default_config=args.default_config)
        server.start()
    except (ValueError, ImportError, OSError, KeyError, RuntimeError) as exc:
        print(f"dpm-server: error: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 2

    def request_stop(signum, _frame):
        log.info("received %s", signal.Signals(signum).name)
        server.stop_requested.set()

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    server.serve_forever()
    return 0


if __name__ == "__main__":
    sys.exit(main())
