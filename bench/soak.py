"""Soak test: minutes of mixed traffic from hundreds of clients, then a leak check.

    python bench/soak.py --seconds 180 --clients 300
    python bench/soak.py --seconds 20 --clients 60 --json   # the CI version

The server runs in a child process (this file with ``--serve``) on an ``auto``
listener, so that its descriptors, tasks and memory are its own. The clients
speak every protocol (json chat and uploads, binary heartbeats, echoes and
uploads, echo lines, mux connections with json, echo and binary streams, their
json streams carrying uploads too),
live for a random while and leave in a random way: a normal close, a reset, a
reset in the middle of a frame or of an upload, or a half-close.

Before the run (after a warm-up round, so that one-time allocations are not
counted) and after it (once every client has gone) the server reports its
sessions, rooms, open transfers, asyncio tasks, file descriptors, temporary
upload files and resident memory. A leak is any of these that did not come
back: sessions, rooms, transfers and temporary files to zero, tasks and
descriptors to where they started, memory to within 10% of where it started.
The exit status is 0 when nothing leaked and no client saw a wrong answer.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import ctypes
import gc
import hashlib
import json
import logging
import os
import random
import re
import shutil
import socket
import struct
import sys
import tempfile
import time
from collections import Counter, deque
from pathlib import Path
from typing import Any

import orjson

TEMP_RE = re.compile(r"\.verb-upload-[0-9a-f]{32}\.part")
MEMORY_TOLERANCE = 0.10
REPLY_TIMEOUT = 15.0


# ----------------------------------------------------------------- the server side


def release_free_memory() -> None:
    """Hand freed heap memory back to the OS (glibc), so RSS shows what is in use."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)


def rss_bytes(field: str = "VmRSS") -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    return 0


class ErrorCounter(logging.Handler):
    """Counts what the server logs as an error (a handler that raised, say)."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.count = 0
        self.samples: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.count += 1
        if len(self.samples) < 10:
            self.samples.append(record.getMessage())


ERRORS = ErrorCounter()


def server_figures(rt: Any) -> dict[str, Any]:
    hub = rt.hub
    store = hub.uploads
    gc.collect()
    release_free_memory()
    fds = len(os.listdir("/proc/self/fd")) - 1  # less the one listdir itself holds
    return {
        "sessions": len(hub.sessions),
        "connections": len(hub.connections),
        "json_sessions": len(hub.json_sessions),
        "rooms": len(hub.rooms),
        "transfers": store.active_count,
        "disk_jobs": store.pending_jobs,
        "tasks": len(asyncio.all_tasks()),
        "fds": fds,
        "temp_files": sum(1 for n in os.listdir(store.directory) if TEMP_RE.fullmatch(n)),
        "rss": rss_bytes(),
        "rss_anon": rss_bytes("RssAnon"),
        "rss_file": rss_bytes("RssFile"),
        "allocated_blocks": sys.getallocatedblocks(),
        "accepted": hub.stats.accepted,
        "msgs_in": hub.stats.msgs_in,
        "msgs_out": hub.stats.msgs_out,
        "slow_consumers": hub.stats.slow_consumers,
        "closed": dict(Counter(c.reason for c in hub.closed_log)),
        "objects": dict(Counter(type(o).__name__ for o in gc.get_objects()).most_common(25)),
        "server_errors": ERRORS.count,
        "server_error_samples": ERRORS.samples,
    }


def inspect_session(rt: Any, session_id: str) -> dict[str, Any]:
    """What holds a session up: its socket's reading state and its uploads."""
    session = rt.hub.sessions.get(session_id)
    if session is None:
        return {"id": session_id, "gone": True}
    sock = session.outlet
    return {
        "id": session_id,
        "closing": session.closing,
        "reading_paused": getattr(sock, "_reading_paused", None),
        "holds": len(getattr(sock, "_holds", None) or ()),
        "congested": sock.congested,
        "unsent": sock.unsent,
        "uploads": [
            repr(u) + f" backlog={u.backlog}" for u in rt.hub.uploads.uploads_of(session_id)
        ],
        "disk_jobs": rt.hub.uploads.pending_jobs,
        "transport_reading": sock.transport.is_reading() if sock.transport else None,
        "bytes_read": sock.bytes_read,
        "bytes_written": sock.bytes_written,
        "msgs_in": session.msgs_in,
        "msgs_out": session.msgs_out,
        "decoder_buffered": getattr(getattr(session, "decoder", None), "buffered", None),
        "decoder_need": getattr(getattr(session, "decoder", None), "_need", None),
    }


