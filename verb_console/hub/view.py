"""The :class:`~verb_console.hub.snapshot.HubView` of a running hub."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import replace
from operator import attrgetter
from typing import Any

from ..filtering import BadFilter
from .hub import Hub
from .order import Order, Orders
from .session import Session
from .session_fields import BY_NAME, page_of, session_filter, sort_key
from .session_view import LIVE_READS, SessionView
from .snapshot import (
    ClosedSessionInfo,
    ClusterInfo,
    HubView,
    LogEvent,
    MuxConnectionInfo,
    Notifier,
    Overview,
    RateSeries,
    RoomInfo,
    SessionInfo,
    SessionPage,
    SessionQuery,
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
        self._orders: Orders[Session] = Orders(hub.sessions, hub.changes, _streams_of, _has_unsent)
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
        session's view.

        The order is kept between calls (:mod:`.order`): a call re-keys only the
        sessions that changed since the last and reads the page's views, so it
        costs the same at 100,000 sessions as at 1,000. A filter comparing a
        time (``idle>60``, ``uptime<1h``) changes its answer with no event of
        the hub's, so it is the one case that looks at every session.
        """
        query = SessionQuery(sort, reverse, filter, offset, limit)
        sessions = self.hub.sessions
        try:
            order = self._order(sort, filter)
        except BadFilter as error:
            return SessionPage(len(sessions), 0, 0, (), query, str(error))
        if order is None:  # a filter on an age moves with the clock: no order can be kept
            views = [s.view for s in sessions.values()]
            page = page_of(views, sort, reverse, filter, offset, limit, time.time())
            return replace(page, query=query)
        matched = len(order)
        offset = max(0, min(offset, matched))
        ids = order.ids(offset, max(0, limit), reverse)
        rows = tuple(frozen(sessions[i].view) for i in ids)
        return SessionPage(len(sessions), matched, offset, rows, query)

    def position(self, sort: str, reverse: bool, filter: str, session_id: str) -> int | None:
        """Where ``session_id`` is in a page's order: ``ctl sessions --after ID`` pages on
        from there, so a long listing goes in bounded pieces however the sessions move."""
        order = self._order(sort, filter)
        if order is None:
            ids = [r.id for r in self.session_page(sort, reverse, filter, 0, 1 << 30).rows]
            return ids.index(session_id) if session_id in ids else None
        return order.position(session_id, reverse)

    def _order(self, sort: str, filter: str) -> Order[Session] | None:
        """The kept order of query (``sort``, ``filter``), up to date; None when the
        filter moves with the clock. ValueError for a bad sort, BadFilter for a bad term."""
        key = _session_key(sort)
        text = filter.strip()
        keep = None
        if text:
            test, clock = session_filter(text)
            if clock:
                return None
            keep = lambda s: test(s.view, 0.0)  # noqa: E731 - the clock plays no part
        return self._orders.get((sort, text), key, keep)

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


# Sort keys read off the session itself for the fields its view computes (see
# session_view.LIVE_READS): one C-level attribute walk per session instead of a
# property call. The same order as the fields' own keys (the view's
# last_activity adds one offset, the wall clock's, to every session alike).
_SESSION_ORDERS: dict[str, Callable[[Session], Any]] = {
    "last_activity": attrgetter("outlet.last_received"),
    "bytes_in": attrgetter("outlet.bytes_read"),
    "bytes_out": attrgetter("outlet.bytes_written"),
    "unsent": attrgetter("outlet.unsent"),
}


def _session_key(sort: str) -> Callable[[Session], Any]:
    """Field ``sort``'s key as a key of the sessions themselves, in the same order."""
    order = _SESSION_ORDERS.get(sort)
    if order is not None:
        return order
    key = sort_key(sort)  # ValueError for an unknown field
    if BY_NAME[sort].key is None and sort not in LIVE_READS:
        return key  # the session's own attribute is the field
    return lambda session: key(session.view)


def _streams_of(session: Session) -> list[Session]:
    """A mux connection's stream sessions: their idle time and unsent bytes are its socket's."""
    streams = getattr(session, "streams", None)
    if not streams:
        return []
    return [st.session for st in streams.values() if st.session is not None]


def _has_unsent(session: Session) -> bool:
    # Output drains with no event of the hub's: such a session is looked at again.
    return session.outlet.unsent > 0


# mypy checks that the live view is a whole HubView.
_: type[HubView] = LiveHubView
