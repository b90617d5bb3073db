"""Sans-IO codec for the ``mux`` framing of PROTOCOL.md section 4.

A frame is ``streamId`` u32 and ``length`` u32 (big-endian), then ``length``
bytes of payload. Stream 0 is the control stream: each of its frames holds one
JSON object. The decoder takes bytes in whatever pieces TCP hands them over and
gives back complete frames; it never touches a socket or a clock.
"""

from __future__ import annotations

import struct
from typing import Any, NamedTuple

import orjson

from .errors import ProtocolError
from .framing import DEFAULT_MAX_FRAME, HeaderDecoder
from .json import bad_json

__all__ = [
    "CONTROL_STREAM",
    "DEFAULT_MAX_FRAME",
    "DEFAULT_MAX_PAYLOAD",
    "HEADER_SIZE",
    "MuxDecoder",
    "MuxFrame",
    "encode_chunked",
    "encode_control",
    "encode_frame",
    "parse_control",
    "validate_control",
]

CONTROL_STREAM = 0
HEADER_SIZE = 8
# The largest payload the server puts in one frame of its own.
DEFAULT_MAX_PAYLOAD = 64 * 1024

_HEADER = struct.Struct(">II")
_U32_MAX = 0xFFFFFFFF


class MuxFrame(NamedTuple):
    """One decoded frame: the ``stream_id`` it belongs to and its ``payload``."""

    stream_id: int
    payload: bytes


def encode_frame(stream_id: int, payload: bytes) -> bytes:
    """Frame ``payload`` for stream ``stream_id``.

    Raises :class:`ValueError` when ``stream_id`` does not fit in u32 or the
    payload is longer than a u32 can say.
    """
    if not 0 <= stream_id <= _U32_MAX:
        raise ValueError(f"stream id {stream_id} does not fit in u32")
    if len(payload) > _U32_MAX:
        raise ValueError(f"payload of {len(payload)} bytes does not fit in one frame")
    return _HEADER.pack(stream_id, len(payload)) + payload


def encode_control(obj: Any) -> bytes:
    """Frame one JSON object on the control stream."""
    return encode_frame(CONTROL_STREAM, orjson.dumps(obj))


def encode_chunked(
    stream_id: int, data: bytes, max_payload: int = DEFAULT_MAX_PAYLOAD
) -> list[bytes]:
    """Split ``data`` into frames for ``stream_id`` of at most ``max_payload`` bytes each.

    Empty ``data`` gives no frames at all: a data frame is a piece of the
    stream's byte stream, so an empty one would carry nothing, and callers can
    hand over whatever a session wrote without checking for nothing first.
    """
    n = len(data)
    if 0 < n <= max_payload and 0 <= stream_id <= _U32_MAX:
        # The usual case, a session's one write of a read's replies: one frame.
        return [_HEADER.pack(stream_id, n) + data]
    if max_payload < 1:
        raise ValueError(f"max_payload must be at least 1, not {max_payload}")
    if not n:
        return []
    if not 0 <= stream_id <= _U32_MAX:
        raise ValueError(f"stream id {stream_id} does not fit in u32")
    # Concatenating header and memoryview slice copies each byte of data once.
    view = memoryview(data)
    frames: list[bytes] = []
    for i in range(0, len(data), max_payload):
        chunk = view[i : i + max_payload]
        frames.append(_HEADER.pack(stream_id, len(chunk)) + chunk)
    return frames


