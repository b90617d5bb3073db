"""The first message of a session when authentication is on (PROTOCOL.md section 8).

An :class:`AuthGate` stands between the connection and its session until the
session has authenticated: the codec's :class:`~verb_console.protocols.auth.FirstMessage`
says when the first message is complete and what it holds; the gate checks the
token, answers, and then steps aside, so the session's own reader gets every
later byte and the hot path has no check at all. A framing error in the first
message is left to the session, which handles it as usual. The gate never
reads a byte itself: framing is the codecs' job.
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, Any

from ..protocols.auth import (
    AUTH_PROTOCOLS,
    FirstMessage,
    Unframed,
    encode_auth_error,
    encode_authenticated,
)
from ..protocols.errors import ProtocolError
from .session import REFUSED_REASON, CloseReason

if TYPE_CHECKING:
    from .session import Session

__all__ = ["AUTH_PROTOCOLS", "MESSAGES", "AuthGate"]

MESSAGES = {
    "auth_failed": "Authentication failed",
    "auth_required": "Authenticate first",
}


class AuthGate:
    """Reads a session's first message; the session's own reader takes over after it."""

    __slots__ = ("_first", "_timer", "session")

    def __init__(self, session: Session) -> None:
        self.session = session
        settings = session.hub.settings
        limit = settings.max_line if session.protocol == "echo" else settings.max_frame
        self._first = FirstMessage(session.protocol, limit)
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
        found = self._first.receive(data)
        if found is None:
            return
        if isinstance(found, Unframed):
            # A framing error: the session's own decoder reports it, as always.
            self._step_aside(found.data)
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
            error = encode_auth_error(s.protocol, ProtocolError(code, MESSAGES[code]), ref)
            if error is not None:
                s.deliver(error)
            hub.event("auth", f"{s.id}: {code}")
            s.close(CloseReason.AUTH_FAILED, detail=code)
            return
        refused = hub.permissions.admit(s, user)
        if refused is not None:
            # Section 12: banned, or at max_sessions; not a brute-force failure.
            self._stop_timer()
            code, text = refused
            error = encode_auth_error(s.protocol, ProtocolError(code, text), ref)
            if error is not None:
                s.deliver(error)
            hub.event("auth", f"{s.id}: {code} ({user})")
            s.close(REFUSED_REASON[code], detail=code)
            return
        s.user = user
        hub.event("auth", f"{s.id} authenticated as {user}")
        s.deliver(encode_authenticated(s.protocol, user, ref))
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