async def serve(upload_dir: str) -> None:
    """Run the server; answer ``figures`` lines on stdin with one JSON line on stdout."""
    from verb_console.runtime import Runtime
    from verb_console.settings import Settings

    # Resets are the point of the exercise: their warnings are not news. Errors are.
    root = logging.getLogger()
    root.setLevel(logging.ERROR)
    root.addHandler(ERRORS)

    rt = Runtime(
        Settings(
            host="127.0.0.1",
            port=0,
            protocol="auto",
            upload_dir=upload_dir,
            max_per_ip=0,
            max_connections=20000,
            idle_timeout=30,
            handshake_timeout=5,
        )
    )
    await rt.start()
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    print(json.dumps({"port": rt.port}), flush=True)
    while line := await reader.readline():
        command = line.strip().decode()
        if command == "figures":
            await rt.hub.uploads.wait_idle()
            print(json.dumps(server_figures(rt)), flush=True)
        elif command.startswith("inspect "):
            print(json.dumps(inspect_session(rt, command.split(" ", 1)[1])), flush=True)
        elif command == "quit":
            break
    rt.hub.force_shutdown()
    await rt.hub.wait_stopped()


# ----------------------------------------------------------------- the clients


class Stats:
    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()
        self.errors: list[str] = []

    def error(self, text: str) -> None:
        if len(self.errors) < 50:
            self.errors.append(text)
        self.counts["errors"] += 1


class Mismatch(Exception):
    """A reply that is not what the protocol promises."""


class Abandon(Exception):
    """The client leaves now, in the middle of an upload."""


def jframe(obj: Any) -> bytes:
    body = json.dumps(obj, separators=(",", ":")).encode()
    return b"%d\n%s" % (len(body), body)


def bframe(kind: int, payload: bytes = b"", flags: int = 0) -> bytes:
    return struct.pack(">HIH", kind, len(payload), flags) + payload


def json_frames(data: bytes) -> list[dict[str, Any]]:
    """The whole json frames (``<length>\\n<body>``) in one mux data frame's payload."""
    out = []
    pos = 0
    while True:
        nl = data.find(b"\n", pos)
        if nl < 0:
            return out
        end = nl + 1 + int(data[pos:nl])
        if end > len(data):
            return out
        obj = orjson.loads(data[nl + 1 : end])
        if isinstance(obj, dict):
            out.append(obj)
        pos = end


def mframe(sid: int, payload: bytes) -> bytes:
    return struct.pack(">II", sid, len(payload)) + payload


