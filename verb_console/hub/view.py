"""The :class:`~verb_console.hub.snapshot.HubView` of a running hub."""

from __future__ import annotations

from operator import attrgetter
from typing import Any

from .hub import Hub
from .session import SessionView
from .snapshot import (
    SESSION_SORT_KEYS,
    ClosedSessionInfo,
    LogEvent,
    MuxConnectionInfo,
    Overview,
    RoomInfo,
    SessionInfo,
    SessionPage,
    ThrottleInfo,
    TransferInfo,
)


class LiveHubView:
    """Read-only snapshots of a :class:`Hub`, plus the operator actions (refused when read-only)."""

    def __init__(self, hub: Hub, read_only: bool = False) -> None:
        self.hub = hub
        # Kept here only: the hub itself has no notion of a read-only operator.
        self.read_only = read_only

    def overview(self) -> Overview:
        return self.hub.overview(self.read_only)

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
        """One page of sessions; see :func:`page_of`."""
        return page_of(
            [s.view for s in self.hub.sessions.values()], sort, reverse, filter, offset, limit
        )

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

    def cluster_info(self) -> dict[str, Any] | None:
        return self.hub.cluster_info()

    def _check(self, action: str) -> None:
        if self.read_only:
            raise PermissionError(f"read-only console: {action} refused")

    def operator_broadcast(self, text: str, room: str | None = None) -> int:
        self._check("broadcast")
        return self.hub.operator_broadcast(text, room)

    def operator_close(self, session_id: str) -> bool:
        self._check("close")
        return self.hub.operator_close(session_id)

    def operator_close_ip(self, address: str) -> int:
        self._check("close")
        return self.hub.operator_close_ip(address)

    def begin_shutdown(self) -> None:
        # Not refused when read-only: quitting a console stops the server it hosts,
        # and an operator must always be able to quit.
        self.hub.begin_shutdown()

    def force_shutdown(self) -> None:
        self._check("shutdown")
        self.hub.force_shutdown()


def session_search_text(s: Any) -> str:
    """What ``/`` matches a live session against (case-insensitive): id, protocol, rooms."""
    return f"{s.id} {s.protocol} {' '.join(s.rooms)}"


def page_of(
    records: list[Any],
    sort: str = "id",
    reverse: bool = False,
    filter: str = "",
    offset: int = 0,
    limit: int = 100,
) -> SessionPage:
    """Filter, sort and slice live session records into a :class:`SessionPage`.

    Only the page's records are copied into :class:`SessionInfo`.
    """
    if sort not in SESSION_SORT_KEYS:
        raise ValueError(f"unknown sort key {sort!r}")
    total = len(records)
    rows = records
    if filter:
        needle = filter.lower()
        if " " in needle:
            rows = [r for r in records if needle in session_search_text(r).lower()]
        else:
            # The same match without building a string per session: ids and
            # protocol names are lower case already; only room names need it.
            rows = [
                r
                for r in records
                if needle in r.id
                or needle in r.protocol
                or (r.rooms and needle in " ".join(r.rooms).lower())
            ]
    matched = len(rows)
    offset = max(0, min(offset, matched))
    limit = max(0, limit)
    # One C-level sort beats a partial sort in Python (heapq) at these sizes.
    picked = sorted(rows, key=attrgetter(sort), reverse=reverse)[offset : offset + limit]
    return SessionPage(total, matched, offset, tuple(map(as_info, picked)))


def as_info(s: Any) -> SessionInfo:
    """A frozen copy of a live session record."""
    if isinstance(s, SessionInfo):
        return s
    return SessionInfo(
        s.id,
        s.protocol,
        s.address,
        s.port,
        s.connected_at,
        s.last_activity,
        s.msgs_in,
        s.msgs_out,
        s.bytes_in,
        s.bytes_out,
        s.unsent,
        tuple(s.rooms),
        s.parent,
        s.user,
    )
