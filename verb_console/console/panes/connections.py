"""Pane 1: live sessions, and the recently closed ones a toggle away."""

from __future__ import annotations

from operator import attrgetter
from typing import ClassVar

from textual.app import ComposeResult
from textual.binding import BindingType
from textual.reactive import var

from verb_console.admin.remote_view import WINDOW
from verb_console.hub.session_fields import LIVE_FIELDS, search_text
from verb_console.hub.snapshot import ClosedSessionInfo, SessionInfo

from ..format import fmt_bytes, fmt_clock, fmt_count, fmt_duration, fmt_int
from ..glyphs import G
from ..keys import bindings
from .base import Detail, DetailRows, Pane
from .table import Cell, Column, LiveTable

# Unsent output above these marks means the client is not keeping up.
UNSENT_WARN = 64 * 1024
UNSENT_ERROR = 1024 * 1024
IDLE_WARN = 60.0

REASON_TONES: dict[str, str] = {
    "client_closed": "muted",
    "shutdown": "muted",
    "operator": "accent",
    "idle_timeout": "warn",
    "slow_consumer": "warn",
    "throttled": "warn",
    "over_max_connections": "warn",
    "frame_too_large": "error",
    "protocol_error": "error",
}


# The live columns' texts are the hub's (hub/session_fields.py), so that the
# server filters an attached console's sessions on the very text shown here;
# a column adds only its width, colour and layout. A new column: one field
# there, one Column here, at the same position.
_F = {f.label: f.render for f in LIVE_FIELDS}
# And the numbers those texts read back as, for the filter's comparisons.
_N = {f.label: f.number for f in LIVE_FIELDS}


def _unsent(s: SessionInfo, now: float) -> Cell:
    text = _F["UNSENT"](s, now)
    if s.unsent <= 0:
        return (text, "muted")
    tone = "error" if s.unsent >= UNSENT_ERROR else "warn" if s.unsent >= UNSENT_WARN else ""
    return (text, tone) if tone else text


def _idle(s: SessionInfo, now: float) -> Cell:
    text = _F["IDLE"](s, now)
    return (text, "warn") if now - s.last_activity >= IDLE_WARN else text


def _protocol(s: SessionInfo | ClosedSessionInfo, _now: float) -> Cell:
    return (s.protocol, "muted") if s.protocol == "detecting" else s.protocol


def _user(s: SessionInfo, _now: float) -> Cell:
    return s.user if s.user is not None else ("-", "muted")


LIVE_COLUMNS = (
    Column("SESSION", 16, _F["SESSION"], attrgetter("id"), measure=attrgetter("id")),
    Column("PROTO", 9, _protocol, attrgetter("protocol"), priority=4),
    Column("ADDRESS", 15, _F["ADDRESS"], attrgetter("address"), priority=9),
    Column(
        "UPTIME",
        7,
        _F["UPTIME"],
        attrgetter("connected_at"),
        "right",
        priority=5,
        descending=True,
        number=_N["UPTIME"],
    ),
    Column(
        "IDLE",
        6,
        _idle,
        attrgetter("last_activity"),
        "right",
        2,
        descending=True,
        number=_N["IDLE"],
    ),
    Column("MSG IN", 7, _F["MSG IN"], attrgetter("msgs_in"), "right", number=_N["MSG IN"]),
    Column("MSG OUT", 7, _F["MSG OUT"], attrgetter("msgs_out"), "right", number=_N["MSG OUT"]),
    Column(
        "BYTES IN", 9, _F["BYTES IN"], attrgetter("bytes_in"), "right", 7, number=_N["BYTES IN"]
    ),
    Column(
        "BYTES OUT", 9, _F["BYTES OUT"], attrgetter("bytes_out"), "right", 7, number=_N["BYTES OUT"]
    ),
    Column("UNSENT", 9, _unsent, attrgetter("unsent"), "right", 3, number=_N["UNSENT"]),
    Column("ROOMS", 6, _F["ROOMS"], lambda s: s.rooms, priority=8, flex=True),
    # Last, so the sort keys' positions stay; hidden first when the terminal is narrow.
    Column("USER", 8, _user, lambda s: s.user or "", priority=10),
)

