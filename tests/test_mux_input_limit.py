"""A mux connection's streams may hold only so much in partial frames together
(``max_input_per_connection``): past it the stream that went over ends with
``frame_too_large``, and its other streams and other clients go on (issue 11, item 3)."""

from __future__ import annotations

import asyncio
import json
import struct
from typing import Any

from helpers import eventually

KiB = 1024


def mframe(sid: int, payload: bytes) -> bytes:
    return struct.pack(">II", sid, len(payload)) + payload


def control(obj: Any) -> bytes:
    return mframe(0, json.dumps(obj).encode())


def jframe(obj: Any) -> bytes:
    body = json.dumps(obj).encode()
    return b"%d\n%s" % (len(body), body)


async def read_frames(reader: asyncio.StreamReader, until: Any, timeout: float = 5) -> list[Any]:
    frames: list[Any] = []

    async def run() -> None:
        while not any(until(f) for f in frames):
            sid, n = struct.unpack(">II", await reader.readexactly(8))
            frames.append((sid, await reader.readexactly(n)))

    await asyncio.wait_for(run(), timeout)
    return frames


async def test_the_stream_over_the_connection_s_input_limit_ends_and_the_rest_go_on(
    start_server,
) -> None:
    runtime = await start_server(protocol="mux", max_input_per_connection=2 * 1024 * KiB)
    reader, writer = await asyncio.open_connection("127.0.0.1", runtime.port)
    data = b""
    for sid in (1, 3, 5):
        data += control({"type": "stream_create", "streamId": sid, "streamType": "json"})
    for sid in (1, 3, 5):
        # 900 KiB of a 1 MiB frame each: the third goes past 2 MiB together.
        data += mframe(sid, b"1048576\n" + b"x" * (900 * KiB))
    writer.write(data)
    await writer.drain()
    frames = await read_frames(reader, lambda f: f[0] == 0 and b"stream_close" in f[1])
    controls = [json.loads(p) for sid, p in frames if sid == 0]
    error = next(c for c in controls if c["type"] == "error")
    assert error["code"] == "frame_too_large" and error["streamId"] == 5, error
    assert {"type": "stream_close", "streamId": 5} in controls
    hub = runtime.hub
    await eventually(lambda: len(hub.sessions) == 3)
    (mux,) = hub.connections.values()
    assert mux.held == 2 * 900 * KiB
    # Stream 1 finishes its frame, and is answered; so is a fresh client.
    writer.write(mframe(1, b"y" * (1048576 - 900 * KiB) + jframe({"type": "ping", "ref": 1})))
    await writer.drain()
    await read_frames(reader, lambda f: f[0] == 1 and b'"pong"' in f[1])
    assert mux.held == 900 * KiB
    r2, w2 = await asyncio.open_connection("127.0.0.1", runtime.port)
    w2.write(control({"type": "ping"}))
    await read_frames(r2, lambda f: f[0] == 0 and b'"pong"' in f[1], timeout=1)
    w2.close()
    writer.close()
