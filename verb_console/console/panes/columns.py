"""Column definitions for :class:`~.table.LiveTable`, and fitting text into cells."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from rich.cells import cell_len

from ..glyphs import G

Cell = str | tuple[str, str]
"""A cell's text, or ``(text, tone)`` where tone is muted, warn, error, ok or accent."""


@dataclass(frozen=True, slots=True)
class Column:
    """One column of a :class:`LiveTable`."""

    label: str
    width: int
    render: Callable[[Any, float], Cell]
    sort_key: Callable[[Any], Any] | None = None
    align: Literal["left", "right"] = "left"
    priority: int = 0
    """Columns with higher numbers are hidden first when the table is narrow; 0 never hides."""
    measure: Callable[[Any], str] | None = None
    """Grow the column to fit the longest of these strings, so identifiers are never cut.

    An ``attrgetter`` keeps this pass over every row in C.
    """
    flex: bool = False
    """Take whatever width is left over."""
    descending: bool = False
    """The key's natural order reads backwards (e.g. a start time sorted as an age)."""
    number: Callable[[Any, float], float | None] | None = None
    """The number the cell's text reads back as, made without the text (a filter's
    ``idle>60`` compares it); None: the filter reads the text back."""


def fit(text: str, width: int, align: str) -> str:
    size = len(text) if text.isascii() else cell_len(text)
    if size > width:
        if width <= 0:
            return ""
        # Cut by cells, not characters, so wide characters do not overflow.
        out, used = [], 0
        for ch in text:
            w = cell_len(ch)
            if used + w > width - 1:
                break
            out.append(ch)
            used += w
        return "".join(out) + G.more + " " * (width - 1 - used)
    pad = " " * (width - size)
    return pad + text if align == "right" else text + pad
