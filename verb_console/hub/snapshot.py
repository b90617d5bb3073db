"""Read-only views of the hub, as the console samples them.

The hub never calls the console. The console asks a :class:`HubView` for these
small immutable records on a timer, and tests feed it fixed ones. Times are Unix
epoch seconds (floats) so a frozen clock is easy to fake.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass, field
from operator import attrgetter
from typing import TYPE_CHECKING, Any, Generic, Literal, NamedTuple, Protocol, TypeVar

from .tap import TapBatch

R = TypeVar("R")


class SessionInfo(NamedTuple):
    """One live session (a TCP connection, or one stream of a mux connection).

    A NamedTuple, not a dataclass: the console asks for ten thousand of these
    several times a second. A tuple is built several times faster, and the
    garbage collector stops tracking one that holds only strings and numbers,
    so the records do not fill the older generations and slow full collections.
    """

    id: str
    protocol: str  # "json", "binary", "echo", "mux" or "detecting"
    address: str  # client IP
    port: int
    connected_at: float
    last_activity: float
    msgs_in: int
    msgs_out: int
    bytes_in: int
    bytes_out: int
    unsent: int  # bytes written but not yet sent to the client
    rooms: tuple[str, ...] = ()
    parent: str | None = None  # mux connection id for a stream session
    user: str | None = None  # the authenticated user, if any (PROTOCOL.md s8)
    # Detached (PROTOCOL.md 11.1): when its resume window ends (wall time), else None.
    detached_until: float | None = None
    kept: int = 0  # bytes of deliveries kept for a resume to replay
    # Its messages and requests refused by the policy (PROTOCOL.md 12.1), every code.
    refused: int = 0
    state: str = "live"  # "live", or "detached" while no connection carries it (11.1)
    kept_msgs: int = 0  # deliveries kept for a resume to replay


_SESSION_FIELDS = attrgetter(*SessionInfo._fields)

#: Members a look at one room gives at most: a room of 100,000 costs a look the
#: window a console shows, not the room.
ROOM_MEMBERS = 1000


def frozen(record: SessionInfo) -> SessionInfo:
    """A frozen :class:`SessionInfo` of a record with its fields (a live ``SessionView``).

    Generic over the fields, so that a new field of :class:`SessionInfo` is copied,
    sent over the admin socket and read back with no other change.
    """
    if type(record) is SessionInfo:
        return record
    return SessionInfo._make(_SESSION_FIELDS(record))


@dataclass(frozen=True, slots=True)
class ClosedSessionInfo:
    id: str
    protocol: str
    address: str
    port: int
    connected_at: float
    closed_at: float
    reason: str  # one of hub.CloseReason values
    msgs_in: int = 0
    msgs_out: int = 0
    bytes_in: int = 0
    bytes_out: int = 0
    detail: str = ""


@dataclass(frozen=True, slots=True)
class ThrottleInfo:
    """Per-IP (IPv6: per /64) throttle state."""

    key: str
    live: int  # connections open now
    in_window: int  # connections counted in the current window
    window_started: float
    window_ends: float
    rejected: int  # rejections since the server started
    last_seen: float
    blocked: bool  # would the next connection be refused now?


@dataclass(frozen=True, slots=True)
class RoomInfo:
    name: str
    # Members' ids in the order they joined: from ``members_from`` on, a window of
    # them in :meth:`HubView.room`; () in a page of rooms (``size`` counts them all).
    members: tuple[str, ...]
    messages: int
    created_at: float
    # The room's position and kept messages (PROTOCOL.md 11.2); "" with history off.
    epoch: str = ""
    offset: int = 0
    history: int = 0  # room messages kept
    history_bytes: int = 0
    size: int = 0  # members
    members_from: int = 0  # where in the join order ``members`` begins

    @property
    def id(self) -> str:
        """What a page of rooms orders ties by and finds a room by: its name."""
        return self.name


@dataclass(frozen=True, slots=True)
class StreamInfo:
    stream_id: int
    kind: str  # "json", "binary" or "echo"
    session_id: str
    bytes_in: int
    bytes_out: int
    frames_in: int
    frames_out: int
    opened_at: float


@dataclass(frozen=True, slots=True)
class MuxConnectionInfo:
    id: str
    connected_at: float
    streams: tuple[StreamInfo, ...]  # () in a page of mux connections (see ``stream_count``)
    stream_count: int = 0
    bytes_in: int = 0  # the connection's socket, framing included
    bytes_out: int = 0


@dataclass(frozen=True, slots=True)
class TransferInfo:
    session_id: str
    transfer_id: str
    filename: str
    size: int
    received: int
    started_at: float
    ended_at: float | None
    state: str  # "active", "complete", "aborted" or "failed"
    outcome: str = ""  # error code or abort cause for aborted/failed ones
    protocol: str = "json"

    @property
    def speed(self) -> float:
        """Average bytes per second so far (or over the whole transfer)."""
        end = self.ended_at
        if end is None:
            return 0.0
        took = end - self.started_at
        return self.received / took if took > 0 else 0.0


@dataclass(frozen=True, slots=True)
class LogEvent:
    seq: int  # increasing; lets a reader fetch only what is new
    time: float
    kind: str  # "connect", "close", "error", "operator", "server"
    text: str


@dataclass(slots=True)
class Stats:
    """The server's counters since it started: the hub keeps one, updated in place
    on the hot path (plain attribute increments); :meth:`copy` freezes a reading."""

    accepted: int = 0
    rejected_throttle: int = 0
    rejected_max: int = 0
    slow_consumers: int = 0
    msgs_in: int = 0
    msgs_out: int = 0
    bytes_in: int = 0
    bytes_out: int = 0
    rejected_auth: int = 0  # refused at accept: the address failed to authenticate too often

    def copy(self) -> Stats:
        return Stats(
            self.accepted,
            self.rejected_throttle,
            self.rejected_max,
            self.slow_consumers,
            self.msgs_in,
            self.msgs_out,
            self.bytes_in,
            self.bytes_out,
            self.rejected_auth,
        )


class HubState(enum.StrEnum):
    """Where the server is in its life: serving, draining for shutdown, or done."""

    RUNNING = "running"
    DRAINING = "draining"
    STOPPED = "stopped"


@dataclass(frozen=True, slots=True)
class Rates:
    """Per-second rates over the last completed sampling interval."""

    msgs_in: float = 0.0
    msgs_out: float = 0.0
    bytes_in: float = 0.0
    bytes_out: float = 0.0


@dataclass(frozen=True, slots=True)
class RateSeries:
    """Per-second rates, one sample every ``step`` seconds, oldest first.

    ``seq`` numbers the newest sample (samples ever taken, so a reader that
    has seen up to ``seq`` asks for the rest); each sample has one rate per
    name of ``fields``.
    """

    step: int
    seq: int
    fields: tuple[str, ...]
    samples: tuple[tuple[float, ...], ...]

    def values(self, field: str) -> list[float]:
        """One field's rates, oldest first."""
        i = self.fields.index(field)
        return [s[i] for s in self.samples]


