"""Every key of the console, pressed against a FixedHubView."""

from __future__ import annotations

import asyncio
import os
import signal

import pytest
from console_fake import Action, FixedHubView, FrozenClock

from verb_console.console import VerbConsoleApp
from verb_console.console.dialogs import BroadcastDialog, ConfirmDialog, DetailScreen, HelpScreen
from verb_console.console.panes.connections import ConnectionsPane
from verb_console.console.panes.table import LiveTable

SIZE = (120, 40)


def make(*, read_only: bool = False) -> tuple[VerbConsoleApp, FixedHubView, FrozenClock]:
    clock = FrozenClock()
    view = FixedHubView(clock)
    return VerbConsoleApp(view, clock=clock, read_only=read_only), view, clock


def connections(app: VerbConsoleApp) -> ConnectionsPane:
    pane = app.main.pane("connections")
    assert isinstance(pane, ConnectionsPane)
    return pane


def line_text(table: LiveTable, y: int) -> str:
    return table.render_line(y).text


async def test_the_connections_table_is_shown_first_and_has_the_focus() -> None:
    app, view, _ = make()
    async with app.run_test(size=SIZE):
        assert app.main.current == "connections"
        assert app.focused is connections(app).live_table
        assert len(connections(app).live_table.rows) == len(view.sessions())


async def test_b_then_text_then_enter_broadcasts_to_every_session_and_closes_the_dialog() -> None:
    app, view, _ = make()
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("b")
        assert isinstance(app.screen, BroadcastDialog)
        assert app.focused is not None and app.focused.id == "text"
        await pilot.press(*"hello all", "enter")
        assert view.actions == [Action("broadcast", ("hello all", None))]
        assert not isinstance(app.screen, BroadcastDialog)


async def test_b_on_the_rooms_pane_broadcasts_to_the_selected_room() -> None:
    app, view, _ = make()
    async with app.run_test(size=SIZE) as pilot:
        # Rooms sort by name: empty-room, firehose, ipv6-friends, lobby, ops.
        await pilot.press("3", "down", "down", "down", "b", *"hi", "enter")
        assert view.actions == [Action("broadcast", ("hi", "lobby"))]


async def test_escape_closes_the_broadcast_dialog_without_sending_anything() -> None:
    app, view, _ = make()
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("b", *"oops", "escape")
        assert not isinstance(app.screen, BroadcastDialog)
        assert view.actions == []


async def test_x_then_y_closes_exactly_the_session_under_the_cursor() -> None:
    app, view, _ = make()
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("down", "down")
        target = connections(app).live_table.cursor_item.id
        await pilot.press("x")
        assert isinstance(app.screen, ConfirmDialog)
        assert app.screen.question == f"Close session {target}?"
        await pilot.press("y")
        await pilot.pause()
        assert view.actions == [Action("close", (target,))]
        assert target not in [s.id for s in connections(app).live_table.rows]


@pytest.mark.parametrize("key", ["n", "escape"])
async def test_x_then_n_or_escape_closes_nothing(key: str) -> None:
    app, view, _ = make()
    async with app.run_test(size=SIZE) as pilot:
        before = len(view.sessions())
        await pilot.press("x")
        assert isinstance(app.screen, ConfirmDialog)
        await pilot.press(key)
        assert not isinstance(app.screen, ConfirmDialog)
        assert view.actions == []
        assert len(view.sessions()) == before


async def test_a_session_closed_by_the_hub_leaves_the_live_table() -> None:
    app, view, _ = make()
    async with app.run_test(size=SIZE):
        view.operator_close("10.0.0.7:41234")
        app.refresh_once()
        assert "10.0.0.7:41234" not in [s.id for s in connections(app).live_table.rows]


async def test_s_then_y_begins_shutdown_and_the_app_exits_zero_once_the_view_is_stopped() -> None:
    app, view, _ = make()
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("s")
        assert isinstance(app.screen, ConfirmDialog)
        assert app.screen.question == "Shut down gracefully?"
        await pilot.press("y")
        assert view.action_names() == ["begin_shutdown"]
        assert app.return_code is None
        view.state = "stopped"
        await asyncio.sleep(1.0)
        assert app.return_code == 0
        assert app.return_value == 0


