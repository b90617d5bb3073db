"""A room's members are looked at a window at a time (issue 21: the console at scale).

A room of 100,000 members must cost a console tick the window it shows, not the
room: the hub answers a window of the members in the order they joined, the
admin socket the same (bounded per request), and the Rooms pane's member table
slides its window with the cursor, hosted and attached.
"""

from __future__ import annotations

import asyncio
import sys
import time
from pathlib import Path

import pytest
from helpers import eventually, frame

from verb_console.admin.client import AdminClient
from verb_console.admin.remote_view import RemoteHubView
from verb_console.admin.server import PAGE_MAX
from verb_console.console.panes.base import WINDOW
from verb_console.hub.view import LiveHubView

pytestmark = [
    pytest.mark.skipif(sys.platform != "linux", reason="Unix sockets with SO_PEERCRED"),
    pytest.mark.timeout(90),
]

MEMBERS = WINDOW + 60


async def _joined(start_server, path: Path, count: int, one_by_one: bool):
    """``count`` json sessions in room "big", and their ids in the order they joined
    (``one_by_one``: each joins once the one before is in, its id from its welcome)."""
    runtime = await start_server(admin_socket=str(path), max_per_ip=0, history_size=0)
    conns, ids = [], []
    for _ in range(count):
        reader, writer = await asyncio.open_connection("127.0.0.1", runtime.port)
        writer.write(frame({"type": "join_room", "room": "big"}))
        conns.append((reader, writer))
        if one_by_one:
            seen = b""
            while b'"joined"' not in seen:
                seen += await asyncio.wait_for(reader.read(4096), 10)
            start = seen.index(b'"id":"') + 6
            ids.append(seen[start : seen.index(b'"', start)].decode())
    room = runtime.hub.rooms
    await eventually(lambda: (big := room.get("big")) is not None and len(big.members) == count, 10)
    return runtime, conns, ids or list(room.get("big").members)


async def test_a_room_is_looked_at_a_window_of_members_in_the_order_they_joined(
    start_server, tmp_path: Path
) -> None:
    path = tmp_path / "admin.sock"
    runtime, conns, ids = await _joined(start_server, path, MEMBERS, one_by_one=True)
    try:
        view = LiveHubView(runtime.hub)
        room = view.room("big", 0, 50)
        assert room is not None and room.size == MEMBERS
        assert room.members == tuple(ids[:50]) and room.members_from == 0
        tail = view.room("big", MEMBERS - 20, 50)
        assert tail is not None and tail.members == tuple(ids[-20:])
        assert tail.members_from == MEMBERS - 20
        assert view.room("big", MEMBERS + 5, 50).members == ()  # past the end: none
        # The admin socket answers the same windows, at most PAGE_MAX members each.
        async with await AdminClient.connect(path) as admin:
            raw = await admin.request("room", key="big", members_from=10, members_limit=5)
            assert raw["members"] == ids[10:15] and raw["size"] == MEMBERS
            raw = await admin.request("room", key="big", members_limit=PAGE_MAX * 10)
            assert raw["members"] == ids  # all of them: fewer than PAGE_MAX
        assert MEMBERS < PAGE_MAX
        # A leave takes the member out of the order; a join goes to its end.
        conns[0][1].write(frame({"type": "leave_room", "room": "big"}))
        await eventually(lambda: view.room("big").size == MEMBERS - 1, 5)
        conns[0][1].write(frame({"type": "join_room", "room": "big"}))
        await eventually(lambda: view.room("big").size == MEMBERS, 5)
        assert view.room("big", 0, 2).members == tuple(ids[1:3])
        assert view.room("big", MEMBERS - 1, 5).members == (ids[0],)
    finally:
        for _reader, writer in conns:
            writer.close()


@pytest.mark.parametrize("attached", [False, True], ids=["hosted", "attached"])
async def test_the_members_table_holds_a_window_and_slides_it_with_the_cursor(
    start_server, tmp_path: Path, attached: bool
) -> None:
    from verb_console.console.app import VerbConsoleApp
    from verb_console.console.attach import build_app
    from verb_console.console.panes.rooms import RoomsPane
    from verb_console.console.panes.table import LiveTable

    path = tmp_path / "admin.sock"
    runtime, conns, ids = await _joined(start_server, path, MEMBERS, one_by_one=False)
    remote = RemoteHubView(path, interval=0.05) if attached else None
    if remote is not None:
        app = build_app(remote, refresh=20, read_only=False)
    else:
        app = VerbConsoleApp(LiveHubView(runtime.hub), refresh_hz=20)
    try:
        async with app.run_test(size=(120, 40)) as pilot:
            await pilot.press("3")
            pane = app.screen.query_one(RoomsPane)
            members = pane.query_one("#members", LiveTable)
            await eventually(lambda: len(members.rows) == WINDOW, 10)
            assert [m[0] for m in members.rows] == ids[:WINDOW]
            assert members.matched == MEMBERS
            members.focus()
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                await pilot.press("end")
                await pilot.pause(0.1)
                assert len(members.rows) <= WINDOW
                item = members.cursor_item
                if item is not None and item[0] == ids[-1]:
                    break
            assert members.cursor_item is not None and members.cursor_item[0] == ids[-1]
            assert pane._members_from > 0
            # The window it holds is the join order from where it begins.
            start = pane._members_from
            assert [m[0] for m in members.rows] == ids[start : start + len(members.rows)]
            # Every member on show was looked up: its protocol is known.
            assert all(m[1] is not None and m[1].protocol == "json" for m in members.rows)
    finally:
        if remote is not None:
            remote.stop()
        for _reader, writer in conns:
            writer.close()
