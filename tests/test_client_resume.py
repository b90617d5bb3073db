"""The client library's resume and recovery (PROTOCOL.md section 11) against real servers."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from verb_console.client import JsonClient, Recovery, SendBufferFull
from verb_console.runtime import Runtime

pytestmark = pytest.mark.timeout(30)

FAST = {"base_delay": 0.05, "jitter": 0.0, "connect_timeout": 2.0}


async def until(predicate: Any, timeout: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.01)


def cut(runtime: Runtime, sid: str) -> None:
    """The server's side of a connection breaks (as a reset would), not by choice."""
    runtime.hub.sessions[sid].outlet.destroy()


@pytest.fixture
async def rserver(start_server: Any, tmp_path: Path) -> Runtime:
    return await start_server(resume_window=10, max_per_ip=0, upload_dir=str(tmp_path / "up"))


@pytest.fixture
async def clients(rserver: Runtime) -> AsyncIterator[list[JsonClient]]:
    made: list[JsonClient] = []
    yield made
    for c in made:
        with contextlib.suppress(Exception):
            await c.close()


async def make(rserver: Runtime, made: list[JsonClient], **kw: Any) -> JsonClient:
    c = JsonClient("127.0.0.1", rserver.port, **{**FAST, **kw})
    await c.connect()
    made.append(c)
    return c


async def test_a_broken_connection_is_resumed_and_nothing_is_lost(
    rserver: Runtime, clients: list[JsonClient]
) -> None:
    recoveries: list[Recovery] = []
    a = await make(rserver, clients, on_recovery=recoveries.append)
    b = await make(rserver, clients)
    sid = a.id
    await a.join_room("r")
    await b.join_room("r")
    assert (await a.receive(2))["type"] == "user_joined"
    cut(rserver, sid)
    for i in range(10):
        await b.room_message("r", i)
        await b.private(sid, f"p{i}")
    await until(lambda: recoveries)
    assert recoveries[0].resumed and not recoveries[0].hole
    assert a.last_recovery is recoveries[0] and a.id == sid
    got = [await a.receive(2) for _ in range(20)]
    assert [m["data"] for m in got if m["type"] == "room_message"] == list(range(10))
    assert [m["data"] for m in got if m["type"] == "private"] == [f"p{i}" for i in range(10)]
    assert [m["seq"] for m in got] == list(range(2, 22))
    # The session goes on: the same id, in its rooms, with the same counter.
    await b.room_message("r", "after")
    m = await a.receive(2)
    assert m["data"] == "after" and m["seq"] == 22
    # And it resumes again after a second break.
    cut(rserver, sid)
    await b.private(sid, "again")
    await until(lambda: len(recoveries) == 2)
    assert recoveries[1].resumed
    assert (await a.receive(2))["data"] == "again"


async def test_sends_while_reconnecting_are_held_and_sent_once_back(
    rserver: Runtime, clients: list[JsonClient]
) -> None:
    a = await make(rserver, clients, base_delay=0.3, send_buffer=1000)
    b = await make(rserver, clients)
    await b.join_room("r")
    await a.join_room("r")
    await b.receive(2)
    cut(rserver, a.id)
    await until(lambda: not a.connected)
    await a.room_message("r", "held", confirm=False)
    with pytest.raises(SendBufferFull, match="send buffer is full"):
        await a.room_message("r", "x" * 2000, confirm=False)
    m = await b.receive(5)
    assert m["data"] == "held"
    assert a.connected


async def test_a_failed_resume_rejoins_the_rooms_and_recovers_them(
    start_server: Any, clients: list[JsonClient], tmp_path: Path
) -> None:
    # Resume off: every reconnection is a new session that rejoins with since.
    server = await start_server(max_per_ip=0)
    recoveries: list[Recovery] = []
    a = await make(server, clients, on_recovery=recoveries.append)
    b = await make(server, clients)
    await a.join_room("r")
    await b.join_room("r")
    await a.receive(2)
    await b.room_message("r", "seen")
    assert (await a.receive(2))["data"] == "seen"
    old = a.id
    cut(server, old)
    for i in range(3):
        await b.room_message("r", i)
    await until(lambda: recoveries)
    rec = recoveries[0]
    assert not rec.resumed and rec.hole and rec.resume_failed is None
    assert rec.rooms == {"r": True}
    assert a.id != old
    got = [await a.receive(2) for _ in range(3)]
    assert [m["data"] for m in got] == [0, 1, 2]


