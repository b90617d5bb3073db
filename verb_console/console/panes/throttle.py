"""Pane 2: connection throttling per client IP (IPv6 per /64)."""

from __future__ import annotations

from operator import attrgetter

from textual.app import ComposeResult

from verb_console.hub.snapshot import ThrottleInfo

from ..format import fmt_clock, fmt_duration, fmt_int
from .base import Detail, DetailRows, Pane
from .table import Cell, Column, LiveTable


def _blocked(t: ThrottleInfo, _now: float) -> Cell:
    return ("BLOCKED", "error") if t.blocked else ("no", "muted")


def _rejected(t: ThrottleInfo, _now: float) -> Cell:
    return (fmt_int(t.rejected), "warn") if t.rejected else ("0", "muted")


COLUMNS = (
    Column("CLIENT", 15, lambda t, _: t.key, attrgetter("key"), measure=attrgetter("key")),
    Column("LIVE", 5, lambda t, _: fmt_int(t.live), attrgetter("live"), "right"),
    Column("IN WINDOW", 9, lambda t, _: fmt_int(t.in_window), attrgetter("in_window"), "right"),
    Column(
        "RESETS IN",
        9,
        lambda t, now: fmt_duration(t.window_ends - now),
        attrgetter("window_ends"),
        "right",
        priority=3,
    ),
    Column("REJECTED", 8, _rejected, attrgetter("rejected"), "right"),
    Column(
        "LAST SEEN",
        9,
        lambda t, now: fmt_duration(now - t.last_seen) + " ago",
        lambda t: -t.last_seen,
        "right",
        priority=2,
    ),
    Column("BLOCKED", 7, _blocked, lambda t: (not t.blocked, -t.rejected)),
)


def throttle_rows(t: ThrottleInfo, now: float) -> DetailRows:
    """Every field of a throttle entry, for the detail dialog."""
    return [
        ("Client", t.key),
        ("Blocked now", "yes: the next connection is refused" if t.blocked else "no"),
        ("Live connections", fmt_int(t.live)),
        ("Connections in window", fmt_int(t.in_window)),
        ("Window", f"{fmt_clock(t.window_started)} to {fmt_clock(t.window_ends)}"),
        ("Window resets in", fmt_duration(t.window_ends - now)),
        ("Rejected since start", fmt_int(t.rejected)),
        ("Last seen", f"{fmt_clock(t.last_seen)} ({fmt_duration(now - t.last_seen)} ago)"),
    ]


class ThrottlePane(Pane):
    """Throttle state; blocked clients sort first."""

    label = "Throttle"

    def compose(self) -> ComposeResult:
        yield from super().compose()
        yield LiveTable(
            COLUMNS,
            key=attrgetter("key"),
            search=attrgetter("key"),
            sort_column=6,
            empty_text="no clients tracked",
            id="throttle",
        )

    @property
    def table(self) -> LiveTable:
        return self.query_one(LiveTable)

    def refresh_view(self, now: float) -> None:
        """Sample the throttle table once and repaint the changed lines."""
        items = self.view.throttle_state()
        self.table.set_items(items, now)
        blocked = sum(1 for t in items if t.blocked)
        self.set_title(self.describe_table("client", f"{blocked:,} blocked now"))

    def describe(self, item: ThrottleInfo) -> Detail:
        return Detail(
            f"Throttle {item.key}", throttle_rows, item.key, self.view.throttle_state, _key
        )


_key = attrgetter("key")
