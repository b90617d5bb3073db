"""Sessions: one per TCP connection, or per stream of a mux connection."""

from __future__ import annotations

import asyncio
import enum
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from ..settings import Settings
from .auth import AuthFailures, AuthFile
from .bus import Bus
from .order import Changes
from .pacer import Pacer
from .permissions import Guard, Permissions
from .rooms import RoomRegistry
from .session_view import SessionView
from .snapshot import Stats
from .tap import Tap

if TYPE_CHECKING:
    from .seq import SeqDelivery

# A session closed on purpose gets this long to flush its last bytes (the
# ``closing`` message) before it is cut off: a client that never reads must not
# keep a closed session alive.
CLOSE_FLUSH_S = 2.0


class CloseReason(enum.StrEnum):
    """Why a session ended, as the operator sees it."""

    CLIENT_CLOSED = "client_closed"
    OPERATOR = "operator"
    IDLE_TIMEOUT = "idle_timeout"
    SLOW_CONSUMER = "slow_consumer"
    FRAME_TOO_LARGE = "frame_too_large"
    PROTOCOL_ERROR = "protocol_error"
    SHUTDOWN = "shutdown"
    THROTTLED = "throttled"
    OVER_MAX_CONNECTIONS = "over_max_connections"
    HANDSHAKE_TIMEOUT = "handshake_timeout"
    CONNECTION_ERROR = "connection_error"
    TLS_ERROR = "tls_error"
    AUTH_FAILED = "auth_failed"
    AUTH_TIMEOUT = "auth_timeout"
    AUTH_BLOCKED = "auth_blocked"  # refused at accept after too many wrong tokens
    DETACHED_TIMEOUT = "detached_timeout"  # a detached session nobody resumed in the window
    RESUMED = "resumed"  # a connection's own session, replaced by the one it resumed
    TOO_MANY_SESSIONS = "too_many_sessions"  # its user is at max_sessions (section 12.1)
    AUTH_REVOKED = "auth_revoked"  # its user's last token was removed (section 12.2)
    BANNED = "banned"  # its address or user is banned (section 12.3)


# The ``reason`` of the ``closing`` message a client receives (PROTOCOL.md section 6).
WIRE_REASON: dict[str, str] = {
    CloseReason.OPERATOR: "operator",
    CloseReason.IDLE_TIMEOUT: "idle_timeout",
    CloseReason.SHUTDOWN: "shutdown",
    CloseReason.PROTOCOL_ERROR: "protocol_error",
    CloseReason.FRAME_TOO_LARGE: "protocol_error",
    CloseReason.AUTH_FAILED: "auth_failed",
    CloseReason.AUTH_TIMEOUT: "auth_timeout",
    CloseReason.TOO_MANY_SESSIONS: "auth_failed",
    CloseReason.AUTH_REVOKED: "auth_revoked",
    CloseReason.BANNED: "banned",
}

# Why a session is closed when its user is refused (PROTOCOL.md 12.1, 12.3), by error code.
REFUSED_REASON: dict[str, CloseReason] = {
    "banned": CloseReason.BANNED,
    "too_many_sessions": CloseReason.TOO_MANY_SESSIONS,
}


class Outlet(Protocol):
    """Where a session's bytes go: a TCPSocket, or one stream of a mux connection.

    ``hold(token)`` pauses reading until every holder has called ``release``
    (an upload whose disk backlog is high holds its session's outlet).
    """

    # Counted by ``write``, and by a fan-out that writes through ``wire``.
    bytes_written: int

    @property
    def bytes_read(self) -> int: ...

    @property
    def wire(self) -> Callable[[bytes], object] | None:
        """Where bytes can be written as they are, skipping ``write`` (a plain TCP
        connection's transport), or None: a fan-out then calls ``write``."""
        ...

    @property
    def congested(self) -> bool: ...

    @property
    def last_received(self) -> float: ...

    @property
    def unsent(self) -> int: ...

    @property
    def destroyed(self) -> bool: ...

    def write(self, data: bytes) -> bool: ...

    def end(self) -> None: ...

    def destroy(self) -> None: ...

    def hold(self, token: object) -> None: ...

    def release(self, token: object) -> None: ...


@runtime_checkable
class EventOutlet(Outlet, Protocol):
    """An outlet that hands its received bytes to ``data`` listeners (a TCP
    connection), so the session reading it can be replaced: what an ``auto``
    connection needs once its protocol is detected. A mux stream's session is
    fed by its connection instead, and is opened with its protocol known."""

    def on(self, event: str, listener: Callable[..., Any]) -> object: ...

    def off(self, event: str, listener: Callable[..., Any]) -> object: ...


class Resumer(Protocol):
    """Session resume as a session uses it (:class:`.resume.ResumeManager`)."""

    def new_token(self) -> str: ...

    def resume(self, fresh: Any, msg: dict[str, Any]) -> Any:
        """Plug ``fresh``'s connection into the session ``msg`` names; returns it."""
        ...

    def overflowed(self, session: Any) -> None: ...


