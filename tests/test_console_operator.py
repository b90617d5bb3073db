"""What an operator of nats-top, k9s or htop expects of the console, pressed against a fake hub."""

from __future__ import annotations

import asyncio
import csv
import json
import os
from pathlib import Path

import pytest
from console_fake import FixedHubView, FrozenClock
from textual.widgets import Footer, Label, Static

from verb_console.console import VerbConsoleApp
from verb_console.console.dialogs import BroadcastDialog, ConfirmDialog
from verb_console.console.format import plural
from verb_console.console.panes.connections import ConnectionsPane
from verb_console.console.panes.table import LiveTable
from verb_console.filtering import BadFilter
from verb_console.hub.session_fields import session_filter
from verb_console.hub.snapshot import SessionInfo
from verb_console.units import to_number

SIZE = (120, 40)
NARROW = (80, 24)


def make(*, sessions: int = 0) -> tuple[VerbConsoleApp, FixedHubView, FrozenClock]:
    clock = FrozenClock()
    view = FixedHubView(clock, sessions=sessions)
    return VerbConsoleApp(view, clock=clock), view, clock


def connections(app: VerbConsoleApp) -> ConnectionsPane:
    pane = app.main.pane("connections")
    assert isinstance(pane, ConnectionsPane)
    return pane


def header_line(table: LiveTable) -> str:
    return table.render_line(0).text


def shown_labels(table: LiveTable) -> list[str]:
    return [table.columns[i].label for i in table.shown_columns]


# ----- counts ------------------------------------------------------------------


def test_plural_says_one_session_and_two_sessions() -> None:
    assert plural(1, "session") == "1 session"
    assert plural(2, "session") == "2 sessions"
    assert plural(1_024, "mux connection") == "1,024 mux connections"
    assert plural(1, "recently closed", "recently closed") == "1 recently closed"


async def test_the_header_counts_tcp_connections_and_sessions_apart() -> None:
    app, view, _ = make()
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause()
        text = app.main.header.render().plain
        # 6 plain connections and 2 mux connections carry 10 sessions (4 are mux streams).
        assert "conns 8" in text and "sessions 10" in text
        assert view.overview().connections == 8


async def test_titles_say_one_room_not_one_rooms() -> None:
    app, _, _ = make()
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("3", "slash", *"firehose", "enter")
        assert "1 of 5 rooms" in app.main.pane("rooms")._title_text
        await pilot.press("escape", "4", "down")
        streams = app.main.pane("streams")
        assert "2 mux connections" in streams._title_text
        subtitle = streams.query_one(".pane-subtitle", Static).render()
        assert "[::1]:5001  ·  1 stream" in str(subtitle)


async def test_while_paused_the_pane_title_says_so() -> None:
    app, _, _ = make()
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("p")
        assert "PAUSED" in connections(app)._title_text
        await pilot.press("p")
        assert "PAUSED" not in connections(app)._title_text


# ----- columns at 80 wide --------------------------------------------------------


async def test_at_80_wide_bytes_in_and_out_hide_together_and_the_sort_column_stays() -> None:
    app, _, _ = make()
    async with app.run_test(size=NARROW):
        table = connections(app).live_table
        labels = shown_labels(table)
        assert ("BYTES IN" in labels) == ("BYTES OUT" in labels)
        assert table.columns[table.sort_column].label in labels
        assert "▲" in header_line(table) or "▼" in header_line(table)


async def test_the_layout_does_not_change_when_the_scrollbar_appears() -> None:
    few, _, _ = make()
    async with few.run_test(size=NARROW):
        without = shown_labels(connections(few).live_table)
    many, _, _ = make(sessions=150)  # all in the table's window, more than its lines
    async with many.run_test(size=NARROW):
        table = connections(many).live_table
        assert len(table.rows) > table.scrollable_content_region.height
        assert shown_labels(table) == without


async def test_sorting_with_angle_brackets_visits_only_the_shown_columns() -> None:
    app, _, _ = make()
    async with app.run_test(size=NARROW) as pilot:
        table = connections(app).live_table
        seen = set()
        for _ in range(len(table.columns) + 1):
            shown = table.shown_columns
            await pilot.press("greater_than_sign")
            assert table.sort_column in shown
            seen.add(table.sort_column)
            arrow = "▼" if table.sort_reverse else "▲"
            assert arrow in header_line(table)
        assert len(seen) >= 4


