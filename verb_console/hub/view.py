"""The :class:`~verb_console.hub.snapshot.HubView` of a running hub."""

from __future__ import annotations

import os
from collections.abc import Callable
from operator import attrgetter
from typing import Any

from .hub import Hub
from .listing import Listing
from .mux_session import MuxSession
from .order import Orders
from .rooms import Room, RoomRegistry
from .row_fields import MUX_CONNECTIONS, ROOMS
from .session import Session
from .session_fields import FIELDS, SESSIONS
from .session_view import LIVE_READS, SessionView
from .snapshot import (
    ROOM_MEMBERS,
    ClosedSessionInfo,
    ClusterInfo,
    HubView,
    LogEvent,
    MuxConnectionInfo,
    MuxPage,
    Notifier,
    Overview,
    RateSeries,
    RoomInfo,
    RoomPage,
    SessionInfo,
    SessionPage,
    ThrottleInfo,
    TransferInfo,
    frozen,
)
from .tap import TapBatch


class LiveHubView:
    """Read-only snapshots of a :class:`Hub`, plus the operator actions (refused when read-only)."""

    def __init__(self, hub: Hub, read_only: bool = False) -> None:
        self.hub = hub
        # Kept here only: the hub itself has no notion of a read-only operator.
        self.read_only = read_only
        # The orders consoles page through, kept from what changed (see .order).
        orders: Orders[Session] = Orders(
            hub.sessions, hub.changes, _moved_with(hub.sessions), _has_unsent
        )
        self._sessions = Listing("sessions", orders, SESSIONS, _VIEW, _record, keys=_SESSION_ORDERS)
        self._mux: Listing[Session, MuxConnectionInfo] = Listing(
            "mux", orders, MUX_CONNECTIONS, _mux_record, _mux_record, _is_mux, _MUX_ORDERS
        )
        rooms, room = hub.rooms, _room_record(hub.rooms)
        self._rooms = Listing(
            "rooms", Orders(rooms.rooms, rooms.changes), ROOMS, room, room, keys=_ROOM_ORDERS
        )
        self._notify: Notifier | None = None

    def overview(self) -> Overview:
        return self.hub.overview(self.read_only)

    @property
    def server_pid(self) -> int | None:
        return os.getpid()

    def sessions(self) -> list[SessionView]:
        # Live views, not copies: see SessionView for why.
        return [s.view for s in self.hub.sessions.values()]

    def session_page(
        self,
        sort: str = "id",
        reverse: bool = False,
        filter: str = "",
        offset: int = 0,
        limit: int = 100,
    ) -> SessionPage:
        """One page of sessions, in the order :func:`.session_fields.page_of` gives every
        session's view, from the orders kept between calls (see :mod:`.listing`): it
        costs the same at 100,000 sessions as at 1,000."""
        return self._sessions.page(sort, reverse, filter, offset, limit)

    def position(self, sort: str, reverse: bool, filter: str, session_id: str) -> int | None:
        """Where ``session_id`` is in a page's order: ``ctl sessions --after ID`` pages on
        from there, so a long listing goes in bounded pieces however the sessions move."""
        return self._sessions.position(sort, reverse, filter, session_id)

    def room_page(
        self,
        sort: str = "name",
        reverse: bool = False,
        filter: str = "",
        offset: int = 0,
        limit: int = 100,
    ) -> RoomPage:
        return self._rooms.page(sort, reverse, filter, offset, limit)

    def room(
        self, name: str, members_from: int = 0, members_limit: int = ROOM_MEMBERS
    ) -> RoomInfo | None:
        found = self.hub.rooms.get(name)
        if found is None:
            return None
        return self.hub.rooms.info(found, True, max(0, members_from), members_limit)

    def mux_page(
        self,
        sort: str = "id",
        reverse: bool = False,
        filter: str = "",
        offset: int = 0,
        limit: int = 100,
    ) -> MuxPage:
        return self._mux.page(sort, reverse, filter, offset, limit)

    def mux_connection(self, mux_id: str) -> MuxConnectionInfo | None:
        found = self.hub.connections.get(mux_id)
        return found.mux_info() if isinstance(found, MuxSession) else None

    def session(self, session_id: str) -> SessionInfo | None:
        found = self.hub.sessions.get(session_id)
        return frozen(found.view) if found is not None else None

    def set_notifier(self, notify: Notifier) -> None:
        # An in-process action is refused as it is called (PermissionError): nothing comes later.
        self._notify = notify

    def closed_sessions(self) -> list[ClosedSessionInfo]:
        return self.hub.closed_sessions()

    def throttle_state(self) -> list[ThrottleInfo]:
        return self.hub.throttle_state()

    def rooms(self) -> list[RoomInfo]:
        return self.hub.rooms_info()

    def mux_connections(self) -> list[MuxConnectionInfo]:
        return self.hub.mux_connections()

    def transfers(self) -> list[TransferInfo]:
        return self.hub.transfers()

    def log_since(self, seq: int) -> list[LogEvent]:
        return self.hub.log_since(seq)

    def cluster_info(self) -> ClusterInfo | None:
        return self.hub.cluster_info()

    # The message tap (see .tap): open while a console shows it, else free.
    def tap_open(self) -> None:
        self.hub.tap_switch.open()

    def tap_close(self) -> None:
        self.hub.tap_switch.close()

    def tap_since(self, seq: int) -> TapBatch | None:
        return self.hub.tap_switch.since(seq)

    # Rates over time (see .history): the server's, and one session's or room's
    # while its detail view is open (watch_open ... watch_close).
    def traffic_history(self, step: int, since: int = 0, limit: int = 1440) -> RateSeries:
        return self.hub.history.series(step, since, limit)

    def watch_open(self, kind: str, key: str) -> None:
        self.hub.watches.open(kind, key)

    def watch_close(self, kind: str, key: str) -> None:
        self.hub.watches.close(kind, key)

    def watch_series(self, kind: str, key: str, since: int = 0, limit: int = 300) -> RateSeries:
        return self.hub.watches.series(kind, key, since, limit)

    def _check(self, action: str) -> None:
        refuse_if_read_only(self.read_only, action)

    def operator_broadcast(self, text: str, room: str | None = None) -> int:
        self._check("broadcast")
        return self.hub.operator_broadcast(text, room)

    def operator_close(self, session_id: str) -> bool:
        self._check("close")
        return self.hub.operator_close(session_id)

    def operator_close_ip(self, address: str) -> int:
        self._check("close")
        return self.hub.operator_close_ip(address)

    def operator_ban(self, target: str, duration: str | None = None) -> dict[str, Any]:
        """Ban ``target`` from the console (PROTOCOL.md 12.3); raises BanError."""
        self._check("ban")
        return self.hub.banning.ban(target, "console", duration).to_wire()

    def operator_unban(self, target: str) -> bool:
        self._check("unban")
        return self.hub.banning.unban(target, "console") is not None

    def bans(self) -> list[dict[str, Any]]:
        """The live bans, as ``ctl bans --json`` gives them."""
        return [b.to_wire() for b in self.hub.banning.live()]

    def begin_shutdown(self) -> None:
        # Not refused when read-only: quitting a console stops the server it hosts,
        # and an operator must always be able to quit.
        self.hub.begin_shutdown()

    def force_shutdown(self) -> None:
        self._check("shutdown")
        self.hub.force_shutdown()