# The view's sort key of each live column, for server-side sorting.
SORT_FIELDS = tuple(f.sort for f in LIVE_FIELDS)

CLOSED_COLUMNS = (
    Column("SESSION", 16, lambda s, _: s.id, attrgetter("id"), measure=attrgetter("id")),
    Column("PROTO", 9, _protocol, attrgetter("protocol"), priority=4),
    Column(
        "CLOSED",
        10,
        lambda s, now: fmt_duration(now - s.closed_at) + " ago",
        attrgetter("closed_at"),
        "right",
        priority=1,
        descending=True,
    ),
    Column(
        "LIVED",
        7,
        lambda s, _: fmt_duration(s.closed_at - s.connected_at),
        lambda s: s.closed_at - s.connected_at,
        "right",
        priority=5,
    ),
    Column(
        "REASON",
        20,
        lambda s, _: (s.reason, REASON_TONES.get(s.reason, "")),
        attrgetter("reason"),
    ),
    Column("MSG IN", 7, lambda s, _: fmt_count(s.msgs_in), attrgetter("msgs_in"), "right", 6),
    Column("MSG OUT", 7, lambda s, _: fmt_count(s.msgs_out), attrgetter("msgs_out"), "right", 6),
    Column("BYTES IN", 9, lambda s, _: fmt_bytes(s.bytes_in), attrgetter("bytes_in"), "right", 7),
    Column(
        "BYTES OUT", 9, lambda s, _: fmt_bytes(s.bytes_out), attrgetter("bytes_out"), "right", 7
    ),
    Column("DETAIL", 8, lambda s, _: s.detail, attrgetter("detail"), priority=3, flex=True),
)


def _closed_search(s: ClosedSessionInfo) -> str:
    return f"{s.id} {s.protocol} {s.reason} {s.detail}"


def session_rows(s: SessionInfo, now: float) -> DetailRows:
    """Every field of a live session, for the detail dialog."""
    return [
        ("Session", s.id),
        ("Protocol", s.protocol),
        ("Address", f"{s.address} port {s.port}"),
        ("Mux connection", s.parent or "-"),
        ("User", s.user or "-"),
        ("Connected", f"{fmt_clock(s.connected_at)} ({fmt_duration(now - s.connected_at)} ago)"),
        ("Idle", fmt_duration(now - s.last_activity)),
        ("Messages in / out", f"{fmt_int(s.msgs_in)} / {fmt_int(s.msgs_out)}"),
        ("Bytes in / out", f"{fmt_bytes(s.bytes_in)} / {fmt_bytes(s.bytes_out)}"),
        ("Unsent output", f"{fmt_bytes(s.unsent)} ({fmt_int(s.unsent)} bytes)"),
        ("Rooms", ", ".join(s.rooms) or "-"),
    ]


def closed_rows(s: ClosedSessionInfo, now: float) -> DetailRows:
    """Every field of a closed session, for the detail dialog."""
    return [
        ("Session", s.id),
        ("Protocol", s.protocol),
        ("Address", f"{s.address} port {s.port}"),
        ("Close reason", s.reason),
        ("Detail", s.detail or "-"),
        ("Connected", fmt_clock(s.connected_at)),
        ("Closed", f"{fmt_clock(s.closed_at)} ({fmt_duration(now - s.closed_at)} ago)"),
        ("Lived", fmt_duration(s.closed_at - s.connected_at)),
        ("Messages in / out", f"{fmt_int(s.msgs_in)} / {fmt_int(s.msgs_out)}"),
        ("Bytes in / out", f"{fmt_bytes(s.bytes_in)} / {fmt_bytes(s.bytes_out)}"),
    ]


