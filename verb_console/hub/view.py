"""The :class:`~verb_console.hub.snapshot.HubView` of a running hub."""

from __future__ import annotations

import re
import time
from operator import attrgetter
from typing import Any

from ..filtering import apply
from .hub import Hub
from .session import SessionView
from .session_fields import LIVE_FIELDS, search_text
from .snapshot import (
    SESSION_SORT_KEYS,
    ClosedSessionInfo,
    LogEvent,
    MuxConnectionInfo,
    Overview,
    RateSeries,
    RoomInfo,
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

    def begin_shutdown(self) -> None:
        # Not refused when read-only: quitting a console stops the server it hosts,
        # and an operator must always be able to quit.
        self.hub.begin_shutdown()

    def force_shutdown(self) -> None:
        self._check("shutdown")
        self.hub.force_shutdown()


def page_of(
    records: list[Any],
    sort: str = "id",
    reverse: bool = False,
    filter: str = "",
    offset: int = 0,
    limit: int = 100,
    now: float | None = None,
) -> SessionPage:
    """Filter, sort and slice live session records into a :class:`SessionPage`.

    ``filter`` is the console's filter line (words, ``proto:mux``, ``idle>60``;
    see :mod:`verb_console.filtering`), applied to the Connections pane's cell
    texts as the console applies it; a term naming no column matches nothing.
    Only the page's records are copied into :class:`SessionInfo`.
    """
    if sort not in SESSION_SORT_KEYS:
        raise ValueError(f"unknown sort key {sort!r}")
    total = len(records)
    rows = records
    needle = filter.strip().lower()
    if needle and " " not in needle and not _FIELD_TERM.search(needle):
        # One word: the console's match without building a string per session.
        # Ids and protocol names are lower case already; users and rooms may not be.
        rows = [
            r
            for r in records
            if needle in r.id
            or needle in r.protocol
            or (r.user is not None and needle in r.user.lower())
            or (r.rooms and needle in " ".join(r.rooms).lower())
        ]
    elif needle:
        when = time.time() if now is None else now
        rows, _error = apply(filter, records, LIVE_FIELDS, search_text, when)
    matched = len(rows)
    offset = max(0, min(offset, matched))
    limit = max(0, limit)
    key = _user_key if sort == "user" else attrgetter(sort)
    # One C-level sort beats a partial sort in Python (heapq) at these sizes.
    picked = sorted(rows, key=key, reverse=reverse)[offset : offset + limit]
    return SessionPage(total, matched, offset, tuple(map(frozen, picked)))


def refuse_if_read_only(read_only: bool, action: str) -> None:
    """What every view does before an operator action: refused when read-only."""
    if read_only:
        raise PermissionError(f"read-only console: {action} refused")


# A word that is a field term (``proto:mux``, ``idle>60``), not a bare word.
_FIELD_TERM = re.compile(r"[:<>=]")


def _user_key(s: Any) -> str:
    # As the console sorts its USER column: no user first.
    return s.user or ""
