"""The first message of a session when authentication is on (PROTOCOL.md section 8).

An :class:`AuthGate` stands between the connection and its session until the
session has authenticated: it cuts the first message out of the byte stream in
the session's own framing, checks the token, answers, and then steps aside, so
the session's own reader gets every later byte and the hot path has no check
at all. A framing error in the first message is left to the session, which
handles it as usual.
"""

from __future__ import annotations

import asyncio
import struct
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import orjson

from ..protocols import binary as b
from ..protocols import mux as m
from ..protocols.errors import ProtocolError
from ..protocols.json import MAX_HEADER_DIGITS, encode, encode_error
from .session import REFUSED_REASON, CloseReason

if TYPE_CHECKING:
    from .session import Session

# What a parser found in the bytes so far: None (need more), PASS (a framing
# error: the session's own decoder reports it), or the first message as
# (token or None when it was not an auth message, ref, bytes after it).
PASS = "pass"
First = tuple[bytes | None, Any, bytes]
Parsed = First | str | None

_BIN_HEADER = struct.Struct(">HIH")
_MUX_HEADER = struct.Struct(">II")
_AUTH_LINE = b"AUTH "


def _ref(msg: dict[str, Any]) -> Any:
    ref = msg.get("ref")
    return ref if (type(ref) is str and len(ref) <= 64) or type(ref) is int else None


def _auth_object(body: bytes | bytearray, rest: bytes) -> First:
    try:
        msg = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None, None, rest
    if type(msg) is not dict:
        return None, None, rest
    ref = _ref(msg)
    if msg.get("type") != "auth":
        return None, ref, rest
    token = msg.get("token")
    return (token.encode() if type(token) is str else b""), ref, rest


def parse_json(buf: bytearray, limit: int) -> Parsed:
    nl = buf.find(b"\n", 0, MAX_HEADER_DIGITS + 1)
    if nl < 0:
        return None if len(buf) <= MAX_HEADER_DIGITS and buf.isdigit() else PASS
    header = buf[:nl]
    if not header.isdigit() or int(header) > limit:
        return PASS
    end = nl + 1 + int(header)
    if len(buf) < end:
        return None
    return _auth_object(buf[nl + 1 : end], bytes(buf[end:]))


def parse_binary(buf: bytearray, limit: int) -> Parsed:
    if len(buf) < _BIN_HEADER.size:
        return None
    kind, length, _flags = _BIN_HEADER.unpack_from(buf)
    if length > limit:
        return PASS
    end = _BIN_HEADER.size + length
    if len(buf) < end:
        return None
    rest = bytes(buf[end:])
    return (bytes(buf[_BIN_HEADER.size : end]) if kind == b.AUTH else None), None, rest


def parse_mux(buf: bytearray, limit: int) -> Parsed:
    if len(buf) < _MUX_HEADER.size:
        return None
    sid, length = _MUX_HEADER.unpack_from(buf)
    if length > limit:
        return PASS
    end = _MUX_HEADER.size + length
    if len(buf) < end:
        return None
    rest = bytes(buf[end:])
    if sid != m.CONTROL_STREAM:
        return None, None, rest
    return _auth_object(buf[_MUX_HEADER.size : end], rest)


def parse_echo(buf: bytearray, limit: int) -> Parsed:
    nl = buf.find(b"\n")
    if nl < 0:
        return PASS if len(buf) > limit else None
    if nl > limit:
        return PASS
    line = bytes(buf[:nl])
    rest = bytes(buf[nl + 1 :])
    if not line.startswith(_AUTH_LINE):
        return None, None, rest
    token = line[len(_AUTH_LINE) :]
    # Telnet ends lines with \r\n; a token never holds whitespace, so the \r is not its.
    return (token[:-1] if token.endswith(b"\r") else token), None, rest


def _json_reply(user: str, ref: Any) -> bytes:
    msg: dict[str, Any] = {"type": "authenticated", "user": user}
    if ref is not None:
        msg["ref"] = ref
    return encode(msg)


def _json_error(code: str, text: str, ref: Any) -> bytes:
    return encode_error(ProtocolError(code, text), ref)


