"""The :class:`~verb_console.hub.snapshot.HubView` of a running hub."""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Sequence
from operator import attrgetter
from typing import Any

from ..filtering import apply
from .hub import Hub
from .session import LIVE_READS, Session, SessionView
from .session_fields import LIVE_FIELDS, SessionField, search_text, sort_keys
from .snapshot import (
    ClosedSessionInfo,
    LogEvent,
    MuxConnectionInfo,
    Overview,
    RateSeries,
    RoomInfo,
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
        # The ids of every session in the order of a key no session's value of
        # which ever changes, per (key, reverse), kept while the hub's sessions
        # stay the same ones (see session_page). Ids, not sessions: an order kept
        # for a console that has gone must not keep ended sessions alive.
        self._orders: dict[tuple[str, bool], list[str]] = {}
        self._orders_of = -1  # the hub's sessions_changed they were made at

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
        """One page of sessions, as :func:`page_of` makes it from every session's view.

        An attached console asks for a page several times a second, so the work
        is cut where the answer allows: sorted by a key that never changes for a
        session (id, protocol, address, connected_at), the order is kept until a
        session comes, goes or is handed over; sorted by a changing one with no
        filter, the sessions are sorted by their own fields (no view property
        per session) and only the page's views are read.
        """
        if sort not in _SESSION_KEYS:
            raise ValueError(f"unknown sort key {sort!r}")
        sessions = self.hub.sessions
        total = len(sessions)
        if sort in _FIXED_KEYS:
            ids = self._order(sort, reverse)
            if filter.strip():
                rows = filter_records([sessions[i].view for i in ids], filter)
                return _page(total, rows, offset, limit)
            matched = len(ids)
            offset = max(0, min(offset, matched))
            picked = [sessions[i].view for i in ids[offset : offset + max(0, limit)]]
            return SessionPage(total, matched, offset, tuple(map(frozen, picked)))
        if filter.strip():
            views = [s.view for s in sessions.values()]
            return page_of(views, sort, reverse, filter, offset, limit)
        ordered = sorted(sessions.values(), key=_SESSION_KEYS[sort], reverse=reverse)
        offset = max(0, min(offset, total))
        picked = [s.view for s in ordered[offset : offset + max(0, limit)]]
        return SessionPage(total, total, offset, tuple(map(frozen, picked)))

    def _order(self, sort: str, reverse: bool) -> list[str]:
        """Every session's id in the order of ``sort``, a key fixed for each session."""
        hub = self.hub
        if self._orders_of != hub.sessions_changed:
            self._orders.clear()
            self._orders_of = hub.sessions_changed
        ids = self._orders.get((sort, reverse))
        if ids is None:
            ordered = sorted(hub.sessions.values(), key=_SESSION_KEYS[sort], reverse=reverse)
            ids = self._orders[(sort, reverse)] = [s.id for s in ordered]
        return ids

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


def page_of(
    records: Sequence[SessionInfo],
    sort: str = "id",
    reverse: bool = False,
    filter: str = "",
    offset: int = 0,
    limit: int = 100,
    now: float | None = None,
    fields: tuple[SessionField, ...] = LIVE_FIELDS,
) -> SessionPage:
    """Filter, sort and slice live session records into a :class:`SessionPage`.

    ``filter`` is the console's filter line (words, ``proto:mux``, ``idle>60``;
    see :mod:`verb_console.filtering`), applied to the Connections pane's cell
    texts as the console applies it; a term naming no column matches nothing.
    ``sort`` is a column's sort field, sorted by that column's key. Both come
    from ``fields``, the Connections pane's columns. Only the page's records are
    copied into :class:`SessionInfo`.
    """
    keys = _SORT_KEYS if fields is LIVE_FIELDS else sort_keys(fields)
    key = keys.get(sort)
    if key is None:
        raise ValueError(f"unknown sort key {sort!r}")
    total = len(records)
    rows = filter_records(records, filter, now, fields)
    # One C-level sort beats a partial sort in Python (heapq) at these sizes.
    return _page(total, sorted(rows, key=key, reverse=reverse), offset, limit)


def filter_records(
    records: Sequence[SessionInfo],
    filter: str,
    now: float | None = None,
    fields: tuple[SessionField, ...] = LIVE_FIELDS,
) -> Sequence[SessionInfo]:
    """The records the console's filter line keeps, in their order (see :func:`page_of`)."""
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
        rows, _error = apply(filter, records, fields, search_text, when)
    return rows


def _page(total: int, rows: Sequence[SessionInfo], offset: int, limit: int) -> SessionPage:
    """The page ``[offset, offset + limit)`` of ``rows``, already filtered and sorted."""
    matched = len(rows)
    offset = max(0, min(offset, matched))
    picked = rows[offset : offset + max(0, limit)]
    return SessionPage(total, matched, offset, tuple(map(frozen, picked)))


def refuse_if_read_only(read_only: bool, action: str) -> None:
    """What every view does before an operator action: refused when read-only."""
    if read_only:
        raise PermissionError(f"read-only console: {action} refused")


# A word that is a field term (``proto:mux``, ``idle>60``), not a bare word.
_FIELD_TERM = re.compile(r"[:<>=]")


_SORT_KEYS = sort_keys()

# Sort orders read off the session itself, for the columns whose field is not
# the session's attribute of the same name: one C-level attribute walk per
# session instead of a property call. (The view's last_activity adds one
# offset, the wall clock's, to every session alike.) Only a speed-up: any other
# column sorts the sessions by their attribute of its field's name, or, when
# that is not the field (see session.LIVE_READS), through their views.
_SESSION_ORDERS: dict[str, Callable[[Session], Any]] = {
    "last_activity": attrgetter("outlet.last_received"),
    "bytes_in": attrgetter("outlet.bytes_read"),
    "bytes_out": attrgetter("outlet.bytes_written"),
    "unsent": attrgetter("outlet.unsent"),
    "rooms": attrgetter("view.rooms"),
    "user": lambda s: s.user or "",  # as session_fields.user_order: no user first
}


def _session_key(field: SessionField) -> Callable[[Session], Any]:
    """A column's sort key as a key of the sessions themselves, in the same order."""
    order = _SESSION_ORDERS.get(field.sort)
    if order is not None:
        return order
    if field.order is None and field.sort not in LIVE_READS:
        return attrgetter(field.sort)  # the session's own attribute is the field
    key = field.sort_key
    return lambda session: key(session.view)


# Each live column's sort key read off the session, by the name a query sorts by.
_SESSION_KEYS: dict[str, Callable[[Session], Any]] = {f.sort: _session_key(f) for f in LIVE_FIELDS}
# The keys a session keeps from the moment it is registered (a detected
# protocol comes with a new session: the hub hands the connection over).
_FIXED_KEYS = frozenset({"id", "protocol", "address", "connected_at"})
