"""The main screen: header, drain banner, tab bar, the seven panes and the filter bar."""

from __future__ import annotations

import contextlib
from typing import ClassVar

from textual import events, on
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal
from textual.content import Content
from textual.reactive import var
from textual.screen import Screen
from textual.widgets import ContentSwitcher, Input, Label, Static

from verb_console.hub.snapshot import HubView, Overview

from .export import export_table
from .footer import SteadyFooter
from .format import fmt_duration, plural
from .glyphs import G
from .header import HeaderBar
from .keys import PANE_NAMES, bindings
from .panes.base import Clock, Pane
from .panes.cluster import ClusterPane
from .panes.connections import ConnectionsPane
from .panes.log import LogPane
from .panes.rooms import RoomsPane
from .panes.streams import StreamsPane
from .panes.table import LiveTable
from .panes.tap import TapPane
from .panes.throttle import ThrottlePane
from .panes.transfers import TransfersPane

PANES: tuple[tuple[str, type[Pane]], ...] = (
    ("connections", ConnectionsPane),
    ("throttle", ThrottlePane),
    ("rooms", RoomsPane),
    ("streams", StreamsPane),
    ("transfers", TransfersPane),
    ("log", LogPane),
    ("tap", TapPane),
    ("cluster", ClusterPane),
)
assert tuple(name for name, _ in PANES) == PANE_NAMES


class FilterInput(Input):
    """The ``/`` filter line; Escape clears the filter and closes it."""

    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape", "clear", "Clear filter")]

    def action_clear(self) -> None:
        self.value = ""
        self.post_message(self.Submitted(self, ""))


