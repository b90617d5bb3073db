"""The message server: session registry, accept and close, delivery from other nodes, figures.

Composed of parts that each own their job and state: the operator's actions
(:class:`~.operator.Operator`), the graceful shutdown (:class:`~.shutdown.Shutdown`),
the log, rooms, throttle and figures; the hub's methods for them are the one-line
entry points the admin socket, the console's view and the cluster call.
"""

from __future__ import annotations

import asyncio
import dataclasses
import errno
import logging
import time
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from .. import __version__
from ..address import host_port
from ..settings import Settings
from .auth import AuthFailures, AuthFile
from .auth_gate import AUTH_PROTOCOLS, AuthGate
from .banning import Banning
from .bus import Bus
from .ended import Ended
from .history import TrafficHistory, Watches
from .inbound import Inbound
from .kinds import session_kinds
from .log import EventLog
from .operator import Operator
from .order import Changes
from .pacer import Pacer
from .permissions import Permissions
from .resume import every_second, install_resume
from .rooms import RoomRegistry
from .session import (
    REFUSED_REASON,
    CloseReason,
    EventOutlet,
    InputMeter,
    Outlet,
    Session,
)
from .session_view import refresh_wall_offset
from .shared_history import SharedHistory
from .shutdown import Shutdown
from .snapshot import (
    ClosedSessionInfo,
    ClusterInfo,
    HubState,
    LogEvent,
    MuxConnectionInfo,
    Overview,
    Refusals,
    RoomInfo,
    Stats,
    ThrottleInfo,
    TransferInfo,
)
from .tap import Tap, TapSwitch
from .throttle import Throttle
from .turns import TurnClock
from .uploads import UploadStore

if TYPE_CHECKING:
    from ..net.socket import TCPSocket

log = logging.getLogger("verb_console.hub")

ORDINARY_DISCONNECTS = (ConnectionResetError, BrokenPipeError, ConnectionAbortedError)
"""How clients usually leave without a goodbye; not logged as errors."""
_DISCONNECT_DETAIL = {
    ConnectionResetError: "reset by the peer",
    BrokenPipeError: "broken pipe: the peer went away",
    ConnectionAbortedError: "aborted",
}
CLOSED_KEPT = 1000


