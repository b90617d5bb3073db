"""Short, fixed-width text for the console: sparklines, bars, clock times, and the units.

Every helper here is pure and cheap: the tables call them for visible rows only,
several times a second, so they avoid allocation-heavy formatting.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence

# The units themselves are the project's one formatter (verb_console.units);
# the console's modules import them from here beside its drawing helpers.
from ..units import fmt_byte_rate as fmt_byte_rate
from ..units import fmt_bytes as fmt_bytes
from ..units import fmt_count as fmt_count
from ..units import fmt_duration as fmt_duration
from ..units import fmt_int as fmt_int
from ..units import fmt_rate as fmt_rate
from ..units import plural as plural
from .glyphs import G

# Eight heights; the first is a baseline so an idle period still shows a trace.


def fmt_clock(epoch: float) -> str:
    """Return the local wall-clock time of an epoch timestamp as ``HH:MM:SS``."""
    return time.strftime("%H:%M:%S", time.localtime(epoch))


def nice_ceiling(value: float) -> float:
    """The smallest 1, 2 or 5 times a power of ten at or above ``value`` times 1.25.

    A sparkline scaled to this keeps headroom, so a steady rate draws a level
    line below the top rather than full-height bars.
    """
    if value <= 0:
        return 0.0
    target = value * 1.25
    step = 10.0 ** math.floor(math.log10(target))
    for m in (1, 2, 5, 10):
        if m * step >= target:
            return m * step
    return 10 * step  # pragma: no cover


def scale_label(top: float, fmt: Callable[[float], str]) -> str:
    """What a full-height sparkline bar means (``≤10k/s``); ``idle`` when nothing moved.

    A ceiling of zero would read ``≤0/s``, a bound that says nothing.
    """
    return f"{G.at_most}{fmt(top)}" if top > 0 else "idle"


def sparkline(values: Sequence[float], width: int, top: float | None = None) -> str:
    """Return the last ``width`` values as a block-character sparkline.

    The line is right-aligned (newest sample at the right edge) and padded with
    spaces on the left while the history is still shorter than ``width``. Bars
    are scaled to ``top`` (default: the largest value shown).
    """
    if width <= 0:
        return ""
    tail = list(values[-width:])
    if not tail:
        return " " * width
    if top is None:
        top = max(tail)
    spark = G.spark
    last = len(spark) - 1
    if top <= 0:
        chars = spark[0] * len(tail)
    else:
        chars = "".join(spark[min(last, int(v / top * last + 0.5))] for v in tail)
    return chars.rjust(width)


def progress_bar(done: int, total: int, width: int) -> str:
    """Return a bar such as ``██████░░░░ 60%`` exactly ``width`` cells wide."""
    fraction = 0.0 if total <= 0 else min(1.0, max(0.0, done / total))
    label = f"{int(fraction * 100):>3d}%"
    bar_width = width - len(label) - 1
    if bar_width < 3:
        return label.rjust(width)[:width]
    filled = int(fraction * bar_width)
    return G.full * filled + G.empty * (bar_width - filled) + " " + label


def fmt_eta(remaining_bytes: int, bytes_per_second: float) -> str:
    """Return the time left for a transfer, or ``--`` while no speed is known."""
    if bytes_per_second <= 0:
        return "--"
    return fmt_duration(remaining_bytes / bytes_per_second)