class InputMeter:
    """Bytes of partial frames every connection of the server holds together
    (``max_input_total`` bounds them); each session charges its own share."""

    __slots__ = ("held",)

    def __init__(self) -> None:
        self.held = 0


class SessionHost(Protocol):
    """What a session may use of the server that runs it, and nothing more.

    The hub implements it; sessions never import the hub. Settings, the one
    stats object (counted in place on the hot path), the rooms, the registry
    of sessions (json sessions by id, and the three ways a session comes and
    goes), the cluster bus if any, and the event log. The upload store is the
    upload front ends' business (``uploads.front.UploadHost``), not a session's.
    """

    @property
    def settings(self) -> Settings: ...

    @property
    def stats(self) -> Stats: ...

    @property
    def rooms(self) -> RoomRegistry: ...

    @property
    def json_sessions(self) -> dict[str, Session]: ...

    @property
    def pacer(self) -> Pacer:
        """Every loop turn's budget of message work, and its run queue (see .pacer)."""
        ...

    @property
    def changes(self) -> Changes[Session]: ...  # where sessions note moves (see .order)

    @property
    def input(self) -> InputMeter:
        """The partial input all connections hold (see :meth:`Session.charge_input`)."""
        ...

    @property
    def auth(self) -> AuthFile | None:
        """The tokens (PROTOCOL.md section 8), or None when authentication is off."""
        ...

    @property
    def auth_failures(self) -> AuthFailures: ...

    @property
    def permissions(self) -> Permissions:
        """Who may do what (PROTOCOL.md section 12)."""
        ...

    @property
    def bus(self) -> Bus | None:
        """The cluster bus, when this server is one node of a cluster."""
        ...

    @property
    def node(self) -> str: ...

    @property
    def shared_history(self) -> Any:
        """Room history kept by the cluster (.shared_history.SharedHistory), or None."""
        ...

    @property
    def tap(self) -> Tap | None:
        """The message tap while someone watches it, else None (see :mod:`.tap`)."""
        ...

    @property
    def resume(self) -> Resumer | None:
        """Session resume (PROTOCOL.md section 11.1), or None when it is off."""
        ...

    @property
    def seq(self) -> SeqDelivery | None:
        """Delivery with ``seq`` (PROTOCOL.md 11.1), or None when resume is off."""
        ...

    @property
    def id_suffix(self) -> str:
        """``@<node>`` on every session id in a cluster, else empty."""
        ...

    def open_session(
        self, kind: str, outlet: Outlet, session_id: str, address: str, port: int, parent: str
    ) -> Session:
        """Make, register and return a session of ``kind`` (a mux stream's); not started."""
        ...

    def hand_over(self, old: Session, kind: str, first_bytes: bytes) -> Session:
        """Replace a detecting session by one of the detected protocol."""
        ...

    def end_session(self, session: Session, reason: str) -> None:
        """Release what a finished session held and remember why it ended."""
        ...

    def event(self, kind: str, text: str) -> None:
        """One line of the event log."""
        ...


