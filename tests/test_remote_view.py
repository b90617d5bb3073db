"""The view an attached console reads, over a real admin socket (issue 10, item 5)."""

from __future__ import annotations

import asyncio
import sys
import threading
import time
from pathlib import Path
from typing import Any

import anyio
import pytest
from helpers import eventually

from verb_console.admin.client import AdminClient
from verb_console.admin.remote_view import DISCONNECTED, RemoteHubView
from verb_console.console.panes.base import WINDOW
from verb_console.runtime import Runtime
from verb_console.settings import Settings

pytestmark = [
    pytest.mark.skipif(sys.platform != "linux", reason="Unix sockets with SO_PEERCRED"),
    pytest.mark.timeout(60),
]


async def test_the_copy_follows_the_server_and_fetches_the_pane_s_order_and_filter(
    start_server, connect, tmp_path: Path
) -> None:
    path = tmp_path / "admin.sock"
    runtime = await start_server(admin_socket=str(path))
    clients = [await connect(runtime) for _ in range(4)]
    await clients[1].request({"type": "join_room", "room": "ops"})
    view = RemoteHubView(path, interval=0.05)
    task = asyncio.create_task(view.run())
    try:
        await eventually(lambda: view.overview().sessions == 4, timeout=5)
        assert view.overview().state == "running"
        assert sorted(s.id for s in view.sessions()) == sorted(c.id for c in clients)
        page = view.session_page()
        assert (page.total, page.matched) == (4, 4)
        view.session_page("id", False, "ops")
        await eventually(lambda: [s.id for s in view.sessions()] == [clients[1].id], timeout=5)
        page = view.session_page("id", False, "ops")
        assert (page.total, page.matched, page.query.filter) == (4, 1, "ops")
        # Lists are fetched once a pane has asked for them.
        assert view.rooms() == []
        await eventually(lambda: [r.name for r in view.rooms()] == ["ops"], timeout=5)
        # Actions go to the server on the next round.
        assert view.operator_close(clients[1].id) is True
        assert await clients[1].recv(5) == {"type": "closing", "reason": "operator"}
        view.operator_broadcast("from afar")
        assert (await clients[0].recv(5))["data"] == "from afar"
        await eventually(lambda: any("from afar" in e.text for e in view.log_since(0)), 5)
        # The server goes: the copy says so, and re-attaches when it is back.
        runtime.hub.force_shutdown()
        await runtime.hub.wait_stopped()
        await eventually(lambda: view.overview().state == DISCONNECTED, timeout=5)
        again = await start_server(admin_socket=str(path))
        await eventually(lambda: view.attaches == 2 and view.connected, timeout=5)
        await eventually(lambda: view.overview().listeners == again.hub.overview().listeners, 5)
    finally:
        view.stop()
        await asyncio.wait_for(task, 5)


async def test_a_read_only_view_refuses_actions_itself_and_at_the_server(server, connect) -> None:
    client = await connect(server)
    view = RemoteHubView(server.admin.path, read_only=True, interval=0.05)
    task = asyncio.create_task(view.run())
    try:
        await eventually(lambda: view.overview().sessions == 1, timeout=5)
        assert view.overview().read_only
        with pytest.raises(PermissionError):
            view.operator_close(client.id)
        with pytest.raises(PermissionError):
            view.begin_shutdown()
        await client.expect_nothing(0.2)
        assert server.hub.state == "running"
    finally:
        view.stop()
        await asyncio.wait_for(task, 5)


