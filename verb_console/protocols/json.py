"""Sans-IO codec for the ``json`` framing of PROTOCOL.md section 2: ``<length>\\n<body>``.

The decoder takes bytes in whatever pieces TCP hands them over and gives back the
bodies of complete frames; :func:`parse_message` checks that a body is a client
message. None of it touches a socket or a clock, so it is used by the server, by
the clients and by the tests alike.
"""

from __future__ import annotations

from typing import Any, cast

import orjson

from .errors import ProtocolError
from .framing import DEFAULT_MAX_FRAME

__all__ = [
    "BAD_JSON",
    "DEFAULT_MAX_FRAME",
    "MAX_HEADER_DIGITS",
    "MAX_REF_CHARS",
    "JsonDecoder",
    "bad_json",
    "encode",
    "encode_body",
    "encode_error",
    "is_ref",
    "parse_message",
]

MAX_HEADER_DIGITS = 10
MAX_REF_CHARS = 64

BAD_JSON = "Body is not valid UTF-8 JSON"
"""The one message of a ``bad_json`` error, whichever framing carried the body."""

_dumps = orjson.dumps
_loads = orjson.loads
_JSONDecodeError = orjson.JSONDecodeError


def bad_json() -> ProtocolError:
    """The error for a body (a json frame's, a mux control frame's) that is not UTF-8 JSON."""
    return ProtocolError("bad_json", BAD_JSON)


def is_ref(ref: Any) -> bool:
    """The one rule for ``ref`` (PROTOCOL.md section 2): a string of at most 64
    characters or an integer (not a bool, not null, not a float)."""
    return (type(ref) is str and len(ref) <= MAX_REF_CHARS) or type(ref) is int


def encode_body(body: bytes) -> bytes:
    """Frame an already-serialized JSON body."""
    return b"%d\n%s" % (len(body), body)


def encode(message: Any) -> bytes:
    """Serialize ``message`` to one frame."""
    body = _dumps(message)
    return b"%d\n%s" % (len(body), body)


def encode_error(error: ProtocolError, ref: Any = None) -> bytes:
    """Frame ``error`` as an ``error`` message answering the message whose ``ref`` is given."""
    return encode(error.as_message(ref))