class Hub:
    """Everything the server knows; the :class:`~.session.SessionHost` of its sessions.

    Built whole: the upload store (None: uploads are off) is given here, and a
    listener is added with :meth:`listening`. The console reads it through
    :class:`~.view.LiveHubView`.
    """

    def __init__(
        self, settings: Settings | None = None, uploads: UploadStore | None = None
    ) -> None:
        self.settings = settings or Settings()
        self.uploads = uploads
        self.connections: dict[str, Session] = {}  # one per TCP connection
        self.sessions: dict[str, Session] = {}  # every session, mux streams included
        # Bumped whenever ``sessions`` gains, loses or replaces a session, so a
        # reader can keep an order of them between samples (hub/view.py does).
        self.sessions_changed = 0
        # The sessions that came, went, read or wrote since a console last looked (.order).
        self.changes: Changes[Session] = Changes()
        self.json_sessions: dict[str, Session] = {}
        self.input = InputMeter()  # partial frames held by all connections together
        self.throttle = Throttle(self.settings.max_per_ip, self.settings.throttle_window)
        # Authentication (PROTOCOL.md section 8): None is off. Replaced whole on reload.
        self.auth: AuthFile | None = None
        self.auth_failures = AuthFailures(self.settings.throttle_window)
        # Who may do what (PROTOCOL.md section 12): the policy, users' sessions, refusals.
        self.permissions = Permissions()
        self.banning = Banning(self)
        self.permissions.user_banned = self.banning.list.user_banned
        self.factories = session_kinds(with_uploads=uploads is not None)
        # Every counter of the server, once; sessions count into it directly.
        self.stats = Stats()
        # Every loop turn's budget of message work, shared by all connections.
        self.pacer = Pacer(self.stats, self.settings.turn_budget, self.settings.turn_share)
        self.rooms = RoomRegistry(self.stats, self.pacer)
        # What other nodes send this node's sessions (cluster/ calls it).
        self.inbound = Inbound(self)
        # The loop's slowest recent turns (started by the runtime).
        self.turns = TurnClock()
        self.pacer.clock = self.turns
        self.peak_sessions = 0
        # What ended sessions added up to, by reason and by protocol (kept as they end).
        self.ended = Ended()
        self.closed_log: deque[ClosedSessionInfo] = deque(maxlen=CLOSED_KEPT)
        # The server's log: ``event(kind, text)`` adds a row.
        self.log = EventLog()
        self.event = self.log.add
        self.events = self.log.events
        self.started_at = time.time()
        self.listeners: list[str] = []
        # The graceful shutdown: its state, hooks and lame-duck schedule.
        self.shutdown = Shutdown(self)
        self.operator = Operator(self)
        # The rates, now and over time (see .history), and the watched sessions' and rooms'.
        self.history = TrafficHistory()
        self.watches = Watches(self.sessions, self.rooms)
        self._ticker: asyncio.TimerHandle | None = None
        self._ticks = 0
        # The shutdown's hooks, at its very end (awaited) and when the drain begins.
        self.on_shutdown: list[Callable[[], Any]] = self.shutdown.on_shutdown
        self.on_drain: list[Callable[[], Any]] = self.shutdown.on_drain
        # One node of a cluster (PROTOCOL.md section 10): the bus to the other nodes,
        # and ``@<node>`` on every session id. None and "" on a single server.
        self.bus: Bus | None = None
        # Room history kept by the cluster (see .shared_history); None on one server.
        self.shared_history: SharedHistory | None = None
        self.node = ""
        self.id_suffix = ""
        # The message tap (see .tap): None, and so free, until a reader opens it.
        self.tap: Tap | None = None
        self.tap_switch = TapSwitch(self._install_tap)
        # Session resume and room history (PROTOCOL.md 11): resume is None while off.
        self.resume, self.seq = install_resume(self)

    def _install_tap(self, tap: Tap | None) -> None:
        self.tap = tap

    @property
    def state(self) -> HubState:
        """Serving, draining or stopped: the shutdown's state."""
        return self.shutdown.state

    @property
    def drain_deadline(self) -> float | None:
        """When the grace period ends (wall clock), while draining."""
        return self.shutdown.deadline

    def begin_shutdown(self, final: bool = False) -> None:
        """Graceful shutdown (``final``: clients are told not to come back); see Shutdown."""
        self.shutdown.begin(final=final)

    def force_shutdown(self) -> None:
        """Close every session now (a second signal, or the operator's choice)."""
        self.shutdown.force()

    async def wait_stopped(self) -> None:
        await self.shutdown.wait_stopped()

    def operator_broadcast(
        self, text: str, room: str | None = None, *, local_only: bool = False
    ) -> int:
        """The operator's broadcast; see :meth:`.operator.Operator.broadcast`."""
        return self.operator.broadcast(text, room, local_only=local_only)

    def operator_close(self, session_id: str, *, local_only: bool = False) -> bool:
        """The operator closes a session; see :meth:`.operator.Operator.close`."""
        return self.operator.close(session_id, local_only=local_only)

    def operator_close_ip(self, address: str) -> int:
        """The operator closes an address's connections; returns how many."""
        return self.operator.close_ip(address)

    def join_cluster(self, bus: Bus) -> None:
        """Become one node of a cluster; before the first session starts."""
        self.bus = bus
        # Room history in a cluster must be the same on every node: the bus keeps it.
        self.rooms.history = None
        if self.settings.history_size > 0:
            self.shared_history = SharedHistory(self)
        self.node = bus.node
        self.id_suffix = "@" + bus.node

    # ----------------------------------------------------------- lifecycle
    def start(self) -> None:
        """Start the once-a-second figures ticker on the running loop."""
        loop = asyncio.get_running_loop()
        self.history.tick(self.stats)
        self._ticker = loop.call_later(1.0, self._tick)
        self.shutdown.on_shutdown.append(self._stop_ticker)

    def _stop_ticker(self) -> None:
        if self._ticker is not None:
            self._ticker.cancel()
            self._ticker = None

    def listening(self, line: str, stop_accepting: Callable[[], None]) -> None:
        """A listener is up: ``line`` shows it; ``stop_accepting`` ends it when the drain begins."""
        self.listeners.append(line)
        self.shutdown.stop_accepting.append(stop_accepting)

    def _tick(self) -> None:
        refresh_wall_offset()
        self.history.tick(self.stats)
        self.watches.tick()
        every_second(self)
        self._ticks += 1
        if self._ticks % 10 == 0:
            self.throttle.sweep()
            self.auth_failures.sweep()
        if self.state is not HubState.STOPPED:
            self._ticker = asyncio.get_running_loop().call_later(1.0, self._tick)

    # ----------------------------------------------------------- connections
    def admit(self, ip: str, port: int) -> str | None:
        """Decide on a new TCP connection before any byte is sent: None accepts it."""
        if self.state is not HubState.RUNNING:
            reason = CloseReason.SHUTDOWN
        elif self.banning.refuses(ip):
            reason = CloseReason.BANNED
        elif self.auth_failures.blocked(ip):
            # Brute force: refused at accept, even with the per-IP throttle off.
            self.stats.rejected_auth += 1
            reason = CloseReason.AUTH_BLOCKED
        elif len(self.connections) >= self.settings.max_connections:
            self.stats.rejected_max += 1
            reason = CloseReason.OVER_MAX_CONNECTIONS
        elif not self.throttle.admit(ip):
            self.stats.rejected_throttle += 1
            reason = CloseReason.THROTTLED
            if self.throttle.worth_noting(ip):
                self.event("server", f"blocked {ip}: too many connections; new ones are refused")
        else:
            return None
        now = time.time()
        sid = host_port(ip, port)
        self.closed_log.append(ClosedSessionInfo(sid, "-", ip, port, now, now, reason))
        return reason

    def attach(self, sock: TCPSocket, protocol: str) -> Session:
        """Start a session of ``protocol`` on an accepted (admitted) connection."""
        session = self.factories[protocol](
            self, sock, sock.id + self.id_suffix, sock.remote_address, sock.remote_port
        )
        sid = session.id
        self.connections[sid] = session
        self.register(session)
        self.stats.accepted += 1
        sock.pause_reads_when_congested = True
        sock.on("close", lambda had_error: self._connection_closed(sock))
        sock.on("error", lambda exc: self._connection_error(sock, exc))
        sock.on("timeout", lambda: self._idle(sock))
        self.event(
            "connect",
            f"{sid} connected ({protocol})",
            {"id": sid, "protocol": protocol, "address": session.address, "port": session.port},
        )
        if getattr(sock, "securing", False):
            # Pinned TLS: the session starts (and greets) once the handshake is done.
            sock.on("secure", lambda: self._secured(sock, session))
        else:
            sock.on("data", self.reader(session))
            session.start()
        return session

    def _secured(self, sock: TCPSocket, session: Session) -> None:
        if session.closing:
            return
        sock.on("data", self.reader(session))
        session.start()

    def reader(self, session: Session) -> Callable[[bytes], None]:
        """What reads a connection's bytes: the session, or first its auth gate."""
        tls = getattr(session.outlet, "tls", None)
        if tls is not None and tls.peer_name is not None and session.user is None:
            # A valid client certificate authenticates as its common name.
            session.user = tls.peer_name
            self.event("auth", f"{session.id} authenticated as {session.user} (certificate)")
        if session.user is not None and session.protocol != "auto":
            refused = self.permissions.admit(session, session.user)
            if refused is not None:
                session.close(REFUSED_REASON[refused[0]], detail=refused[0])
        if self.auth is None or session.user is not None:
            return session.feed
        if session.protocol not in AUTH_PROTOCOLS:
            return session.feed  # a detecting session: its successor is gated
        return AuthGate(session).feed

    def register(self, session: Session) -> None:
        """Add a session (a connection's, or a mux stream's) to the registry."""
        self.sessions[session.id] = session
        self.sessions_changed += 1
        self.changes.mark(session)
        if len(self.sessions) > self.peak_sessions:
            self.peak_sessions = len(self.sessions)

    def open_session(
        self, kind: str, outlet: Outlet, session_id: str, address: str, port: int, parent: str
    ) -> Session:
        session = self.factories[kind](self, outlet, session_id, address, port, parent)
        self.register(session)
        return session

    def hand_over(self, old: Session, protocol: str, first_bytes: bytes) -> Session:
        """Replace a detecting session by the detected protocol's, which then starts
        exactly as on a listener pinned to it and gets the bytes received so far."""
        sock = old.outlet
        if not isinstance(sock, EventOutlet):
            raise TypeError(f"{old.id}: only an event outlet can hand its session over")
        new = self.factories[protocol](self, sock, old.id, old.address, old.port, old.parent)
        new.connected_at = old.connected_at
        new.user = old.user
        self.connections[new.id] = new
        self.sessions[new.id] = new
        self.sessions_changed += 1
        self.changes.mark(new)
        # The detecting session is done: released now, not left to a collection.
        old.closed()
        sock.off("data", old.feed)
        self.event("connect", f"{new.id} detected as {protocol}")
        read = self.reader(new)
        sock.on("data", read)
        new.start()
        read(first_bytes)
        return new

    def _idle(self, sock: TCPSocket) -> None:
        session = self.connections.get(sock.id + self.id_suffix)
        if session is not None:
            session.close(CloseReason.IDLE_TIMEOUT)

    def _connection_error(self, sock: TCPSocket, exc: BaseException) -> None:
        if isinstance(exc, ORDINARY_DISCONNECTS):
            # A peer that resets is leaving, not failing the server: its close row
            # (connection_error) says enough, with no error row or warning besides.
            log.debug("%s reset: %s", sock.id, exc)
            session = self.connections.get(sock.id + self.id_suffix)
            if session is not None and not session.close_detail:
                session.close_detail = _DISCONNECT_DETAIL.get(type(exc), "reset by the peer")
            return
        code = getattr(exc, "errno", None)
        name = errno.errorcode.get(code, str(code)) if isinstance(code, int) else ""
        detail = str(exc) or type(exc).__name__
        code_name = f" ({name})" if name else ""
        self.event("error", f"{sock.id}: connection failed: {detail}{code_name}")

    def _connection_closed(self, sock: TCPSocket) -> None:
        session = self.connections.pop(sock.id + self.id_suffix, None)
        self.throttle.release(sock.remote_address)
        if session is None:
            return
        reason = session.close_reason
        tls_error = getattr(sock, "tls_error", None)
        if reason is None and tls_error is not None:
            reason = (
                CloseReason.HANDSHAKE_TIMEOUT
                if tls_error == "handshake_timeout"
                else CloseReason.TLS_ERROR
            )
            session.close_detail = tls_error
        if reason is None:
            reason = CloseReason.CONNECTION_ERROR if sock.had_error else CloseReason.CLIENT_CLOSED
        self.end_session(session, reason)
        self.shutdown.connection_gone(session)

    def end_session(self, session: Session, reason: str) -> None:
        """Release what a finished session held and remember why it ended."""
        if self.resume is not None and self.resume.detach(session, reason):
            self.changes.mark(session)  # now detached, for the console's orders
            return
        if self.sessions.get(session.id) is session:
            del self.sessions[session.id]
            self.sessions_changed += 1
            self.changes.mark(session)
            self.ended.add(session, reason)
        # Sessions that end with it (a mux connection's streams) end for the same reason.
        if session.close_reason is None:
            session.close_reason = reason
        bus = self.bus
        for name in list(session.rooms):
            room = self.rooms.leave(session, name)
            if room is not None and room.members:
                self.rooms.send(
                    room, {"type": "user_left", "connectionId": session.id, "room": name}
                )
            if bus is not None and room is not None:
                bus.room_left(name, session.id)
        session.closed()
        if session.guard is not None:
            self.permissions.ended(session)
        if self.uploads is not None:
            self.uploads.abort_owner(session.id, str(reason))
        outlet = session.outlet
        self.closed_log.append(
            ClosedSessionInfo(
                id=session.id,
                protocol=session.protocol,
                address=session.address,
                port=session.port,
                connected_at=session.connected_at,
                closed_at=time.time(),
                reason=str(reason),
                msgs_in=session.msgs_in,
                msgs_out=session.msgs_out,
                bytes_in=outlet.bytes_read,
                bytes_out=outlet.bytes_written,
                detail=session.close_detail,
            )
        )
        user = f" (user {session.user})" if session.user is not None else ""
        detail = session.close_detail
        why = f" ({detail})" if detail and reason == CloseReason.CONNECTION_ERROR else ""
        # The fields of `ctl`'s closed sessions, for a structured log (--log-format json).
        wanted = log.isEnabledFor(logging.DEBUG)
        fields = dataclasses.asdict(self.closed_log[-1]) if wanted else None
        self.event("close", f"{session.id}{user} closed: {reason}{why}", fields)

    # ----------------------------------------------------------- HubView
    def totals(self) -> Stats:
        """A copy of the counters as they are now."""
        return self.stats.copy()

    def overview(self, read_only: bool = False) -> Overview:
        return Overview(
            state=self.state,
            started_at=self.started_at,
            now=time.time(),
            listeners=tuple(self.listeners),
            # Every session the Connections pane lists: mux streams count too.
            sessions=len(self.sessions),
            peak_sessions=self.peak_sessions,
            totals=self.totals(),
            rates=self.history.rates,
            drain_deadline=self.drain_deadline,
            drain_left=self.shutdown.left,
            drain_final=self.shutdown.final,
            connections=len(self.connections),
            read_only=read_only,
            version=__version__,
            node=self.node,
            link=self.bus.link_state if self.bus is not None else "",
            slowest_turns=self.turns.slowest(),
            refusals=Refusals(**self.permissions.totals),
        )

    def cluster_info(self) -> ClusterInfo | None:
        """The cluster as this node sees it (None on a single server)."""
        return self.bus.info() if self.bus is not None else None

    def closed_sessions(self) -> list[ClosedSessionInfo]:
        return list(self.closed_log)

    def throttle_state(self) -> list[ThrottleInfo]:
        return self.throttle.snapshot()

    def rooms_info(self) -> list[RoomInfo]:
        return self.rooms.snapshot()

    def mux_connections(self) -> list[MuxConnectionInfo]:
        return [s.mux_info() for s in self.connections.values() if hasattr(s, "mux_info")]

    def transfers(self) -> list[TransferInfo]:
        """Open and ended uploads, then the last refused requests (state "refused")."""
        uploads = self.uploads
        return uploads.records() + uploads.refusals() if uploads is not None else []

    def log_since(self, seq: int) -> list[LogEvent]:
        return self.log.since(seq)
