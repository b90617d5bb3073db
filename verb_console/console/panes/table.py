"""A table that renders only the rows in view.

Textual's DataTable keeps a widget-side copy of every row and re-measures on
update, which is too slow to rebuild several times a second with thousands of
sessions. :class:`LiveTable` instead holds a plain sorted list of the view's
records and formats a row only when its line is on screen. On each refresh it
compares the text of the visible lines with what it drew last time and repaints
only the lines that changed.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, ClassVar

from rich.segment import Segment
from rich.style import Style
from textual import events
from textual.binding import BindingType
from textual.geometry import Region, Size
from textual.message import Message
from textual.scroll_view import ScrollView
from textual.strip import Strip

from ... import filtering
from ..glyphs import G
from ..keys import bindings
from .columns import Cell, Column, fit, fit_columns

__all__ = ["Cell", "Column", "LiveTable"]
Counts = tuple[int, int, str] | None  # items in a window: (all, FILTER keeps, FILTER)
Filter = Callable[[str, Sequence[Any], float], tuple[list[Any], str]]
"""(filter text, records, now) -> the records it keeps, and why none can (a bad term) or ""."""


def _cell_text(column: Column) -> filtering.Read:
    render = column.render

    def text(row: Any, now: float) -> str:
        cell = render(row, now)
        return cell[0] if isinstance(cell, tuple) else cell

    return text


def cell_filter(columns: Sequence[Column], search: Callable[[Any], str]) -> Filter:
    """The filter of a table over a short list: a field is a column, its value the
    cell's text (read back as a number to compare)."""
    fields = filtering.Fields(
        tuple(c.label.lower().replace(" ", "") for c in columns),
        tuple(map(_cell_text, columns)),
        search,
    )
    return lambda text, items, now: filtering.apply(text, items, fields, now)


