"""Pane 7: the message tap, as redis-cli MONITOR: a sample of the messages flowing.

The hub's tap is open only while this pane is on show (the screen opens and
closes it), so a console that never shows the pane costs the server nothing.
"""

from __future__ import annotations

from collections import deque
from operator import attrgetter

from textual.app import ComposeResult

from verb_console.hub.snapshot import HubView
from verb_console.hub.tap import TapRow

from ..format import fmt_bytes, fmt_clock, plural
from ..glyphs import G
from .base import Clock, Detail, DetailRows, Pane
from .table import Column, LiveTable

MAX_ROWS = 1000

COLUMNS = (
    Column("TIME", 8, lambda r, _: fmt_clock(r.time), attrgetter("seq")),
    Column(
        "SESSION",
        16,
        lambda r, _: r.session,
        attrgetter("session"),
        measure=attrgetter("session"),
    ),
    Column("PROTO", 6, lambda r, _: r.protocol, attrgetter("protocol"), priority=2),
    Column("TYPE", 12, lambda r, _: r.type, attrgetter("type")),
    Column("SIZE", 8, lambda r, _: fmt_bytes(r.size), attrgetter("size"), "right"),
    Column(
        "ROOM",
        10,
        lambda r, _: (r.room or "-", "" if r.room else "muted"),
        attrgetter("room"),
        flex=True,
    ),
)


class TapPane(Pane):
    """The last :data:`MAX_ROWS` sampled messages, newest last, with the skipped count."""

    label = "Tap"

    def __init__(self, view: HubView, clock: Clock, *, id: str | None = None) -> None:
        super().__init__(view, clock, id=id)
        self.rows: deque[TapRow] = deque(maxlen=MAX_ROWS)
        self._seq = 0
        self._open = False
        self._counts = (0, 0, 0)
        self._shown: tuple[int, str] = (-1, "")

    def compose(self) -> ComposeResult:
        yield from super().compose()
        yield LiveTable(
            COLUMNS,
            key=lambda r: str(r.seq),
            search=lambda r: f"{r.session} {r.protocol} {r.type} {r.room}",
            sort_column=0,
            empty_text="no messages yet",
            id="tap",
        )

    @property
    def table(self) -> LiveTable:
        return self.query_one(LiveTable)

    def open_tap(self) -> None:
        """Start sampling (the pane came on show)."""
        if not self._open:
            self._open = True
            self.view.tap_open()

    def close_tap(self) -> None:
        """Stop sampling: the hub's hot path is back to one None check."""
        if self._open:
            self._open = False
            self.view.tap_close()

    def on_unmount(self) -> None:
        self.close_tap()

    def refresh_view(self, now: float) -> None:
        if self._open:
            batch = self.view.tap_since(self._seq)
            if batch is not None:
                if batch.rows:
                    self.rows.extend(batch.rows)
                    self._seq = batch.rows[-1].seq
                self._counts = (batch.seen, batch.skipped, batch.rate)
        table = self.table
        shown = (self._seq, table.filter_text)
        if shown != self._shown:
            self._shown = shown
            table.set_items(list(self.rows), now)
            if table.rows:
                table.move_cursor(len(table.rows) - 1)
        self._update_title()

    def _update_title(self) -> None:
        seen, skipped, rate = self._counts
        state = "on" if self._open else "off"
        extra = (
            f"tap {state}, at most {rate}/s  {G.sep}  {plural(seen, 'message')} seen, "
            f"{skipped:,} skipped"
        )
        self.set_title(self.describe_table("row", extra))

    def describe(self, item: TapRow) -> Detail:
        return Detail(f"Message {item.seq}", tap_rows, item.seq, lambda: (item,), _seq)


_seq = attrgetter("seq")


def tap_rows(r: TapRow, _now: float) -> DetailRows:
    """Every field of a sampled message, for the detail dialog."""
    return [
        ("Time", fmt_clock(r.time)),
        ("Session", r.session),
        ("Protocol", r.protocol),
        ("Type", r.type),
        ("Size", f"{fmt_bytes(r.size)} ({r.size:,} bytes)"),
        ("Room", r.room or "-"),
    ]
