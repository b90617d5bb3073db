"""Pictures of every pane and dialog of the console, at 80x24 and 120x40.

The clock is frozen and the hub is a FixedHubView, so the pictures never change
unless the console's look does.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
from console_fake import FixedHubView, FrozenClock
from textual.pilot import Pilot

from verb_console.console import VerbConsoleApp

SIZES = [pytest.param((80, 24), id="80x24"), pytest.param((120, 40), id="120x40")]


@pytest.fixture(autouse=True)
def utc() -> Iterator[None]:
    """Log times are local wall-clock times; pin the zone so pictures match anywhere."""
    mp = pytest.MonkeyPatch()
    mp.setenv("TZ", "UTC")
    time.tzset()
    yield
    mp.undo()
    time.tzset()


def make_app(*, read_only: bool = False) -> VerbConsoleApp:
    clock = FrozenClock()
    return VerbConsoleApp(FixedHubView(clock), clock=clock, read_only=read_only)


async def warm_up(pilot: Pilot) -> None:
    """Let a minute of (fake) time pass so the sparklines have history."""
    app = pilot.app
    assert isinstance(app, VerbConsoleApp)
    clock = app.clock
    assert isinstance(clock, FrozenClock)
    for _ in range(60):
        clock.advance(1.0)
        app.refresh_once()
    await pilot.pause()


@pytest.mark.parametrize("size", SIZES)
def test_the_connections_pane_and_header_show_first(snap_compare, size) -> None:
    assert snap_compare(make_app(), terminal_size=size, run_before=warm_up)


@pytest.mark.parametrize("size", SIZES)
def test_c_shows_the_closed_sessions_with_their_reasons(snap_compare, size) -> None:
    assert snap_compare(make_app(), terminal_size=size, press=["c"])


@pytest.mark.parametrize("size", SIZES)
def test_the_throttle_pane_shows_the_blocked_client_first(snap_compare, size) -> None:
    assert snap_compare(make_app(), terminal_size=size, press=["2"])


@pytest.mark.parametrize("size", SIZES)
def test_the_rooms_pane_lists_the_members_of_the_selected_room(snap_compare, size) -> None:
    assert snap_compare(make_app(), terminal_size=size, press=["3", "down"])


@pytest.mark.parametrize("size", SIZES)
def test_the_streams_pane_lists_mux_connections_and_their_streams(snap_compare, size) -> None:
    assert snap_compare(make_app(), terminal_size=size, press=["4"])


@pytest.mark.parametrize("size", SIZES)
def test_the_transfers_pane_shows_progress_and_outcomes(snap_compare, size) -> None:
    assert snap_compare(make_app(), terminal_size=size, press=["5"])


@pytest.mark.parametrize("size", SIZES)
def test_the_log_pane_follows_the_tail(snap_compare, size) -> None:
    assert snap_compare(make_app(), terminal_size=size, press=["6"])


@pytest.mark.parametrize("size", SIZES)
def test_the_tap_pane_samples_messages_and_counts_the_skipped(snap_compare, size) -> None:
    assert snap_compare(make_app(), terminal_size=size, press=["7"])


@pytest.mark.parametrize("size", SIZES)
def test_b_opens_the_broadcast_dialog(snap_compare, size) -> None:
    assert snap_compare(make_app(), terminal_size=size, press=["b", *"maintenance at 22:00"])


@pytest.mark.parametrize("size", SIZES)
def test_x_asks_before_closing_the_selected_session(snap_compare, size) -> None:
    assert snap_compare(make_app(), terminal_size=size, press=["down", "down", "down", "x"])


@pytest.mark.parametrize("size", SIZES)
def test_s_asks_before_shutting_down(snap_compare, size) -> None:
    assert snap_compare(make_app(), terminal_size=size, press=["s"])


@pytest.mark.parametrize("size", SIZES)
def test_enter_shows_every_field_of_the_selected_session(snap_compare, size) -> None:
    assert snap_compare(make_app(), terminal_size=size, press=["down", "down", "down", "enter"])


@pytest.mark.parametrize("size", SIZES)
def test_question_mark_lists_every_key(snap_compare, size) -> None:
    assert snap_compare(make_app(), terminal_size=size, press=["question_mark"])


@pytest.mark.parametrize("size", SIZES)
def test_the_drain_shows_sessions_and_time_left(snap_compare, size) -> None:
    async def drain(pilot: Pilot) -> None:
        app = pilot.app
        assert isinstance(app, VerbConsoleApp)
        app.view.begin_shutdown()
        app.clock.advance(12.0)  # type: ignore[attr-defined]
        app.refresh_once()
        await pilot.pause()

    assert snap_compare(make_app(), terminal_size=size, run_before=drain)


@pytest.mark.parametrize("size", SIZES)
def test_p_shows_paused_in_the_header(snap_compare, size) -> None:
    assert snap_compare(make_app(), terminal_size=size, press=["p"])


@pytest.mark.parametrize("size", SIZES)
def test_slash_filters_the_table(snap_compare, size) -> None:
    assert snap_compare(make_app(), terminal_size=size, press=["slash", *"5000"])


@pytest.mark.parametrize("size", SIZES)
def test_a_read_only_console_refuses_broadcast_visibly(snap_compare, size) -> None:
    assert snap_compare(make_app(read_only=True), terminal_size=size, press=["b"])


@pytest.mark.parametrize("size", SIZES)
def test_sixteen_colours_keep_the_state_the_label_and_the_cursor_apart(snap_compare, size) -> None:
    async def sixteen(pilot: Pilot) -> None:
        app = pilot.app
        assert isinstance(app, VerbConsoleApp)
        app.theme = "verb-16"
        await warm_up(pilot)

    assert snap_compare(make_app(), terminal_size=size, run_before=sixteen)


@pytest.mark.parametrize("size", SIZES)
def test_sixteen_colours_while_draining(snap_compare, size) -> None:
    async def drain(pilot: Pilot) -> None:
        app = pilot.app
        assert isinstance(app, VerbConsoleApp)
        app.theme = "verb-16"
        app.view.begin_shutdown()
        app.clock.advance(12.0)  # type: ignore[attr-defined]
        app.refresh_once()
        await pilot.pause()

    assert snap_compare(make_app(), terminal_size=size, run_before=drain)


@pytest.mark.parametrize("size", SIZES)
def test_an_ascii_console_for_the_linux_console(snap_compare, size) -> None:
    clock = FrozenClock()
    app = VerbConsoleApp(FixedHubView(clock), clock=clock, ascii=True)
    assert snap_compare(app, terminal_size=size, run_before=warm_up, press=["s"])


@pytest.mark.parametrize("size", SIZES)
def test_space_tags_rows_for_closing_many(snap_compare, size) -> None:
    assert snap_compare(make_app(), terminal_size=size, press=["down", "space", "space"])


async def watch_for_a_while(pilot: Pilot, *keys: str, sixteen: bool = False) -> None:
    """Press ``keys`` (opening a detail dialog), then let 40 s of (fake) time pass."""
    app = pilot.app
    assert isinstance(app, VerbConsoleApp)
    if sixteen:
        app.theme = "verb-16"
    await pilot.press(*keys)
    clock = app.clock
    assert isinstance(clock, FrozenClock)
    for _ in range(40):
        clock.advance(1.0)
        app.refresh_once()
    await pilot.pause()


@pytest.mark.parametrize("sixteen", [False, True], ids=["default", "16-colours"])
@pytest.mark.parametrize("size", SIZES)
def test_a_session_s_details_draw_its_message_rates_in_and_out(snap_compare, size, sixteen) -> None:
    async def run(pilot: Pilot) -> None:
        await watch_for_a_while(pilot, "down", "down", "down", "enter", sixteen=sixteen)

    assert snap_compare(make_app(), terminal_size=size, run_before=run)


@pytest.mark.parametrize("sixteen", [False, True], ids=["default", "16-colours"])
@pytest.mark.parametrize("size", SIZES)
def test_a_room_s_details_draw_its_message_rate(snap_compare, size, sixteen) -> None:
    async def run(pilot: Pilot) -> None:
        await watch_for_a_while(pilot, "3", "down", "enter", sixteen=sixteen)

    assert snap_compare(make_app(), terminal_size=size, run_before=run)


@pytest.mark.parametrize("size", SIZES)
def test_h_draws_the_header_s_history_at_10_s_a_bar(snap_compare, size) -> None:
    async def run(pilot: Pilot) -> None:
        app = pilot.app
        assert isinstance(app, VerbConsoleApp)
        app.clock.advance(15 * 60.0)  # type: ignore[attr-defined]
        await pilot.press("h")
        app.refresh_once()
        await pilot.pause()

    assert snap_compare(make_app(), terminal_size=size, run_before=run)
