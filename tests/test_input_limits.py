"""What connections hold as partial frames is bounded for the whole server
(``max_input_total``) and per TCP connection (``max_input_per_connection``), on
plain json, binary and echo connections as on mux: past a limit, the connection
(or mux stream) that grew gets ``frame_too_large`` and is closed; the others go on."""

from __future__ import annotations

import asyncio
import json
import struct
from typing import Any

from helpers import eventually

KiB = 1024
MiB = 1024 * KiB


def jframe(obj: Any) -> bytes:
    body = json.dumps(obj).encode()
    return b"%d\n%s" % (len(body), body)


def bframe(kind: int, payload: bytes, length: int | None = None) -> bytes:
    n = len(payload) if length is None else length
    return struct.pack(">HIH", kind, n, 0) + payload


def mframe(sid: int, payload: bytes) -> bytes:
    return struct.pack(">II", sid, len(payload)) + payload


async def read_json(reader: asyncio.StreamReader, timeout: float = 5) -> dict[str, Any]:
    async def one() -> dict[str, Any]:
        header = await reader.readuntil(b"\n")
        return json.loads(await reader.readexactly(int(header)))

    return await asyncio.wait_for(one(), timeout)


async def read_eof(reader: asyncio.StreamReader, timeout: float = 5) -> bytes:
    return await asyncio.wait_for(reader.read(), timeout)