class MuxDecoder(HeaderDecoder[MuxFrame]):
    """Splits a byte stream into :class:`MuxFrame` objects (see :class:`HeaderDecoder`).

    Stream ids are not checked here: which streams are open is the session's
    business.
    """

    HEADER = _HEADER
    LENGTH_FIELD = 1

    __slots__ = ()

    def __init__(self, max_frame: int = DEFAULT_MAX_FRAME) -> None:
        super().__init__(max_frame)

    def _frame(self, head: tuple[int, ...], payload: memoryview) -> MuxFrame:
        return MuxFrame(head[0], payload.tobytes())

    def feed_runs(self, data: bytes) -> list[tuple[int, bytes, int] | ProtocolError]:
        """Like :meth:`receive`, but consecutive frames of one stream come joined.

        Returns ``(stream_id, payload, frames)`` per run, then the framing error
        (the last event) if the stream broke. A stream's payload is a
        byte stream, so a session that receives a run in one piece sees the same
        bytes; the server uses this to answer twenty pipelined pings at once.
        Control frames (stream 0) are never joined: each is one JSON object.
        """
        # The server's hot path for mux: the shared loop is specialised here so
        # that a frame costs one header unpack and one slice, no callback.
        if self.error is not None:
            return []
        buf = self._buf
        buf += data
        n = len(buf)
        need = self._need
        if need >= 0 and n < need:
            return []
        out: list[tuple[int, bytes, int] | ProtocolError] = []
        off = 0
        sid = self._head[0] if self._head else 0
        unpack = _HEADER.unpack_from
        max_frame = self.max_frame
        run_sid = -1
        run: list[memoryview] = []
        with memoryview(buf) as view:
            while True:
                if need < 0:
                    if n - off < HEADER_SIZE:
                        break
                    sid, need = unpack(buf, off)
                    if need > max_frame:
                        self.error = ProtocolError(
                            "frame_too_large",
                            f"Frame of {need} bytes exceeds the maximum of {max_frame}",
                        )
                        break
                    off += HEADER_SIZE
                end = off + need
                if end > n:
                    break
                if sid != run_sid or sid == CONTROL_STREAM:
                    if run:
                        out.append((run_sid, b"".join(run), len(run)))
                    run = [view[off:end]]
                    run_sid = sid
                else:
                    run.append(view[off:end])
                off = end
                need = -1
            if run:
                out.append((run_sid, b"".join(run), len(run)))
            run = []  # release the views before the buffer is trimmed
        if self.error is not None:
            self._buf = bytearray()
            self._need = -1
            out.append(self.error)
            return out
        self._need = need
        self._head = (sid, need)
        if off:
            del buf[:off]
        return out


def parse_control(payload: bytes) -> dict[str, Any]:
    """Decode a control-stream payload into a message with a string ``type``.

    Raises :class:`ProtocolError` ``bad_json`` when the payload is not a JSON
    object (invalid UTF-8 or JSON, or valid JSON of another kind), and
    ``bad_message`` when the object has no string ``type``.
    """
    try:
        msg = orjson.loads(payload)
    except orjson.JSONDecodeError:
        raise bad_json() from None
    if not isinstance(msg, dict):
        raise ProtocolError("bad_json", "Control message must be a JSON object")
    if not isinstance(msg.get("type"), str):
        raise ProtocolError("bad_message", "Control message needs a string 'type'")
    return msg


def _is_stream_id(value: Any) -> bool:
    # bool is an int subclass, but JSON true/false are not stream ids.
    return type(value) is int and 0 <= value <= _U32_MAX


def _require_stream_id(msg: dict[str, Any]) -> None:
    if not _is_stream_id(msg.get("streamId")):
        raise ProtocolError(
            "bad_message", f"'{msg['type']}' needs an integer 'streamId' from 0 to {_U32_MAX}"
        )


def validate_control(msg: dict[str, Any]) -> dict[str, Any]:
    """Check the fields of a client control message from :func:`parse_control`.

    Returns ``msg`` unchanged when it is a well-formed ``stream_create``,
    ``stream_close`` or ``ping``. Raises :class:`ProtocolError` ``bad_message``
    for a missing or wrong-typed field and ``unknown_type`` for any other
    ``type``. Only the shape is checked: whether a stream id is odd, free or
    open, and whether a stream type exists, is up to the session.
    """
    kind = msg["type"]
    if kind == "stream_create":
        _require_stream_id(msg)
        if not isinstance(msg.get("streamType"), str):
            raise ProtocolError("bad_message", "'stream_create' needs a string 'streamType'")
        if "metadata" in msg and not isinstance(msg["metadata"], dict):
            raise ProtocolError("bad_message", "'metadata' must be a JSON object")
    elif kind == "stream_close":
        _require_stream_id(msg)
    elif kind != "ping":
        raise ProtocolError("unknown_type", f"Unknown message type: {kind}")
    return msg
