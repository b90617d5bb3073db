"""Bounded work per read: a read's fan-out is split across turns of the event loop,
and a mux connection is judged a slow consumer by what its socket could not take."""

from __future__ import annotations

import asyncio
import json
import struct
import time
from typing import Any

from helpers import frame

HEADER = struct.Struct(">II")


def mux_frame(stream_id: int, payload: bytes) -> bytes:
    return HEADER.pack(stream_id, len(payload)) + payload


def control(message: Any) -> bytes:
    return mux_frame(0, json.dumps(message, separators=(",", ":")).encode())


async def read_frames(reader: asyncio.StreamReader, count: list[int], stop: asyncio.Event) -> None:
    """Read mux frames eagerly, counting them, until EOF or ``stop``."""
    while not stop.is_set():
        try:
            head = await reader.readexactly(8)
        except (asyncio.IncompleteReadError, ConnectionError):
            return
        _, length = HEADER.unpack(head)
        await reader.readexactly(length)
        count[0] += 1


async def open_256_streams(port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port, limit=1 << 22)
    ids = [2 * i + 1 for i in range(256)]
    writer.write(
        b"".join(
            control({"type": "stream_create", "streamId": sid, "streamType": "json"}) for sid in ids
        )
    )
    await writer.drain()
    return reader, writer


async def test_256_mux_streams_joining_one_room_in_one_write_are_not_a_slow_consumer(
    start_server,
) -> None:
    runtime = await start_server(protocol="mux")
    reader, writer = await asyncio.open_connection("127.0.0.1", runtime.port, limit=1 << 22)
    # The streams' creation and their joins in one write, as in the attack.
    joins = b"".join(
        control({"type": "stream_create", "streamId": 2 * i + 1, "streamType": "json"})
        + mux_frame(2 * i + 1, frame({"type": "join_room", "room": "lobby"}))
        for i in range(256)
    )
    assert 28_000 < len(joins) < 32_000
    count = [0]
    stop = asyncio.Event()
    task = asyncio.create_task(read_frames(reader, count, stop))
    writer.write(joins)
    await writer.drain()
    # 256 stream_created + 256 welcome + 256 joined + 255*256/2 user_joined.
    expected = 256 * 3 + 255 * 256 // 2
    deadline = time.monotonic() + 20
    while count[0] < expected and time.monotonic() < deadline and not task.done():
        await asyncio.sleep(0.05)
    assert count[0] == expected
    assert runtime.hub.stats.slow_consumers == 0
    assert len(runtime.hub.rooms.get("lobby").members) == 256
    stop.set()
    writer.close()
    task.cancel()


async def test_a_mux_connection_that_does_not_read_is_still_a_slow_consumer(
    start_server,
) -> None:
    runtime = await start_server(protocol="mux", max_pending=256 * 1024)
    reader, writer = await open_256_streams(runtime.port)
    writer.write(mux_frame(1, frame({"type": "join_room", "room": "lobby"})))
    await writer.drain()

    # A talker on a stream of a second mux connection fills the room.
    r2, w2 = await asyncio.open_connection("127.0.0.1", runtime.port)
    w2.write(control({"type": "stream_create", "streamId": 1, "streamType": "json"}))
    w2.write(mux_frame(1, frame({"type": "join_room", "room": "lobby"})))
    big = "x" * 8000
    for _ in range(3000):
        w2.write(mux_frame(1, frame({"type": "room_message", "room": "lobby", "data": big})))
        await w2.drain()
        if runtime.hub.stats.slow_consumers:
            break
        await asyncio.sleep(0.001)
    assert runtime.hub.stats.slow_consumers == 1
    w2.close()
    writer.close()
    del reader, r2