def test_the_admin_client_runs_under_trio_too(tmp_path: Path) -> None:
    """The server runs on asyncio in another thread; the client runs on trio here."""
    path = tmp_path / "trio.sock"
    ready = threading.Event()
    stop: list[asyncio.Event] = []
    runtimes: list[Runtime] = []

    async def serve() -> None:
        runtime = Runtime(
            Settings(port=0, protocol="json", admin_socket=str(path), upload_dir=str(tmp_path))
        )
        await runtime.start()
        runtimes.append(runtime)
        stop.append(asyncio.Event())
        ready.set()
        await stop[0].wait()
        runtime.hub.force_shutdown()
        await runtime.hub.wait_stopped()

    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_until_complete, args=(serve(),))
    thread.start()
    try:
        assert ready.wait(10)

        async def ask() -> dict[str, object]:
            async with await AdminClient.connect(path) as admin:
                status: dict[str, object] = await admin.request("status")
                return status

        status = anyio.run(ask, backend="trio")
        assert status["state"] == "running"
        assert status["listeners"] == list(runtimes[0].hub.overview().listeners)
    finally:
        if stop:
            loop.call_soon_threadsafe(stop[0].set)
        thread.join(10)
        loop.close()


async def _many_sessions(start_server, path: Path, count: int):
    runtime = await start_server(admin_socket=str(path), max_per_ip=0)
    conns = [await asyncio.open_connection("127.0.0.1", runtime.port) for _ in range(count)]
    await eventually(lambda: len(runtime.hub.sessions) == count, timeout=10)
    return runtime, conns


async def test_the_view_fetches_only_a_window_of_the_server_s_order_from_the_row_asked_for(
    start_server, tmp_path: Path
) -> None:
    path = tmp_path / "admin.sock"
    runtime, conns = await _many_sessions(start_server, path, 2 * WINDOW + 50)
    ids = sorted(runtime.hub.sessions)
    view = RemoteHubView(path, interval=0.05)
    task = asyncio.create_task(view.run())
    try:

        def window(*query: Any) -> tuple[int, int]:
            page = view.session_page(*query, limit=WINDOW)
            return page.offset, len(page.rows)

        def totals() -> tuple[int, int]:
            page = view.session_page(limit=WINDOW)
            return page.total, page.matched

        await eventually(lambda: totals() == (len(ids), len(ids)), timeout=5)
        await eventually(lambda: window() == (0, WINDOW), timeout=5)
        assert [s.id for s in view.sessions()] == ids[:WINDOW]
        rest = len(ids) - WINDOW - 100
        later = ("id", False, "", WINDOW + 100)
        await eventually(lambda: window(*later) == (WINDOW + 100, rest), timeout=5)
        assert [s.id for s in view.sessions()] == ids[WINDOW + 100 :]
        # A new order (or filter) starts from the top again.
        view.session_page("id", True, "", WINDOW + 100, WINDOW)
        await eventually(lambda: view.session_page("id", True, "").offset == 0, timeout=5)
        await eventually(lambda: view.sessions()[0].id == ids[-1], timeout=5)
    finally:
        view.stop()
        await asyncio.wait_for(task, 5)
        for _reader, writer in conns:
            writer.close()


async def test_an_attached_connections_pane_slides_its_window_with_the_cursor(
    start_server, tmp_path: Path
) -> None:
    from verb_console.console.attach import build_app
    from verb_console.console.panes.connections import ConnectionsPane

    path = tmp_path / "admin.sock"
    runtime, conns = await _many_sessions(start_server, path, 2 * WINDOW + 50)
    ids = sorted(runtime.hub.sessions)
    view = RemoteHubView(path, interval=0.05)
    app = build_app(view, refresh=20, read_only=False)
    try:
        async with app.run_test(size=(160, 40)) as pilot:
            pane = app.screen.query_one(ConnectionsPane)
            table = pane.live_table
            table.sort_by(0, False)  # by SESSION, so the ids' order is known

            await eventually(lambda: table.matched == len(ids), 5)
            # The console never holds more than a window, and End walks it to the last row.
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                await pilot.press("end")
                await pilot.pause(0.1)
                assert len(table.rows) <= WINDOW
                if table.cursor_item is not None and table.cursor_item.id == ids[-1]:
                    break
            assert table.cursor_item is not None and table.cursor_item.id == ids[-1]
            assert pane.paging.start > 0
            assert f"of {len(ids)} fetched" in pane._title_text
    finally:
        view.stop()
        for _reader, writer in conns:
            writer.close()