class TurnInfo(NamedTuple):
    """One slow turn of the event loop (hub/turns.py): how long it took at least
    (seconds), when (wall time), and what it was doing, "" when not known."""

    duration: float
    at: float
    doing: str


@dataclass(frozen=True, slots=True)
class Refusals:
    """Requests refused by the policy or a ban since the server started (PROTOCOL.md
    section 12), by error code: the figures ``ctl status`` and ``/metrics`` give."""

    forbidden: int = 0
    rate_limited: int = 0
    banned: int = 0
    too_many_sessions: int = 0

    @property
    def total(self) -> int:
        return self.forbidden + self.rate_limited + self.banned + self.too_many_sessions


@dataclass(frozen=True, slots=True)
class Overview:
    state: str  # a HubState (a remote console adds "disconnected")
    started_at: float
    now: float
    listeners: tuple[str, ...]  # "HOST:PORT (PROTOCOL)"
    sessions: int
    peak_sessions: int
    totals: Stats  # a copy, taken with the overview
    rates: Rates
    drain_deadline: float | None = None  # when the grace period ends, while draining
    # While draining: the sessions the drain has still to close (PROTOCOL.md
    # 11.3), and whether it is a permanent stop (clients told not to reconnect).
    drain_left: int = 0
    drain_final: bool = False
    connections: int = 0  # TCP connections open now (a mux connection is one, its streams many)
    read_only: bool = False
    version: str = ""
    # In a cluster (PROTOCOL.md section 10): this node's name and its Redis link
    # ("up", "down", "connecting"); both "" on a single server.
    node: str = ""
    link: str = ""
    # The slowest loop turns of the last minute, slowest first (hub/turns.py).
    slowest_turns: tuple[TurnInfo, ...] = ()
    refusals: Refusals = Refusals()


