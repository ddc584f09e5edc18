"""Gadgetron's side of the wire protocol, for replay and tests: spawn a gadget as Gadgetron does, or act as a client.

Two ways to reach a reconstruction over a socket (DESIGN.md §4 and §6), one exchange:
- :func:`run_spawned_gadget`: what Gadgetron's external node does in execute mode: listen on an ephemeral loopback
  port, spawn ``python -m gadgetron <port> <module> <target>``, accept the connection back;
- :func:`run_client`: connect to a running server (our ``dpm-server`` in connect mode, a Gadgetron instance or a
  FIRE/OpenRecon-style MRD server) as ``gadgetron_ismrmrd_client`` does.
Then :func:`exchange`: CONFIG (id 2 CONFIG_TEXT, or id 1 CONFIG_FILE with a 1024-byte name), HEADER (3), the items
(Acquisitions through ``ismrmrd.ProtocolSerializer``, ReconData through gadgetron-python's writer, or raw bytes) and
CLOSE (4) from a writer thread while the calling thread reads images (1022), ImageArray (1024), passed-through
acquisitions (1008), TEXT logs (5), ERROR (8) and CLOSE. Every socket read has a deadline; nothing can hang.
"""
from __future__ import annotations

import dataclasses
import os
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import ismrmrd

from . import protocol

REPO = Path(__file__).resolve().parents[1]


@dataclasses.dataclass
class StreamResult:
    """What came back from one stream: images in arrival order, ERROR texts, TEXT logs, CLOSE seen, timing."""
    images: list
    errors: list
    closed: bool
    returncode: int | None
    log: str
    elapsed: float
    first_image_s: float | None
    passthrough: list
    texts: list = dataclasses.field(default_factory=list)


def config_xml(properties: dict | None = None) -> str:
    """A ``<configuration>`` element with ``<property name= value=/>`` children (what Gadgetron forwards)."""
    from xml.sax.saxutils import quoteattr

    props = "".join(f"<property name={quoteattr(str(k))} value={quoteattr(str(v))}/>"
                    for k, v in (properties or {}).items())
    return f"<configuration>{props}</configuration>"


class _SocketWriter:
    def __init__(self, sock):
        self.sock = sock

    def write(self, data) -> None:
        self.sock.sendall(data)

    def flush(self) -> None:
        pass


class _SocketReader:
    def __init__(self, sock, deadline: float):
        self.sock = sock
        self.deadline = deadline

    def read(self, n: int) -> bytes:
        chunks, remaining = [], n
        while remaining:
            left = self.deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"no reply within the deadline (waiting for {remaining} of {n} bytes)")
            self.sock.settimeout(left)
            chunk = self.sock.recv(remaining)
            if not chunk:
                raise ConnectionError(f"connection closed by the peer while {remaining} bytes were expected")
            chunks.append(chunk)
            remaining -= len(chunk)
        return b"".join(chunks)


def _write_stream(conn, config, header_xml: str, items, send_close: bool, writer_error: list,
                  config_name: str | None = None, null_terminated: bool = False) -> None:
    from gadgetron.types.recon_data import ReconData, write_recon_data

    out = _SocketWriter(conn)
    try:
        peer = "mrd" if null_terminated else "gadgetron"
        if config_name is not None:
            out.write(protocol.config_file_frame(config_name))
        else:
            out.write(protocol.string_frame(protocol.CONFIG_TEXT, config or "", peer))
        out.write(protocol.string_frame(protocol.HEADER, header_xml, peer))
        serializer = ismrmrd.ProtocolSerializer(out)
        for item in items:
            if isinstance(item, (ismrmrd.Acquisition, ismrmrd.Waveform)):
                serializer.serialize(item)
            elif isinstance(item, ReconData):
                write_recon_data(out, item)
            elif isinstance(item, (bytes, bytearray)):
                out.write(item)
            else:
                raise TypeError(f"cannot send {type(item).__name__} over the wire")
        if send_close:
            out.write(protocol.close_frame())
    except (BrokenPipeError, ConnectionResetError, OSError) as exc:   # the peer may stop reading early
        writer_error.append(exc)