async def json_client(port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    assert (await read_json(reader))["type"] == "welcome"
    return reader, writer


async def test_json_connections_past_the_server_s_total_get_frame_too_large(start_server) -> None:
    # Past the limit only with the third's last byte: the server has read all it
    # was sent when it closes (unread bytes would turn the close into a reset).
    runtime = await start_server(max_input_total=3 * 900 * KiB - 1)
    hub = runtime.hub
    clients = [await json_client(runtime.port) for _ in range(3)]
    # 900 KiB of a 1 MiB frame each (JSON may begin with spaces).
    part = b"1048576\n" + b" " * (900 * KiB)
    for i, (_, writer) in enumerate(clients[:2]):
        writer.write(part)
        await writer.drain()
        await eventually(lambda i=i: hub.input.held == (i + 1) * 900 * KiB)
    # The third goes past the limit: it alone is refused and closed.
    reader3, writer3 = clients[2]
    writer3.write(part)
    await writer3.drain()
    error = await read_json(reader3)
    assert error["type"] == "error" and error["code"] == "frame_too_large", error
    assert "server" in error["message"]
    closing = await read_json(reader3)
    assert closing == {"type": "closing", "reason": "protocol_error"}
    assert await read_eof(reader3) == b""
    await eventually(lambda: hub.input.held == 2 * 900 * KiB)
    assert hub.closed_log[-1].reason == "frame_too_large"
    # The first two finish their frames and are answered; so is a fresh client.
    for _, writer in clients[:2]:
        body = json.dumps({"type": "ping", "ref": "x" * 10}).encode()
        pad = 1048576 - 900 * KiB
        # The rest of the 1 MiB frame: a ping, then spaces.
        writer.write(body + b" " * (pad - len(body)) + jframe({"type": "ping", "ref": 2}))
        await writer.drain()
    for reader, _ in clients[:2]:
        assert (await read_json(reader))["type"] == "pong"
        assert (await read_json(reader))["ref"] == 2
    assert hub.input.held == 0
    reader4, writer4 = await json_client(runtime.port)
    writer4.write(jframe({"type": "ping", "ref": 4}))
    assert (await read_json(reader4))["ref"] == 4
    for _, writer in [*clients, (reader4, writer4)]:
        writer.close()


async def test_binary_and_echo_connections_count_toward_the_total(start_server) -> None:
    runtime = await start_server(protocol="auto", max_input_total=1100 * KiB - 1)
    hub = runtime.hub
    # A binary connection holding 700 KiB of a 1 MiB DATA frame...
    _rb, wb = await asyncio.open_connection("127.0.0.1", runtime.port)
    wb.write(bframe(0x0010, b"x" * (700 * KiB), length=MiB))
    await wb.drain()
    await eventually(lambda: hub.input.held >= 700 * KiB)
    held_binary = hub.input.held
    # ... and a second one that goes past the limit with 400 KiB more (and its header).
    rb2, wb2 = await asyncio.open_connection("127.0.0.1", runtime.port)
    wb2.write(bframe(0x0010, b"y" * (400 * KiB), length=MiB))
    await wb2.drain()
    got = await asyncio.wait_for(rb2.read(), 5)
    kind, length, _ = struct.unpack(">HIH", got[:8])
    assert kind == 0x00FF, got[:100]
    error = json.loads(got[8 : 8 + length])
    assert error["code"] == "frame_too_large", error
    await eventually(lambda: hub.input.held == held_binary)
    # An echo line held by a third connection is charged too, and released at its close.
    _re, we = await asyncio.open_connection("127.0.0.1", runtime.port)
    we.write(b"echo partial line")
    await we.drain()
    await eventually(lambda: hub.input.held > held_binary)
    we.close()
    await eventually(lambda: hub.input.held == held_binary)
    wb.close()
    await eventually(lambda: hub.input.held == 0)
    wb2.close()


async def test_a_json_connection_past_its_own_limit_gets_frame_too_large(start_server) -> None:
    # Frames may be 4 MiB, but one connection may hold only 2 MiB of one.
    runtime = await start_server(max_frame=4 * MiB, max_input_per_connection=2 * MiB)
    reader, writer = await json_client(runtime.port)
    writer.write(b"4194304\n" + b"x" * (2 * MiB + 1))
    await writer.drain()
    error = await read_json(reader)
    assert error["code"] == "frame_too_large" and "this connection" in error["message"], error
    assert await read_json(reader) == {"type": "closing", "reason": "protocol_error"}
    assert runtime.hub.input.held == 0
    writer.close()


async def test_mux_streams_share_the_server_s_total_with_plain_connections(start_server) -> None:
    runtime = await start_server(protocol="auto", max_input_total=2 * MiB)
    hub = runtime.hub
    _rj, wj = await asyncio.open_connection("127.0.0.1", runtime.port)
    wj.write(b"1048576\n" + b"x" * (1200 * KiB // 2))
    await wj.drain()
    await eventually(lambda: hub.input.held > 500 * KiB)
    rm, wm = await asyncio.open_connection("127.0.0.1", runtime.port)
    create = {"type": "stream_create", "streamId": 1, "streamType": "json"}
    wm.write(mframe(0, json.dumps(create).encode()))
    wm.write(mframe(1, b"1048576\n" + b"y" * (900 * KiB)))
    await wm.drain()
    await eventually(lambda: hub.input.held > 1400 * KiB)
    # A second stream's 900 KiB goes past 2 MiB: that stream ends, the connection goes on.
    create = {"type": "stream_create", "streamId": 3, "streamType": "json"}
    wm.write(mframe(0, json.dumps(create).encode()))
    data = b"1048576\n" + b"z" * (900 * KiB)
    # In 64 KiB mux frames, so that what grows is the stream's partial json frame.
    wm.write(b"".join(mframe(3, data[i : i + 64 * KiB]) for i in range(0, len(data), 64 * KiB)))
    wm.write(mframe(0, json.dumps({"type": "ping", "ref": "after"}).encode()))
    await wm.drain()
    controls: list[dict[str, Any]] = []

    async def until_pong() -> None:
        while not any(c.get("ref") == "after" for c in controls):
            sid, n = struct.unpack(">II", await rm.readexactly(8))
            payload = await rm.readexactly(n)
            if sid == 0:
                controls.append(json.loads(payload))

    await asyncio.wait_for(until_pong(), 5)
    error = next(c for c in controls if c["type"] == "error")
    assert error["code"] == "frame_too_large" and error["streamId"] == 3, error
    assert "server" in error["message"]
    assert {"type": "stream_close", "streamId": 3} in controls
    await eventually(lambda: len(hub.sessions) == 3)  # json, mux and its stream 1
    wj.close()
    wm.close()
    await eventually(lambda: not hub.sessions)
    assert hub.input.held == 0


async def test_a_mux_connection_s_own_partial_frame_counts_toward_the_total(start_server) -> None:
    runtime = await start_server(protocol="mux", max_input_total=600 * KiB - 1)
    reader, writer = await asyncio.open_connection("127.0.0.1", runtime.port)
    create = {"type": "stream_create", "streamId": 1, "streamType": "json"}
    writer.write(mframe(0, json.dumps(create).encode()))
    # 600 KiB of one 1 MiB mux frame: held by the connection's own decoder.
    writer.write(struct.pack(">II", 1, MiB) + b" " * (600 * KiB))
    await writer.drain()
    controls: list[dict[str, Any]] = []

    async def until_eof() -> None:
        while True:
            try:
                sid, n = struct.unpack(">II", await reader.readexactly(8))
            except asyncio.IncompleteReadError:
                return
            payload = await reader.readexactly(n)
            if sid == 0:
                controls.append(json.loads(payload))

    await asyncio.wait_for(until_eof(), 5)
    error = next(c for c in controls if c["type"] == "error")
    assert error["code"] == "frame_too_large" and "streamId" not in error, error
    assert {"type": "closing", "reason": "protocol_error"} in controls
    await eventually(lambda: not runtime.hub.sessions)
    assert runtime.hub.input.held == 0
    writer.close()
