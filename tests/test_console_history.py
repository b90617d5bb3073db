"""Rates over time in the console, against a real server and real clients, hosted in
the console's process and attached over a real admin socket.

``h`` cycles the header's resolution (1 s, 10 s, 1 min a bar) and its label says
which; a session's and a room's detail dialogs draw sparklines of their rates,
which rise with the clients' traffic, sampled by the server only while open.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from helpers import JsonClient, eventually
from textual.widgets import Static

from verb_console.admin.remote_view import RemoteHubView
from verb_console.console import VerbConsoleApp
from verb_console.console.dialogs import DetailScreen
from verb_console.console.glyphs import G
from verb_console.console.keys import help_lines, palette_keys
from verb_console.runtime import Runtime
from verb_console.settings import Settings

pytestmark = [
    pytest.mark.skipif(sys.platform != "linux", reason="Unix sockets with SO_PEERCRED"),
    pytest.mark.timeout(90),
]
SIZE = (120, 40)


@dataclass
class Console:
    app: VerbConsoleApp
    pilot: Any
    runtime: Runtime


@pytest.fixture(params=["hosted", "attached"])
def console(
    request: pytest.FixtureRequest, start_server: Any, tmp_path: Path
) -> Callable[..., Any]:
    """A console on a real server: hosted in-process, or attached over its admin socket."""

    @contextlib.asynccontextmanager
    async def open_console() -> AsyncIterator[Console]:
        if request.param == "hosted":
            from verb_console.console.run import build_app

            settings = Settings(port=0, protocol="json", upload_dir=str(tmp_path / "up"))
            app, runtime = build_app(settings)
            try:
                async with app.run_test(size=SIZE) as pilot:
                    await eventually(lambda: runtime.server is not None, 5)
                    yield Console(app, pilot, runtime)
            finally:
                if runtime.hub.state != "stopped":
                    runtime.hub.force_shutdown()
                await asyncio.wait_for(runtime.hub.wait_stopped(), 10)
            return
        from verb_console.console.attach import build_app as attach_app

        path = tmp_path / "admin.sock"
        runtime = await start_server(admin_socket=str(path), protocol="json")
        view = RemoteHubView(path, interval=0.05)
        app = attach_app(view, refresh=10, read_only=False)
        try:
            async with app.run_test(size=SIZE) as pilot:
                await eventually(lambda: view.connected, 5)
                yield Console(app, pilot, runtime)
        finally:
            view.stop()

    return open_console


async def keep_sending(client: JsonClient, message: dict[str, Any], stop: asyncio.Event) -> None:
    while not stop.is_set():
        await client.request(message)


def rates_text(screen: DetailScreen) -> str:
    return str(screen.query_one("#rates", Static).content)


def risen(text: str) -> bool:
    """Whether a sparkline in ``text`` has a bar above the lowest two."""
    return any(ch in text for ch in G.spark[2:])


def test_h_is_in_the_help_and_the_palette() -> None:
    assert ("h", "header sparklines: 1 s / 10 s / 1 min a bar (5 min, 1 h, 24 h kept)") in (
        help_lines()
    )
    assert "History resolution" in [k.title for k in palette_keys()]


async def test_h_cycles_the_header_s_resolution_and_its_label_says_which(console) -> None:
    async with console() as c:
        header = c.app.main.header
        assert header.step == 1
        await eventually(lambda: " 1s " in str(header.render()), 5)
        # The server's own 1 s samples reach the header (hosted or attached).
        await eventually(lambda: header.history.seq >= 2, 5)
        assert header.history.seq <= c.runtime.hub.history.rings[1].seq
        for step, tag in ((10, "10s"), (60, " 1m"), (1, " 1s")):
            await c.pilot.press("h")
            assert header.step == step
            await eventually(lambda tag=tag: f"msg {tag} " in str(header.render()), 5)
            assert header.history.step == step or header.history.seq == 0


async def test_a_session_s_details_draw_its_rates_rising_with_its_traffic(console) -> None:
    async with console() as c:
        client = await JsonClient.connect(c.runtime.port)
        try:
            table = c.app.main.pane("connections").table
            await eventually(lambda: any(s.id == client.id for s in table.rows), 5)
            await c.pilot.press("home")
            assert table.cursor_item is not None and table.cursor_item.id == client.id
            watches = c.runtime.hub.watches
            assert len(watches) == 0  # nothing is sampled before the dialog opens
            await c.pilot.press("enter")
            screen = c.app.screen
            assert isinstance(screen, DetailScreen) and screen.rates is not None
            await eventually(lambda: len(watches) == 1, 5)
            assert "msg in" in rates_text(screen) and "msg out" in rates_text(screen)
            assert not risen(rates_text(screen))  # idle so far
            stop = asyncio.Event()
            pinger = asyncio.create_task(keep_sending(client, {"type": "ping"}, stop))
            try:
                await eventually(lambda: risen(rates_text(screen)), 8)
                # The first risen second may be slow on a busy machine: wait for a
                # sample over 5 a second rather than expect the first to be.
                assert screen.rates is not None
                rates = screen.rates

                def over_5(field: str) -> bool:
                    return max(rates.series(100).values(field)) > 5

                await eventually(lambda: over_5("msgs_in") and over_5("msgs_out"), 8)
            finally:
                stop.set()
                await pinger
            await c.pilot.press("escape")
            assert not isinstance(c.app.screen, DetailScreen)
            # Closed: the server lets go of the watch (it lingers, unheld, then goes).
            held = watches._watches["session", client.id]
            await eventually(lambda: held.holders == 0, 5)
        finally:
            await client.close()


async def test_a_room_s_details_draw_its_message_rate_rising_with_its_traffic(console) -> None:
    async with console() as c:
        talker = await JsonClient.connect(c.runtime.port)
        listener = await JsonClient.connect(c.runtime.port)
        try:
            for client in (talker, listener):
                await client.request({"type": "join_room", "room": "lobby"})
            assert (await talker.recv())["type"] == "user_joined"
            await c.pilot.press("3")
            table = c.app.main.pane("rooms").table
            await eventually(lambda: [r.name for r in table.rows] == ["lobby"], 5)
            await c.pilot.press("enter")
            screen = c.app.screen
            assert isinstance(screen, DetailScreen) and screen.title_text == "Room lobby"
            assert "messages" in rates_text(screen)
            stop = asyncio.Event()

            async def talk() -> None:
                message = {"type": "room_message", "room": "lobby", "data": "hi"}
                while not stop.is_set():
                    await talker.send(message)
                    assert (await listener.recv())["type"] == "room_message"

            task = asyncio.create_task(talk())
            try:
                await eventually(lambda: risen(rates_text(screen)), 8)
                # As above: a sample over 5 a second, not necessarily the first.
                rates = screen.rates
                assert rates is not None
                await eventually(lambda: max(rates.series(100).values("messages")) > 5, 8)
            finally:
                stop.set()
                await task
            await c.pilot.press("escape")
            held = c.runtime.hub.watches._watches["room", "lobby"]
            await eventually(lambda: held.holders == 0, 5)
        finally:
            await talker.close()
            await listener.close()
