"""Pane 5: file transfers: active ones with progress, finished and refused ones with outcome."""

from __future__ import annotations

from operator import attrgetter

from textual.app import ComposeResult

from verb_console.hub.snapshot import TransferInfo

from ..format import fmt_byte_rate, fmt_bytes, fmt_clock, fmt_duration, fmt_eta, progress_bar
from .base import Detail, DetailRows, Pane
from .table import Cell, Column, LiveTable

BAR_WIDTH = 16
_STATE_ORDER = {"active": 0, "failed": 1, "refused": 2, "aborted": 3, "complete": 4}
_STATE_TONES = {
    "active": "accent",
    "complete": "ok",
    "failed": "error",
    "refused": "error",
    "aborted": "warn",
}


def speed(t: TransferInfo, now: float) -> float:
    """Bytes per second: so far for an active transfer, overall for a finished one."""
    if t.ended_at is not None:
        return t.speed
    took = now - t.started_at
    return t.received / took if took > 0 else 0.0


def _progress(t: TransferInfo, _now: float) -> Cell:
    if t.state == "active":
        return (progress_bar(t.received, t.size, BAR_WIDTH), "accent")
    if t.state == "complete":
        return ("done", "ok")
    return (t.outcome or t.state, _STATE_TONES.get(t.state, ""))


def _eta(t: TransferInfo, now: float) -> Cell:
    if t.state == "active":
        return fmt_eta(t.size - t.received, speed(t, now))
    end = t.ended_at if t.ended_at is not None else now
    return (fmt_duration(now - end) + " ago", "muted")


COLUMNS = (
    Column(
        "STATE",
        8,
        lambda t, _: (t.state, _STATE_TONES.get(t.state, "")),
        lambda t: (_STATE_ORDER.get(t.state, 9), -t.started_at),
    ),
    Column(
        "SESSION",
        16,
        lambda t, _: t.session_id,
        attrgetter("session_id"),
        measure=attrgetter("session_id"),
        priority=4,
    ),
    Column("FILE", 12, lambda t, _: t.filename, attrgetter("filename"), flex=True),
    Column("SIZE", 9, lambda t, _: fmt_bytes(t.size), attrgetter("size"), "right", 3),
    Column("PROGRESS / OUTCOME", BAR_WIDTH, _progress, lambda t: t.received / max(1, t.size)),
    Column(
        "SPEED",
        11,
        lambda t, now: ("-", "muted") if t.state == "refused" else fmt_byte_rate(speed(t, now)),
        lambda t: t.received / max(1e-9, (t.ended_at or t.started_at + 1) - t.started_at),
        "right",
        2,
    ),
    Column("ETA/ENDED", 9, _eta, lambda t: t.ended_at or 0.0, "right", 1),
)


def transfer_rows(t: TransferInfo, now: float) -> DetailRows:
    """Every field of a transfer, for the detail dialog."""
    rows = [
        ("Transfer", t.transfer_id),
        ("Session", f"{t.session_id} ({t.protocol})"),
        ("File", t.filename),
        ("State", t.state),
        ("Received", f"{fmt_bytes(t.received)} of {fmt_bytes(t.size)}"),
        ("Progress", progress_bar(t.received, t.size, 30)),
        ("Speed", fmt_byte_rate(speed(t, now))),
        ("Started", f"{fmt_clock(t.started_at)} ({fmt_duration(now - t.started_at)} ago)"),
    ]
    if t.ended_at is None:
        rows.append(("Time left", fmt_eta(t.size - t.received, speed(t, now))))
    else:
        rows.append(
            ("Ended", f"{fmt_clock(t.ended_at)} after {fmt_duration(t.ended_at - t.started_at)}")
        )
    if t.outcome:
        rows.append(("Outcome", t.outcome))
    return rows


class TransfersPane(Pane):
    """Transfers, active first."""

    label = "Transfers"

    def compose(self) -> ComposeResult:
        yield from super().compose()
        yield LiveTable(
            COLUMNS,
            key=lambda t: "/".join(map(str, _key(t))),
            search=lambda t: f"{t.session_id} {t.filename} {t.state} {t.outcome}",
            sort_column=0,
            empty_text="no transfers",
            id="transfers",
        )

    @property
    def table(self) -> LiveTable:
        return self.query_one(LiveTable)

    def refresh_view(self, now: float) -> None:
        """Sample transfers once and repaint the changed lines."""
        items = self.view.transfers()
        self.table.set_items(items, now)
        active = sum(1 for t in items if t.state == "active")
        refused = sum(1 for t in items if t.state == "refused")
        extra = f"{active:,} active, {refused:,} refused" if refused else f"{active:,} active"
        self.set_title(self.describe_table("transfer", extra))

    def describe(self, item: TransferInfo) -> Detail:
        return Detail(
            f"Transfer {item.filename}", transfer_rows, _key(item), self.view.transfers, _key
        )


def _key(t: TransferInfo) -> tuple[str, ...]:
    # A refused request may repeat an open upload's id (duplicate_transfer) or have none.
    if t.state == "refused":
        return (t.session_id, t.transfer_id, "refused", repr(t.started_at))
    return (t.session_id, t.transfer_id)
