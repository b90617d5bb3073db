"""The four-line header: state, listeners, counters and traffic sparklines."""

from __future__ import annotations

from collections.abc import Callable

from textual.content import Content
from textual.widget import Widget

from verb_console.hub.snapshot import Overview, Rates, RateSeries

from .format import (
    fmt_byte_rate,
    fmt_duration,
    fmt_int,
    fmt_rate,
    nice_ceiling,
    scale_label,
    sparkline,
)
from .glyphs import G
from .rates import STEP_TAGS, STEPS, next_step

CONNECTING = "(connecting)"
""":attr:`HeaderBar.attached_to` of an attached console that has not reached its server yet
(followed by the admin socket it tries, when known)."""

History = Callable[[int, int, int], RateSeries]
"""The view's ``traffic_history(step, since, limit)``."""

_STATE_STYLES = {
    "running": "bold $text-success",
    "draining": "bold $text-warning",
    "stopped": "bold $text-error",
}
_LABEL = "$text-muted"
_VALUE = "bold"


class HeaderBar(Widget):
    """Server-wide figures, redrawn only when their text changes."""

    DEFAULT_CSS = """
    HeaderBar {
        height: 4;
        background: $panel;
        color: $text;
        padding: 0 1;
    }
    """

    def __init__(
        self, clock: Callable[[], float], history: History, *, id: str | None = None
    ) -> None:
        super().__init__(id=id)
        self.clock = clock
        self.overview: Overview | None = None
        self.paused = False
        self.read_only = False
        # The server's own rate history (hub/history.py), at the resolution on show.
        self.read_history = history
        self.step = STEPS[0]
        self.history = RateSeries(self.step, 0, (), ())
        self._content: Content = Content("")
        self._key: tuple[object, ...] = ()
        self.attached_to: str | None = None
        """For ``verb-console attach``: the server's process (``pid 4242``), or
        :data:`CONNECTING` and the socket before it is reached; None when hosted."""
        self.link_down_since: float | None = None
        """When an attached console lost its server (None while the link is up)."""

    def cycle_step(self) -> int:
        """Show the next resolution (1 s, 10 s, 1 min a bar); returns it."""
        self.step = next_step(self.step)
        if self.overview is not None:
            self.update_overview(self.overview, self.paused, self.read_only)
        return self.step

    def update_overview(self, overview: Overview, paused: bool, read_only: bool) -> None:
        """Take a fresh overview, and the newest samples of the history on show."""
        now = self.clock()
        width = max(20, self.content_region.width)
        self.history = self.read_history(self.step, 0, max(1, _spark_width(width)))
        self.overview, self.paused, self.read_only = overview, paused, read_only
        attached = self.attached_to is not None and not self.connecting
        if attached and overview.state.startswith("disconnected"):
            if self.link_down_since is None:
                self.link_down_since = now
        else:
            self.link_down_since = None
        key: tuple[object, ...] = (overview, int(now), paused, read_only, self.history.seq)
        key += (self.step, width, self.attached_to)
        if key != self._key:
            self._key = key
            self._content = self._build(now)
            self.refresh()

    def render(self) -> Content:
        return self._content

    @property
    def connecting(self) -> bool:
        """An attached console that has not reached its server yet."""
        return self.attached_to is not None and self.attached_to.startswith(CONNECTING)

    def on_resize(self) -> None:
        if self.overview is not None:
            # A wider header shows more samples: read them again.
            self._key = ()
            self.update_overview(self.overview, self.paused, self.read_only)

    def _build(self, now: float) -> Content:
        ov = self.overview
        if ov is None:
            return Content("")
        width = max(20, self.content_region.width)
        return Content("\n").join(
            [
                self._line_state(ov, now, width),
                self._line_counts(ov, width),
                *self._lines_traffic(width),
            ]
        )

    def _line_state(self, ov: Overview, now: float, width: int) -> Content:
        down = self.link_down_since
        if down is not None:
            # The server's state is unknown while the link is down: say that, and for how long.
            state: tuple[str, str] = (
                f"{G.dot} LINK DOWN {fmt_duration(now - down)}, retrying",
                "bold $text-error",
            )
        elif self.connecting:
            state = (f"{G.dot} CONNECTING", "bold $text-warning")
        else:
            state = (f"{G.dot} " + ov.state.upper(), _STATE_STYLES.get(ov.state, "bold"))
        parts: list[str | tuple[str, str]] = [("VERB ", "bold $text-accent"), state]
        if self.attached_to is not None:
            # Always said, and to which server: its pid, or the socket still being tried.
            target = self.attached_to.removeprefix(CONNECTING).strip()
            room = max(12, width - 40)
            if len(target) > room:
                # A long socket path keeps its end, which names the server.
                target = G.more + target[-(room - len(G.more)) :]
            parts.append(("  ATTACHED", "bold $text-accent"))
            if target:
                parts += [(" ", ""), (target, _VALUE)]
        if self.paused:
            parts.append(("  ", ""))
            # Its own foreground: reversing the default one is light on yellow somewhere.
            parts.append((f"{G.pause} PAUSED", "bold ansi_black on $warning"))
        if self.read_only or ov.read_only:
            parts.append(("  READ-ONLY", "bold $text-accent"))
        if ov.node:
            link_style = "bold $text-success" if ov.link == "up" else "bold $text-error"
            parts += [("  node ", _LABEL), (ov.node, _VALUE), (" redis ", _LABEL)]
            parts.append((ov.link or "-", link_style))
        if down is None and not self.connecting:
            parts += [("  up ", _LABEL), (fmt_duration(now - ov.started_at), _VALUE)]
        head = Content.assemble(*parts)
        room = width - head.cell_length - 2
        # Before an attached console first reaches its server, it knows no listeners.
        listeners = ", ".join(ov.listeners) or ("" if self.connecting else "not listening")
        if room > 8 and listeners:
            if len(listeners) > room:
                listeners = listeners[: room - 1] + G.more
            head = Content.assemble(head, ("  ", ""), (listeners, "$text-muted"))
        return head

    def _line_counts(self, ov: Overview, width: int) -> Content:
        t = ov.totals
        slow_style = "bold $text-warning" if t.slow_consumers else _VALUE
        throttle_style = "bold $text-warning" if t.rejected_throttle else _VALUE
        max_style = "bold $text-warning" if t.rejected_max else _VALUE
        parts: list[str | tuple[str, str]] = [
            # TCP connections and sessions differ by the mux streams: both are shown.
            ("conns ", _LABEL),
            (fmt_int(ov.connections), _VALUE),
            ("  sessions ", _LABEL),
            (fmt_int(ov.sessions), _VALUE),
            (" peak ", _LABEL),
            (fmt_int(ov.peak_sessions), _VALUE),
            ("  slow ", _LABEL),
            (fmt_int(t.slow_consumers), slow_style),
            ("  throttled ", _LABEL),
            (fmt_int(t.rejected_throttle), throttle_style),
            ("  rejected ", _LABEL),
            (fmt_int(t.rejected_max), max_style),
        ]
        line = Content.assemble(*parts)
        refused = ov.refusals.total
        if refused:
            # Requests the policy or a ban refused (PROTOCOL.md 12), shown once there are some;
            # where the line is short of room, they matter more than the peak does.
            tail = Content.assemble(
                ("  refused ", _LABEL), (fmt_int(refused), "bold $text-warning")
            )
            if line.cell_length + tail.cell_length > width:
                line = Content.assemble(*parts[:4], *parts[6:])
            line = Content.assemble(line, tail)
        turn = _slow_turn(ov)
        if turn is not None and line.cell_length + turn.cell_length <= width:
            line = Content.assemble(line, turn)
        extra = Content.assemble(("  accepted ", _LABEL), (fmt_int(t.accepted), _VALUE))
        if line.cell_length + extra.cell_length <= width:
            line = Content.assemble(line, extra)
        return line

    def _lines_traffic(self, width: int) -> list[Content]:
        history = self.history
        # The figures are the newest the hub has, not the last sparkline sample,
        # which can be up to a second older.
        current = self.overview.rates if self.overview is not None else Rates()
        # Two value columns and two scales of fixed width keep the sparklines aligned.
        spark = _spark_width(width)
        tag = STEP_TAGS.get(history.step, "").rjust(3)
        lines = []
        for label, msgs, data in (
            ("in ", "msgs_in", "bytes_in"),
            ("out", "msgs_out", "bytes_out"),
        ):
            has = spark and msgs in history.fields
            msg_values = history.values(msgs)[-spark:] if has else []
            byte_values = history.values(data)[-spark:] if has else []
            msg_now, bytes_now = getattr(current, msgs), getattr(current, data)
            # The figure beside a sparkline is the newest rate, which can exceed the
            # samples (at 1 min a bar, a burst this second): the scale covers it too.
            msg_top = nice_ceiling(max(msg_values, default=0.0))
            byte_top = nice_ceiling(max(byte_values, default=0.0))
            msg_top = max(msg_top, nice_ceiling(msg_now))
            byte_top = max(byte_top, nice_ceiling(bytes_now))
            parts: list[tuple[str, str]] = [
                (label + " ", _LABEL),
                (fmt_rate(msg_now).rjust(8), _VALUE),
                (" msg ", _LABEL),
                # The resolution on show (h cycles it): seconds a bar.
                (tag + " ", _LABEL),
                (sparkline(msg_values, spark, msg_top), "$text-accent"),
            ]
            if spark:
                parts.append((_scale(scale_label(msg_top, fmt_rate)), _LABEL))
            parts += [
                ("  ", ""),
                (fmt_byte_rate(bytes_now).rjust(11), _VALUE),
                (" ", ""),
                (sparkline(byte_values, spark, byte_top), "$text-success"),
            ]
            if spark:
                parts.append((_scale(scale_label(byte_top, fmt_byte_rate)), _LABEL))
            lines.append(Content.assemble(*parts))
        return lines


