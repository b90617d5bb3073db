"""A closed session is freed at once: no reference cycle on the per-session path,
and its partial-frame buffers dropped at close (issue 11, item 2).

The garbage collector is off while each test runs, so only reference counting
can free what a closed connection held: a weak reference to every session and
session view must be dead as soon as the server has seen the connection go.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import gc
import json
import socket
import struct
import weakref
from collections.abc import Iterator
from typing import Any

import pytest
from helpers import eventually

MiB = 1024 * 1024


def jframe(obj: Any) -> bytes:
    body = json.dumps(obj).encode()
    return b"%d\n%s" % (len(body), body)


def bframe(kind: int, payload: bytes = b"", flags: int = 0) -> bytes:
    return struct.pack(">HIH", kind, len(payload), flags) + payload


def mframe(sid: int, payload: bytes) -> bytes:
    return struct.pack(">II", sid, len(payload)) + payload


def control(obj: Any) -> bytes:
    return mframe(0, json.dumps(obj).encode())


@contextlib.contextmanager
def no_collector() -> Iterator[None]:
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


def partial_json(extra: bytes = b"") -> bytes:
    """A join, then the first 512 KiB of a 1 MiB json frame."""
    return jframe({"type": "join_room", "room": "r"}) + extra + b"1048576\n" + b"x" * (512 * 1024)


def upload_start(tid: str, name: str) -> bytes:
    start = {"type": "file_start", "transferId": tid, "filename": name, "fileSize": 1000}
    chunk = {"type": "file_chunk", "transferId": tid, "chunkIndex": 0}
    chunk["data"] = base64.b64encode(b"u" * 100).decode()
    return jframe({**start, "chunkSize": 100}) + jframe(chunk)


def binary_upload_start(name: str) -> bytes:
    start = json.dumps({"transferId": "b", "filename": name, "fileSize": 1000}).encode()
    return bframe(0x20, start, 1) + bframe(0x20, b"u" * 100, 2)


def mux_attack() -> bytes:
    """Streams of every kind, each with an upload or a partial 1 MiB frame held."""
    data = b""
    for sid, kind in ((1, "json"), (3, "binary"), (5, "echo"), (7, "json")):
        data += control({"type": "stream_create", "streamId": sid, "streamType": kind})
    data += mframe(1, partial_json(upload_start("t", "mux.bin")))
    data += mframe(3, binary_upload_start("muxb.bin") + struct.pack(">HIH", 0x10, MiB, 0))
    data += mframe(3, b"d" * 300_000)
    data += mframe(5, b"hello\n" + b"e" * 30_000)
    data += mframe(7, partial_json())
    # And a partial mux frame of its own.
    return data + struct.pack(">II", 7, MiB) + b"y" * 100_000


ATTACKS = {
    "json": partial_json(upload_start("t", "j.bin")),
    "binary": bframe(0x01) + binary_upload_start("b.bin") + struct.pack(">HIH", 0x10, MiB, 0),
    "echo": b"hi\n" + b"e" * 60_000,
    "mux": mux_attack(),
}


async def hold_and_close(runtime: Any, data: bytes, sessions: int, how: str) -> list[Any]:
    """Connect, send ``data``, wait for ``sessions`` sessions, end the connection;
    return weak references to every session and view the server made."""
    hub = runtime.hub
    reader, writer = await asyncio.open_connection("127.0.0.1", runtime.port)
    writer.write(data)
    await writer.drain()
    await eventually(lambda: len(hub.sessions) == sessions, timeout=5)
    # Everything the client sent is in the server's buffers before it leaves.
    await eventually(lambda: sum(s.outlet.bytes_read for s in hub.connections.values()) > 0)
    await asyncio.sleep(0.2)
    refs = [weakref.ref(s) for s in hub.sessions.values()]
    refs += [weakref.ref(s.view) for s in hub.sessions.values()]
    if how == "operator":
        for sid in list(hub.connections):
            hub.operator_close(sid)
    elif how == "reset":
        sock = writer.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        writer.transport.abort()
    else:
        writer.close()
    await eventually(lambda: not hub.sessions and not hub.connections, timeout=5)
    if how == "operator":
        await reader.read()
        writer.close()
    # The connection's own teardown runs in the loop's next turns.
    await asyncio.sleep(0.05)
    if hub.uploads is not None:
        await hub.uploads.wait_idle()
    return refs


@pytest.mark.parametrize("how", ["fin", "reset", "operator"])
@pytest.mark.parametrize("protocol", list(ATTACKS))
async def test_a_closed_session_and_its_view_are_freed_without_a_collection(
    start_server, tmp_path, protocol, how
) -> None:
    runtime = await start_server(protocol="auto", upload_dir=str(tmp_path / "up"), max_per_ip=0)
    sessions = 5 if protocol == "mux" else 1
    with no_collector():
        refs = await hold_and_close(runtime, ATTACKS[protocol], sessions, how)
        alive = [type(r()).__name__ for r in refs if r() is not None]
    assert len(refs) == 2 * sessions
    assert alive == []


async def test_a_mux_stream_closed_by_the_client_is_freed_while_its_connection_lives(
    start_server, tmp_path
) -> None:
    runtime = await start_server(protocol="mux", upload_dir=str(tmp_path / "up"))
    hub = runtime.hub
    _reader, writer = await asyncio.open_connection("127.0.0.1", runtime.port)
    with no_collector():
        writer.write(mux_attack())
        await writer.drain()
        await eventually(lambda: len(hub.sessions) == 5, timeout=5)
        await asyncio.sleep(0.2)
        streams = [s for s in hub.sessions.values() if s.parent is not None]
        refs = [weakref.ref(s) for s in streams] + [weakref.ref(s.view) for s in streams]
        held = [s.decoder.buffered for s in streams]
        del streams
        assert max(held) >= 256 * 1024
        writer.write(b"y" * (MiB - 100_000))
        for sid in (1, 3, 5, 7):
            writer.write(control({"type": "stream_close", "streamId": sid}))
        await writer.drain()
        await eventually(lambda: len(hub.sessions) == 1, timeout=5)
        await hub.uploads.wait_idle()
        await asyncio.sleep(0.05)
        alive = [type(r()).__name__ for r in refs if r() is not None]
        assert alive == []
        (mux,) = hub.connections.values()
        assert mux.decoder.buffered == 0
    writer.close()


async def test_a_closing_session_drops_its_partial_frame_before_its_output_is_flushed(
    start_server,
) -> None:
    runtime = await start_server(protocol="json")
    hub = runtime.hub
    _reader, writer = await asyncio.open_connection("127.0.0.1", runtime.port)
    writer.write(b"1048576\n" + b"x" * (700 * 1024))
    await writer.drain()
    await eventually(lambda: any(s.decoder.buffered > 600 * 1024 for s in hub.sessions.values()))
    (session,) = hub.sessions.values()
    # The operator closes it; the client does not read its closing message yet.
    hub.operator_close(session.id)
    assert session.decoder.buffered == 0
    del session
    writer.close()
