"""Bounded work per read: a read's fan-out is split across turns of the event loop,
and a mux connection is judged a slow consumer by what its socket could not take."""

from __future__ import annotations

import asyncio
import json
import struct
import time
from typing import Any

import pytest
from helpers import JsonClient, frame

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


async def _read_json_frames(reader: asyncio.StreamReader, sink: list[Any], want: int) -> None:
    """Read raw bytes eagerly until ``want`` frames are in; parsing waits till the end,
    not to compete with the server for this loop."""
    buf = bytearray()
    while buf.count(b"\n") < want:  # one newline per frame: bodies are compact JSON
        chunk = await reader.read(1 << 20)
        if not chunk:
            break
        buf += chunk
    sink.append(bytes(buf))


def _parse_frames(view: bytes) -> list[Any]:
    sink: list[Any] = []
    off = 0
    while off < len(view):
        nl = view.index(b"\n", off)
        length = int(view[off:nl])
        sink.append(json.loads(view[nl + 1 : nl + 1 + length]))
        off = nl + 1 + length
    return sink


# 100,000 deliveries paced a loop turn at a time: seconds alone on a 2-core
# machine, longer beside other tests (the assertions bound delays, not this).
@pytest.mark.timeout(180)
async def test_a_read_of_broadcasts_to_200_readers_leaves_a_bystanders_ping_fast_losing_nothing(
    start_server,
) -> None:
    runtime = await start_server(max_per_ip=0, protocol="auto")
    port = runtime.port
    readers = []
    for _ in range(200):
        r, w = await asyncio.open_connection("127.0.0.1", port, limit=1 << 22)
        w.write(frame({"type": "ping"}))  # an auto listener speaks once spoken to
        for _ in range(2):  # welcome, pong
            length = int(await r.readline())
            await r.readexactly(length)
        readers.append((r, w))
    flooder = await JsonClient.connect(port, welcome=False)
    await flooder.send({"type": "ping"})
    flooder_id = (await flooder.recv())["id"]
    assert (await flooder.recv())["type"] == "pong"
    # The bystander speaks mux: its control pings are not queued behind broadcasts.
    br, bw = await asyncio.open_connection("127.0.0.1", port)
    # One write of about 16 KiB, taken in one read: 500 broadcasts, 100,000
    # deliveries, a hundred times a turn's budget.
    n = 500
    flood = b"".join(frame({"type": "broadcast", "data": i}) for i in range(n))
    assert 12_000 < len(flood) < 65_536
    sinks: list[list[Any]] = [[] for _ in readers]
    tasks = [
        asyncio.create_task(_read_json_frames(r, sink, n))
        for (r, _), sink in zip(readers, sinks, strict=True)
    ]
    started = time.monotonic()
    await flooder.send_raw(flood)
    rtts: list[float] = []
    while not all(t.done() for t in tasks) and time.monotonic() - started < 60:
        t0 = time.monotonic()
        bw.write(control({"type": "ping", "ref": len(rtts)}))
        _, length = HEADER.unpack(await asyncio.wait_for(br.readexactly(8), 10))
        pong = json.loads(await br.readexactly(length))
        assert pong["type"] == "pong" and pong["ref"] == len(rtts)
        rtts.append(time.monotonic() - t0)
        await asyncio.sleep(0.005)
    await asyncio.gather(*tasks)
    for raw in sinks:
        sink = _parse_frames(raw[0])
        assert [m["data"] for m in sink if m["from"] == flooder_id] == list(range(n))
    rtts.sort()
    p99 = rtts[int(len(rtts) * 0.99)] if len(rtts) > 1 else rtts[-1]
    median = rtts[len(rtts) // 2]
    print(f"bystander pings {len(rtts)}, median {median * 1000:.1f} ms, p99 {p99 * 1000:.1f} ms")
    # Unbounded, the one read takes the loop for the whole flood (one ping).
    # The 200 readers share this test's loop, so their reading is in these times too.
    assert len(rtts) >= 10
    assert median < 0.25
    assert p99 < 0.5
    for _, w in readers:
        w.close()