def refuse_if_read_only(read_only: bool, action: str) -> None:
    """What every view does before an operator action: refused when read-only."""
    if read_only:
        raise PermissionError(f"read-only console: {action} refused")


_VIEW = attrgetter("view")


def _record(session: Session) -> SessionInfo:
    return frozen(session.view)


# Sort keys read off the session itself: one C-level attribute walk per session
# instead of a property call of its view, in the same order as the fields' own
# keys (the view's last_activity adds one offset, the wall clock's, to every
# session alike). Any other field sorts through the session's view.
_SESSION_ORDERS: dict[str, Callable[[Session], Any]] = {
    **{f.name: attrgetter(f.name) for f in FIELDS if f.key is None and f.name not in LIVE_READS},
    "last_activity": attrgetter("outlet.last_received"),
    "bytes_in": attrgetter("outlet.bytes_read"),
    "bytes_out": attrgetter("outlet.bytes_written"),
    "unsent": attrgetter("outlet.unsent"),
}


def _is_mux(session: Session) -> bool:
    return isinstance(session, MuxSession)


def _mux_record(session: Session) -> MuxConnectionInfo:
    assert isinstance(session, MuxSession)
    return session.mux_info(streams=False)


_MUX_ORDERS: dict[str, Callable[[Session], Any]] = {
    "id": attrgetter("id"),
    "connected_at": attrgetter("connected_at"),
    "stream_count": lambda s: len(getattr(s, "streams", ())),
    "bytes_in": attrgetter("outlet.bytes_read"),
    "bytes_out": attrgetter("outlet.bytes_written"),
}


# Sort keys read off the room itself (the others read its record).
_ROOM_ORDERS: dict[str, Callable[[Room], Any]] = {
    "name": attrgetter("name"),
    "size": lambda room: len(room.members),
    "messages": attrgetter("messages"),
    "created_at": attrgetter("created_at"),
}


def _room_record(rooms: RoomRegistry) -> Callable[[Room], RoomInfo]:
    return lambda room: rooms.info(room, members=False)


def _moved_with(sessions: dict[str, Session]) -> Callable[[Session], list[Session]]:
    """What moves with a session: a mux connection's stream sessions (their idle
    time and unsent bytes are its socket's), and a stream's connection (its bytes)."""

    def moved(session: Session) -> list[Session]:
        streams = getattr(session, "streams", None)
        if streams:
            return [st.session for st in streams.values() if st.session is not None]
        parent = sessions.get(session.parent) if session.parent else None
        return [parent] if parent is not None else []

    return moved


def _has_unsent(session: Session) -> bool:
    # Output drains with no event of the hub's: such a session is looked at again.
    return session.outlet.unsent > 0


# mypy checks that the live view is a whole HubView.
_: type[HubView] = LiveHubView
