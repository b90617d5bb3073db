"""The Tap pane (7): a rate-limited sample of the messages flowing, off until shown.

A real server in the app's loop, real clients on 127.0.0.1: what they send shows
up as rows, the hub's tap exists only while the pane is on show, and a flood is
counted as skipped rather than drawn.
"""

from __future__ import annotations

from pathlib import Path

from helpers import eventually, frame
from test_console_live import WAIT, live_console

from verb_console.console.panes.tap import TapPane
from verb_console.hub.tap import TAP_RATE, Tap
from verb_console.protocols import binary as b


def tap_pane(live: object) -> TapPane:
    pane = live.app.main.pane("tap")  # type: ignore[attr-defined]
    assert isinstance(pane, TapPane)
    return pane


async def test_the_tap_is_off_until_the_pane_shows_and_off_again_when_it_goes(
    tmp_path: Path,
) -> None:
    async with live_console(tmp_path) as live:
        hub = live.runtime.hub
        await live.json.request({"type": "join_room", "room": "lobby"})
        # Hidden: no tap at all, so the hot path reads one None.
        assert hub.tap is None
        await live.pilot.press("7")
        assert live.app.main.current == "tap"
        assert isinstance(hub.tap, Tap)
        await live.json.send({"type": "room_message", "room": "lobby", "data": "x" * 100})
        live.binary.writer.write(b.encode_frame(b.DATA, b"y" * 300))
        assert (await live.binary.recv())[0] == b.DATA
        pane = tap_pane(live)

        def shown() -> bool:
            rows = pane.table.rows
            return any(
                r.session == live.json.id and r.type == "room_message" and r.room == "lobby"
                for r in rows
            ) and any(
                r.session == live.binary.id and r.type == "data" and r.size == 300 for r in rows
            )

        await eventually(shown, WAIT)
        json_row = next(r for r in pane.table.rows if r.type == "room_message")
        assert json_row.protocol == "json"
        sent = frame({"type": "room_message", "room": "lobby", "data": "x" * 100})
        assert json_row.size == len(sent.partition(b"\n")[2])
        title = str(pane.query_one(".pane-title").render())
        assert "tap on" in title and "skipped" in title
        await live.pilot.press("1")
        assert hub.tap is None
        await live.json.request({"type": "ping"})
        # Nothing sampled while closed: the pane keeps what it had, the hub has no tap.
        assert hub.tap is None


async def test_a_flood_is_drawn_at_most_rate_rows_a_second_and_the_rest_counted_skipped(
    tmp_path: Path,
) -> None:
    async with live_console(tmp_path) as live:
        await live.pilot.press("7")
        pane = tap_pane(live)
        count = 500
        await live.json.send_raw(b"".join(frame({"type": "ping"}) for _ in range(count)))
        for _ in range(count):
            assert (await live.json.recv())["type"] == "pong"
        await eventually(lambda: pane._counts[0] >= count, WAIT)
        seen, skipped, rate = pane._counts
        assert rate == TAP_RATE
        pings = [r for r in pane.table.rows if r.session == live.json.id and r.type == "ping"]
        # All 500 arrived within a second or two: at most a rate's worth a second drawn.
        assert 1 <= len(pings) <= 3 * TAP_RATE
        assert seen - skipped == len(pane.rows)
        assert skipped >= count - 3 * TAP_RATE
        title = str(pane.query_one(".pane-title").render())
        assert f"{skipped:,} skipped" in title


async def test_an_attached_console_taps_over_the_admin_socket_and_lets_go_when_it_leaves(
    start_server, connect, tmp_path: Path
) -> None:
    from verb_console.admin.remote_view import RemoteHubView
    from verb_console.console.attach import build_app

    path = tmp_path / "admin.sock"
    runtime = await start_server(admin_socket=str(path))
    client = await connect(runtime)
    await client.request({"type": "join_room", "room": "ops"})
    view = RemoteHubView(path, interval=0.05)
    app = build_app(view, refresh=20, read_only=False)
    try:
        async with app.run_test(size=(120, 40)) as pilot:
            await eventually(lambda: view.connected, WAIT)
            assert runtime.hub.tap is None
            await pilot.press("7")
            await eventually(lambda: runtime.hub.tap is not None, WAIT)
            pane = app.screen.query_one(TapPane)
            await client.send({"type": "room_message", "room": "ops", "data": "over the socket"})

            def shown() -> bool:
                return any(
                    r.session == client.id and r.type == "room_message" and r.room == "ops"
                    for r in pane.table.rows
                )

            await eventually(shown, WAIT)
            assert "tap on" in pane._title_text
            # Another pane: the server's tap closes on the next round.
            await pilot.press("1")
            await eventually(lambda: runtime.hub.tap is None, WAIT)
            await pilot.press("7")
            await eventually(lambda: runtime.hub.tap is not None, WAIT)
            await client.request({"type": "ping"})
            # Numbers go on across taps: the new ping is shown after the old rows.
            await eventually(lambda: pane.table.rows[-1].type == "ping", WAIT)
    finally:
        view.stop()
    # The console went with its admin connection: the server holds no tap for it.
    await eventually(lambda: runtime.hub.tap is None, WAIT)