SHUTDOWN_SERVER = """
import socket, sys, json
def frame(m):
    b = json.dumps(m).encode()
    return b"%d\\n%s" % (len(b), b)
srv = socket.socket()
srv.bind(("127.0.0.1", 0))
srv.listen()
print(srv.getsockname()[1], flush=True)
for n in range(2):
    c, _ = srv.accept()
    hello = c.recv(4096)
    ref = json.loads(hello.split(b"\\n", 1)[1])["ref"]
    c.sendall(frame({"type": "welcome", "id": "x:%d" % n, "server": "verb-console"}))
    c.sendall(frame({"type": "pong", "timestamp": 1, "ref": ref}))
    if n == 0:
        note = {"type": "server_shutdown", "message": "m", "gracePeriod": 10,
                "reconnect": sys.argv[1] == "true"}
        c.sendall(frame(note) + frame({"type": "closing", "reason": "shutdown"}))
        c.close()
    else:
        print("reconnected", flush=True)
        c.recv(4096)
"""


@pytest.mark.parametrize("again", [True, False])
async def test_server_shutdown_with_reconnect_true_comes_back_and_false_stops(
    again: bool, tmp_path: Path
) -> None:
    script = tmp_path / "shutdown_server.py"
    script.write_text(SHUTDOWN_SERVER)
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        str(script),
        "true" if again else "false",
        stdout=asyncio.subprocess.PIPE,
    )
    assert proc.stdout is not None
    try:
        port = int(await asyncio.wait_for(proc.stdout.readline(), 10))
        c = JsonClient("127.0.0.1", port, **FAST)
        await c.connect()
        if again:
            line = await asyncio.wait_for(proc.stdout.readline(), 10)
            assert line.strip() == b"reconnected"
            await until(lambda: c.connected)
        else:
            await asyncio.wait_for(c.wait_closed(), 5)
            assert c.error is None and c.reconnects == 0
        await c.close()
    finally:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        await proc.wait()


async def test_a_killed_and_restarted_server_the_chat_goes_on(tmp_path: Path) -> None:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    argv = [
        sys.executable,
        "-m",
        "verb_console",
        "--headless",
        "--port",
        str(port),
        "--protocol",
        "json",
        "--resume-window",
        "30",
        "--admin-socket",
        str(tmp_path / "admin.sock"),
        "--upload-dir",
        str(tmp_path / "up"),
    ]

    async def start() -> asyncio.subprocess.Process:
        proc = await asyncio.create_subprocess_exec(
            *argv, stderr=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.DEVNULL
        )
        assert proc.stderr is not None
        while b"listening on" not in await asyncio.wait_for(proc.stderr.readline(), 15):
            pass
        return proc

    server = await start()
    recoveries: list[Recovery] = []
    patient = {**FAST, "max_attempts": 100, "max_delay": 0.2}
    a = JsonClient("127.0.0.1", port, **patient, on_recovery=recoveries.append)
    b = JsonClient("127.0.0.1", port, **patient)
    try:
        await a.connect()
        await b.connect()
        await a.join_room("chat")
        await b.join_room("chat")
        await a.receive(2)
        await b.room_message("chat", "before")
        assert (await a.receive(2))["data"] == "before"
        os.kill(server.pid, signal.SIGKILL)
        await server.wait()
        server = await start()
        await until(lambda: len(recoveries) == 1 and b.connected, 15)
        # A new server: no session to resume, the room's epoch is new.
        rec = recoveries[0]
        assert not rec.resumed and rec.resume_failed == "unknown"
        assert rec.rooms == {"chat": False}
        await b.room_message("chat", "after")
        while (m := await a.receive(5))["type"] != "room_message":
            pass
        assert m["data"] == "after"
    finally:
        await a.close()
        await b.close()
        server.kill()
        await server.wait()