async def test_the_drain_shows_sessions_left_and_time_left() -> None:
    app, _, clock = make()
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("s", "y")
        clock.advance(12)
        app.refresh_once()
        banner = str(app.main.query_one("#drain").render())
        assert "10 sessions left" in banner
        assert "18s" in banner
        assert app.main.has_class("-draining")


async def test_s_during_the_drain_offers_to_close_everything_now() -> None:
    app, view, _ = make()
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("s", "y", "s")
        assert isinstance(app.screen, ConfirmDialog)
        assert app.screen.question == "Close everything now?"
        await pilot.press("y")
        assert view.action_names() == ["begin_shutdown", "force_shutdown"]
        await asyncio.sleep(0.6)
        assert app.return_code == 0


async def test_q_goes_through_the_same_confirmation_and_graceful_shutdown() -> None:
    app, view, _ = make()
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("q")
        assert isinstance(app.screen, ConfirmDialog)
        assert app.screen.question == "Shut down gracefully?"
        await pilot.press("y")
        assert view.action_names() == ["begin_shutdown"]


async def test_slash_filters_the_current_table_and_escape_clears_it() -> None:
    app, _, _ = make()
    async with app.run_test(size=SIZE) as pilot:
        table = connections(app).live_table
        await pilot.press("slash", *"5000#", "enter")
        ids = [s.id for s in table.rows]
        assert ids and all("5000#" in i for i in ids)
        assert len(ids) == 3
        assert app.focused is table
        await pilot.press("slash", "escape")
        assert len(table.rows) == 10


async def test_p_freezes_the_tables_while_the_header_keeps_ticking() -> None:
    app, view, clock = make()
    async with app.run_test(size=SIZE) as pilot:
        table = connections(app).live_table
        await pilot.press("p")
        frozen_row = line_text(table, 1)
        header_before = str(app.main.header.render())
        view.bump()
        clock.advance(65)
        app.refresh_once()
        assert line_text(table, 1) == frozen_row
        header_after = str(app.main.header.render())
        assert header_after != header_before
        assert "PAUSED" in header_after
        await pilot.press("p")
        assert line_text(table, 1) != frozen_row
        assert "PAUSED" not in str(app.main.header.render())


@pytest.mark.parametrize(
    ("key", "name"),
    [
        ("1", "connections"),
        ("2", "throttle"),
        ("3", "rooms"),
        ("4", "streams"),
        ("5", "transfers"),
        ("6", "log"),
    ],
)
async def test_each_digit_switches_to_its_pane_and_focuses_its_table(key: str, name: str) -> None:
    app, _, _ = make()
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("6" if key == "1" else "1", key)
        assert app.main.current == name
        assert isinstance(app.focused, LiveTable)
        assert app.focused in app.main.pane(name).query(LiveTable)
        assert app.focused.rows


async def test_question_mark_shows_every_key() -> None:
    app, _, _ = make()
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("question_mark")
        assert isinstance(app.screen, HelpScreen)
        from verb_console.console.dialogs import HELP_KEYS

        keys = " ".join(k for k, _ in HELP_KEYS)
        for key in ("1", "6", "b", "x", "s", "/", "p", "enter", "q", "?"):
            assert key in keys
        await pilot.press("escape")
        assert not isinstance(app.screen, HelpScreen)


async def test_enter_shows_every_field_of_the_selected_row() -> None:
    app, _, _ = make()
    async with app.run_test(size=SIZE) as pilot:
        target = connections(app).live_table.cursor_item.id
        await pilot.press("enter")
        assert isinstance(app.screen, DetailScreen)
        assert app.screen.title_text == f"Session {target}"
        assert ("Session", target) in app.screen.fetch()
        await pilot.press("escape")
        assert not isinstance(app.screen, DetailScreen)


