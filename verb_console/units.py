"""Numbers as people read them, and back: sizes, counts, rates, durations and plurals.

The one formatter of every count and unit the project prints: the console's
cells, header and notices, ``ctl``'s text, the server's log lines and the
examples all use these, so ``1.5 KiB`` and ``1 session`` read the same
everywhere. Pure and cheap; the server applies the console's filter terms
(``idle>60``, ``unsent>=1MiB``) to the same text. Machine output (``--json``,
exports, ``/metrics``) never goes through here: it carries raw numbers.
"""

from __future__ import annotations

import re
from functools import lru_cache

_BYTE_UNITS = ("B", "KiB", "MiB", "GiB", "TiB", "PiB")
_COUNT_UNITS = ("", "k", "M", "G", "T")


def fmt_bytes(n: float) -> str:
    """Return a byte count in binary units, e.g. ``1.5 KiB`` or ``512 B``."""
    if n < 0:
        return "-" + fmt_bytes(-n)
    if n < 1024:
        return f"{int(n)} B"
    value = float(n)
    for unit in _BYTE_UNITS[1:]:
        value /= 1024.0
        if value < 1024 or unit == _BYTE_UNITS[-1]:
            return f"{value:.1f} {unit}" if value < 100 else f"{value:.0f} {unit}"
    raise AssertionError("unreachable")  # pragma: no cover


def fmt_int(n: int) -> str:
    """Return an exact integer with thousands separators, e.g. ``12,345``."""
    return f"{n:,}"


def plural(n: int, noun: str, many: str = "") -> str:
    """``1 session``, ``2 sessions``, ``1,024 mux connections``."""
    return f"{n:,} {noun if n == 1 else many or noun + 's'}"


def fmt_rate(per_second: float) -> str:
    """Return a count rate, e.g. ``1.2k/s``."""
    if per_second < 10 and per_second != int(per_second):
        return f"{per_second:.1f}/s"
    if per_second < 1000:
        return f"{int(per_second)}/s"
    # Rates jitter, so three significant digits are plenty (unlike exact counts).
    value, unit = per_second / 1000.0, "k"
    if value >= 1000:
        value, unit = value / 1000.0, "M"
    return f"{value:.1f}{unit}/s" if value < 100 else f"{value:.0f}{unit}/s"


def fmt_byte_rate(per_second: float) -> str:
    """Return a byte rate, e.g. ``3.4 MiB/s``."""
    return f"{fmt_bytes(per_second)}/s"


def fmt_count(n: float) -> str:
    """Return a count with a metric suffix once it no longer fits, e.g. ``12.3k``."""
    if n < 0:
        return "-" + fmt_count(-n)
    if n < 10_000:
        return f"{int(n)}"
    value = float(n)
    for unit in _COUNT_UNITS[1:]:
        value /= 1000.0
        if value < 1000 or unit == _COUNT_UNITS[-1]:
            return f"{value:.1f}{unit}" if value < 100 else f"{value:.0f}{unit}"
    raise AssertionError("unreachable")  # pragma: no cover


def fmt_duration(seconds: float) -> str:
    """Return a duration at the two most useful units: ``42s``, ``3m05s``, ``2h03m``, ``4d07h``.

    Negative durations (clock skew between sampler and hub) read as zero rather
    than confusing the operator with a minus sign.
    """
    s = int(seconds) if seconds > 0 else 0
    if s < 60:
        return f"{s}s"
    m, s = divmod(s, 60)
    if m < 60:
        return f"{m}m{s:02d}s"
    h, m = divmod(m, 60)
    if h < 24:
        return f"{h}h{m:02d}m"
    d, h = divmod(h, 24)
    return f"{d}d{h:02d}h"


_DURATION = re.compile(r"^(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?$")
_NUMBER = re.compile(r"^(-?[\d,]*\.?\d+)\s*([a-z]*)(?:/s)?$")
_SUFFIX = {
    "": 1.0,
    "k": 1e3,
    "m": 1e6,
    "g": 1e9,
    "t": 1e12,
    "b": 1.0,
    "kb": 1e3,
    "mb": 1e6,
    "gb": 1e9,
    "tb": 1e12,
    "kib": 1024.0,
    "mib": 1024.0**2,
    "gib": 1024.0**3,
    "tib": 1024.0**4,
}


def duration_read_back(seconds: float) -> float:
    """What :func:`to_number` reads back from ``fmt_duration(seconds)``, with no text made."""
    s = int(seconds) if seconds > 0 else 0
    if s < 3600:
        return float(s)  # 42s, 3m05s: to the second
    if s < 86400:
        return float(s // 60 * 60)  # 2h03m: to the minute
    return float(s // 3600 * 3600)  # 4d07h: to the hour


def count_read_back(n: int) -> float | None:
    """What :func:`to_number` reads back from ``fmt_count(n)``; below 10,000 with no text made.

    Small counts are exact and each is its own text, so reading them back through
    the cache would miss for nearly every session; larger ones have few texts.
    """
    if 0 <= n < 10_000:
        return float(n)
    return to_number(fmt_count(n))


def bytes_read_back(n: int) -> float | None:
    """What :func:`to_number` reads back from ``fmt_bytes(n)``; below 1 KiB with no text made."""
    if 0 <= n < 1024:
        return float(n)
    return to_number(fmt_bytes(n))


@lru_cache(maxsize=8192)
def to_number(text: str) -> float | None:
    """Read a cell back as a number: ``1m05s`` is 65, ``1.5 KiB`` 1536, ``12.3k`` 12300."""
    text = text.strip().lower().removesuffix(" ago")
    if not text:
        return None
    match = _DURATION.match(text)
    if match and any(match.groups()):
        d, h, m, s = (int(g) if g else 0 for g in match.groups())
        return float(((d * 24 + h) * 60 + m) * 60 + s)
    match = _NUMBER.match(text)
    if match is None:
        return None
    number, suffix = match.groups()
    scale = _SUFFIX.get(suffix)
    if scale is None:
        return None
    return float(number.replace(",", "")) * scale