class ConnectionsPane(Pane):
    """Live sessions; ``c`` flips to the last closed sessions and their reasons."""

    label = "Connections"

    BINDINGS: ClassVar[list[BindingType]] = bindings("connections")

    DEFAULT_CSS = """
    ConnectionsPane #closed { display: none; }
    ConnectionsPane.-closed #closed { display: block; }
    ConnectionsPane.-closed #live { display: none; }
    """

    showing_closed: var[bool] = var(False, init=False)
    """Whether the recently closed sessions are on show instead of the live ones."""

    @property
    def hints(self) -> str:  # type: ignore[override]
        return "c live" if self.showing_closed else "c closed"

    def compose(self) -> ComposeResult:
        yield from super().compose()
        yield LiveTable(
            LIVE_COLUMNS,
            key=attrgetter("id"),
            search=search_text,
            sort_column=3,
            empty_text="no live sessions",
            id="live",
        )
        yield LiveTable(
            CLOSED_COLUMNS,
            key=lambda s: f"{s.id}@{s.closed_at}",
            search=_closed_search,
            sort_column=2,
            empty_text="no closed sessions yet",
            follow_top=True,
            id="closed",
        )

    @property
    def live_table(self) -> LiveTable:
        """The table of live sessions."""
        return self.query_one("#live", LiveTable)

    @property
    def closed_table(self) -> LiveTable:
        """The table of recently closed sessions."""
        return self.query_one("#closed", LiveTable)

    @property
    def table(self) -> LiveTable:
        return self.closed_table if self.showing_closed else self.live_table

    def refresh_view(self, now: float) -> None:
        """Sample live (or closed) sessions once and repaint the changed lines."""
        if self.showing_closed:
            self.closed_table.set_items(self.view.closed_sessions(), now)
            self.set_title(self.describe_table("recently closed", many="recently closed"))
        else:
            table = self.live_table
            query = getattr(self.view, "set_session_query", None)
            if query is not None:
                # A view over the admin socket fetches only the first rows in
                # this table's order and filter: the server sorts and filters.
                column = LIVE_COLUMNS[table.sort_column]
                query(
                    SORT_FIELDS[table.sort_column],
                    table.sort_reverse != column.descending,
                    table.filter_text,
                    self._window_wanted(table),
                )
            window = getattr(self.view, "session_window", None)
            table.set_items(self.view.sessions(), now)
            if window is not None:
                self._window_start = window[0]  # where the rows now shown begin
            extras = []
            totals = getattr(self.view, "session_totals", None)
            if totals is not None and window is not None and len(table.rows) < totals[1]:
                first = window[0] + 1 if table.rows else 0
                extras.append(
                    f"{first:,}-{window[0] + len(table.rows):,} of {totals[1]:,} fetched"
                    f" ({totals[0]:,} live)"
                )
            if table.tagged:
                extras.append(f"{len(table.tagged):,} tagged (X closes)")
            self.set_title(self.describe_table("live session", f"  {G.sep}  ".join(extras)))

    _window_start = 0
    """Where, in the server's order, the rows the live table shows begin (attached)."""

    def _window_wanted(self, table: LiveTable) -> int:
        """The first row to fetch from the server: the window centred on the cursor.

        Reckoned from the rows the table shows, not from the window fetched since,
        which the table has not been given yet.
        """
        item = table.cursor_item
        if item is None:
            return 0
        return max(0, self._window_start + table.rows.index(item) - WINDOW // 2)

    def action_toggle_closed(self) -> None:
        """Switch between live and recently closed sessions."""
        self.showing_closed = not self.showing_closed

    def watch_showing_closed(self, closed: bool) -> None:
        self.set_class(closed, "-closed")
        self.refresh_view(self.clock())
        self.table.focus()

    def action_toggle_tag(self) -> None:
        """Tag the live session under the cursor (for closing many at once)."""
        if not self.showing_closed:
            self.live_table.toggle_tag()
            self.refresh_view(self.clock())

    def selected_session_id(self) -> str | None:
        """The live session under the cursor, if the live table is showing."""
        if self.showing_closed:
            return None
        item = self.live_table.cursor_item
        return item.id if item is not None else None

    def describe(self, item: SessionInfo | ClosedSessionInfo) -> Detail:
        if isinstance(item, ClosedSessionInfo):
            # A closed session no longer changes: the record is its own source.
            return Detail(f"Closed session {item.id}", closed_rows, item, lambda: (item,), _same)
        return Detail(
            f"Session {item.id}",
            session_rows,
            item.id,
            self.view.sessions,
            _id,
            watch=("session", item.id),
        )


def _same(record: object) -> object:
    return record


_id = attrgetter("id")