class MainScreen(Screen[None]):
    """Everything the operator sees when no dialog is open."""

    DEFAULT_CSS = """
    MainScreen {
        layout: vertical;
        #drain {
            display: none;
            height: 1;
            padding: 0 1;
            background: $warning;
            color: $background;
            text-style: bold;
            text-wrap: nowrap;
            text-overflow: ellipsis;
        }
        &.-draining #drain { display: block; }
        #panes { height: 1fr; }
        #tabs {
            height: 1;
            background: $panel;
            text-wrap: nowrap;
            text-overflow: ellipsis;
            link-style: none;
            link-style-hover: bold;
            link-background-hover: $boost;
        }
        #filter-bar { display: none; height: 1; background: $boost; }
        &.-filtering #filter-bar { display: block; }
        #filter-prompt { width: 2; padding: 0 0 0 1; color: $text-accent; text-style: bold; }
    }
    """

    BINDINGS: ClassVar[list[BindingType]] = bindings("screen")

    current: var[str] = var(PANES[0][0], init=False)
    """The name of the pane on show."""

    def __init__(self, view: HubView, clock: Clock) -> None:
        super().__init__()
        self.view = view
        self.clock = clock
        self._drawn: set[str] = set()
        self._drain_text = ""

    def compose(self) -> ComposeResult:
        yield HeaderBar(self.clock, self.view.traffic_history, id="header")
        yield Static("", id="drain", markup=False)
        yield Static(self._tabs_content(), id="tabs")
        with ContentSwitcher(initial=self.current, id="panes"):
            for name, pane_class in PANES:
                yield pane_class(self.view, self.clock, id=name)
        with Horizontal(id="filter-bar"):
            yield Label("/", id="filter-prompt")
            yield FilterInput(
                placeholder=f"type to filter {G.sep} enter keep {G.sep} esc clear",
                id="filter",
                compact=True,
            )
        yield SteadyFooter(compact=True)

    def on_mount(self) -> None:
        self.active_pane.focus_table()
        self._show_tabs()
        self.app.theme_changed_signal.subscribe(self, lambda _theme: self._show_tabs())

    def _show_tabs(self) -> None:
        self.query_one("#tabs", Static).update(self._tabs_content())

    # ----- panes --------------------------------------------------------------

    @property
    def header(self) -> HeaderBar:
        """The header widget."""
        return self.query_one(HeaderBar)

    @property
    def active_pane(self) -> Pane:
        """The pane on show."""
        return self.query_one(f"#{self.current}", Pane)

    def pane(self, name: str) -> Pane:
        """The pane called ``name`` (``connections``, ``throttle``, ...)."""
        return self.query_one(f"#{name}", Pane)

    def refresh_active(self, now: float) -> None:
        """Refresh the pane on show; hidden panes cost nothing."""
        self.active_pane.refresh_view(now)
        self._drawn.add(self.current)

    def _tabs_content(self) -> Content:
        parts: list[Content | str | tuple[str, str]] = []
        # The cursor's colours, as the theme defines them (legible in 16 colours too).
        colours = self.app.theme_variables if self.is_attached else {}
        fg = colours.get("block-cursor-foreground", "$text")
        bg = colours.get("block-cursor-background", "$primary")
        current = f"bold {fg} on {bg}"
        # Every tab, always: a tab that came and went would move the others. The
        # Cluster pane of a single server says it is not in a cluster.
        shown = [(n, name, pane_class) for n, (name, pane_class) in enumerate(PANES, 1)]
        width = sum(len(p.label) + 4 for _, _, p in shown) - 1
        # Too wide for the terminal (eight tabs in 80 columns): the tabs lose their padding.
        tight = width > (self.size.width or 80)
        for n, name, pane_class in shown:
            label = f"{n} {pane_class.label}" if tight else f" {n} {pane_class.label} "
            if name == self.current:
                # Not a link: a link takes the theme's link colour over its own.
                parts.append(Content.styled(label, current))
            else:
                # Names and labels are fixed identifiers, so plain markup is safe here.
                markup = f"[@click=screen.show_pane('{name}')]{label}[/]"
                parts.append(Content.from_markup(markup).stylize("$text-muted"))
            parts.append(" ")
        # No space after the last tab: all eight fit in 80 columns.
        return Content.assemble(*parts[:-1])

    def action_cycle_history(self) -> None:
        """Show the header's sparklines at the next resolution: 1 s, 10 s, 1 min a bar."""
        from .rates import STEP_NAMES

        step = self.header.cycle_step()
        self.notify(f"Traffic history: {STEP_NAMES[step]}.", title="History", timeout=3)

    def action_show_pane(self, name: str) -> None:
        """Show pane ``name`` and focus its table."""
        if name == self.current:
            self.active_pane.focus_table()
        self.current = name

    def validate_current(self, name: str) -> str:
        return name if name in dict(PANES) else self.current

    def watch_current(self, name: str) -> None:
        self.query_one(ContentSwitcher).current = name
        # The hub samples messages only while the tap is on show.
        tap = self.query_one(TapPane)
        if name == "tap":
            tap.open_tap()
        else:
            tap.close_tap()
        self._show_tabs()
        pane = self.active_pane
        paused = getattr(self.app, "paused", False)
        # While paused, a pane keeps its frozen values, but one never drawn gets drawn once.
        if not paused or name not in self._drawn:
            # Named as the periodic refresh is, so that a slow switch is seen for
            # what it is (a pane's first page builds its order, see hub/order.py).
            turns = getattr(self.app, "turns", None)
            with turns.doing("pane switch") if turns else contextlib.nullcontext():
                self.refresh_active(self.clock())
        filter_bar = self.query_one(FilterInput)
        if self.has_class("-filtering"):
            filter_bar.value = pane.table.filter_text
        pane.focus_table()

    # ----- drain --------------------------------------------------------------

    def show_state(self, overview: Overview, now: float, read_only: bool) -> None:
        """Show or hide the drain banner."""
        draining = overview.state == "draining"
        self.set_class(draining, "-draining")
        if not draining:
            return
        left = (
            fmt_duration(overview.drain_deadline - now)
            if overview.drain_deadline is not None
            else "?"
        )
        text = f"SHUTTING DOWN  {plural(overview.sessions, 'session')} left  {G.sep}  "
        if overview.drain_left:
            # Connections the lame-duck schedule has still to close (a mux
            # connection is one, however many streams it carries).
            text += f"{overview.drain_left:,} to close  {G.sep}  "
        text += f"{left} to go"
        if not read_only:
            text += f"  {G.sep}  s: close all now"
        if text != self._drain_text:
            self._drain_text = text
            self.query_one("#drain", Static).update(text)

    # ----- filter and detail --------------------------------------------------

    def action_filter(self) -> None:
        """Open the filter line for the table on show."""
        filter_bar = self.query_one(FilterInput)
        filter_bar.value = self.active_pane.table.filter_text
        self.add_class("-filtering")
        # Focus at once, not on the next message (as widget.focus() does): keys
        # that came in the same read as "/" are already queued behind this one,
        # and must reach the filter, not the main screen's bindings.
        self.set_focus(filter_bar)

    def take_filter_key(self, event: events.Key) -> bool:
        """Open the filter on "/", or type a key into the open filter line.

        The table calls this from its key handler, which sees each key of a
        burst in turn, before any binding runs: so "/" opens the filter before
        the next key of the same read is looked at. False: not a filter key.
        """
        if not self.has_class("-filtering"):
            if event.character == "/":
                self.action_filter()
                return True
            return False
        filter_bar = self.query_one(FilterInput)
        if event.is_printable and event.character is not None:
            filter_bar.insert_text_at_cursor(event.character)
        elif event.key == "backspace":
            filter_bar.action_delete_left()
        elif event.key == "enter":
            filter_bar.action_submit()  # type: ignore[unused-coroutine]
        elif event.key == "escape":
            filter_bar.action_clear()
        else:
            return False
        return True

    def action_export(self, fmt: str) -> None:
        """Write the table on show, as filtered and sorted, to a file in the working directory."""
        try:
            server: dict[str, object] = getattr(self.app, "server_identity", dict)()
            path = export_table(self.active_pane.table, self.current, fmt, server=server)
        except OSError as error:
            self.notify(f"Export failed: {error}", severity="error")
            return
        rows = plural(len(self.active_pane.table.rows), "row")
        self.notify(f"Exported {rows} to {path}", title="Export")

    def action_clear_filter(self) -> None:
        """Drop the filter of the table on show (Escape on the table)."""
        pane = self.active_pane
        if pane.table.filter_text:
            pane.table.set_filter("")
            pane.refresh_view(self.clock())

    @on(Input.Changed, "#filter")
    def _filter_changed(self, event: Input.Changed) -> None:
        pane = self.active_pane
        pane.table.set_filter(event.value)
        pane.refresh_view(self.clock())

    @on(Input.Submitted, "#filter")
    def _filter_done(self, event: Input.Submitted) -> None:
        self.remove_class("-filtering")
        self.active_pane.focus_table()

    def action_detail(self) -> None:
        """Show every field of the selected row."""
        found = self.active_pane.detail()
        if found is None:
            self.notify("Nothing selected.", severity="warning")
            return
        from .dialogs import DetailScreen
        from .rates import RateWatch

        title, fetch, watch = found
        rates = RateWatch(self.view, *watch) if watch is not None else None
        self.app.push_screen(DetailScreen(title, fetch, rates))

    @on(LiveTable.Activated)
    def _double_clicked(self) -> None:
        self.action_detail()


class ReadOnlyMainScreen(MainScreen):
    """The main screen without the keys that change the server in its footer.

    The keys still answer, with a notice, so nobody wonders whether they were heard.
    """

    BINDINGS: ClassVar[list[BindingType]] = bindings("screen", read_only=True)


class AttachedMainScreen(MainScreen):
    """The main screen of ``verb-console attach``: its ``q`` reads Detach."""

    BINDINGS: ClassVar[list[BindingType]] = bindings("screen", attached=True)


class ReadOnlyAttachedMainScreen(ReadOnlyMainScreen):
    """The main screen of ``verb-console attach --read-only``."""

    BINDINGS: ClassVar[list[BindingType]] = bindings("screen", read_only=True, attached=True)


def main_screen_class(read_only: bool, attached: bool) -> type[MainScreen]:
    """The main screen for a console that may refuse changes, and may be attached."""
    if attached:
        return ReadOnlyAttachedMainScreen if read_only else AttachedMainScreen
    return ReadOnlyMainScreen if read_only else MainScreen
