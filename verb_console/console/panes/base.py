"""What every numbered pane has in common: a title line, a table, a refresh."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, ClassVar

from textual.app import ComposeResult
from textual.containers import Vertical
from textual.widgets import Static

from verb_console.hub.snapshot import HubView, Page

from ..format import plural
from ..glyphs import G
from .table import LiveTable

Clock = Callable[[], float]
DetailRows = list[tuple[str, str]]
"""Label/value pairs shown by the detail dialog."""
DetailFetch = Callable[[], DetailRows | None]
"""Re-reads one record from the view; ``None`` once the record is gone."""


@dataclass(frozen=True, slots=True)
class Detail:
    """How a pane shows the record under the cursor in the detail dialog.

    While the dialog is open, the record is found again on every refresh: the
    first record of :attr:`source` whose :attr:`key` equals :attr:`wanted`.
    """

    title: str
    rows: Callable[[Any, float], DetailRows]
    """Every field of the record, at a given time."""
    wanted: object
    source: Callable[[], Iterable[Any]]
    """Where the record is looked up again (a fixed record: a one-item tuple)."""
    key: Callable[[Any], object]
    watch: tuple[str, str] | None = None
    """``("session", id)`` or ``("room", name)``: the dialog also draws its rates."""


WINDOW = 200
"""Rows a paged table holds at a time: a window of the server's order and filter
around the cursor (the view sorts, filters and pages; never all of them)."""


class Window:
    """Which rows of the server's order a table holds, so that a pane asks for the
    rows it shows and never for all of them (sessions, rooms, mux connections)."""

    def __init__(self) -> None:
        self.start = 0
        """Where, in the server's order, the rows the table shows begin."""

    def query(self, table: LiveTable) -> tuple[str, bool, str, int, int]:
        """(field, reverse, filter, offset, limit): the window centred on the cursor.

        Reckoned from the rows the table shows, not from a window fetched since,
        which the table has not been given yet.
        """
        column = table.columns[table.sort_column]
        item = table.cursor_item
        offset = 0 if item is None else max(0, self.start + table.rows.index(item) - WINDOW // 2)
        reverse = table.sort_reverse != column.descending
        return column.field, reverse, table.filter_text, offset, WINDOW

    def show(self, table: LiveTable, page: Page[Any], now: float, what: str) -> str:
        """Give ``table`` the page; what the title says of the window (``what`` is
        the plural noun of the whole), or ""."""
        table.set_items(page.rows, now, (page.total, page.matched, page.query.filter))
        self.start = page.offset
        if len(table.rows) >= page.matched:
            return ""
        first = page.offset + 1 if table.rows else 0
        return (
            f"{first:,}-{page.offset + len(table.rows):,} of {page.matched:,} fetched"
            f" ({page.total:,} {what})"
        )


class Pane(Vertical):
    """Base class for the panes switched with ``1`` to ``8``."""

    DEFAULT_CSS = """
    Pane {
        height: 1fr;
        & > .pane-title {
            height: 1;
            padding: 0 1;
            background: $boost;
            color: $text-muted;
            text-wrap: nowrap;
            text-overflow: ellipsis;
        }
        & > .pane-subtitle {
            height: 1;
            padding: 0 1;
            background: $boost;
            color: $text-muted;
            text-wrap: nowrap;
            text-overflow: ellipsis;
        }
    }
    """

    label: ClassVar[str] = ""
    """The name on the tab bar."""
    hints: ClassVar[str] = ""
    """Pane-specific keys, listed on the title line."""

    def __init__(self, view: HubView, clock: Clock, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.view = view
        self.clock = clock
        self._title_text = ""
        self._subtitle_text = ""
        self._title_base = ""
        self._paused = False
        self.paging = Window()
        """The rows of the server's order the pane's paged table holds."""

    def compose(self) -> ComposeResult:
        yield Static("", classes="pane-title", markup=False)

    @property
    def table(self) -> LiveTable:
        """The table that filtering, the cursor and ``enter`` act on."""
        raise NotImplementedError

    def refresh_view(self, now: float) -> None:
        """Sample the view once and repaint what changed."""
        raise NotImplementedError

    def describe(self, item: Any) -> Detail | None:
        """How to show ``item``, a record of :attr:`table`, in the detail dialog."""
        return None

    def detail(self) -> tuple[str, DetailFetch, tuple[str, str] | None] | None:
        """Return a title, a re-fetching function and what to watch, for the selected row."""
        item = self.table.cursor_item
        found = self.describe(item) if item is not None else None
        if found is None:
            return None
        clock = self.clock

        def fetch() -> DetailRows | None:
            for record in found.source():
                if found.key(record) == found.wanted:
                    return found.rows(record, clock())
            return None

        return found.title, fetch, found.watch

    def selected_session_id(self) -> str | None:
        """The live session under the cursor, for panes that list sessions."""
        return None

    def focus_table(self) -> None:
        """Give the keyboard to this pane's table."""
        self.table.focus()

    def set_title(self, text: str) -> None:
        """Update the title line, touching the widget only if the text changed."""
        self._title_base = text
        if self._paused:
            # The header keeps counting; say why this pane's figures do not.
            text = f"PAUSED (p resumes)  {G.sep}  {text}"
        if text != self._title_text:
            self._title_text = text
            # One line of the pane's width whatever it says: no layout (of every
            # widget on the screen) for a new text.
            self.query_one(".pane-title", Static).update(text, layout=False)

    def set_subtitle(self, text: str) -> None:
        """Update the line over a pane's lower table, only if the text changed (as
        :meth:`set_title`: a tick that changes nothing costs nothing)."""
        if text != self._subtitle_text:
            self._subtitle_text = text
            self.query_one(".pane-subtitle", Static).update(text, layout=False)

    def set_paused(self, paused: bool) -> None:
        """Mark the title while the live view is paused."""
        self._paused = paused
        self.set_title(self._title_base)

    def describe_table(self, noun: str, extra: str = "", *, many: str = "") -> str:
        """The standard title: counts, filter, sort order and pane keys.

        ``noun`` is singular; ``many`` is its plural when adding an ``s`` is wrong.
        """
        table = self.table
        shown, total = table.matched, table.total
        count = plural(total, noun, many)
        if table.filter_text:
            count = f"{shown:,} of {count}"
        parts = [f"{self.label.upper()}  {count}"]
        if table.filter_text:
            parts.append(f"filter {G.open_quote}{table.filter_text}{G.close_quote}")
        if extra:
            parts.append(extra)
        parts.append(f"sort {table.sort_label}")
        if self.hints:
            parts.append(self.hints)
        return f"  {G.sep}  ".join(parts)