async def test_the_sort_arrow_and_numbers_keep_a_space_from_their_neighbours() -> None:
    app, _, _ = make()
    async with app.run_test(size=SIZE) as pilot:
        table = connections(app).live_table
        await pilot.press("greater_than_sign", "greater_than_sign")  # to MSG IN, right-aligned
        head = header_line(table)
        at = head.index("▲") if "▲" in head else head.index("▼")
        assert head[at - 1] == " "
        # UNSENT (a number) is followed by ROOMS (text): two spaces between them.
        row = next(
            table.render_line(y).text
            for y in range(1, len(table.rows) + 1)
            if "127.0.0.1:50001 " in table.render_line(y).text
        )
        assert " 0 B  lobby," in row


# ----- filter ----------------------------------------------------------------------


def test_the_filter_reads_numbers_durations_and_sizes_back() -> None:
    assert to_number("1m05s") == 65
    assert to_number("13s ago") == 13
    assert to_number("1.5 KiB") == 1536
    assert to_number("900.0 MB") == 900e6
    assert to_number("12.3k") == 12300
    assert to_number("1,024") == 1024
    assert to_number("lobby") is None


async def test_field_terms_filter_by_column() -> None:
    app, _, _ = make()
    async with app.run_test(size=SIZE) as pilot:
        table = connections(app).live_table
        await pilot.press("slash", *"proto:json", "enter")
        assert table.rows and all(s.protocol == "json" for s in table.rows)
        await pilot.press("escape", "slash", *"room:lobby", "enter")
        assert {s.id for s in table.rows} == {
            "127.0.0.1:50001",
            "10.0.0.7:41234",
            "[2001:db8:85a3::8a2e:370:7334]:65535",
        }
        await pilot.press("escape", "slash", *"idle>60 proto:echo", "enter")
        assert [s.id for s in table.rows] == ["192.168.1.20:53000", "127.0.0.1:5000#3"] or {
            s.id for s in table.rows
        } == {"192.168.1.20:53000", "127.0.0.1:5000#3"}
        await pilot.press("escape", "slash", *"colour:red", "enter")
        assert table.rows == [] and "no column 'colour'" in table.render_line(1).text


def test_a_comparison_needs_a_number() -> None:
    app, _, _ = make()
    with pytest.raises(BadFilter):
        session_filter("idle>soon")
    del app


async def test_escape_on_the_table_clears_an_applied_filter() -> None:
    app, _, _ = make()
    async with app.run_test(size=SIZE) as pilot:
        table = connections(app).live_table
        await pilot.press("slash", *"5000#", "enter")
        assert table.filter_text == "5000#" and len(table.rows) == 3
        assert app.focused is table
        await pilot.press("escape")
        assert table.filter_text == "" and len(table.rows) == 10
        assert "filter" not in connections(app)._title_text


async def test_the_log_title_follows_the_filter_at_once() -> None:
    app, _, _ = make()
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("6", "slash", *"mux", "enter")
        assert "filter “mux”" in app.main.pane("log")._title_text


async def test_the_closed_list_cursor_stays_on_the_newest_record() -> None:
    app, view, _ = make()
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("c")
        table = connections(app).closed_table
        assert table.cursor_item is table.rows[0]
        view.operator_close("192.168.1.20:53000")
        app.refresh_once()
        assert table.cursor_item.id == "192.168.1.20:53000"


# ----- dialogs ---------------------------------------------------------------------


async def test_broadcast_rooms_are_sorted_and_enter_after_choosing_a_room_sends() -> None:
    app, view, _ = make()
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("b")
        dialog = app.screen
        assert isinstance(dialog, BroadcastDialog)
        assert dialog.rooms == sorted(dialog.rooms)
        await pilot.press(*"hello")
        # Tab to the list of targets, down to the last room (ops), Enter sends.
        await pilot.press("tab", *["down"] * len(dialog.rooms))
        assert dialog.target == "ops"
        await pilot.press("enter")
        await pilot.pause()
        assert view.actions[-1].args == ("hello", "ops")