class Conn:
    """One TCP connection: a reader task hands each awaited answer to its waiter."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, kind: str):
        self.reader = reader
        self.writer = writer
        self.kind = kind
        # What the client waits for; everything else (broadcasts, progress) is counted
        # and dropped by the reader itself, so a busy room never delays an answer.
        self.waiting: tuple[Any, asyncio.Future[Any]] | None = None
        # An answer that came while the request was still being sent (drain yields).
        self.unmatched: deque[Any] = deque(maxlen=1024)
        self.received = 0
        self.session_id = ""
        self.sent = 0
        self.ended = ""
        self.task = asyncio.create_task(self._read())

    @classmethod
    async def open(cls, port: int, kind: str) -> Conn:
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection("127.0.0.1", port, limit=1 << 22), REPLY_TIMEOUT
        )
        return cls(reader, writer, kind)

    async def _read(self) -> None:
        r = self.reader
        try:
            while True:
                if self.kind == "json":
                    header = await r.readuntil(b"\n")
                    msg: Any = orjson.loads(await r.readexactly(int(header)))
                elif self.kind == "echo":
                    msg = await r.readuntil(b"\n")
                elif self.kind == "binary":
                    t, n, flags = struct.unpack(">HIH", await r.readexactly(8))
                    msg = (t, flags, await r.readexactly(n))
                else:
                    sid, n = struct.unpack(">II", await r.readexactly(8))
                    msg = (sid, await r.readexactly(n))
                self.received += 1
                waiting = self.waiting
                if waiting is not None and waiting[0](msg) and not waiting[1].done():
                    self.waiting = None
                    waiting[1].set_result(msg)
                else:
                    self.unmatched.append(msg)
        except (asyncio.IncompleteReadError, ConnectionError, OSError):
            self.ended = "connection closed"
        except Exception as exc:  # a reply the client cannot parse
            self.ended = f"unreadable reply: {type(exc).__name__}: {exc}"
        if self.waiting is not None and not self.waiting[1].done():
            self.waiting[1].set_exception(Mismatch(f"{self.kind}: {self.ended} while waiting"))

    async def expect(self, match: Any, what: str = "a reply") -> Any:
        """The first message from now on that ``match`` accepts."""
        for msg in self.unmatched:
            if match(msg):
                self.unmatched.remove(msg)
                return msg
        self.unmatched.clear()
        if self.ended:
            raise Mismatch(f"{self.kind}: {self.ended} while waiting for {what}")
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self.waiting = (match, fut)
        try:
            return await asyncio.wait_for(fut, REPLY_TIMEOUT)
        except TimeoutError:
            raise Mismatch(f"{self.kind}: no {what} within {REPLY_TIMEOUT:g} s") from None
        finally:
            self.waiting = None

    async def send(self, data: bytes) -> None:
        self.sent += len(data)
        self.writer.write(data)
        await self.writer.drain()

    def reset(self) -> None:
        sock = self.writer.get_extra_info("socket")
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.writer.transport.abort()

    async def leave(self, how: str, partial: bytes) -> None:
        """Go away: ``fin``, ``rst``, ``rst_mid_frame`` or ``half_close``."""
        try:
            if how == "rst_mid_frame":
                await self.send(partial)
                self.reset()
            elif how == "rst":
                self.reset()
            elif how == "half_close":
                self.writer.write_eof()
                # The server ends the session: the reader sees the end.
                await asyncio.wait_for(self.task, REPLY_TIMEOUT)
                self.writer.close()
            else:
                self.writer.close()
        except (ConnectionError, OSError):
            self.writer.transport.abort()
        finally:
            self.task.cancel()
            with contextlib.suppress(BaseException):
                await self.task


class Driver:
    def __init__(
        self,
        port: int,
        upload_dir: Path,
        stats: Stats,
        rng: random.Random,
        server: Server,
    ) -> None:
        self.server = server
        self.port = port
        self.upload_dir = upload_dir
        self.stats = stats
        self.rng = rng
        self.files = 0

    def next_file(self, tag: str) -> str:
        self.files += 1
        return f"{tag}-{self.files}.bin"

    def check_file(self, name: str, data: bytes, reported: str) -> None:
        if reported != hashlib.sha256(data).hexdigest():
            raise Mismatch(f"{name}: server sha256 {reported} is not the client's")
        path = self.upload_dir / name
        if path.read_bytes() != data:
            raise Mismatch(f"{name}: the file on disk differs from what was sent")
        path.unlink()
        self.stats.counts["uploads_completed"] += 1

    # --- one client's life --------------------------------------------------------
    async def client(self, kind: str, until: float) -> None:
        rng = self.rng
        stats = self.stats
        lifetime = time.monotonic() + rng.uniform(0.2, 6.0)
        how = rng.choice(["fin", "fin", "rst", "rst_mid_frame", "half_close"])
        conn: Conn | None = None
        try:
            conn = await Conn.open(self.port, "json" if kind == "json" else kind)
            stats.counts[f"clients_{kind}"] += 1
            stats.counts["clients"] += 1
            run = getattr(self, f"run_{kind}")
            try:
                partial = await run(conn, min(lifetime, until))
            except Abandon:
                stats.counts["uploads_abandoned"] += 1
                partial = b""
            stats.counts[f"leave_{how}"] += 1
            stats.counts["disconnects"] += 1
            await conn.leave(how, partial)
        except Mismatch as exc:
            if conn is not None and conn.session_id:
                state = await self.server.ask(f"inspect {conn.session_id}")
                stats.error(f"{exc}; client sent {conn.sent} bytes; server side: {state}")
            else:
                stats.error(str(exc))
        except (TimeoutError, ConnectionError, OSError, asyncio.IncompleteReadError) as exc:
            stats.error(f"{kind}: {type(exc).__name__}: {exc}")
        finally:
            if conn is not None:
                stats.counts["messages_received"] += conn.received
                conn.writer.transport.abort()
                conn.task.cancel()

    async def pause(self) -> None:
        await asyncio.sleep(self.rng.uniform(0.0, 0.05))

    # --- json ---------------------------------------------------------------------
    async def run_json(self, c: Conn, until: float) -> bytes:
        rng = self.rng
        counts = self.stats.counts
        ref = 0

        async def request(msg: dict[str, Any], want: str) -> dict[str, Any]:
            nonlocal ref
            ref += 1
            msg["ref"] = ref
            await c.send(jframe(msg))
            counts["messages_sent"] += 1
            reply = await c.expect(lambda m: m.get("ref") == ref, f"answer to {msg['type']}")
            if reply["type"] != want:
                raise Mismatch(f"json: {msg['type']} got {reply}")
            return reply

        await c.send(jframe({"type": "ping"}))
        welcome = await c.expect(lambda m: m["type"] == "welcome")
        await c.expect(lambda m: m["type"] == "pong")
        me = c.session_id = welcome["id"]
        rooms: set[str] = set()
        while time.monotonic() < until:
            roll = rng.random()
            if roll < 0.3:
                await request({"type": "ping"}, "pong")
            elif roll < 0.45:
                room = f"room-{rng.randrange(8)}"
                await request({"type": "join_room", "room": room}, "joined")
                rooms.add(room)
            elif roll < 0.5 and rooms:
                room = rooms.pop()
                await request({"type": "leave_room", "room": room}, "left")
            elif roll < 0.75 and rooms:
                room = rng.choice(sorted(rooms))
                data = "x" * rng.randrange(200)
                await c.send(jframe({"type": "room_message", "room": room, "data": data}))
                counts["messages_sent"] += 1
            elif roll < 0.85:
                await c.send(jframe({"type": "private", "target": me, "data": roll}))
                counts["messages_sent"] += 1
                await c.expect(lambda m, r=roll: m["type"] == "private" and m["data"] == r)
            elif roll < 0.853:
                await c.send(jframe({"type": "broadcast", "data": "hello all"}))
                counts["messages_sent"] += 1
            elif roll < 0.9:
                await self.json_upload(c, request)
            await self.pause()
        return jframe({"type": "ping"})[:5]

    async def json_upload(self, c: Conn, request: Any) -> None:
        rng = self.rng
        name = self.next_file("json")
        data = rng.randbytes(rng.randrange(1, 256 * 1024))
        tid = f"t{self.files}"
        await request(
            {"type": "file_start", "transferId": tid, "filename": name, "fileSize": len(data)},
            "file_start_ack",
        )
        self.stats.counts["uploads_started"] += 1
        step = 16 * 1024
        for i, off in enumerate(range(0, len(data), step)):
            chunk = base64.b64encode(data[off : off + step]).decode()
            msg = {"type": "file_chunk", "transferId": tid, "chunkIndex": i, "data": chunk}
            await request(msg, "file_chunk_ack")
            if rng.random() < 0.02:
                raise Abandon
        done = await request({"type": "file_end", "transferId": tid}, "file_complete")
        self.check_file(name, data, done["sha256"])

    # --- binary -------------------------------------------------------------------
    async def run_binary(self, c: Conn, until: float) -> bytes:
        rng = self.rng
        counts = self.stats.counts
        while time.monotonic() < until:
            roll = rng.random()
            if roll < 0.5:
                await c.send(bframe(0x01))
                counts["messages_sent"] += 1
                if await c.expect(lambda m: True) != (0x02, 0, b"pong"):
                    raise Mismatch("binary: heartbeat not answered with pong")
            elif roll < 0.9:
                payload = rng.randbytes(rng.randrange(2000))
                await c.send(bframe(0x10, payload, 3))
                counts["messages_sent"] += 1
                if await c.expect(lambda m: True) != (0x10, 3, payload):
                    raise Mismatch("binary: DATA not echoed unchanged")
            else:
                await self.binary_upload(c)
            await self.pause()
        return bframe(0x10, b"z" * 100)[:20]

    async def binary_upload(self, c: Conn) -> None:
        rng = self.rng
        name = self.next_file("binary")
        data = rng.randbytes(rng.randrange(1, 512 * 1024))
        start = {"transferId": f"b{self.files}", "filename": name, "fileSize": len(data)}
        await c.send(bframe(0x20, json.dumps(start).encode(), 0x1))
        reply = await c.expect(lambda m: True)
        if reply[0] != 0x21 or json.loads(reply[2])["type"] != "file_start_ack":
            raise Mismatch(f"binary: START got {reply}")
        self.stats.counts["uploads_started"] += 1
        for off in range(0, len(data), 64 * 1024):
            await c.send(bframe(0x20, data[off : off + 64 * 1024], 0x2))
            if rng.random() < 0.03:
                raise Abandon
        await c.send(bframe(0x20, b"", 0x4))
        while True:
            reply = await c.expect(lambda m: True)
            msg = json.loads(reply[2])
            if msg["type"] != "file_progress":
                break
        if msg["type"] != "file_complete":
            raise Mismatch(f"binary: END got {msg}")
        self.check_file(name, data, msg["sha256"])

    # --- echo ---------------------------------------------------------------------
    async def run_echo(self, c: Conn, until: float) -> bytes:
        rng = self.rng
        counts = self.stats.counts
        await c.send(b"hello\n")
        if await c.expect(lambda m: True) != b"Welcome to TCP server!\n":
            raise Mismatch("echo: no welcome")
        await c.expect(lambda m: m == b"Echo: hello\n")
        while time.monotonic() < until:
            line = bytes(rng.choice(b"abcdefgh \xff\xc3") for _ in range(rng.randrange(300)))
            await c.send(line + b"\n")
            counts["messages_sent"] += 1
            if await c.expect(lambda m: not m.startswith(b"[server]")) != b"Echo: " + line + b"\n":
                raise Mismatch("echo: line not echoed verbatim")
            await self.pause()
        return b"half a line"

    # --- mux ----------------------------------------------------------------------
    def mux_json_request(self, c: Conn, sid: int) -> Any:
        """``request(msg, want)`` for the json session of mux stream ``sid``."""
        counts = self.stats.counts
        sent = 0

        def answer(m: Any, ref: str) -> dict[str, Any] | None:
            if m[0] != sid:
                return None
            return next((o for o in json_frames(m[1]) if o.get("ref") == ref), None)

        async def request(msg: dict[str, Any], want: str) -> dict[str, Any]:
            nonlocal sent
            sent += 1
            ref = msg["ref"] = f"{sid}:{sent}"
            await c.send(mframe(sid, jframe(msg)))
            counts["messages_sent"] += 1
            raw = await c.expect(lambda m: answer(m, ref) is not None, f"answer to {msg['type']}")
            reply = answer(raw, ref)
            assert reply is not None
            if reply["type"] != want:
                raise Mismatch(f"mux json: {msg['type']} got {reply}")
            return reply

        return request

    async def run_mux(self, c: Conn, until: float) -> bytes:
        rng = self.rng
        counts = self.stats.counts
        next_id = 1
        open_streams: dict[int, str] = {}

        def control(match: Any) -> Any:
            return lambda m: m[0] == 0 and match(json.loads(m[1]))

        while time.monotonic() < until:
            roll = rng.random()
            if roll < 0.3 or not open_streams:
                await c.send(mframe(0, b'{"type":"ping","ref":1}'))
                counts["messages_sent"] += 1
                await c.expect(control(lambda m: m["type"] == "pong"))
            if roll < 0.4 and len(open_streams) < 4:
                sid = next_id
                next_id += 2
                kind = rng.choice(["json", "echo", "binary"])
                create = {"type": "stream_create", "streamId": sid, "streamType": kind}
                await c.send(mframe(0, json.dumps(create).encode()))
                counts["messages_sent"] += 1
                await c.expect(control(lambda m, s=sid: m.get("streamId") == s))
                open_streams[sid] = kind
                if kind == "echo":
                    await c.expect(lambda m, s=sid: m == (s, b"Welcome to TCP server!\n"))
                elif kind == "json":
                    await c.expect(lambda m, s=sid: m[0] == s and b'"welcome"' in m[1])
            elif roll < 0.5 and open_streams:
                sid = rng.choice(sorted(open_streams))
                del open_streams[sid]
                close = {"type": "stream_close", "streamId": sid}
                await c.send(mframe(0, json.dumps(close).encode()))
                counts["messages_sent"] += 1
                await c.expect(
                    control(lambda m, s=sid: m["type"] == "stream_closed" and m["streamId"] == s)
                )
            elif open_streams:
                sid = rng.choice(sorted(open_streams))
                kind = open_streams[sid]
                counts["messages_sent"] += 1
                if kind == "json" and rng.random() < 0.2:
                    # A mux stream full of uploads: json chunks over the stream.
                    await self.json_upload(c, self.mux_json_request(c, sid))
                    counts["uploads_over_mux"] += 1
                elif kind == "json":
                    await c.send(mframe(sid, jframe({"type": "ping", "ref": sid})))
                    await c.expect(lambda m, s=sid: m[0] == s and b'"pong"' in m[1])
                elif kind == "echo":
                    await c.send(mframe(sid, b"over mux\n"))
                    await c.expect(lambda m, s=sid: m == (s, b"Echo: over mux\n"))
                else:
                    await c.send(mframe(sid, bframe(0x01)))
                    await c.expect(lambda m, s=sid: m == (s, bframe(0x02, b"pong")))
            await self.pause()
        return mframe(1, b"x" * 50)[:20]


class Server:
    """The server process and its command pipe (one question at a time)."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.lock = asyncio.Lock()

    async def ask(self, command: str) -> dict[str, Any]:
        proc = self.proc
        assert proc.stdin is not None and proc.stdout is not None
        async with self.lock:
            proc.stdin.write(command.encode() + b"\n")
            await proc.stdin.drain()
            return json.loads(await asyncio.wait_for(proc.stdout.readline(), 30))  # type: ignore[no-any-return]

    async def settle(self, timeout: float = 15.0) -> dict[str, Any]:
        """The server's figures once every client has gone (or the timeout passed)."""
        deadline = time.monotonic() + timeout
        while True:
            f = await self.ask("figures")
            if (f["connections"] == 0 and f["disk_jobs"] == 0) or time.monotonic() > deadline:
                return f
            await asyncio.sleep(0.2)


