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

__all__ = [
    "DATA",
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
    "encode_frame",
    "encode_json",
]

# Frame types.
HEARTBEAT = 0x0001
HEARTBEAT_ACK = 0x0002
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
DEFAULT_MAX_FRAME = 1024 * 1024

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


class BinaryDecoder:
    """Splits a byte stream into :class:`BinaryFrame` objects.

    ``feed(data)`` returns the frames completed by ``data``, in order. A framing
    error stops the decoder: the frames before the bad header are still
    returned, and :attr:`error` holds the :class:`ProtocolError`
    (``frame_too_large``); every later feed returns nothing. The length is
    checked as soon as the header is read, so an oversized body is never
    awaited or buffered. Frame types are not checked here: an unknown type is
    a session-level error, and the frame is returned like any other.
    """

    __slots__ = ("_buf", "_flags", "_need", "_type", "error", "max_frame")

    def __init__(self, max_frame: int = DEFAULT_MAX_FRAME) -> None:
        self.max_frame = max_frame
        self._buf = bytearray()
        # Header of the frame whose payload is being awaited; _need is -1 while
        # reading a header. Keeping it means a payload arriving in many reads is
        # never re-parsed.
        self._need = -1
        self._type = 0
        self._flags = 0
        self.error: ProtocolError | None = None

    @property
    def buffered(self) -> int:
        """Bytes held while waiting for the rest of a frame."""
        return len(self._buf)

    def feed(self, data: bytes) -> list[BinaryFrame]:
        """Take the next bytes of the stream; return the frames they complete."""
        if self.error is not None:
            return []
        buf = self._buf
        buf += data
        n = len(buf)
        need = self._need
        # Most reads of a large payload complete nothing: return before any
        # slicing so each read costs only its own append.
        if need >= 0 and n < need:
            return []
        out: list[BinaryFrame] = []
        off = 0
        ftype = self._type
        flags = self._flags
        # A memoryview slices the payload straight into bytes: one copy.
        with memoryview(buf) as view:
            while True:
                if need < 0:
                    if n - off < HEADER_SIZE:
                        break
                    ftype, need, flags = _HEADER.unpack_from(buf, off)
                    if need > self.max_frame:
                        self.error = ProtocolError(
                            "frame_too_large",
                            f"Frame of {need} bytes exceeds the maximum of {self.max_frame}",
                        )
                        break
                    off += HEADER_SIZE
                end = off + need
                if end > n:
                    break
                out.append(BinaryFrame(ftype, flags, view[off:end].tobytes()))
                off = end
                need = -1
        if self.error is not None:
            self._buf = bytearray()
            self._need = -1
            return out
        self._need = need
        self._type = ftype
        self._flags = flags
        if off:
            # Deleting from the front of a bytearray is amortized O(1) in CPython.
            del buf[:off]
        return out
