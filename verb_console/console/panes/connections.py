"""Pane 1: live sessions, and the recently closed ones a toggle away."""

from __future__ import annotations

from operator import attrgetter
from typing import ClassVar

from textual.app import ComposeResult
from textual.binding import BindingType
from textual.reactive import var

from verb_console.hub.session_fields import filter_rows
from verb_console.hub.snapshot import ClosedSessionInfo, SessionInfo

from ..format import fmt_bytes, fmt_clock, fmt_count, fmt_duration, fmt_int, plural
from ..glyphs import G
from ..keys import bindings
from .base import Detail, DetailRows, Pane
from .session_columns import LIVE_COLUMNS, protocol_tone, toned
from .table import Column, LiveTable

REASON_TONES: dict[str, str] = {
    "client_closed": "muted",
    "shutdown": "muted",
    "operator": "accent",
    "idle_timeout": "warn",
    "slow_consumer": "warn",
    "detached_timeout": "warn",
    "throttled": "warn",
    "over_max_connections": "warn",
    "frame_too_large": "error",
    "protocol_error": "error",
}


CLOSED_COLUMNS = (
    Column("SESSION", 16, lambda s, _: s.id, attrgetter("id"), measure=attrgetter("id")),
    Column(
        "PROTO",
        9,
        toned(lambda s, _: s.protocol, protocol_tone),
        attrgetter("protocol"),
        priority=4,
    ),
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
    """Every field of a live session, for the detail dialog.

    Its refusals (PROTOCOL.md 12.1) follow its user: a session no one has
    authenticated has no policy to refuse it anything."""
    refused: DetailRows = [] if s.user is None else [("Refused requests", fmt_int(s.refused))]
    if s.detached_until is not None:
        # Detached (PROTOCOL.md 11.1): the resume window's time left and what is kept.
        left = fmt_duration(s.detached_until - now)
        kept = f"{fmt_bytes(s.kept)} in {plural(s.kept_msgs, 'message')}"
        refused += [("State", f"detached, {left} left to resume"), ("Kept for it", kept)]
    return [
        ("Session", s.id),
        ("Protocol", s.protocol),
        ("Address", f"{s.address} port {s.port}"),
        ("Mux connection", s.parent or "-"),
        ("User", s.user or "-"),
        *refused,
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
            filter=filter_rows,  # on the values, as the server filters them
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
            page = self.view.session_page(*self.paging.query(table))
            window = self.paging.show(table, page, now, "live")
            extras = [window] if window else []
            if table.tagged:
                extras.append(f"{len(table.tagged):,} tagged (X closes)")
            self.set_title(self.describe_table("live session", f"  {G.sep}  ".join(extras)))

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
            lambda: _found(self.view.session(item.id)),
            _id,
            watch=("session", item.id),
        )


def _found(record: SessionInfo | None) -> tuple[SessionInfo, ...]:
    return (record,) if record is not None else ()


def _same(record: object) -> object:
    return record


_id = attrgetter("id")