async def test_a_dialog_shows_its_own_keys_in_the_footer() -> None:
    app, _, _ = make()
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("x")
        dialog = app.screen
        assert isinstance(dialog, ConfirmDialog)
        await pilot.pause()
        footer = dialog.query_one(Footer)
        keys = {b.binding.key for b in footer.screen.active_bindings.values() if b.binding.show}
        assert "y" in keys and "b" not in keys


async def test_the_shutdown_hint_is_not_cut_at_80_wide() -> None:
    app, _, _ = make()
    async with app.run_test(size=NARROW) as pilot:
        await pilot.press("s")
        await pilot.pause()
        hint = app.screen.query_one(".hint", Label)
        text = "New connections are refused; sessions get the grace period to finish."
        assert hint.size.height * hint.size.width >= len(text)
        assert hint.size.height >= 2


async def test_closing_a_mux_stream_says_only_the_stream_closes() -> None:
    app, _, _ = make()
    async with app.run_test(size=SIZE):
        text = app._close_consequence("127.0.0.1:5000#2")
        assert "Only this stream closes" in text
        text = app._close_consequence("127.0.0.1:5000")
        assert "3 mux streams close with it" in text


# ----- many at once -------------------------------------------------------------------


async def test_space_tags_rows_and_x_closes_the_tagged_after_one_confirmation() -> None:
    app, view, _ = make()
    async with app.run_test(size=SIZE) as pilot:
        table = connections(app).live_table
        first, second = table.rows[0].id, table.rows[1].id
        await pilot.press("space", "space")
        assert table.tagged == {first, second}
        assert "2 tagged" in connections(app)._title_text
        await pilot.press("X")
        dialog = app.screen
        assert isinstance(dialog, ConfirmDialog)
        assert "2 tagged sessions" in dialog.question
        await pilot.press("y")
        assert [a.args[0] for a in view.actions if a.name == "close"] == [first, second]
        assert not table.tagged


async def test_x_closes_what_the_filter_shows() -> None:
    app, view, _ = make()
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("slash", *"5000#", "enter", "X")
        dialog = app.screen
        assert isinstance(dialog, ConfirmDialog) and "3 sessions" in dialog.question
        await pilot.press("y")
        closed = {a.args[0] for a in view.actions if a.name == "close"}
        assert closed == {"127.0.0.1:5000#1", "127.0.0.1:5000#2", "127.0.0.1:5000#3"}


async def test_x_without_tags_or_filter_closes_the_selected_address() -> None:
    app, view, _ = make()
    async with app.run_test(size=SIZE) as pilot:
        address = connections(app).live_table.cursor_item.address
        await pilot.press("X")
        dialog = app.screen
        assert isinstance(dialog, ConfirmDialog) and address in dialog.question
        assert "1 connection from" in dialog.detail
        await pilot.press("y")
        assert ("close_ip", (address,)) in [(a.name, a.args) for a in view.actions]


# ----- sorts, export, theme, screenshot -------------------------------------------------


async def test_one_key_sorts_put_the_largest_first() -> None:
    app, _, _ = make()
    async with app.run_test(size=SIZE) as pilot:
        table = connections(app).live_table
        await pilot.press("U")
        assert table.rows[0].id == "203.0.113.9:60111"  # 2.3 MiB unsent
        await pilot.press("M")
        assert table.rows[0].msgs_in == max(s.msgs_in for s in table.rows)
        await pilot.press("I")
        assert table.columns[table.sort_column].label == "IDLE"