async def test_a_read_only_console_refuses_every_change_with_a_notice() -> None:
    app, view, _ = make(read_only=True)
    notices: list[str] = []
    async with app.run_test(size=SIZE) as pilot:
        app.notify = lambda message, **_: notices.append(str(message))  # type: ignore[method-assign]
        await pilot.press("b", "x", "s")
        app.action_force_shutdown()
        assert view.actions == []
        assert len(notices) == 4
        assert all("Read-only" in n for n in notices)
        assert "READ-ONLY" in str(app.main.header.render())


async def test_q_on_a_read_only_console_still_drains_the_hosted_server_gracefully() -> None:
    app, view, _ = make(read_only=True)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("q")
        assert isinstance(app.screen, ConfirmDialog)
        await pilot.press("y")
        assert [a.name for a in view.actions] == ["begin_shutdown"]


async def test_session_ids_are_never_cut_short_at_120_columns() -> None:
    app, view, _ = make()
    async with app.run_test(size=SIZE):
        table = connections(app).live_table
        shown = "\n".join(line_text(table, y) for y in range(1, len(view.sessions()) + 1))
        for session in view.sessions():
            assert f"{session.id} " in shown


async def test_startup_is_awaited_before_the_first_sample_of_the_view() -> None:
    clock = FrozenClock()
    view = FixedHubView(clock)
    seen: list[str] = []
    original = view.overview

    def overview():  # type: ignore[no-untyped-def]
        seen.append("overview")
        return original()

    view.overview = overview  # type: ignore[method-assign]

    async def startup() -> None:
        seen.append("startup")

    app = VerbConsoleApp(view, clock=clock, startup=startup)
    async with app.run_test(size=SIZE):
        assert seen[0] == "startup"
        assert "overview" in seen


@pytest.mark.skipif(not hasattr(signal, "SIGHUP"), reason="no SIGHUP on this platform")
async def test_sighup_begins_a_graceful_shutdown_and_the_app_exits_when_stopped() -> None:
    app, view, _ = make()
    async with app.run_test(size=SIZE) as pilot:
        os.kill(os.getpid(), signal.SIGHUP)
        await pilot.pause(0.1)
        assert view.action_names() == ["begin_shutdown"]
        assert app.terminal_gone
        view.state = "stopped"
        await asyncio.sleep(0.6)
        assert app.return_code == 0


async def test_sort_keys_change_and_reverse_the_order() -> None:
    app, _, _ = make()
    async with app.run_test(size=SIZE) as pilot:
        table = connections(app).live_table
        # ADDRESS is hidden at this width, so two steps left of UPTIME is SESSION.
        await pilot.press("less_than_sign", "less_than_sign")
        assert table.columns[table.sort_column].label == "SESSION"
        ids = [s.id for s in table.rows]
        assert ids == sorted(ids)
        await pilot.press("r")
        assert [s.id for s in table.rows] == sorted(ids, reverse=True)


async def test_c_switches_to_the_closed_sessions_with_every_close_reason() -> None:
    app, _, _ = make()
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("c")
        pane = connections(app)
        assert app.focused is pane.closed_table
        reasons = {s.reason for s in pane.closed_table.rows}
        assert {"client_closed", "slow_consumer", "over_max_connections"} <= reasons


async def test_t_pauses_the_log_tail_so_new_events_do_not_move_the_cursor() -> None:
    app, view, _ = make()
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("6")
        table = app.main.pane("log").table
        assert table.cursor_item is table.rows[-1]
        await pilot.press("t")
        view.operator_broadcast("new event")
        app.refresh_once()
        assert table.cursor_item is not table.rows[-1]
        await pilot.press("t")
        await pilot.pause()
        assert table.cursor_item is table.rows[-1]


async def test_the_command_palette_offers_every_action_but_not_an_undrained_quit() -> None:
    app, _, _ = make()
    async with app.run_test(size=SIZE):
        titles = {c.title for c in app.get_system_commands(app.screen)}
        for wanted in (
            "Broadcast",
            "Close session",
            "Shut down gracefully",
            "Close everything now",
            "Pause / resume",
            "Filter",
            "Details",
            "Keys",
            "Quit console",
            "Show Log",
        ):
            assert wanted in titles
        assert "Quit" not in titles