def exchange(conn, header_xml: str, items, *, config: str | None = None, config_name: str | None = None,
             deadline: float, send_close: bool = True,
             null_terminated: bool = False) -> tuple[list, list, list, list, bool, float | None]:
    """Send a whole stream on ``conn`` and read replies until CLOSE. ``null_terminated``: CONFIG_TEXT and HEADER end
    in a NUL counted in their length, as the MRD streaming format (FIRE/OpenRecon) writes them.

    Returns (images, errors, texts, passthrough, closed, first_image_monotonic).
    """
    images, errors, texts, passthrough = [], [], [], []
    closed, first_image = False, None
    writer_error: list = []
    writer = threading.Thread(target=_write_stream, args=(conn, config, header_xml, items, send_close, writer_error,
                                                          config_name, null_terminated), daemon=True)
    writer.start()
    reader = _SocketReader(conn, deadline)
    try:
        while True:
            (mid,) = struct.unpack("<H", reader.read(2))
            if mid == protocol.IMAGE:
                images.append(ismrmrd.Image.deserialize_from(reader.read))
                first_image = first_image or time.monotonic()
            elif mid == protocol.ERROR:
                (length,) = struct.unpack("<Q", reader.read(8))
                errors.append(reader.read(length).decode("utf-8", errors="replace"))
            elif mid == protocol.TEXT:
                (length,) = struct.unpack("<I", reader.read(4))
                texts.append(protocol.decode_string(reader.read(length)))
            elif mid == protocol.CLOSE:
                closed = True
                break
            elif mid == protocol.ACQUISITION:
                passthrough.append(ismrmrd.Acquisition.deserialize_from(reader.read))
            elif mid == protocol.WAVEFORM:
                passthrough.append(ismrmrd.Waveform.deserialize_from(reader.read))
            elif mid == protocol.IMAGE_ARRAY:
                from gadgetron.types.image_array import read_image_array
                passthrough.append(read_image_array(reader))
            elif mid == protocol.RECON_DATA:
                from gadgetron.types.recon_data import read_recon_data
                passthrough.append(read_recon_data(reader))
            else:
                raise ConnectionError(f"unexpected message id {mid} from the peer")
    except ConnectionError:
        if not (writer_error or errors):
            raise
    writer.join(timeout=max(deadline - time.monotonic(), 1.0))
    if writer_error and not closed and not errors:
        raise writer_error[0]
    return images, errors, texts, passthrough, closed, first_image


def run_spawned_gadget(module: str, target: str, header_xml: str, items, *, config: dict | str | None = None,
                       timeout: float = 120.0, env: dict | None = None, send_close: bool = True,
                       python: str = sys.executable) -> StreamResult:
    """Spawn ``python -m gadgetron <port> module target`` as Gadgetron does and run one stream through it.

    Args:
        config: gadget properties (dict -> ``<configuration>`` XML) or the XML text itself.
        timeout: seconds for the whole stream (connect-back, send, replies, exit); the child is killed after it.
    """
    start = time.monotonic()
    deadline = start + timeout
    child_env = dict(os.environ)
    child_env["PYTHONPATH"] = str(REPO) + os.pathsep + child_env.get("PYTHONPATH", "")
    child_env.setdefault("GADGETRON_EXTERNAL_LOG_LEVEL", "INFO")
    child_env.update(env or {})
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    port = listener.getsockname()[1]
    log_file = tempfile.TemporaryFile(mode="w+b")
    child = subprocess.Popen([python, "-m", "gadgetron", str(port), module, target], stdout=log_file,
                             stderr=subprocess.STDOUT, env=child_env, cwd=str(REPO))
    returncode = None
    try:
        listener.settimeout(min(30.0, timeout))          # Gadgetron allows the child 30 s to connect back
        try:
            conn, _ = listener.accept()
        except socket.timeout as exc:
            raise TimeoutError(f"{module}.{target} did not connect back within 30 s") from exc
        text = config if isinstance(config, str) or config is None else config_xml(config)
        images, errors, texts, passthrough, closed, first = exchange(conn, header_xml, items, config=text,
                                                                     deadline=deadline, send_close=send_close)
        conn.close()
        returncode = child.wait(timeout=max(deadline - time.monotonic(), 5.0))
    finally:
        listener.close()
        if child.poll() is None:
            child.kill()
            child.wait(timeout=10)
        log_file.seek(0)
        log_text = log_file.read().decode("utf-8", errors="replace")
        log_file.close()
    return StreamResult(images=images, errors=errors, closed=closed, returncode=returncode, log=log_text,
                        elapsed=time.monotonic() - start, first_image_s=None if first is None else first - start,
                        passthrough=passthrough, texts=texts)


def run_client(host: str, port: int, header_xml: str, items, *, config: dict | str | None = None,
               config_name: str | None = None, timeout: float = 600.0, send_close: bool = True,
               null_terminated: bool = False) -> StreamResult:
    """Run one stream against a server at host:port (client protocol). ``config_name`` sends CONFIG_FILE (id 1, a
    configuration the server knows by name, as FIRE/OpenRecon and ``gadgetron_ismrmrd_client -c`` do); otherwise
    ``config`` goes as CONFIG_TEXT (id 2)."""
    start = time.monotonic()
    deadline = start + timeout
    try:
        conn = socket.create_connection((host, port), timeout=min(30.0, timeout))
    except OSError as exc:
        raise ConnectionError(f"cannot connect to the reconstruction server at {host}:{port}: {exc}; is it "
                              "running (dpm-server --port ..., or Gadgetron)?") from exc
    try:
        text = config if isinstance(config, str) or config is None else config_xml(config)
        images, errors, texts, passthrough, closed, first = exchange(conn, header_xml, items, config=text,
                                                                     config_name=config_name, deadline=deadline,
                                                                     send_close=send_close,
                                                                     null_terminated=null_terminated)
    finally:
        conn.close()
    return StreamResult(images=images, errors=errors, closed=closed, returncode=None, log="",
                        elapsed=time.monotonic() - start, first_image_s=None if first is None else first - start,
                        passthrough=passthrough, texts=texts)