async def test_e_and_shift_e_export_the_table_as_filtered_and_sorted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    app, _, _ = make()
    notices: list[str] = []
    async with app.run_test(size=SIZE) as pilot:
        app.notify = lambda message, **_: notices.append(str(message))  # type: ignore[method-assign]
        await pilot.press("slash", *"proto:json", "enter", "e", "E")
        table = connections(app).live_table
    [csv_path] = tmp_path.glob("verb-console-connections-*.csv")
    [json_path] = tmp_path.glob("verb-console-connections-*.json")
    with csv_path.open() as f:
        rows = list(csv.DictReader(f))
    assert [r["id"] for r in rows] == [s.id for s in table.rows]
    # Data, not display strings: bytes as integers, durations in seconds.
    by_id = {s.id: s for s in table.rows}
    for row in rows:
        session = by_id[row["id"]]
        assert row["protocol"] == "json"
        assert int(row["bytes_out"]) == session.bytes_out
        assert float(row["uptime_seconds"]) == pytest.approx(table.now - session.connected_at)
        assert float(row["idle_seconds"]) == pytest.approx(table.now - session.last_activity)
        assert int(row["server_pid"]) == os.getpid() and row["server_address"] == "0.0.0.0:7000"
        assert float(row["exported_at"]) > 1.7e9
    doc = json.loads(json_path.read_text())
    # The same field names as ctl --json (the admin protocol's), plus the durations.
    assert doc["fields"][: len(SessionInfo._fields)] == list(SessionInfo._fields)
    assert doc["fields"][len(SessionInfo._fields) :] == ["uptime_seconds", "idle_seconds"]
    assert [r["id"] for r in doc["rows"]] == [s.id for s in table.rows]
    assert all(isinstance(r["bytes_in"], int) for r in doc["rows"])
    assert doc["server"]["pid"] == os.getpid() and doc["server"]["listeners"][0].startswith("0.0")
    assert doc["pane"] == "connections" and doc["filter"] == "proto:json"
    assert doc["sort"] == {"column": "uptime", "reverse": False}
    assert isinstance(doc["exported_at"], float)
    assert any(str(csv_path) in n for n in notices)


async def test_the_theme_is_remembered_between_runs() -> None:
    app, _, _ = make()
    async with app.run_test(size=SIZE) as pilot:
        assert app.theme != "nord"
        app.theme = "nord"
        await pilot.pause()
    again, _, _ = make()
    async with again.run_test(size=SIZE):
        assert again.theme == "nord"


async def test_a_screenshot_goes_to_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    app, _, _ = make()
    async with app.run_test(size=SIZE) as pilot:
        app.deliver_screenshot()
        for _ in range(50):
            await pilot.pause(0.05)
            if list(tmp_path.glob("*.svg")):
                break
    assert list(tmp_path.glob("*.svg"))


# ----- errors, glyphs and colours -----------------------------------------------------


async def test_a_bind_error_names_the_address(start_server) -> None:
    from verb_console.runtime import Runtime
    from verb_console.settings import Settings

    first = await start_server()
    second = Runtime(Settings(host="127.0.0.1", port=first.port, protocol="json"))
    with pytest.raises(OSError) as failed:
        await second.start()
    assert f"127.0.0.1:{first.port}" in str(failed.value.strerror)
    second.hub.force_shutdown()
    await asyncio.wait_for(second.hub.wait_stopped(), 10)


def test_ascii_is_chosen_for_the_linux_console_and_non_utf8_locales() -> None:
    from verb_console.console.glyphs import ascii_wanted

    assert ascii_wanted({"TERM": "linux", "LANG": "en_US.UTF-8"})
    assert ascii_wanted({"TERM": "xterm-256color", "LANG": "en_US.ISO-8859-1"})
    assert ascii_wanted({"TERM": "xterm", "LC_ALL": "C"})
    assert not ascii_wanted({"TERM": "xterm-256color", "LANG": "en_US.UTF-8"})
    assert not ascii_wanted({"TERM": "linux", "VERB_CONSOLE_ASCII": "0"})


def test_sixteen_colours_are_chosen_for_the_linux_console_and_plain_xterm() -> None:
    from verb_console.console.theme import few_colours

    assert few_colours("standard", "xterm")
    assert few_colours("truecolor", "linux")
    assert not few_colours("256", "xterm-256color")
    assert not few_colours("truecolor", "xterm-kitty")


async def test_an_ascii_console_draws_no_glyph_outside_ascii() -> None:
    clock = FrozenClock()
    app = VerbConsoleApp(FixedHubView(clock), clock=clock, ascii=True)
    async with app.run_test(size=SIZE) as pilot:
        for _ in range(5):
            clock.advance(1)
            app.refresh_once()
        await pilot.pause()
        for name in ("connections", "transfers", "log"):
            app.main.current = name
            await pilot.pause()
            pane = app.main.pane(name)
            table = pane.table
            lines = [table.render_line(y).text for y in range(table.size.height)]
            lines += [pane._title_text, app.main.header.render().plain]
            for line in lines:
                assert line.isascii(), (name, line)
