"""Session resume through faults: mux streams, resets, a client process that stops
answering (half-open), and real processes (PROTOCOL.md section 11.1)."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import struct
import sys
import textwrap
from typing import Any

import pytest
from helpers import JsonClient, eventually, frame

from verb_console.runtime import Runtime

pytestmark = pytest.mark.timeout(30)

HEADER = struct.Struct(">II")


class MuxJson:
    """A mux connection carrying json streams, spoken byte by byte."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.buffers: dict[int, bytes] = {}

    @classmethod
    async def connect(cls, port: int) -> MuxJson:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        return cls(reader, writer)

    def send(self, sid: int, payload: bytes) -> None:
        self.writer.write(HEADER.pack(sid, len(payload)) + payload)

    def control(self, message: Any) -> None:
        self.send(0, json.dumps(message).encode())

    async def recv(self, timeout: float = 2.0) -> tuple[int, Any]:
        """The next control message or whole json message, with its stream id."""

        async def read() -> tuple[int, Any]:
            while True:
                for sid, buf in self.buffers.items():
                    nl = buf.find(b"\n")
                    if nl > 0 and len(buf) >= nl + 1 + int(buf[:nl]):
                        end = nl + 1 + int(buf[:nl])
                        self.buffers[sid] = buf[end:]
                        return sid, json.loads(buf[nl + 1 : end])
                sid, length = HEADER.unpack(await self.reader.readexactly(8))
                payload = await self.reader.readexactly(length)
                if sid == 0:
                    return 0, json.loads(payload)
                self.buffers[sid] = self.buffers.get(sid, b"") + payload

        return await asyncio.wait_for(read(), timeout)

    async def open_json(self, sid: int) -> dict[str, Any]:
        self.control({"type": "stream_create", "streamId": sid, "streamType": "json"})
        got = {}
        while "welcome" not in got:
            s, m = await self.recv()
            got[m["type"]] = (s, m)
        return got["welcome"][1]

    def close(self) -> None:
        self.writer.close()


@pytest.fixture
async def rserver(start_server: Any) -> Runtime:
    return await start_server(resume_window=5.0, protocol="auto")


async def test_a_mux_connection_that_drops_detaches_its_json_streams(
    rserver: Runtime, connect: Any
) -> None:
    b = await connect(rserver, welcome=False)
    await b.send({"type": "ping"})
    b.welcome = await b.recv()
    await b.recv()
    mux = await MuxJson.connect(rserver.port)
    welcome = await mux.open_json(1)
    sid = welcome["id"]
    assert "resume" in welcome
    mux.close()
    await eventually(lambda: sid in rserver.hub.resume.detached)  # type: ignore[union-attr]
    await b.send({"type": "private", "target": sid, "data": "while away"})
    # Resumed on a json stream of another mux connection.
    mux2 = await MuxJson.connect(rserver.port)
    await mux2.open_json(3)
    msg = {"type": "resume", "id": sid, "token": welcome["resume"], "seq": 0}
    mux2.send(3, frame(msg))
    s, reply = await mux2.recv()
    assert s == 3 and reply["type"] == "resumed" and reply["replayed"] == 1
    s, m = await mux2.recv()
    assert s == 3 and m["data"] == "while away" and m["seq"] == 1
    await b.send({"type": "private", "target": sid, "data": "now"})
    s, m = await mux2.recv()
    assert s == 3 and m["data"] == "now" and m["seq"] == 2
    mux2.close()


async def test_a_clients_stream_close_ends_its_session_for_good(
    rserver: Runtime, connect: Any
) -> None:
    mux = await MuxJson.connect(rserver.port)
    welcome = await mux.open_json(1)
    mux.control({"type": "stream_close", "streamId": 1})
    assert (await mux.recv())[1]["type"] == "stream_closed"
    await eventually(lambda: welcome["id"] not in rserver.hub.sessions)
    assert welcome["id"] not in rserver.hub.resume.detached  # type: ignore[union-attr]
    mux.close()