async def traffic(driver: Driver, clients: int, seconds: float) -> None:
    """Keep ``clients`` clients busy for ``seconds``: each one that leaves is replaced."""
    until = time.monotonic() + seconds
    kinds = ["json", "json", "binary", "echo", "mux"]

    async def slot(i: int) -> None:
        while time.monotonic() < until:
            await driver.client(kinds[i % len(kinds)], until)

    await asyncio.gather(*(slot(i) for i in range(clients)))


async def soak(seconds: float, clients: int, seed: int) -> dict[str, Any]:
    upload_dir = Path(tempfile.mkdtemp(prefix="verb-soak-"))
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        __file__,
        "--serve",
        "--upload-dir",
        str(upload_dir),
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
    )
    try:
        assert proc.stdout is not None
        port = json.loads(await asyncio.wait_for(proc.stdout.readline(), 30))["port"]
        stats = Stats()
        server = Server(proc)
        driver = Driver(port, upload_dir, stats, random.Random(seed), server)
        # Warm-up, so that one-time allocations are in the baseline. The server keeps
        # the last 1,000 closed sessions and log events: the
        # baseline is taken once they are full, as they are for the rest of the run.
        # The allocator's high-water mark also needs a while at full load to settle
        # (Python's own block count is flat from the start): warm up for a fifth of
        # the run, at least 4 s, before taking the baseline.
        warm_until = time.monotonic() + max(4.0, seconds / 5)
        for _ in range(60):
            await traffic(driver, clients, 2.0)
            before = await server.settle()
            if sum(before["closed"].values()) >= 1000 and time.monotonic() >= warm_until:
                break
        stats.counts.clear()
        started = time.monotonic()
        await traffic(driver, clients, seconds)
        elapsed = time.monotonic() - started
        after = await server.settle()
    finally:
        if proc.returncode is None:
            with contextlib.suppress(Exception):
                assert proc.stdin is not None
                proc.stdin.write(b"quit\n")
                await proc.stdin.drain()
            try:
                await asyncio.wait_for(proc.wait(), 15)
            except TimeoutError:
                proc.kill()
                await proc.wait()
        shutil.rmtree(upload_dir, ignore_errors=True)
    leaks = {
        "sessions": after["sessions"],
        "connections": after["connections"],
        "json_sessions": after["json_sessions"],
        "rooms": after["rooms"],
        "transfers": after["transfers"],
        "temp_files": after["temp_files"],
        "tasks": after["tasks"] - before["tasks"],
        "fds": after["fds"] - before["fds"],
    }
    growth = (after["rss"] - before["rss"]) / before["rss"]
    return {
        "seconds": round(elapsed, 1),
        "clients": stats.counts["clients"],
        "concurrent_clients": clients,
        "clients_by_protocol": {
            k[len("clients_") :]: v for k, v in stats.counts.items() if k.startswith("clients_")
        },
        "messages_sent": stats.counts["messages_sent"],
        "messages_received": stats.counts["messages_received"],
        "server_msgs_in": after["msgs_in"] - before["msgs_in"],
        "server_msgs_out": after["msgs_out"] - before["msgs_out"],
        "disconnects": stats.counts["disconnects"],
        "disconnects_by_kind": {
            k[len("leave_") :]: v for k, v in stats.counts.items() if k.startswith("leave_")
        },
        "uploads_started": stats.counts["uploads_started"],
        "uploads_completed": stats.counts["uploads_completed"],
        "uploads_abandoned": stats.counts["uploads_abandoned"],
        "uploads_over_mux": stats.counts["uploads_over_mux"],
        "client_errors": stats.counts["errors"],
        "server_errors": after["server_errors"],
        "server_error_samples": after["server_error_samples"],
        "client_error_samples": stats.errors[:10],
        "leaks": leaks,
        "leaks_found": sum(1 for v in leaks.values() if v != 0),
        "rss_before": before["rss"],
        "rss_after": after["rss"],
        "rss_growth": round(growth, 4),
        "memory_ok": growth <= MEMORY_TOLERANCE,
        # Python objects alive (pymalloc blocks): flat when RSS is only allocator slack.
        "blocks_before": before["allocated_blocks"],
        "blocks_after": after["allocated_blocks"],
        "before": before,
        "after": after,
    }


