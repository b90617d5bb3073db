"""Column definitions for :class:`~.table.LiveTable`, fitting text into cells and
columns into the table's width."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from rich.cells import cell_len

from ..glyphs import G

FLEX_LIMIT = 40
"""The widest a flex column grows when other columns follow it."""

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
    field: str = ""
    """The hub's field the column shows, for a table the server sorts (Connections)."""


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


def fit_columns(
    columns: Sequence[Column], measured: Sequence[int], sort_column: int, width: int
) -> tuple[list[tuple[int, int]], list[int]]:
    """The columns that fit in ``width``, as ``(column index, width)``, and the
    spaces after each of them.

    ``measured`` is the widest text of each measured column (0 for the others).
    Columns of one priority hide together (``BYTES IN`` never without
    ``BYTES OUT``), and the column the table is sorted by never hides.
    """
    widths = []
    for index, column in enumerate(columns):
        # Room for the label and the sort arrow; the sorted column's arrow also
        # keeps a space from the column before it.
        extra = 2 if index == sort_column else 1
        w = max(column.width, cell_len(column.label) + extra)
        if column.measure is not None and index < len(measured):
            w = max(w, measured[index])
        widths.append(w)
    shown = list(range(len(columns)))

    def total() -> int:
        return sum(widths[i] + _gap(columns, i, shown) for i in shown) - 1

    hidden: list[list[int]] = []
    for priority in sorted({c.priority for c in columns if c.priority}, reverse=True):
        if total() <= width:
            break
        group = [i for i in shown if columns[i].priority == priority and i != sort_column]
        hidden.append(group)
        shown = [i for i in shown if i not in group]
    # Hiding a wide group may leave room for a narrower one hidden before it.
    for group in reversed(hidden[:-1]):
        trial = sorted(shown + group)
        before, shown = shown, trial
        if total() > width:
            shown = before
    spare = width - total()
    layout = []
    for index in shown:
        w = widths[index]
        if columns[index].flex and spare > 0:
            # The last column takes all that is left (a log line); one with columns
            # after it stops at FLEX_LIMIT, so those stay near the data (ROOMS, USER).
            grow = spare if index == shown[-1] else max(0, min(spare, FLEX_LIMIT - w))
            w += grow
            spare -= grow
        layout.append((index, w))
    return layout, [_gap(columns, i, shown) for i in shown]


def _gap(columns: Sequence[Column], index: int, shown: list[int]) -> int:
    """Spaces after column ``index``: two between a number and the text after it."""
    at = shown.index(index)
    if at + 1 < len(shown):
        nxt = columns[shown[at + 1]]
        if columns[index].align == "right" and nxt.align == "left":
            return 2
    return 1
