"""What an operator sees and types at 80x24 (issue 24, items 1, 4, 5 and the smaller ones).

Textual's pilot: the fixed fake hub for the help, tabs and header; a real server
over its admin socket for an attached console.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from console_fake import FixedHubView, FrozenClock
from helpers import eventually
from screen_text import screen_lines, screen_text
from textual.containers import VerticalScroll
from textual.widgets import Static

from verb_console.console import VerbConsoleApp
from verb_console.console.dialogs import HELP_KEYS, HelpScreen
from verb_console.console.header import HeaderBar
from verb_console.hub.snapshot import Rates, RateSeries

SIZE = (80, 24)
WAIT = 10.0


def make() -> VerbConsoleApp:
    clock = FrozenClock()
    return VerbConsoleApp(FixedHubView(clock), clock=clock)


# ----- 1. help -----------------------------------------------------------------


async def test_help_scrolls_at_80x24_to_every_key_with_the_tables_keys() -> None:
    app = make()
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("question_mark")
        await pilot.pause()
        assert isinstance(app.screen, HelpScreen)
        scroll = app.screen.query_one(VerticalScroll)
        assert scroll.max_scroll_y > 0  # 80x24 is too short for every key
        first = screen_text(app)
        assert "esc close" in first  # the hint stays on screen, in the border
        assert "command palette" not in first
        shown = set(first.split())
        await pilot.press("j")
        assert scroll.scroll_y == 1
        await pilot.press("down")
        assert scroll.scroll_y == 2
        await pilot.press("up", "k", "pagedown")
        assert scroll.scroll_y > 2
        shown |= set(screen_text(app).split())
        await pilot.press("end")
        await pilot.pause()
        last = screen_text(app)
        assert "command palette" in last and "esc close" in last
        shown |= set(last.split())
        # Every key of the help was on screen at some point.
        for keys, _ in HELP_KEYS:
            for key in keys.split():
                assert key in shown, key
        await pilot.press("home")
        assert scroll.scroll_y == 0
        await pilot.press("G")
        assert scroll.scroll_y == scroll.max_scroll_y
        await pilot.press("escape")
        assert not isinstance(app.screen, HelpScreen)


# ----- smaller: tabs, scales, widths -----------------------------------------------


async def test_every_tab_is_listed_from_the_start_and_the_bar_keeps_its_spacing() -> None:
    app = make()
    async with app.run_test(size=SIZE) as pilot:
        tabs = app.main.query_one("#tabs", Static)
        before = str(tabs.render())
        assert "8 Cluster" in before
        await pilot.press("8")
        await pilot.pause()
        assert str(tabs.render()) == before
        # The Cluster pane of a single server says so once.
        assert screen_text(app).count("not in a cluster") == 1


class Idle(FixedHubView):
    """The fixed hub with nothing moving."""

    def overview(self):  # type: ignore[no-untyped-def]
        from dataclasses import replace

        return replace(super().overview(), rates=Rates())

    def traffic_history(self, step: int, since: int = 0, limit: int = 1440) -> RateSeries:
        got = super().traffic_history(step, since, limit)
        return RateSeries(step, got.seq, got.fields, tuple((0.0,) * 4 for _ in got.samples))


class Burst(FixedHubView):
    """The fixed hub this second: far above the minute's averages."""

    def overview(self):  # type: ignore[no-untyped-def]
        from dataclasses import replace

        return replace(super().overview(), rates=Rates(90_000.0, 90_000.0, 9e8, 9e8))


async def test_an_idle_server_s_sparklines_say_idle_and_a_burst_stays_under_the_ceiling() -> None:
    clock = FrozenClock()
    app = VerbConsoleApp(Idle(clock), clock=clock)
    async with app.run_test(size=(200, 40)) as pilot:
        clock.advance(120)
        app.refresh_once()
        await pilot.pause()
        header = screen_lines(app)[2:4]
        assert all("idle" in line and "0/s" not in line.split("1s")[1] for line in header), header
    clock = FrozenClock()
    app = VerbConsoleApp(Burst(clock), clock=clock)
    async with app.run_test(size=(200, 40)) as pilot:
        clock.advance(180)
        await pilot.press("h", "h")  # 1 min a bar
        app.refresh_once()
        await pilot.pause()
        line = screen_lines(app)[2]
        # The scale covers the newest rate, above every 1-minute average.
        assert "90.0k/s" in line and "200k/s" in line, line


async def test_at_200_columns_rooms_stop_at_40_cells_and_unsent_reads_0_b() -> None:
    app = make()
    async with app.run_test(size=(200, 40)) as pilot:
        await pilot.pause()
        table = app.main.pane("connections").table
        widths = {table.columns[i].label: w for i, w in table._layout(table._width)}
        assert widths["ROOMS"] <= 40 and "USER" in widths
        text = screen_text(app)
        for line in text.splitlines()[7:]:
            if line.startswith("127.0.0.1:5000#1"):
                assert " 0 B " in line, line


# ----- 4 and 5: an attached console ---------------------------------------------------