@dataclass(frozen=True, slots=True)
class NodeInfo:
    """One node of a cluster as this node sees it (PROTOCOL.md section 10)."""

    name: str
    sessions: int
    rooms: int
    heartbeat_age: float | None  # seconds since its last heartbeat; None: link down
    is_self: bool  # this console's server


@dataclass(frozen=True, slots=True)
class ClusterInfo:
    """The cluster as this node sees it: its Redis link, its nodes, its bus's counters."""

    node: str
    link: str  # "up", "down" or "connecting"
    link_since: float
    nodes: tuple[NodeInfo, ...]  # this node first
    published: int
    received: int
    dropped: int
    undeliverable: int
    msgs_out_per_s: float
    msgs_in_per_s: float
    queued: int
    reconnects: int


Severity = Literal["information", "warning", "error"]
"""How much a view's notice matters (the console's notification levels)."""
Notifier = Callable[[str, Severity], None]


class HubView(Protocol):
    """Everything the console reads of a server, and every operator action it may take.

    One contract, two implementations: :class:`~.view.LiveHubView` over a hub in
    this process and ``admin.remote_view.RemoteHubView`` over the admin socket,
    so the console cannot tell them apart. Every method answers at once from
    what the view holds (a remote view refreshes its copy in the background and
    fetches next what was asked for). A new figure is a field of one of the
    records above, read by ``LiveHubView``, and carried by the admin wire with
    no edit of its own (``admin/protocol.py`` is generic over the fields).
    """

    def overview(self) -> Overview: ...

    @property
    def server_pid(self) -> int | None:
        """The server's process id (None while an attached view has not reached it)."""
        ...

    def session_page(
        self,
        sort: str = "id",
        reverse: bool = False,
        filter: str = "",
        offset: int = 0,
        limit: int = 100,
    ) -> SessionPage:
        """Live sessions sorted by ``sort`` (a field of :class:`SessionInfo`), filtered
        by the console's filter line, rows ``[offset, offset + limit)``.

        A remote view answers with the page it holds and fetches this one next:
        ``page.query`` says which query the page answers.
        """
        ...

    def session(self, session_id: str) -> SessionInfo | None:
        """One live session, if the view has it (a remote view: in the page it holds)."""
        ...

    def closed_sessions(self) -> list[ClosedSessionInfo]: ...

    def throttle_state(self) -> list[ThrottleInfo]: ...

    def rooms(self) -> list[RoomInfo]:
        """Every room with its members (``ctl rooms``, the broadcast dialog): not per tick."""
        ...

    def room_page(
        self,
        sort: str = "name",
        reverse: bool = False,
        filter: str = "",
        offset: int = 0,
        limit: int = 100,
    ) -> RoomPage:
        """Rooms as :meth:`session_page` gives sessions (a field of :class:`RoomInfo`),
        without their members: each row's ``size`` counts them."""
        ...

    def room(
        self, name: str, members_from: int = 0, members_limit: int = ROOM_MEMBERS
    ) -> RoomInfo | None:
        """One room with a window of its members in the order they joined (the room
        a console shows the members of): a look costs the window, not the room."""
        ...

    def mux_connections(self) -> list[MuxConnectionInfo]:
        """Every mux connection with its streams: not per tick."""
        ...

    def mux_page(
        self,
        sort: str = "id",
        reverse: bool = False,
        filter: str = "",
        offset: int = 0,
        limit: int = 100,
    ) -> MuxPage:
        """Mux connections as :meth:`session_page` gives sessions, without their
        streams: each row's ``stream_count`` counts them."""
        ...

    def mux_connection(self, mux_id: str) -> MuxConnectionInfo | None:
        """One mux connection with its streams."""
        ...

    def transfers(self) -> list[TransferInfo]: ...

    def cluster_info(self) -> ClusterInfo | None:
        """The cluster as this server's node sees it; None on a single server."""
        ...

    def log_since(self, seq: int) -> list[LogEvent]: ...

    # The message tap (hub/tap.py): open while a console shows it, else free.
    def tap_open(self) -> None: ...

    def tap_close(self) -> None: ...

    def tap_since(self, seq: int) -> TapBatch | None: ...

    # Rates over time (hub/history.py): the server's at a step of 1, 10 or 60 s,
    # and one session's or room's, sampled while a watch of it is open.
    def traffic_history(self, step: int, since: int = 0, limit: int = 1440) -> RateSeries: ...

    def watch_open(self, kind: str, key: str) -> None: ...

    def watch_close(self, kind: str, key: str) -> None: ...

    def watch_series(self, kind: str, key: str, since: int = 0, limit: int = 300) -> RateSeries: ...

    def set_notifier(self, notify: Notifier) -> None:
        """Where to tell (message, severity) of what happens after an action returned
        (a refusal that comes back from a remote server)."""
        ...

    # Operator actions (PermissionError when the view is read-only).
    def operator_broadcast(self, text: str, room: str | None = None) -> int: ...

    def operator_close(self, session_id: str) -> bool: ...

    def operator_close_ip(self, address: str) -> int: ...

    def operator_ban(self, target: str, duration: str | None = None) -> dict[str, Any]: ...

    def operator_unban(self, target: str) -> bool: ...

    def bans(self) -> list[dict[str, Any]]: ...

    def begin_shutdown(self) -> None: ...

    def force_shutdown(self) -> None: ...


@dataclass(frozen=True, slots=True)
class SessionQuery:
    """What a page of sessions is asked for: an order, a filter and a window."""

    sort: str = "id"
    reverse: bool = False
    filter: str = ""
    offset: int = 0
    limit: int = 100


@dataclass(frozen=True, slots=True)
class Page(Generic[R]):
    """One page of what a console lists (sessions, rooms, mux connections), sorted and
    filtered where they are.

    ``total`` counts every row, ``matched`` those passing the filter;
    ``rows`` are ``matched``'s slice ``[offset, offset + limit)`` in order.
    """

    total: int
    matched: int
    offset: int
    rows: tuple[R, ...]
    # Which query the page answers (not part of its value: equal rows are equal pages).
    query: SessionQuery = field(default=SessionQuery(), compare=False)
    error: str = ""  # why the filter matches nothing (a term naming no field), else ""


if TYPE_CHECKING:
    SessionPage = Page[SessionInfo]
    RoomPage = Page[RoomInfo]
    MuxPage = Page[MuxConnectionInfo]
else:
    # Not the subscripted aliases at run time: calling one sets ``__orig_class__``
    # on the instance, which a frozen, slotted dataclass refuses.
    SessionPage = RoomPage = MuxPage = Page