async def test_a_connection_reset_detaches_and_resumes(rserver: Runtime, connect: Any) -> None:
    a = await connect(rserver, welcome=False)
    await a.send({"type": "ping"})
    a.welcome = await a.recv()
    await a.recv()
    sock = a.writer.get_extra_info("socket")
    # SO_LINGER 0: the close sends a RST, not a FIN.
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    a.writer.transport.abort()
    await eventually(lambda: a.id in rserver.hub.resume.detached)  # type: ignore[union-attr]
    c = await connect(rserver, welcome=False)
    await c.send({"type": "resume", "id": a.id, "token": a.welcome["resume"], "seq": 0})
    assert (await c.recv())["type"] == "welcome"
    assert (await c.recv())["type"] == "resumed"


CHILD = textwrap.dedent(
    """
    import json, socket, sys
    s = socket.create_connection(("127.0.0.1", int(sys.argv[1])))
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    body = b'{"type":"ping"}'
    s.sendall(b"%d\\n%s" % (len(body), body))
    buf = b""
    while buf.count(b"\\n") < 2 or b"welcome" not in buf:
        buf += s.recv(4096)
    nl = buf.index(b"\\n")
    welcome = json.loads(buf[nl + 1 : nl + 1 + int(buf[:nl])])
    print(json.dumps(welcome), flush=True)
    sys.stdin.read()
    """
)


async def test_a_stopped_client_process_is_taken_over_by_its_resume(
    rserver: Runtime, connect: Any
) -> None:
    # The client process stops (SIGSTOP): its socket stays open and stops
    # reading, and the server sees no FIN. Its resume from elsewhere takes the
    # session over; what the stopped process never read is replayed.
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        CHILD,
        str(rserver.port),
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
    )
    try:
        assert proc.stdout is not None
        welcome = json.loads(await asyncio.wait_for(proc.stdout.readline(), 10))
        sid = welcome["id"]
        os.kill(proc.pid, signal.SIGSTOP)
        b = await JsonClient.connect(rserver.port, welcome=False)
        await b.send({"type": "ping"})
        await b.recv()
        await b.recv()
        for i in range(20):
            await b.send({"type": "private", "target": sid, "data": i})
        await eventually(lambda: rserver.hub.sessions[sid].seq == 20)  # type: ignore[attr-defined]
        assert sid in rserver.hub.sessions and sid not in rserver.hub.resume.detached  # type: ignore[union-attr]
        c = await connect(rserver, welcome=False)
        await c.send({"type": "resume", "id": sid, "token": welcome["resume"], "seq": 0})
        assert (await c.recv())["type"] == "welcome"
        reply = await c.recv()
        assert reply["type"] == "resumed" and reply["replayed"] == 20
        assert [(await c.recv())["data"] for _ in range(20)] == list(range(20))
        await b.send({"type": "private", "target": sid, "data": "after"})
        assert (await c.recv())["seq"] == 21
        await b.close()
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        await proc.wait()
    # The killed process's connection was already cut: the session goes on.
    await asyncio.sleep(0.1)
    assert sid in rserver.hub.sessions and sid not in rserver.hub.resume.detached  # type: ignore[union-attr]


async def test_a_server_restart_answers_unknown(start_server: Any, connect: Any) -> None:
    first = await start_server(resume_window=5.0)
    a = await connect(first)
    first.hub.force_shutdown()
    await first.hub.wait_stopped()
    second = await start_server(resume_window=5.0)
    c = await connect(second)
    reply = await c.request({"type": "resume", "id": a.id, "token": a.welcome["resume"], "seq": 0})
    assert reply["code"] == "resume_failed" and reply["reason"] == "unknown"


async def test_a_flood_of_resumes_is_refused_as_failed_authentication(
    start_server: Any,
) -> None:
    rserver = await start_server(resume_window=5.0, max_per_ip=0)
    a = await JsonClient.connect(rserver.port)
    refused = 0
    for i in range(30):
        try:
            c = await JsonClient.connect(rserver.port)
        except (AssertionError, ConnectionError, asyncio.IncompleteReadError):
            refused += 1
            continue
        try:
            await c.send({"type": "resume", "id": a.id, "token": f"guess{i}", "seq": 0})
            await c.recv()
        except (ConnectionError, asyncio.IncompleteReadError):
            refused += 1
        finally:
            await c.close()
    # Five guesses, then the address is refused at accept for the window.
    assert refused >= 25
    assert rserver.hub.resume.results["bad_token"] == 5  # type: ignore[union-attr]
    assert a.id in rserver.hub.sessions
    await a.close()
