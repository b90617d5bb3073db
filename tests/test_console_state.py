"""The console's state is reactive, and its help and palette are made from its bindings."""

from __future__ import annotations

from console_fake import FixedHubView, FrozenClock
from textual.command import CommandPalette

from verb_console.console import VerbConsoleApp
from verb_console.console.dialogs import HELP_KEYS, DetailScreen
from verb_console.console.keys import KEYS, key_display
from verb_console.console.panes.connections import ConnectionsPane
from verb_console.console.panes.log import LogPane
from verb_console.console.panes.table import LiveTable
from verb_console.console.screen import PANES, MainScreen

SIZE = (120, 40)


def make() -> tuple[VerbConsoleApp, FixedHubView, FrozenClock]:
    clock = FrozenClock()
    view = FixedHubView(clock)
    return VerbConsoleApp(view, clock=clock), view, clock


async def test_assigning_the_pane_shows_it_without_any_refresh_call() -> None:
    app, _, _ = make()
    async with app.run_test(size=SIZE) as pilot:
        app.main.current = "throttle"
        await pilot.pause()
        pane = app.main.pane("throttle")
        assert app.main.query_one("#panes").current == "throttle"
        assert app.focused is pane.table
        assert pane.table.rows, "the newly shown pane was drawn"
        app.main.current = "no such pane"
        assert app.main.current == "throttle"


async def test_assigning_paused_freezes_the_panes_and_shows_it_in_the_header() -> None:
    app, view, clock = make()
    async with app.run_test(size=SIZE) as pilot:
        app.paused = True
        await pilot.pause()
        assert "PAUSED" in app.main.header.render().plain
        table = app.main.pane("connections").table
        before = [line_text(table, y) for y in range(1, 4)]
        view.bump()
        clock.advance(60)
        app.refresh_once()
        assert [line_text(table, y) for y in range(1, 4)] == before
        app.paused = False
        await pilot.pause()
        assert [line_text(table, y) for y in range(1, 4)] != before
        assert "PAUSED" not in app.main.header.render().plain


def line_text(table: LiveTable, y: int) -> str:
    return table.render_line(y).text


async def test_assigning_showing_closed_flips_the_table_and_its_title() -> None:
    app, _, _ = make()
    async with app.run_test(size=SIZE) as pilot:
        pane = app.main.pane("connections")
        assert isinstance(pane, ConnectionsPane)
        pane.showing_closed = True
        await pilot.pause()
        assert pane.table is pane.closed_table and pane.closed_table.rows
        assert "recently closed" in pane._title_text and "c live" in pane._title_text
        pane.showing_closed = False
        await pilot.pause()
        assert pane.table is pane.live_table and "c closed" in pane._title_text


async def test_assigning_following_jumps_the_log_to_its_tail() -> None:
    app, _, _ = make()
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("6")
        pane = app.main.pane("log")
        assert isinstance(pane, LogPane)
        pane.table.move_cursor(0)
        await pilot.pause()
        assert not pane.following and "tail PAUSED" in pane._title_text
        pane.following = True
        await pilot.pause()
        assert pane.table.cursor_item is pane.table.rows[-1]
        assert "following" in pane._title_text


def bound_keys() -> set[str]:
    """Every key bound on the main screen, the tables and the panes."""
    keys = set()
    for cls in (MainScreen, LiveTable, *(p for _, p in PANES)):
        for binding in cls.BINDINGS:
            keys.update(binding.key.split(","))  # type: ignore[union-attr]
    return keys


def test_the_help_lists_every_bound_key() -> None:
    shown = " ".join(k for k, _ in HELP_KEYS).split()
    for key in bound_keys():
        assert key_display(key) in shown, key
    assert len(bound_keys()) >= 20


async def test_the_palette_offers_every_titled_key_once_and_finds_panes_by_pane() -> None:
    app, _, _ = make()
    async with app.run_test(size=SIZE) as pilot:
        titles = [c.title for c in app.get_system_commands(app.screen)]
        assert len(titles) == len(set(titles)), titles
        assert titles.count("Keys") == 1
        for key in KEYS:
            if key.title:
                assert key.title in titles
        await pilot.press("ctrl+p")
        await pilot.pause()
        palette = app.screen
        assert isinstance(palette, CommandPalette)
        await pilot.press(*"pane")
        await pilot.pause(0.5)
        found = [str(o.prompt) for o in palette.query_one("CommandList").options]
        assert sum("Show" in f for f in found) == len(PANES), found


async def test_a_palette_entry_runs_its_key_where_the_key_would_run() -> None:
    app, _, _ = make()
    async with app.run_test(size=SIZE) as pilot:
        command = next(
            c for c in app.get_system_commands(app.screen) if c.title == "Live / closed sessions"
        )
        app.main.current = "log"
        await pilot.pause()
        await command.callback()  # type: ignore[misc]
        await pilot.pause()
        pane = app.main.pane("connections")
        assert isinstance(pane, ConnectionsPane)
        assert app.main.current == "connections" and pane.showing_closed


async def test_details_are_fetched_again_from_the_view_on_every_pane() -> None:
    app, view, _ = make()
    async with app.run_test(size=SIZE) as pilot:
        for name in ("connections", "throttle", "rooms", "streams", "transfers", "log"):
            app.main.current = name
            await pilot.pause()
            await pilot.press("enter")
            assert isinstance(app.screen, DetailScreen), name
            rows = app.screen.fetch()
            assert rows and all(isinstance(v, str) for _, v in rows), name
            await pilot.press("escape")
        # A session that goes away reads as gone.
        app.main.current = "connections"
        await pilot.pause()
        await pilot.press("enter")
        screen = app.screen
        assert isinstance(screen, DetailScreen)
        gone = app.main.pane("connections").table.cursor_item.id
        view.operator_close(gone)
        assert screen.fetch() is None
