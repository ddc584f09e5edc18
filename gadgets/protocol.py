"""The wire protocol, in one place: message ids, framing, strings with or without NUL, errors framed by peer kind.

Gadgetron's stream protocol and the MRD streaming format (FIRE / OpenRecon) share it (DESIGN.md §4, §6): every
message is ``uint16 id`` then its payload, little-endian.
- CONFIG_FILE (1): a 1024-byte NUL-padded configuration name. CONFIG_TEXT (2), HEADER (3), TEXT (5): ``uint32 len`` +
  UTF-8; the MRD streaming format ends these strings in a NUL that the length counts, Gadgetron does not.
- CLOSE (4): no payload. ERROR (8, Gadgetron only): ``uint64 len`` + UTF-8. An MRD peer has no ERROR message (its
  reference client stops at an unknown id), so errors go to it as TEXT starting with "ERROR: ".
- Data: acquisition 1008, image 1022, ReconData 1023, ImageArray 1024, waveform 1026 (ismrmrd / gadgetron-python
  serializers).
The peer kind is "gadgetron" or "mrd" (a peer that NUL-terminates its strings speaks the MRD streaming format).
"""
from __future__ import annotations

import struct

__all__ = ["CONFIG_FILE", "CONFIG_TEXT", "HEADER", "CLOSE", "TEXT", "ERROR", "ACQUISITION", "IMAGE", "RECON_DATA",
           "IMAGE_ARRAY", "WAVEFORM", "CONFIG_FILE_NAME_BYTES", "PEERS", "decode_string", "string_frame",
           "config_file_frame", "close_frame", "text_frame", "error_frame", "peer_of", "send_error"]

CONFIG_FILE, CONFIG_TEXT, HEADER, CLOSE, TEXT, ERROR = 1, 2, 3, 4, 5, 8
ACQUISITION, IMAGE, RECON_DATA, IMAGE_ARRAY, WAVEFORM = 1008, 1022, 1023, 1024, 1026
CONFIG_FILE_NAME_BYTES = 1024
PEERS = ("gadgetron", "mrd")


def decode_string(payload: bytes) -> str:
    """A CONFIG_TEXT / HEADER / TEXT / CONFIG_FILE payload -> text, up to the first NUL (both peer kinds)."""
    return payload.split(b"\0", 1)[0].decode("utf-8", errors="replace")


def string_frame(message_id: int, text: str, peer: str = "gadgetron") -> bytes:
    """CONFIG_TEXT, HEADER or TEXT: ``uint16 id`` + ``uint32 len`` + UTF-8, NUL-terminated for an MRD peer."""
    payload = text.encode("utf-8", errors="replace") + (b"\0" if peer == "mrd" else b"")
    return struct.pack("<HI", message_id, len(payload)) + payload


def config_file_frame(name: str) -> bytes:
    """CONFIG_FILE: the configuration name NUL-padded to :data:`CONFIG_FILE_NAME_BYTES`."""
    raw = name.encode("utf-8")
    if len(raw) >= CONFIG_FILE_NAME_BYTES:
        raise ValueError(f"config name {name!r} is longer than {CONFIG_FILE_NAME_BYTES - 1} bytes")
    return struct.pack("<H", CONFIG_FILE) + raw.ljust(CONFIG_FILE_NAME_BYTES, b"\0")


def close_frame() -> bytes:
    return struct.pack("<H", CLOSE)


def text_frame(text: str, peer: str = "gadgetron") -> bytes:
    """A TEXT message for ``peer``."""
    return string_frame(TEXT, text, peer)


def error_frame(text: str, peer: str = "gadgetron") -> bytes:
    """The bytes that report an error: Gadgetron's ERROR (``uint16 8`` + ``uint64 len`` + UTF-8) or, to an MRD peer,
    TEXT "ERROR: <text>" (NUL-terminated)."""
    if peer == "mrd":
        return text_frame(f"ERROR: {text}", peer)
    payload = text.encode("utf-8", errors="replace")
    return struct.pack("<HQ", ERROR, len(payload)) + payload


def peer_of(connection) -> str:
    """Who is on the other end: ``connection.peer`` ("gadgetron" or "mrd"); a gadgetron-python connection does not
    say, and is Gadgetron."""
    return getattr(connection, "peer", "gadgetron")


def send_error(connection, text: str) -> None:
    """Report an error on a connection (gadgetron-python has no API for it): ``error_frame`` for its peer
    (:func:`peer_of`), written to its socket."""
    connection.socket.write(error_frame(text, peer_of(connection)))