SCALE_WIDTH = 12
"""Room after each sparkline for its scale, e.g. `` ↑10k/s``."""


#: A loop turn at least this long (seconds) in the last minute is shown: every
#: client waited for it.
SLOW_TURN_SHOWN = 0.020


def _slow_turn(ov: Overview) -> Content | None:
    """The last minute's slowest loop turn, once one went over 20 ms, and what it did."""
    if not ov.slowest_turns:
        return None
    worst = ov.slowest_turns[0]
    if worst.duration < SLOW_TURN_SHOWN:
        return None
    doing = f" {worst.doing}" if worst.doing else ""
    return Content.assemble(
        ("  slowest turn ", _LABEL),
        (f"{worst.duration * 1000:.0f} ms{doing}", "bold $text-warning"),
    )


def _spark_width(width: int) -> int:
    """Samples each of a line's two sparklines shows, at ``width`` cells."""
    return max(0, (width - 35 - 2 * SCALE_WIDTH) // 2)


def _scale(top: str) -> str:
    """The label saying what a full-height bar means."""
    # A label one cell too long (``<=19.5 KiB/s`` in ASCII) gives up its leading space
    # rather than its unit.
    label = f" {top}" if len(top) < SCALE_WIDTH else top
    return label.ljust(SCALE_WIDTH)[:SCALE_WIDTH]