async def test_an_attached_console_says_so_and_when_its_server_is_gone(
    start_server, connect, tmp_path: Path
) -> None:
    from verb_console.admin.remote_view import RemoteHubView
    from verb_console.console.attach import build_app

    path = tmp_path / "admin.sock"
    runtime = await start_server(admin_socket=str(path))
    # Events the server logged before the console attached.
    clients = [await connect(runtime) for _ in range(2)]
    await clients[0].close()
    view = RemoteHubView(path, interval=0.05)
    app = build_app(view, refresh=20, read_only=False)
    try:
        async with app.run_test(size=SIZE) as pilot:
            header = app.main.query_one(HeaderBar)

            def first_line() -> str:
                return screen_lines(app)[0]

            await eventually(lambda: " up " in first_line(), WAIT)
            assert f"ATTACHED pid {os.getpid()}" in first_line()
            # The footer is drawn on a frame of its own: it may come a frame later.
            await eventually(lambda: "Detach" in screen_lines(app)[-1], WAIT)
            assert "Quit" not in screen_lines(app)[-1]
            await pilot.press("question_mark")
            await pilot.press("end")
            await pilot.pause()
            assert "detach: the server keeps running" in screen_text(app)
            await pilot.press("escape")
            # 5: the Log in time order, the server's older events before "attached".
            await pilot.press("6")
            log = app.main.pane("log").table

            def logged() -> bool:
                return sum("connected" in e.text for e in log.rows) >= 2

            await eventually(logged, WAIT)
            times = [e.time for e in log.rows]
            assert times == sorted(times)
            texts = [e.text for e in log.rows]
            attached = next(i for i, t in enumerate(texts) if t.startswith("attached to"))
            assert attached > next(i for i, t in enumerate(texts) if "connected" in t)
            # The server goes: the header says the link is down, and for how long.
            runtime.hub.force_shutdown()
            await runtime.hub.wait_stopped()
            await eventually(lambda: "LINK DOWN" in first_line(), WAIT)
            assert " up " not in first_line() and "ATTACHED" in first_line()
            assert header.link_down_since is not None
    finally:
        view.stop()


async def test_an_attached_console_says_so_and_where_before_it_reaches_its_server(
    tmp_path: Path,
) -> None:
    from verb_console.admin.remote_view import RemoteHubView
    from verb_console.console.attach import build_app

    path = tmp_path / "admin.sock"  # no server there (yet)
    view = RemoteHubView(path, interval=0.05)
    app = build_app(view, refresh=20, read_only=False)
    try:
        async with app.run_test(size=SIZE) as pilot:
            await eventually(lambda: "CONNECTING" in screen_lines(app)[0], WAIT)
            await pilot.pause()
            first = screen_lines(app)[0]
            # A long path keeps its end, within the line.
            tail = f"{path.parent.name[-8:]}/admin.sock"
            assert "ATTACHED" in first and first.rstrip().endswith(tail), first
            assert "not listening" not in first and " up " not in first, first
    finally:
        view.stop()


@pytest.mark.parametrize("read_only", [False, True])
async def test_a_hosted_console_quits_and_an_attached_one_detaches(read_only: bool) -> None:
    clock = FrozenClock()
    for attached, label in ((False, "Quit"), (True, "Detach")):
        app = VerbConsoleApp(
            FixedHubView(clock), clock=clock, attached=attached, read_only=read_only
        )
        async with app.run_test(size=SIZE) as pilot:
            await pilot.pause()
            assert f"q {label}" in screen_lines(app)[-1]


def test_a_scale_one_cell_too_long_keeps_its_unit() -> None:
    from verb_console.console.header import SCALE_WIDTH, _scale

    # ASCII's "<=" is a cell wider than "≤": 19.5 KiB/s must still read whole.
    assert _scale("<=19.5 KiB/s") == "<=19.5 KiB/s"
    assert _scale("≤19.5 KiB/s") == " ≤19.5 KiB/s"
    assert len(_scale("idle")) == SCALE_WIDTH


# ----- the pass at 80x24: titles, a pane of two tables, the bans ------------------


async def test_every_title_at_80x24_drops_whole_parts_never_cuts_one() -> None:
    """A title too long for the line keeps its first parts whole (the pane keys, listed
    last, go first) instead of ending in a cut word."""
    from verb_console.console.glyphs import G

    app = make()
    async with app.run_test(size=SIZE) as pilot:
        states = [(str(n),) for n in range(1, 9)]
        states += [("1", "space", "down", "space"), ("slash", *"5000", "enter"), ("p",)]
        for keys in states:
            await pilot.press(*keys)
            await pilot.pause()
            pane = app.main.active_pane
            shown = screen_lines(app)[pane.query_one(".pane-title").region.y]
            parts = shown.strip().split(f"  {G.sep}  ")
            assert G.more not in shown, (keys, shown)
            assert len(shown.rstrip()) <= SIZE[0] - 1, (keys, shown)
            # Every part shown is whole: the title as built starts with exactly these.
            full = pane._title_base.split(f"  {G.sep}  ")
            if app.paused:
                full = ["PAUSED (p resumes)", *full]
            assert parts == full[: len(parts)], (keys, parts, full)
        assert "skipped" in app.main.pane("tap")._title_text


async def test_a_pane_of_two_tables_titles_the_upper_and_subtitles_the_lower() -> None:
    app = make()
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("3", "down", "tab")  # firehose's members table focused
        await pilot.pause()
        app.refresh_once()
        await pilot.pause()
        lines = screen_lines(app)
        title = next(line for line in lines if line.lstrip().startswith("ROOMS"))
        assert "5 rooms" in title and "sort room" in title, title
        assert any(line.lstrip().startswith("MEMBERS of firehose") for line in lines), lines
        await pilot.press("4", "tab")
        await pilot.pause()
        app.refresh_once()
        await pilot.pause()
        lines = screen_lines(app)
        title = next(line for line in lines if line.lstrip().startswith("STREAMS  "))
        assert "2 mux connections" in title and "sort mux connection" in title, title
        sub = next(line for line in lines if line.lstrip().startswith("STREAMS of"))
        assert "3 streams" in sub and "sort" in sub, sub


async def test_the_bans_dialog_reads_time_left_on_the_console_s_clock_in_two_units() -> None:
    app = make()
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("Z")
        await pilot.pause()
        # The fixed hub's ban ends 3 h after its frozen "now": 3h00m, not 0s nor 10800s.
        assert "203.0.113.0/24  by ctl  3h00m left" in screen_text(app)