def _mux_reply(user: str, ref: Any) -> bytes:
    msg: dict[str, Any] = {"type": "authenticated", "user": user}
    if ref is not None:
        msg["ref"] = ref
    return m.encode_control(msg)


def _mux_error(code: str, text: str, ref: Any) -> bytes:
    return m.encode_control(ProtocolError(code, text).as_message(ref))


# protocol -> (parser, limit setting, success frame, error frame or None)
Reply = Callable[[str, Any], bytes]
ErrorReply = Callable[[str, str, Any], bytes]
PROTOCOLS: dict[str, tuple[Callable[[bytearray, int], Parsed], str, Reply, ErrorReply | None]] = {
    "json": (parse_json, "max_frame", _json_reply, _json_error),
    "binary": (
        parse_binary,
        "max_frame",
        lambda user, ref: b.encode_frame(b.AUTH_OK, orjson.dumps({"user": user})),
        lambda code, text, ref: b.encode_error(ProtocolError(code, text)),
    ),
    "mux": (parse_mux, "max_frame", _mux_reply, _mux_error),
    # echo answers a failure with its closing line only.
    "echo": (parse_echo, "max_line", lambda user, ref: b"OK %s\n" % user.encode(), None),
}

MESSAGES = {
    "auth_failed": "Authentication failed",
    "auth_required": "Authenticate first",
}


class AuthGate:
    """Reads a session's first message; the session's own reader takes over after it."""

    __slots__ = ("_buf", "_timer", "session")

    def __init__(self, session: Session) -> None:
        self.session = session
        self._buf = bytearray()
        self._timer: asyncio.TimerHandle | None = None
        timeout = session.hub.settings.handshake_timeout
        if timeout > 0:
            # The handshake timeout runs from the connect.
            left = max(0.0, timeout - (time.time() - session.connected_at))
            self._timer = asyncio.get_running_loop().call_later(left, self._expired)
            # A client gone before authenticating must not be kept until the timer fires.
            outlet: Any = session.outlet
            outlet.on("close", lambda _had_error: self._stop_timer())

    def _expired(self) -> None:
        self._timer = None
        s = self.session
        if s.user is None and not s.closing:
            s.hub.auth_failures.counts["auth_timeout"] += 1
            s.close(CloseReason.AUTH_TIMEOUT)

    def _stop_timer(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def feed(self, data: bytes) -> None:
        s = self.session
        if s.closing:
            self._stop_timer()
            return
        buf = self._buf
        buf += data
        parse, limit_name, reply, error = PROTOCOLS[s.protocol]
        found = parse(buf, getattr(s.hub.settings, limit_name))
        if found is None:
            return
        self._buf = bytearray()
        if isinstance(found, str):  # PASS
            self._step_aside(bytes(buf))
            return
        token, ref, rest = found
        hub = s.hub
        user = hub.auth.check(token) if token is not None and hub.auth is not None else None
        if user is None:
            self._stop_timer()
            code = "auth_required" if token is None else "auth_failed"
            hub.auth_failures.counts[code] += 1
            if token is not None:
                hub.auth_failures.record(s.address)
            if error is not None:
                s.deliver(error(code, MESSAGES[code], ref))
            hub.event("auth", f"{s.id}: {code}")
            s.close(CloseReason.AUTH_FAILED, detail=code)
            return
        refused = hub.permissions.admit(s, user)
        if refused is not None:
            # Section 12: banned, or at max_sessions; not a brute-force failure.
            self._stop_timer()
            code, text = refused
            if error is not None:
                s.deliver(error(code, text, ref))
            hub.event("auth", f"{s.id}: {code} ({user})")
            s.close(REFUSED_REASON[code], detail=code)
            return
        s.user = user
        hub.event("auth", f"{s.id} authenticated as {user}")
        s.deliver(reply(user, ref))
        self._step_aside(rest)

    def _step_aside(self, rest: bytes) -> None:
        """The session's own reader takes every later byte."""
        self._stop_timer()
        s = self.session
        outlet: Any = s.outlet
        outlet.off("data", self.feed)
        outlet.on("data", s.feed)
        if rest:
            s.feed(rest)

    def cancel(self) -> None:
        self._stop_timer()