class JsonDecoder:
    """Splits a byte stream into frame bodies.

    ``receive(data)`` returns the events ``data`` completes, in order: the
    bodies, and after them, if the stream broke, the :class:`ProtocolError`
    (``bad_header`` or ``frame_too_large``) as the last event. A framing error
    stops the decoder: every later call returns nothing, and :attr:`error` keeps
    the error. ``frame_too_large`` is reported as soon as the header is read, so
    the body is never buffered. ``feed(data)`` gives the bodies alone.
    """

    __slots__ = ("_buf", "_need", "error", "max_frame")

    def __init__(self, max_frame: int = DEFAULT_MAX_FRAME) -> None:
        self.max_frame = max_frame
        self._buf = bytearray()
        # Length of the body being awaited, or -1 while reading a header.
        self._need = -1
        self.error: ProtocolError | None = None

    @property
    def buffered(self) -> int:
        """Bytes held while waiting for the rest of a frame."""
        return len(self._buf)

    def release(self) -> None:
        """Drop the partial frame held, at once (its session has ended)."""
        self._buf = bytearray()
        self._need = -1

    def feed(self, data: bytes) -> list[bytearray]:
        """Like :meth:`receive`, without the error event: the bodies alone (the
        error, if any, is in :attr:`error`)."""
        out = self.receive(data)
        if out and isinstance(out[-1], ProtocolError):
            out.pop()
        return cast("list[bytearray]", out)  # the one error event is gone

    def receive(self, data: bytes) -> list[bytearray | ProtocolError]:
        """Take the next bytes of the stream; return the bodies they complete,
        then the framing error if the stream broke."""
        if self.error is not None:
            return []
        buf = self._buf
        buf += data
        out: list[bytearray | ProtocolError] = []
        off = 0
        n = len(buf)
        need = self._need
        while True:
            if need < 0:
                nl = buf.find(b"\n", off, off + MAX_HEADER_DIGITS + 1)
                if nl < 0:
                    if n - off > MAX_HEADER_DIGITS:
                        self._fail(
                            ProtocolError("bad_header", "Frame header is longer than 10 digits")
                        )
                        break
                    # A partial header must be digits so far: fail fast on garbage.
                    if n > off and not buf[off:n].isdigit():
                        self._fail(ProtocolError("bad_header", "Frame header must be ASCII digits"))
                    break
                header = buf[off:nl]
                if not header.isdigit():
                    self._fail(
                        ProtocolError(
                            "bad_header",
                            "Empty frame header"
                            if not header
                            else "Frame header must be ASCII digits",
                        )
                    )
                    break
                need = int(header)
                if need > self.max_frame:
                    self._fail(
                        ProtocolError(
                            "frame_too_large",
                            f"Frame of {need} bytes exceeds the maximum of {self.max_frame}",
                        )
                    )
                    break
                off = nl + 1
            end = off + need
            if end > n:
                break
            # One copy; orjson reads a bytearray as well as bytes.
            out.append(buf[off:end])
            off = end
            need = -1
        if self.error is not None:
            out.append(self.error)
            return out
        self._need = need
        if off:
            del buf[:off]
        return out

    def _fail(self, error: ProtocolError) -> None:
        self.error = error
        self._buf = bytearray()
        self._need = -1

    @staticmethod
    def first_frame(
        buf: bytes | bytearray, max_frame: int
    ) -> tuple[int, int] | ProtocolError | None:
        """Where the first frame's body lies in ``buf``: ``(start, end)``; the
        framing error :meth:`receive` would report; or None while incomplete.

        For a reader that must stop after one frame and hand the bytes after it
        to a decoder of its own (the auth gate, PROTOCOL.md section 8); the same
        rules as :meth:`receive`, which keeps them inline for speed.
        """
        nl = buf.find(b"\n", 0, MAX_HEADER_DIGITS + 1)
        if nl < 0:
            if len(buf) > MAX_HEADER_DIGITS:
                return ProtocolError("bad_header", "Frame header is longer than 10 digits")
            if buf and not buf.isdigit():
                return ProtocolError("bad_header", "Frame header must be ASCII digits")
            return None
        header = buf[:nl]
        if not header.isdigit():
            why = "Empty frame header" if not header else "Frame header must be ASCII digits"
            return ProtocolError("bad_header", why)
        need = int(header)
        if need > max_frame:
            return ProtocolError(
                "frame_too_large", f"Frame of {need} bytes exceeds the maximum of {max_frame}"
            )
        end = nl + 1 + need
        return (nl + 1, end) if len(buf) >= end else None


def parse_message(body: bytes | bytearray) -> tuple[dict[str, Any], str, Any]:
    """Decode one frame body into a client message: ``(message, type, ref)``.

    ``ref`` is ``None`` when the message has none. Raises :class:`ProtocolError`
    ``bad_json`` when the body is not UTF-8 JSON, and ``bad_message`` when it is
    not an object, its ``ref`` is neither a string of at most 64 characters nor
    an integer, or it has no string ``type`` (that error carries the message's
    ``ref``). Whether the type exists is up to the session.
    """
    try:
        msg = _loads(body)
    except _JSONDecodeError:
        raise bad_json() from None
    if type(msg) is not dict:
        raise ProtocolError("bad_message", "A message must be a JSON object")
    ref = msg.get("ref")
    # An explicit null ref is as wrong as a float one.
    if (ref is not None or "ref" in msg) and not is_ref(ref):
        raise ProtocolError(
            "bad_message", "ref must be a string of at most 64 characters or an integer"
        )
    kind = msg.get("type")
    if type(kind) is not str:
        if ref is None:
            raise ProtocolError("bad_message", "A message needs a string type")
        raise ProtocolError("bad_message", "A message needs a string type", ref=ref)
    return msg, kind, ref