class LiveTable(ScrollView, can_focus=True):
    """A sortable, filterable table over a list of immutable records."""

    DEFAULT_CSS = """
    LiveTable {
        background: $surface;
        overflow-x: hidden;
        overflow-y: auto;
        scrollbar-size-vertical: 1;
        /* The columns keep their layout when the scrollbar comes and goes. */
        scrollbar-gutter: stable;
        height: 1fr;
        & > .live-table--header { background: $panel; color: $text; text-style: bold; }
        & > .live-table--cursor {
            background: $block-cursor-background;
            color: $block-cursor-foreground;
            text-style: bold;
        }
        & > .live-table--cursor-blur {
            background: $block-cursor-blurred-background;
            color: $block-cursor-blurred-foreground;
        }
        & > .live-table--muted { color: $text-muted; }
        & > .live-table--warn { color: $text-warning; }
        & > .live-table--error { color: $text-error; text-style: bold; }
        & > .live-table--ok { color: $text-success; }
        & > .live-table--accent { color: $text-accent; }
        & > .live-table--tagged { background: $accent 35%; text-style: bold; }
    }
    """

    COMPONENT_CLASSES: ClassVar[set[str]] = {
        "live-table--header",
        "live-table--cursor",
        "live-table--cursor-blur",
        "live-table--muted",
        "live-table--warn",
        "live-table--error",
        "live-table--ok",
        "live-table--accent",
        "live-table--tagged",
    }

    BINDINGS: ClassVar[list[BindingType]] = bindings("table")

    class CursorMoved(Message):
        """The row under the cursor changed (to another record, or to none)."""

        def __init__(self, table: LiveTable, item: Any | None) -> None:
            super().__init__()
            self.table = table
            self.item = item

        @property
        def control(self) -> LiveTable:
            return self.table

    class Activated(Message):
        """A row was double-clicked: show its details."""

    def __init__(
        self,
        columns: Sequence[Column],
        *,
        key: Callable[[Any], str],
        search: Callable[[Any], str] | None = None,
        filter: Filter | None = None,
        sort_column: int = 0,
        sort_reverse: bool = False,
        empty_text: str = "nothing here",
        follow_top: bool = False,
        id: str | None = None,
    ) -> None:
        super().__init__(id=id)
        self.columns = tuple(columns)
        self._key = key
        # By the records' values where the server filters them too (Connections),
        # else by the cells' text.
        self._filter = filter or cell_filter(self.columns, search or str)
        self.sort_column = sort_column
        self.sort_reverse = sort_reverse
        self.empty_text = empty_text
        self.follow_top = follow_top
        """A cursor on the first row stays there as new records arrive on top."""
        self.filter_text = ""
        self.filter_error = ""
        """Why the filter matches nothing, when it names no column of this table."""
        self._source: Sequence[Any] = ()
        self._counts: Counts = None
        self._rows: list[Any] = []
        self._now = 0.0
        self._cursor = 0
        self._cursor_key: str | None = None
        self._measured: tuple[int, ...] = ()
        self._fit_cache: tuple[tuple[int, tuple[int, ...], int], list[tuple[int, int]]] | None = (
            None
        )
        self._gaps: list[int] = []
        self._strips: dict[int, tuple[tuple[Any, ...], Strip]] = {}
        self.tagged: set[str] = set()
        """Keys of the rows tagged with space, for actions on many rows at once."""

    # ----- data -------------------------------------------------------------

    def set_items(self, items: Sequence[Any], now: float, counts: Counts = None) -> None:
        """Replace the records and repaint only the visible lines that changed.

        This is the whole per-tick cost of the table: one filter pass, one sort
        (by a plain attribute key) and formatting of the rows on screen.
        """
        self._source, self._counts = items, counts
        self._now = now
        rows, self.filter_error = self._filter(self.filter_text, items, now)
        column = self.columns[self.sort_column] if self.columns else None
        if column is not None and column.sort_key is not None:
            rows.sort(key=column.sort_key, reverse=self.sort_reverse != column.descending)
        self._rows = rows
        if self.tagged:
            # Records that went away are untagged, so a count never includes them.
            present = {self._key(r) for r in items}
            self.tagged &= present
        self._measured = tuple(
            max(map(len, map(c.measure, rows)), default=0) if c.measure else 0 for c in self.columns
        )
        self._place_cursor()
        height = len(rows) + 1
        if self.virtual_size.height != height:
            self.virtual_size = Size(self.size.width, height)
        self._scroll_cursor_into_view()
        self._repaint_changed()

    def set_filter(self, text: str) -> None:
        """Show only rows whose searchable text contains ``text`` (case-insensitive)."""
        if text != self.filter_text:
            self.filter_text = text
            self.set_items(self._source, self._now, self._counts)

    @property
    def rows(self) -> list[Any]:
        """The records in display order, after filtering."""
        return self._rows

    @property
    def now(self) -> float:
        """The time the rows were last sampled at."""
        return self._now

    @property
    def total(self) -> int:
        """How many records there are before filtering."""
        return self._counts[0] if self._counts is not None else len(self._source)

    @property
    def matched(self) -> int:  # more than len(rows) when the rows are a window
        counts = self._counts
        return counts[1] if counts and counts[2] == self.filter_text else len(self._rows)

    @property
    def cursor_item(self) -> Any | None:
        """The record under the cursor, if any."""
        if 0 <= self._cursor < len(self._rows):
            return self._rows[self._cursor]
        return None

    @property
    def sort_label(self) -> str:
        """A short description of the sort order, e.g. ``idle ▼``."""
        if not self.columns:
            return ""
        label = self.columns[self.sort_column].label.strip().lower()
        return f"{label} {G.down if self.sort_reverse else G.up}"

    def _place_cursor(self) -> None:
        # The cursor follows its record when rows reorder, like htop does.
        rows, key = self._rows, self._key
        if self.follow_top and self._cursor == 0:
            self._cursor_key = key(rows[0]) if rows else None
            return
        if self._cursor_key is not None:
            for index, row in enumerate(rows):
                if key(row) == self._cursor_key:
                    self._cursor = index
                    return
        self._cursor = max(0, min(self._cursor, len(rows) - 1))
        self._cursor_key = key(rows[self._cursor]) if rows else None

    # ----- geometry ---------------------------------------------------------

    @property
    def _width(self) -> int:
        return self.scrollable_content_region.width

    @property
    def _page(self) -> int:
        return max(1, self.scrollable_content_region.height - 1)

    def _layout(self, width: int) -> list[tuple[int, int]]:
        """Return ``(column index, width)`` for the columns that fit in ``width``
        (see :func:`.columns.fit_columns`), remembered until the width, the
        measured widths or the sort column change."""
        token = (width, self._measured, self.sort_column)
        if self._fit_cache is not None and self._fit_cache[0] == token:
            return self._fit_cache[1]
        layout, self._gaps = fit_columns(self.columns, self._measured, self.sort_column, width)
        self._fit_cache = (token, layout)
        return layout

    @property
    def shown_columns(self) -> list[int]:
        """The indexes of the columns that fit at the current width."""
        return [index for index, _ in self._layout(self._width)]

    # ----- painting ---------------------------------------------------------

    def _signature(self, y: int) -> tuple[Any, ...]:
        """What line ``y`` of the widget shows; equal signatures draw equal strips."""
        width = self._width
        if y == 0:
            return ("header", width, self.sort_column, self.sort_reverse, self._measured)
        index = int(self.scroll_offset.y) + y - 1
        if index >= len(self._rows):
            empty = index == 0
            return ("empty" if empty else "blank", width, self.filter_text if empty else "")
        row = self._rows[index]
        now = self._now
        cells = tuple(c.render(row, now) for c in self.columns)
        tagged = bool(self.tagged) and self._key(row) in self.tagged
        return (
            "row",
            width,
            cells,
            index == self._cursor,
            self.has_focus,
            self._measured,
            self.sort_column,
            tagged,
        )

    def _repaint_changed(self) -> None:
        width = self._width
        for y in range(self.scrollable_content_region.height):
            cached = self._strips.get(y)
            if cached is None or cached[0] != self._signature(y):
                self.refresh(Region(0, y, width, 1))

    def render_line(self, y: int) -> Strip:
        signature = self._signature(y)
        cached = self._strips.get(y)
        if cached is not None and cached[0] == signature:
            return cached[1]
        strip = self._draw(signature)
        self._strips[y] = (signature, strip)
        return strip

    def _tone(self, name: str) -> Style:
        return self.get_component_rich_style(f"live-table--{name}", partial=True)

    def _draw(self, signature: tuple[Any, ...]) -> Strip:
        kind, width = signature[0], signature[1]
        base = self.rich_style
        if kind == "blank":
            return Strip.blank(width, base)
        if kind == "empty":
            text = self.filter_error or (
                f"no rows match {G.open_quote}{self.filter_text}{G.close_quote}"
                if self.filter_text
                else self.empty_text
            )
            line = fit(f" {text}", width, "left")
            return Strip([Segment(line, base + self._tone("muted"))], width)
        layout = self._layout(width)
        segments: list[Segment] = []
        used = 0
        if kind == "header":
            style = self.get_component_rich_style("live-table--header")
            for (index, w), gap in zip(layout, self._gaps, strict=True):
                column = self.columns[index]
                label = column.label
                if index == self.sort_column and column.sort_key is not None:
                    arrow = G.down if self.sort_reverse else G.up
                    label = f"{arrow}{label}" if column.align == "right" else f"{label}{arrow}"
                segments.append(Segment(fit(label, w, column.align) + " " * gap, style))
                used += w + gap
            if used < width:
                segments.append(Segment(" " * (width - used), style))
            return Strip(segments).crop_extend(0, width, style)
        cells, is_cursor, focused = signature[2], signature[3], signature[4]
        if is_cursor:
            name = "live-table--cursor" if focused else "live-table--cursor-blur"
            # The full style blends the translucent blurred cursor into the background.
            row_style = base + self.get_component_rich_style(name)
        else:
            row_style = base
        if signature[7]:
            row_style += self.get_component_rich_style("live-table--tagged")
        for (index, w), gap in zip(layout, self._gaps, strict=True):
            column = self.columns[index]
            cell = cells[index]
            if isinstance(cell, tuple):
                text, tone = cell
                # The cursor's and a tag's colours are the row's own: no tone over them.
                plain = is_cursor or signature[7] or not tone
                style = row_style if plain else row_style + self._tone(tone)
            else:
                text, style = cell, row_style
            segments.append(Segment(fit(text, w, column.align), style))
            segments.append(Segment(" " * gap, row_style))
            used += w + gap
        if used < width:
            segments.append(Segment(" " * (width - used), row_style))
        return Strip(segments).crop_extend(0, width, row_style)

    def notify_style_update(self) -> None:
        self._strips.clear()
        super().notify_style_update()

    def on_resize(self) -> None:
        self._strips.clear()
        self._scroll_cursor_into_view()

    def on_focus(self) -> None:
        self.refresh()

    def on_blur(self) -> None:
        self.refresh()

    # ----- cursor and sorting -------------------------------------------------

    def _scroll_cursor_into_view(self) -> None:
        top = int(self.scroll_offset.y)
        if self._cursor < top:
            self.scroll_to(y=self._cursor, animate=False)
        elif self._cursor > top + self._page - 1:
            self.scroll_to(y=self._cursor - self._page + 1, animate=False)

    def move_cursor(self, index: int) -> None:
        """Put the cursor on row ``index`` (clamped) and keep it in view."""
        if not self._rows:
            return
        index = max(0, min(index, len(self._rows) - 1))
        if index == self._cursor and self._cursor_key is not None:
            return
        self._cursor = index
        self._cursor_key = self._key(self._rows[index])
        self._scroll_cursor_into_view()
        self._repaint_changed()
        self.post_message(self.CursorMoved(self, self._rows[index]))

    def action_cursor(self, delta: int) -> None:
        self.move_cursor(self._cursor + delta)

    def action_page(self, direction: int) -> None:
        self.move_cursor(self._cursor + direction * self._page)

    def action_jump(self, where: int) -> None:
        self.move_cursor(0 if where == 0 else len(self._rows) - 1)

    def sort_by(self, column: int, reverse: bool | None = None) -> None:
        """Sort by ``column``; picking the current column again flips the order."""
        if self.columns[column].sort_key is None:
            return
        if reverse is None:
            reverse = not self.sort_reverse if column == self.sort_column else False
        self.sort_column, self.sort_reverse = column, reverse
        self.set_items(self._source, self._now, self._counts)

    def action_sort_column(self, step: int) -> None:
        # Only the columns on screen: sorting by a hidden one would look like no sort.
        shown = self.shown_columns
        sortable = [i for i in shown if self.columns[i].sort_key is not None]
        if not sortable:
            return
        here = sortable.index(self.sort_column) if self.sort_column in sortable else 0
        self.sort_by(sortable[(here + step) % len(sortable)], self.sort_reverse)

    def action_sort_named(self, labels: str) -> None:
        """Sort by the first of ``labels`` (comma-separated) this table shows, largest first."""
        names = [c.label.strip().lower() for c in self.columns]
        for label in labels.split(","):
            if label in names and names.index(label) in self.shown_columns:
                self.sort_by(names.index(label), True)
                return
        self.app.notify(f"No {labels.split(',')[0].upper()} column here.", severity="warning")

    def toggle_tag(self) -> None:
        """Tag or untag the row under the cursor, then move down (as htop's space does)."""
        item = self.cursor_item
        if item is None:
            return
        key = self._key(item)
        self.tagged.symmetric_difference_update({key})
        self._repaint_changed()
        self.move_cursor(self._cursor + 1)

    def tagged_items(self) -> list[Any]:
        """The tagged records, in display order."""
        return [r for r in self._source if self._key(r) in self.tagged] if self.tagged else []

    def action_reverse_sort(self) -> None:
        self.sort_by(self.sort_column, not self.sort_reverse)

    def on_key(self, event: events.Key) -> None:
        # Keys that arrived in the same read as "/" were queued here before the
        # filter took the focus: they belong to the filter, not to the bindings.
        take = getattr(self.screen, "take_filter_key", None)
        if take is not None and take(event):
            event.stop()
            event.prevent_default()

    def on_click(self, event: events.Click) -> None:
        if event.y == 0:
            x = event.x
            for (index, w), gap in zip(self._layout(self._width), self._gaps, strict=True):
                if x < w + gap:
                    self.sort_by(index)
                    return
                x -= w + gap
            return
        self.move_cursor(int(self.scroll_offset.y) + event.y - 1)
        if event.chain >= 2:
            self.post_message(self.Activated())