class Session:
    """What every protocol's session shares: identity, figures, output and closing."""

    protocol = "unknown"
    # Whether operator broadcasts and shutdown notices are sent to it (not to a mux
    # connection itself, nor to a connection whose protocol is not known yet).
    accepts_notices = True

    __slots__ = (
        "__weakref__",
        "_flush_timer",
        "_input",
        "_out",
        "_view",
        "address",
        "close_detail",
        "close_reason",
        "closing",
        "connected_at",
        "final",
        "guard",
        "hub",
        "id",
        "msgs_in",
        "msgs_out",
        "outlet",
        "parent",
        "port",
        "rooms",
        "stats",
        "touched",
        "user",
    )

    def __init__(
        self,
        hub: SessionHost,
        outlet: Outlet,
        session_id: str,
        address: str,
        port: int,
        parent: str | None = None,
    ) -> None:
        self.hub = hub
        self.stats = hub.stats
        self.touched = False  # noted on the hub's changes since a console looked (.order)
        self.outlet = outlet
        self.id = session_id
        self.address = address
        self.port = port
        self.parent = parent
        self.connected_at = time.time()
        self.msgs_in = 0
        self.msgs_out = 0
        self.rooms: set[str] = set()
        self.closing = False
        self.close_reason: str | None = None
        self.close_detail = ""
        # Ended for good by its client (``bye``, a mux ``stream_close``): never detached.
        self.final = False
        # The authenticated user (a token's name, or a client certificate's common name).
        self.user: str | None = None
        # Its user's rules while a policy is on (PROTOCOL.md 12.1; see .permissions).
        self.guard: Guard | None = None
        # Replies to this session's own messages, batched into one write per read.
        self._out: list[bytes] | None = None
        self._flush_timer: asyncio.TimerHandle | None = None
        # Bytes of partial frames this connection has charged to the hub's InputMeter.
        self._input = 0
        # The session and its view refer to each other until the session ends;
        # ``closed`` drops the session's side, so that nothing but a collection
        # could otherwise free an ended session (and the buffers it holds).
        self._view: SessionView | None = SessionView(self)
        self.setup()

    @property
    def view(self) -> SessionView:
        """The console's live view of this session (one per session while it lives)."""
        view = self._view
        return view if view is not None else SessionView(self)

    # ----------------------------------------------------------- protocol hooks
    def setup(self) -> None:
        """Make the protocol's own state (its decoder...); called by ``__init__``."""

    def start(self) -> None:
        """Send the protocol's greeting, if it has one."""

    def feed(self, data: bytes) -> None:  # pragma: no cover - every protocol overrides
        raise NotImplementedError

    def release_input(self) -> None:
        """Drop the partial frame the protocol's decoder holds: an ended session reads no more."""
        decoder = getattr(self, "decoder", None)
        if decoder is not None:
            decoder.release()
        if self._input:
            self.hub.input.held -= self._input
            self._input = 0

    def charge_input(self, held: int, own: int = -1) -> str | None:
        """This TCP connection now holds ``held`` bytes of partial frames: charge
        them to the server's total. When they grew and ``own`` (the part its own
        limit bounds; all of them unless given) is past ``max_input_per_connection``
        or the total past ``max_input_total``, returns why (the caller ends what
        grew with ``frame_too_large``), else None."""
        meter = self.hub.input
        grew = held - self._input
        meter.held += grew
        self._input = held
        if grew <= 0:
            return None
        settings = self.hub.settings
        if (held if own < 0 else own) > settings.max_input_per_connection:
            limit = settings.max_input_per_connection
            return f"Partial frames of this connection exceed {limit} bytes"
        if meter.held > settings.max_input_total:
            limit = settings.max_input_total
            return f"Partial frames of all connections exceed the server's {limit} bytes"
        return None

    def encode_notice(self, message: dict[str, Any]) -> bytes:  # pragma: no cover
        """A server-initiated message (section 6) in this session's own protocol."""
        raise NotImplementedError

    # ----------------------------------------------------------- output
    def deliver(self, frame: bytes) -> None:
        """Send one already-encoded frame to this session."""
        if self.closing:
            return
        out = self._out
        if out is not None:
            out.append(frame)
            return
        self.msgs_out += 1
        self.hub.changes.mark(self)
        stats = self.stats
        stats.msgs_out += 1
        stats.bytes_out += len(frame)
        outlet = self.outlet
        outlet.write(frame)
        if outlet.congested:
            self.check_pending()

    def flush(self) -> None:
        """Write the replies batched while handling one read."""
        out = self._out
        self._out = None
        if not out or self.closing:
            return
        self.msgs_out += len(out)
        self.hub.changes.mark(self)
        data = out[0] if len(out) == 1 else b"".join(out)
        stats = self.stats
        stats.msgs_out += len(out)
        stats.bytes_out += len(data)
        outlet = self.outlet
        outlet.write(data)
        if outlet.congested:
            self.check_pending()

    def check_pending(self) -> None:
        """Close this session as a slow consumer if its unsent output is over the limit."""
        if self.outlet.unsent > self.hub.settings.max_pending and not self.closing:
            self.stats.slow_consumers += 1
            self.close(CloseReason.SLOW_CONSUMER, notify=False, flush=False)

    def notify(self, message: dict[str, Any]) -> None:
        """Send a server-initiated message (broadcast, shutdown notice) in this protocol's form."""
        if self.closing:
            return
        frame = self.encode_notice(message)
        self.flush()
        self.deliver(frame)

    # ----------------------------------------------------------- closing
    def close(
        self, reason: str, *, notify: bool = True, flush: bool = True, detail: str = ""
    ) -> None:
        """End the session on purpose; ``closing`` is sent first for the wire reasons."""
        if self.closing:
            return
        wire = WIRE_REASON.get(reason) if notify else None
        if wire is not None:
            self.notify({"type": "closing", "reason": wire})
        self.flush()
        self.closing = True
        self.close_reason = reason
        self.close_detail = detail
        # Nothing more is read: a partial frame is dropped now, not when the
        # last bytes out have been flushed.
        self.release_input()
        if flush:
            self.outlet.end()
            if not self.outlet.destroyed:
                loop = asyncio.get_running_loop()
                self._flush_timer = loop.call_later(CLOSE_FLUSH_S, self.outlet.destroy)
        else:
            self.outlet.destroy()

    def closed(self) -> None:
        """The transport is gone: release everything this session held."""
        if self._flush_timer is not None:
            self._flush_timer.cancel()
            self._flush_timer = None
        self.closing = True
        self._out = None
        self.release_input()
        self._view = None
