"""Rates over time as the console draws them: the header's resolutions, and the
sparklines of one session's or room's rates in its detail dialog."""

from __future__ import annotations

from dataclasses import dataclass

from textual.content import Content

from verb_console.hub.snapshot import HubView, RateSeries

from .format import fmt_rate, nice_ceiling, scale_label, sparkline

STEPS: tuple[int, ...] = (1, 10, 60)
"""The header's resolutions, cycled with ``h``: seconds a sparkline bar."""
STEP_TAGS: dict[int, str] = {1: "1s", 10: "10s", 60: "1m"}
STEP_NAMES: dict[int, str] = {
    1: "1 s a bar (the last 5 minutes kept)",
    10: "10 s a bar (the last hour kept)",
    60: "1 min a bar (the last 24 hours kept)",
}

WATCH_LABELS: dict[str, str] = {"msgs_in": "msg in", "msgs_out": "msg out", "messages": "messages"}
_LABEL_WIDTH = 8
_VALUE_WIDTH = 8
_SCALE_WIDTH = 12
DIALOG_WIDTH = 68
"""The detail dialog's inner width at its widest (72 less border and padding)."""


def next_step(step: int) -> int:
    """The resolution after ``step``, round the cycle."""
    i = STEPS.index(step) if step in STEPS else -1
    return STEPS[(i + 1) % len(STEPS)]


@dataclass(frozen=True, slots=True)
class RateWatch:
    """One session's or room's rates, sampled by the server while a detail dialog is open."""

    view: HubView
    kind: str  # "session" or "room"
    key: str

    def open(self) -> None:
        self.view.watch_open(self.kind, self.key)

    def close(self) -> None:
        self.view.watch_close(self.kind, self.key)

    def series(self, limit: int) -> RateSeries:
        return self.view.watch_series(self.kind, self.key, 0, limit)


def spark_width(width: int) -> int:
    """Samples that fit on one rate line of ``width`` cells."""
    return max(0, width - _LABEL_WIDTH - 2 - _VALUE_WIDTH - 1 - _SCALE_WIDTH)


def rate_lines(series: RateSeries, width: int) -> Content:
    """A heading and one sparkline per rate, newest at the right, each with its scale."""
    spark = spark_width(width)
    kept = "since this opened, up to 5 min"
    lines = [Content.styled(f"rates, {series.step} s a bar, {kept}", "$text-muted")]
    for field in series.fields:
        values = series.values(field)[-spark:] if spark else []
        top = nice_ceiling(max(values, default=0.0))
        now = fmt_rate(values[-1]) if values else "-"
        parts: list[tuple[str, str]] = [
            (WATCH_LABELS.get(field, field).ljust(_LABEL_WIDTH), "$text-muted"),
            ("  ", ""),
            (now.rjust(_VALUE_WIDTH), "bold"),
            (" ", ""),
            (sparkline(values, spark, top), "$text-accent"),
        ]
        if spark:
            parts.append((f" {scale_label(top, fmt_rate)}".ljust(_SCALE_WIDTH), "$text-muted"))
        lines.append(Content.assemble(*parts))
    return Content("\n").join(lines)