def print_report(r: dict[str, Any]) -> None:
    mib = 1024 * 1024
    print(f"soak: {r['seconds']} s, {r['concurrent_clients']} concurrent clients")
    print(f"  clients       {r['clients']}  {r['clients_by_protocol']}")
    print(f"  messages      {r['messages_sent']} sent, {r['messages_received']} received")
    print(f"  server        {r['server_msgs_in']} in, {r['server_msgs_out']} out")
    print(f"  disconnects   {r['disconnects']}  {r['disconnects_by_kind']}")
    print(
        f"  uploads       {r['uploads_started']} started, {r['uploads_completed']} completed, "
        f"{r['uploads_abandoned']} abandoned mid-way, {r['uploads_over_mux']} over mux streams"
    )
    print(f"  client errors {r['client_errors']}  {r['client_error_samples']}")
    print(f"  server errors {r['server_errors']}  {r['server_error_samples']}")
    print(f"  leaks found   {r['leaks_found']}  {r['leaks']}")
    print(
        f"  memory (RSS)  {r['rss_before'] / mib:.1f} MiB before, "
        f"{r['rss_after'] / mib:.1f} MiB after ({r['rss_growth'] * 100:+.1f}%); "
        f"Python blocks {r['blocks_before']} before, {r['blocks_after']} after"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--seconds", type=float, default=180.0)
    parser.add_argument("--clients", type=int, default=300)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--upload-dir", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve:
        # As verb-console runs it: uvloop, and the same garbage-collector tuning.
        from verb_console.runtime import run_loop, tune_gc

        tune_gc()
        run_loop(serve(args.upload_dir))
        return 0
    report = asyncio.run(soak(args.seconds, args.clients, args.seed))
    if args.json:
        print(json.dumps(report))
    else:
        print_report(report)
    ok = (
        report["leaks_found"] == 0
        and report["memory_ok"]
        and report["client_errors"] == 0
        and report["server_errors"] == 0
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
