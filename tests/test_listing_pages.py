"""Pages of rooms and mux connections from the kept orders (issue 21).

A page the hub answers from its kept orders is exactly the plain sort of every
room (or mux connection) at that moment, however they changed between pages;
and once an order is kept, a page costs its rows and what changed, not the
number of rooms.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import replace

from helpers import eventually

from verb_console.client import MuxClient
from verb_console.hub.row_fields import MUX_CONNECTIONS, ROOMS
from verb_console.hub.view import LiveHubView
from verb_console.protocols.json import encode

ROOM_QUERIES = [
    (sort, reverse, text)
    for sort in dict.fromkeys(f.name for f in ROOMS.fields)
    for reverse in (False, True)
    for text in ("", "r1", "members>=2", "messages>0 room:r", "age<1h", "nosuch:1")
]


async def test_a_page_of_rooms_is_the_plain_sort_of_every_room_as_rooms_change(
    start_server,
) -> None:
    runtime = await start_server(history_size=10, max_per_ip=0)
    hub = runtime.hub
    view = LiveHubView(hub)
    conns = []

    def check() -> None:
        rooms = [replace(r, members=()) for r in view.rooms()]
        for sort, reverse, text in ROOM_QUERIES:
            for offset, limit in ((0, 100), (2, 3)):
                got = view.room_page(sort, reverse, text, offset, limit)
                want = ROOMS.page_of(rooms, sort, reverse, text, offset, limit, time.time())
                assert got == want, (sort, reverse, text, offset)
                assert got.total == len(rooms)

    for n in range(8):
        reader, writer = await asyncio.open_connection("127.0.0.1", runtime.port)
        writer.write(encode({"type": "join_room", "room": f"r{n % 5}"}))
        conns.append((reader, writer))
    await eventually(lambda: len(hub.rooms) == 5, 5)
    check()  # the orders are made here, and kept from now on
    # Messages move a room's counts and position; a leave, its members; a last
    # leave deletes it.
    conns[0][1].write(encode({"type": "room_message", "room": "r0", "data": "hi"}) * 3)
    conns[1][1].write(encode({"type": "room_message", "room": "r1", "data": "hi"}))
    conns[4][1].write(encode({"type": "leave_room", "room": "r4"}))
    await eventually(lambda: len(hub.rooms) == 4, 5)
    await eventually(lambda: view.room("r0") is not None and view.room("r0").messages == 3, 5)
    check()
    assert view.room("r0").epoch and view.room("r0").offset == 3  # history is on
    assert view.room("r0").members and view.room_page().rows[0].members == ()
    conns[3][1].close()  # r3 loses its only member
    await eventually(lambda: len(hub.rooms) == 3, 5)
    check()
    for _reader, writer in conns:
        writer.close()


async def test_a_kept_page_of_rooms_reads_its_rows_and_the_changed_rooms_only(
    start_server,
) -> None:
    runtime = await start_server(max_per_ip=0)
    hub = runtime.hub
    view = LiveHubView(hub)
    conns = []
    for n in range(40):
        reader, writer = await asyncio.open_connection("127.0.0.1", runtime.port)
        writer.write(encode({"type": "join_room", "room": f"room{n:03}"}))
        conns.append((reader, writer))
    await eventually(lambda: len(hub.rooms) == 40, 10)
    # Ties go by name, mirrored with the order.
    assert [r.name for r in view.room_page("messages", True, "", 0, 5).rows] == [
        f"room{n:03}" for n in range(39, 34, -1)
    ]
    # Count the room records made from here on (the registry's own, wrapped).
    made = []
    info = hub.rooms.info
    hub.rooms.info = lambda room, members=True: made.append(room.name) or info(room, members)
    page = view.room_page("messages", True, "", 0, 5)
    assert len(made) == 5 and hub.rooms.changes.items == []
    # One room's message moves it to the top: only it is looked at again.
    conns[25][1].write(encode({"type": "room_message", "room": "room025", "data": "x"}))
    await eventually(lambda: hub.rooms.rooms["room025"].messages == 1, 5)
    assert [r.name for r in hub.rooms.changes.items] == ["room025"]
    made.clear()
    page = view.room_page("messages", True, "", 0, 5)
    assert page.rows[0].name == "room025" and page.matched == 40
    assert len(made) == 5 and hub.rooms.changes.items == []
    for _reader, writer in conns:
        writer.close()


async def test_a_page_of_mux_connections_is_the_plain_sort_of_every_one(start_server) -> None:
    runtime = await start_server(protocol="auto", max_per_ip=0)
    hub = runtime.hub
    view = LiveHubView(hub)
    clients = [await MuxClient.connect("127.0.0.1", runtime.port) for _ in range(4)]
    streams = []
    for i, client in enumerate(clients):
        await client.ping()  # the client's first bytes make it a mux connection
        for _ in range(i):
            streams.append(await client.open_stream("json"))
    await eventually(lambda: len(view.mux_connections()) == 4, 5)
    queries = [
        (sort, reverse, text)
        for sort in dict.fromkeys(f.name for f in MUX_CONNECTIONS.fields)
        for reverse in (False, True)
        for text in ("", "streams>=2", "uptime<1h", "127.0.0.1")
    ]

    def check() -> None:
        muxes = [replace(m, streams=()) for m in view.mux_connections()]
        for sort, reverse, text in queries:
            got = view.mux_page(sort, reverse, text, 0, 100)
            want = MUX_CONNECTIONS.page_of(muxes, sort, reverse, text, 0, 100, time.time())
            assert got == want, (sort, reverse, text)
        assert view.mux_page().total == len(muxes)

    try:
        check()
        assert sorted(m.stream_count for m in view.mux_page().rows) == [0, 1, 2, 3]
        # A stream's traffic moves its connection's bytes; a stream opens; one goes.
        streams[-1].write(encode({"type": "ping"}) * 5)
        streams.append(await clients[0].open_stream("json"))
        await clients[1].close()
        await eventually(lambda: len(view.mux_connections()) == 3, 5)
        await eventually(lambda: any(m.stream_count == 1 for m in view.mux_connections()), 5)
        check()
        one = view.mux_connection(view.mux_page("stream_count", True).rows[0].id)
        assert one is not None and len(one.streams) == one.stream_count == 3
    finally:
        for client in clients:
            await client.close()
