"""Sans-IO codec for the ``binary`` framing of PROTOCOL.md section 3.

A frame is an 8-byte header (``type`` u16, ``length`` u32, ``flags`` u16, all
big-endian) followed by ``length`` bytes of payload. The decoder takes bytes in
whatever pieces TCP hands them over and gives back complete frames; it never
touches a socket or a clock.
"""

from __future__ import annotations

import struct
from typing import Any, NamedTuple

import orjson

from .errors import ProtocolError
from .framing import DEFAULT_MAX_FRAME, HeaderDecoder

__all__ = [
    "AUTH",
    "AUTH_OK",
    "DATA",
    "DEFAULT_MAX_FRAME",
    "ERROR",
    "FILE",
    "FILE_ABORT",
    "FILE_CHUNK",
    "FILE_END",
    "FILE_REPLY",
    "FILE_START",
    "HEADER_SIZE",
    "HEARTBEAT",
    "HEARTBEAT_ACK",
    "NOTICE",
    "BinaryDecoder",
    "BinaryFrame",
    "decode_json",
    "encode_error",
    "encode_frame",
    "encode_json",
]

# Frame types.
HEARTBEAT = 0x0001
HEARTBEAT_ACK = 0x0002
AUTH = 0x0003  # payload: the token (PROTOCOL.md section 8)
AUTH_OK = 0x0004  # payload: {"user": NAME}
DATA = 0x0010
FILE = 0x0020
FILE_REPLY = 0x0021
NOTICE = 0x0030
ERROR = 0x00FF

# FILE frame flags, one per frame.
FILE_START = 0x0001
FILE_CHUNK = 0x0002
FILE_END = 0x0004
FILE_ABORT = 0x0008

HEADER_SIZE = 8

_HEADER = struct.Struct(">HIH")
_U16_MAX = 0xFFFF
_U32_MAX = 0xFFFFFFFF


class BinaryFrame(NamedTuple):
    """One decoded frame: its ``type``, ``flags`` and ``payload``."""

    type: int
    flags: int
    payload: bytes


def encode_frame(type: int, payload: bytes = b"", flags: int = 0) -> bytes:
    """Frame ``payload`` under an 8-byte header.

    Raises :class:`ValueError` when ``type`` or ``flags`` does not fit in u16 or
    the payload is longer than a u32 can say.
    """
    if not 0 <= type <= _U16_MAX:
        raise ValueError(f"frame type {type} does not fit in u16")
    if not 0 <= flags <= _U16_MAX:
        raise ValueError(f"frame flags {flags} do not fit in u16")
    if len(payload) > _U32_MAX:
        raise ValueError(f"payload of {len(payload)} bytes does not fit in one frame")
    return _HEADER.pack(type, len(payload), flags) + payload


def encode_json(type: int, obj: Any) -> bytes:
    """Frame one JSON value, for FILE_REPLY, NOTICE and ERROR frames."""
    return encode_frame(type, orjson.dumps(obj))


def decode_json(payload: bytes) -> Any:
    """The JSON value a FILE_START payload holds, or None when it is not UTF-8 JSON."""
    try:
        return orjson.loads(payload)
    except orjson.JSONDecodeError:
        return None


def encode_error(error: ProtocolError) -> bytes:
    """Frame ``error`` as an ERROR frame: ``{"code": ..., "message": ...}``.

    An upload's errors are FILE_REPLY frames instead, which carry the whole
    ``error`` message: ``encode_json(FILE_REPLY, error.as_message())``.
    """
    return encode_frame(ERROR, orjson.dumps({"code": error.code, "message": error.message}))


class BinaryDecoder(HeaderDecoder[BinaryFrame]):
    """Splits a byte stream into :class:`BinaryFrame` objects (see :class:`HeaderDecoder`).

    Frame types are not checked here: an unknown type is a session-level error,
    and the frame is returned like any other.
    """

    HEADER = _HEADER
    LENGTH_FIELD = 1

    __slots__ = ()

    def __init__(self, max_frame: int = DEFAULT_MAX_FRAME) -> None:
        super().__init__(max_frame)

    def _frame(self, head: tuple[int, ...], payload: memoryview) -> BinaryFrame:
        return BinaryFrame(head[0], head[2], payload.tobytes())
