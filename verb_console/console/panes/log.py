"""Pane 6: the event log: connects, closes, errors and operator actions."""

from __future__ import annotations

from collections import deque
from operator import attrgetter
from typing import ClassVar

from textual import on
from textual.app import ComposeResult
from textual.binding import BindingType
from textual.reactive import var

from verb_console.hub.snapshot import HubView, LogEvent

from ..format import fmt_clock
from ..keys import bindings
from .base import Clock, Detail, DetailRows, Pane
from .table import Column, LiveTable

MAX_EVENTS = 2000
_KIND_TONES = {"error": "error", "operator": "accent", "server": "warn", "close": "muted"}

COLUMNS = (
    # By time, then arrival: an attached console numbers events as they reach it, so
    # the server's backlog arrives after its own "attached" line although older.
    Column("TIME", 8, lambda e, _: fmt_clock(e.time), attrgetter("time", "seq")),
    Column("KIND", 8, lambda e, _: (e.kind, _KIND_TONES.get(e.kind, "")), attrgetter("kind")),
    Column("EVENT", 20, lambda e, _: e.text, attrgetter("text"), flex=True),
)


class LogPane(Pane):
    """The last :data:`MAX_EVENTS` events; the tail follows new ones unless paused."""

    label = "Log"

    BINDINGS: ClassVar[list[BindingType]] = bindings("log")

    following: var[bool] = var(True, init=False)
    """Whether the cursor stays on the newest event as events arrive."""

    def __init__(self, view: HubView, clock: Clock, *, id: str | None = None) -> None:
        super().__init__(view, clock, id=id)
        self.events: deque[LogEvent] = deque(maxlen=MAX_EVENTS)
        self._seq = 0
        self._version = 0
        self._shown_version: tuple[int, str] = (-1, "")

    @property
    def hints(self) -> str:  # type: ignore[override]
        return "t resume tail" if not self.following else "t pause tail"

    def compose(self) -> ComposeResult:
        yield from super().compose()
        yield LiveTable(
            COLUMNS,
            key=lambda e: str(e.seq),
            search=lambda e: f"{e.kind} {e.text}",
            sort_column=0,
            empty_text="no events yet",
            id="log",
        )

    @property
    def table(self) -> LiveTable:
        return self.query_one(LiveTable)

    def collect(self) -> None:
        """Fetch only events newer than the last one seen; runs even while hidden."""
        new = self.view.log_since(self._seq)
        if new:
            self.events.extend(new)
            self._seq = new[-1].seq
            self._version += 1

    def refresh_view(self, now: float) -> None:
        """Show what :meth:`collect` gathered; a no-op when nothing is new."""
        self.collect()
        table = self.table
        # A new filter shows too, not only new events.
        shown = (self._version, table.filter_text)
        if shown == self._shown_version:
            return
        self._shown_version = shown
        table.set_items(list(self.events), now)
        if self.following:
            self._to_tail()
        self._update_title()

    def _update_title(self) -> None:
        tail = "following" if self.following else "tail PAUSED"
        self.set_title(self.describe_table("event", tail))

    def _to_tail(self) -> None:
        table = self.table
        if table.rows:
            table.move_cursor(len(table.rows) - 1)

    def action_toggle_tail(self) -> None:
        """Stop or resume following new events."""
        self.following = not self.following

    def watch_following(self, following: bool) -> None:
        if following:
            self._to_tail()
        self._update_title()

    @on(LiveTable.CursorMoved)
    def _cursor_moved(self, event: LiveTable.CursorMoved) -> None:
        # Reading back through the log should not be yanked away by new events.
        self.following = event.item is not None and event.item is self.table.rows[-1]

    def describe(self, item: LogEvent) -> Detail:
        # An event never changes: the record is its own source.
        return Detail(f"Log event {item.seq}", event_rows, item.seq, lambda: (item,), _seq)


_seq = attrgetter("seq")


def event_rows(e: LogEvent, _now: float) -> DetailRows:
    """Every field of a log event, for the detail dialog."""
    return [
        ("Time", fmt_clock(e.time)),
        ("Kind", e.kind),
        ("Sequence", str(e.seq)),
        ("Event", e.text),
    ]
