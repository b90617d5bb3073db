"""Sans-IO reading and answering of a session's first message when authentication is
on (PROTOCOL.md section 8), in each of the four framings.

:class:`FirstMessage` takes bytes in whatever pieces TCP hands them over, and
says when the first message is complete: an :class:`Opening` (the token, if it
was an ``auth`` message, its ``ref``, and the bytes after it, untouched, for
the session's own decoder), or :class:`Unframed` when the bytes break the
framing (every byte held goes to the session's decoder, which reports the error
as it always does). The framing rules are the codecs' own
(``first_frame``/``first_line``); nothing here touches a socket or a clock.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import orjson

from . import binary, mux
from .echo import EchoDecoder
from .errors import ProtocolError
from .json import JsonDecoder, encode, encode_error, is_ref

__all__ = [
    "AUTH_PROTOCOLS",
    "FirstMessage",
    "Opening",
    "Unframed",
    "encode_auth_error",
    "encode_authenticated",
]

#: The protocols whose sessions authenticate with a first message ("auto" hands
#: over to one of them first).
AUTH_PROTOCOLS = frozenset({"json", "binary", "mux", "echo"})

_AUTH_LINE = b"AUTH "


class Opening(NamedTuple):
    """A complete first message."""

    token: bytes | None  # None: it was not an auth message (auth_required)
    ref: Any  # the ``ref`` to answer with (json and mux), or None
    rest: bytes  # the bytes received after it


class Unframed(NamedTuple):
    """The first bytes break the framing: the session's own decoder gets ``data``."""

    data: bytes


def _auth_object(body: bytes | bytearray) -> tuple[bytes | None, Any]:
    """``(token, ref)`` of a JSON body: the token None when it is not an auth message."""
    try:
        msg = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None, None
    if type(msg) is not dict:
        return None, None
    ref = msg.get("ref")
    ref = ref if is_ref(ref) else None
    if msg.get("type") != "auth":
        return None, ref
    token = msg.get("token")
    return (token.encode() if type(token) is str else b""), ref


class FirstMessage:
    """Reads the first message of a ``json``, ``binary``, ``mux`` or ``echo`` session.

    ``receive(data)`` returns None until the first message is complete, then an
    :class:`Opening` or :class:`Unframed`, once; ``limit`` is the session's frame
    limit (its line limit for echo).
    """

    __slots__ = ("_buf", "limit", "protocol")

    def __init__(self, protocol: str, limit: int) -> None:
        if protocol not in AUTH_PROTOCOLS:
            raise ValueError(f"no first message to read for protocol {protocol!r}")
        self.protocol = protocol
        self.limit = limit
        self._buf = bytearray()

    @property
    def buffered(self) -> int:
        """Bytes held while the first message is incomplete."""
        return len(self._buf)

    def receive(self, data: bytes) -> Opening | Unframed | None:
        buf = self._buf
        buf += data
        found = self._find(buf)
        if found is not None:
            self._buf = bytearray()
        return found

    def _find(self, buf: bytearray) -> Opening | Unframed | None:
        protocol = self.protocol
        if protocol == "echo":
            nl = EchoDecoder.first_line(buf, self.limit)
            if nl is None or isinstance(nl, ProtocolError):
                return None if nl is None else Unframed(bytes(buf))
            line, rest = bytes(buf[:nl]), bytes(buf[nl + 1 :])
            if not line.startswith(_AUTH_LINE):
                return Opening(None, None, rest)
            token = line[len(_AUTH_LINE) :]
            # Telnet ends lines with \r\n; a token never holds whitespace, so the \r is not its.
            return Opening(token[:-1] if token.endswith(b"\r") else token, None, rest)
        if protocol == "json":
            bounds = JsonDecoder.first_frame(buf, self.limit)
            if bounds is None or isinstance(bounds, ProtocolError):
                return None if bounds is None else Unframed(bytes(buf))
            start, end = bounds
            return Opening(*_auth_object(buf[start:end]), bytes(buf[end:]))
        decoder = binary.BinaryDecoder if protocol == "binary" else mux.MuxDecoder
        frame = decoder.first_frame(buf, self.limit)
        if frame is None or isinstance(frame, ProtocolError):
            return None if frame is None else Unframed(bytes(buf))
        head, start, end = frame
        rest = bytes(buf[end:])
        if protocol == "binary":
            auth = head[0] == binary.AUTH
            return Opening(bytes(buf[start:end]) if auth else None, None, rest)
        if head[0] != mux.CONTROL_STREAM:
            return Opening(None, None, rest)
        return Opening(*_auth_object(buf[start:end]), rest)


def encode_authenticated(protocol: str, user: str, ref: Any = None) -> bytes:
    """The success reply of section 8, in ``protocol``'s form."""
    if protocol == "binary":
        return binary.encode_frame(binary.AUTH_OK, orjson.dumps({"user": user}))
    if protocol == "echo":
        return b"OK %s\n" % user.encode()
    msg: dict[str, Any] = {"type": "authenticated", "user": user}
    if ref is not None:
        msg["ref"] = ref
    return mux.encode_control(msg) if protocol == "mux" else encode(msg)


def encode_auth_error(protocol: str, error: ProtocolError, ref: Any = None) -> bytes | None:
    """The ``auth_failed``/``auth_required`` error of section 8 in ``protocol``'s
    form; None for echo, which answers a failure with its closing line only."""
    if protocol == "binary":
        return binary.encode_error(error)
    if protocol == "mux":
        return mux.encode_control(error.as_message(ref))
    if protocol == "json":
        return encode_error(error, ref)
    return None
