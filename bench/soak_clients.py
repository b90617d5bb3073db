"""The clients of bench/soak.py: well-behaved ones of every protocol, and attackers.

Each client connects to one of the servers (nodes) at random, lives for a
random while and leaves in a random way: a normal close, a reset, a reset in
the middle of a frame or of an upload, or a half-close. What it is told is
checked against the protocol (:class:`Mismatch` when it is not); broadcasts,
progress and room traffic it did not ask for are counted and dropped by its
reader, so a busy room never delays an answer.

The attackers (issue "Hostile clients, round 2"): partial ~1 MiB json frames,
mux connections whose streams each hold a partial ~1 MiB frame, mux connections
whose streams are full of uploads in flight, fan-out floods into a big room,
bursts of re-joins of that room, and reconnect churn. All of them leave without
finishing what they started.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import json
import random
import socket
import struct
import time
from collections import Counter, deque
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import orjson

REPLY_TIMEOUT = 15.0
BIG_ROOM = "big"
# Answers a request may get under attack that are the server keeping its limits,
# not a fault: the client counts them and goes on.
LIMIT_CODES = {"too_many_transfers", "too_large"}


class Stats:
    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()
        self.errors: list[str] = []
        # Round trips of pings by well-behaved clients (seconds): what a bystander waits.
        self.ping_rtts: list[float] = []

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


def mframe(sid: int, payload: bytes) -> bytes:
    return struct.pack(">II", sid, len(payload)) + payload


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


class Conn:
    """One TCP connection: a reader task hands each awaited answer to its waiter."""

    def __init__(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, kind: str, node: int
    ):
        self.reader = reader
        self.writer = writer
        self.kind = kind
        self.node = node
        # What the client waits for; everything else (broadcasts, progress) is counted
        # and dropped by the reader itself, so a busy room never delays an answer.
        self.waiting: tuple[Any, asyncio.Future[Any]] | None = None
        # An answer that came while the request was still being sent (drain yields).
        self.unmatched: deque[Any] = deque(maxlen=1024)
        self.received = 0
        # Error codes the server sent (json errors, mux control errors).
        self.error_codes: Counter[str] = Counter()
        self.session_id = ""
        self.sent = 0
        self.ended = ""
        # Sees every message first; one it returns True for is not handed on.
        self.handler: Callable[[Any], bool] | None = None
        self.task = asyncio.create_task(self._read())

    @classmethod
    async def open(cls, port: int, kind: str, node: int = 0) -> Conn:
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection("127.0.0.1", port, limit=1 << 22), REPLY_TIMEOUT
        )
        return cls(reader, writer, kind, node)

    async def _read(self) -> None:
        r = self.reader
        try:
            while True:
                if self.kind == "json":
                    header = await r.readuntil(b"\n")
                    msg: Any = orjson.loads(await r.readexactly(int(header)))
                    if msg.get("type") == "error":
                        self.error_codes[msg.get("code", "?")] += 1
                elif self.kind == "echo":
                    msg = await r.readuntil(b"\n")
                elif self.kind == "binary":
                    t, n, flags = struct.unpack(">HIH", await r.readexactly(8))
                    msg = (t, flags, await r.readexactly(n))
                else:
                    sid, n = struct.unpack(">II", await r.readexactly(8))
                    msg = (sid, await r.readexactly(n))
                    if sid == 0 and b'"error"' in msg[1]:
                        self.error_codes[json.loads(msg[1]).get("code", "?")] += 1
                self.received += 1
                if self.handler is not None and self.handler(msg):
                    continue
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


# The kinds of client, in the order the slots take them: well-behaved ones first.
NORMAL_KINDS = ["json", "json", "binary", "echo", "mux", "reader", "json", "mux"]
ATTACK_KINDS = ["partial_json", "mux_partial", "mux_uploads", "flood", "rejoin", "churn"]


class Driver:
    """Runs clients against ``nodes`` (each a port and its upload directory)."""

    def __init__(
        self,
        nodes: list[tuple[int, Path]],
        stats: Stats,
        rng: random.Random,
        inspect: Callable[[int, str], Awaitable[Any]],
    ) -> None:
        self.nodes = nodes
        self.stats = stats
        self.rng = rng
        self.inspect = inspect
        self.files = 0
        # Node index -> the id of a json session there that answers every private
        # message with the same data (cross-node private messages in a cluster).
        self.responders: dict[int, str] = {}

    def next_file(self, tag: str) -> str:
        self.files += 1
        return f"{tag}-{self.files}.bin"

    def check_file(self, c: Conn, name: str, data: bytes, reported: str) -> None:
        if reported != hashlib.sha256(data).hexdigest():
            raise Mismatch(f"{name}: server sha256 {reported} is not the client's")
        path = self.nodes[c.node][1] / name
        if path.read_bytes() != data:
            raise Mismatch(f"{name}: the file on disk differs from what was sent")
        path.unlink()
        self.stats.counts["uploads_completed"] += 1

    def pick_node(self) -> int:
        return self.rng.randrange(len(self.nodes))

    # --- one client's life --------------------------------------------------------
    async def client(self, kind: str, until: float) -> None:
        rng = self.rng
        stats = self.stats
        lifetime = time.monotonic() + rng.uniform(0.2, 6.0)
        how = rng.choice(["fin", "fin", "rst", "rst_mid_frame", "half_close"])
        conn: Conn | None = None
        wire = kind if kind in ("binary", "echo") else "mux" if kind.startswith("mux") else "json"
        try:
            node = self.pick_node()
            conn = await Conn.open(self.nodes[node][0], wire, node)
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
                state = await self.inspect(conn.node, conn.session_id)
                stats.error(f"{exc}; client sent {conn.sent} bytes; server side: {state}")
            else:
                stats.error(str(exc))
        except (TimeoutError, ConnectionError, OSError, asyncio.IncompleteReadError) as exc:
            stats.error(f"{kind}: {type(exc).__name__}: {exc}")
        finally:
            if conn is not None:
                self.finish(conn)

    def finish(self, conn: Conn) -> None:
        self.stats.counts["messages_received"] += conn.received
        for code, n in conn.error_codes.items():
            self.stats.counts[f"refused_{code}"] += n
        conn.writer.transport.abort()
        conn.task.cancel()

    async def pause(self) -> None:
        await asyncio.sleep(self.rng.uniform(0.0, 0.05))

    async def json_hello(self, c: Conn) -> str:
        """A json session's welcome (after a first ping, as an ``auto`` listener wants)."""
        await c.send(jframe({"type": "ping"}))
        welcome = await c.expect(lambda m: m["type"] == "welcome", "welcome")
        await c.expect(lambda m: m["type"] == "pong", "pong")
        c.session_id = welcome["id"]
        return str(welcome["id"])

    def json_request(self, c: Conn) -> Callable[..., Awaitable[dict[str, Any]]]:
        counts = self.stats.counts
        ref = 0

        async def request(msg: dict[str, Any], want: str) -> dict[str, Any]:
            nonlocal ref
            ref += 1
            msg["ref"] = r = ref
            sent = time.monotonic()
            await c.send(jframe(msg))
            counts["messages_sent"] += 1
            reply = await c.expect(lambda m: m.get("ref") == r, f"answer to {msg['type']}")
            if msg["type"] == "ping":
                self.stats.ping_rtts.append(time.monotonic() - sent)
            if reply["type"] != want and not (
                reply["type"] == "error" and reply.get("code") in LIMIT_CODES
            ):
                raise Mismatch(f"json: {msg['type']} got {reply}")
            return reply

        return request

    # --- json ---------------------------------------------------------------------
    async def run_json(self, c: Conn, until: float) -> bytes:
        rng = self.rng
        counts = self.stats.counts
        request = self.json_request(c)
        me = await self.json_hello(c)
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
                await self.private(c, me, roll)
            elif roll < 0.853:
                await c.send(jframe({"type": "broadcast", "data": "hello all"}))
                counts["messages_sent"] += 1
            elif roll < 0.9:
                await self.json_upload(c, request)
            await self.pause()
        return jframe({"type": "ping"})[:5]

    async def private(self, c: Conn, me: str, token: float) -> None:
        """A private message to itself, or through another node's responder and back."""
        counts = self.stats.counts
        others = [n for n in self.responders if n != c.node]
        if others:
            target = self.responders[self.rng.choice(others)]
            counts["privates_cross_node"] += 1
        else:
            target = me
        await c.send(jframe({"type": "private", "target": target, "data": token}))
        counts["messages_sent"] += 1
        reply = await c.expect(
            lambda m: (
                (m["type"] == "private" and m["data"] == token)
                or (m["type"] == "error" and m.get("code") == "unknown_target")
            ),
            "private message",
        )
        if reply["type"] == "error":
            # The responder left in the meantime (the end of the run).
            if target == me or target in self.responders.values():
                raise Mismatch(f"json: private to {target} got {reply}")
            counts["privates_unknown_target"] += 1
        elif reply["from"] != target:
            raise Mismatch(f"json: private came back from {reply['from']}, not {target}")

    async def json_upload(self, c: Conn, request: Any) -> None:
        rng = self.rng
        name = self.next_file("json")
        data = rng.randbytes(rng.randrange(1, 256 * 1024))
        tid = f"t{self.files}"
        start = {"type": "file_start", "transferId": tid, "filename": name, "fileSize": len(data)}
        if (await request(start, "file_start_ack"))["type"] == "error":
            self.stats.counts["uploads_refused"] += 1
            return
        self.stats.counts["uploads_started"] += 1
        step = 16 * 1024
        for i, off in enumerate(range(0, len(data), step)):
            chunk = base64.b64encode(data[off : off + step]).decode()
            msg = {"type": "file_chunk", "transferId": tid, "chunkIndex": i, "data": chunk}
            await request(msg, "file_chunk_ack")
            if rng.random() < 0.02:
                raise Abandon
        done = await request({"type": "file_end", "transferId": tid}, "file_complete")
        self.check_file(c, name, data, done["sha256"])

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
        answer = json.loads(reply[2]) if reply[0] == 0x21 else {}
        if answer.get("type") == "error" and answer.get("code") in LIMIT_CODES:
            self.stats.counts["uploads_refused"] += 1
            return
        if answer.get("type") != "file_start_ack":
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
        self.check_file(c, name, data, msg["sha256"])

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
            if reply["type"] != want and not (
                reply["type"] == "error" and reply.get("code") in LIMIT_CODES
            ):
                raise Mismatch(f"mux json: {msg['type']} got {reply}")
            return reply

        return request

    @staticmethod
    def control(match: Any) -> Any:
        return lambda m: m[0] == 0 and match(json.loads(m[1]))

    async def mux_open(self, c: Conn, sid: int, kind: str) -> None:
        create = {"type": "stream_create", "streamId": sid, "streamType": kind}
        await c.send(mframe(0, json.dumps(create).encode()))
        self.stats.counts["messages_sent"] += 1
        await c.expect(self.control(lambda m: m.get("streamId") == sid), "stream_created")
        if kind == "echo":
            await c.expect(lambda m: m == (sid, b"Welcome to TCP server!\n"), "echo welcome")
        elif kind == "json":
            await c.expect(lambda m: m[0] == sid and b'"welcome"' in m[1], "stream welcome")

    async def run_mux(self, c: Conn, until: float) -> bytes:
        rng = self.rng
        counts = self.stats.counts
        next_id = 1
        open_streams: dict[int, str] = {}
        control = self.control

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
                await self.mux_open(c, sid, kind)
                open_streams[sid] = kind
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
                    # A mux stream carrying an upload: json chunks over the stream.
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

    # --- a member of the big room that only reads and pings: a bystander -----------
    async def run_reader(self, c: Conn, until: float) -> bytes:
        request = self.json_request(c)
        await self.json_hello(c)
        await request({"type": "join_room", "room": BIG_ROOM}, "joined")
        while time.monotonic() < until:
            await request({"type": "ping"}, "pong")
            await asyncio.sleep(self.rng.uniform(0.1, 0.5))
        return b"12"

    # --- attackers ----------------------------------------------------------------
    async def linger(self, until: float, most: float = 2.0) -> None:
        await asyncio.sleep(max(0.0, min(until - time.monotonic(), self.rng.uniform(0.1, most))))

    async def run_partial_json(self, c: Conn, until: float) -> bytes:
        """Most of a ~1 MiB frame, then gone."""
        await self.json_hello(c)
        size = self.rng.randrange(512 * 1024, 1_000_000)
        await c.send(b"1000000\n" + b"p" * size)
        self.stats.counts["attack_partial_frames"] += 1
        self.stats.counts["attack_partial_bytes"] += size
        await self.linger(until)
        return b"p" * 1000

    async def run_mux_partial(self, c: Conn, until: float) -> bytes:
        """Streams each holding most of a ~1 MiB json frame (more than the 8 MiB the
        connection may hold in all, sometimes), then gone."""
        rng = self.rng
        streams = rng.randrange(4, 17)
        batch = bytearray()
        for i in range(streams):
            sid = 2 * i + 1
            create = {"type": "stream_create", "streamId": sid, "streamType": "json"}
            body = b"1000000\n" + b"q" * rng.randrange(256 * 1024, 999_000)
            batch += mframe(0, json.dumps(create).encode())
            batch += mframe(sid, body[: len(body) // 2]) + mframe(sid, body[len(body) // 2 :])
            self.stats.counts["attack_partial_bytes"] += len(body)
        await c.send(bytes(batch))
        await c.send(mframe(0, b'{"type":"ping"}'))
        await c.expect(self.control(lambda m: m["type"] == "pong"), "pong after the streams")
        self.stats.counts["attack_partial_frames"] += streams
        await self.linger(until)
        return mframe(1, b"q" * 1000)

    async def run_mux_uploads(self, c: Conn, until: float) -> bytes:
        """Streams each with uploads started and a few chunks sent, then gone."""
        rng = self.rng
        streams = rng.randrange(2, 9)
        batch = bytearray()
        chunk = base64.b64encode(rng.randbytes(16 * 1024)).decode()
        starts = 0
        for i in range(streams):
            sid = 2 * i + 1
            create = {"type": "stream_create", "streamId": sid, "streamType": "json"}
            batch += mframe(0, json.dumps(create).encode())
            for _ in range(rng.randrange(1, 5)):
                tid = f"a{self.files}"
                name = self.next_file("mux-attack")
                size = rng.randrange(1, 8) * 1024 * 1024
                start = {"type": "file_start", "transferId": tid, "filename": name}
                batch += mframe(sid, jframe({**start, "fileSize": size}))
                for n in range(rng.randrange(1, 4)):
                    msg = {"type": "file_chunk", "transferId": tid, "chunkIndex": n, "data": chunk}
                    batch += mframe(sid, jframe(msg))
                starts += 1
        last = 2 * streams - 1
        batch += mframe(last, jframe({"type": "ping", "ref": "end"}))
        await c.send(bytes(batch))
        self.stats.counts["messages_sent"] += starts + 1
        await c.expect(lambda m: m[0] == last and b'"end"' in m[1], "pong after the uploads")
        self.stats.counts["attack_uploads_in_flight"] += starts
        await self.linger(until)
        return mframe(1, jframe({"type": "file_chunk"}))[:30]

    async def run_flood(self, c: Conn, until: float) -> bytes:
        """Bursts of room messages (and a few broadcasts) into the big room, one write each."""
        rng = self.rng
        request = self.json_request(c)
        await self.json_hello(c)
        await request({"type": "join_room", "room": BIG_ROOM}, "joined")
        while time.monotonic() < until:
            n = rng.randrange(100, 500)
            burst = bytearray()
            for i in range(n):
                if i % 50 == 49:
                    burst += jframe({"type": "broadcast", "data": "flood"})
                else:
                    burst += jframe({"type": "room_message", "room": BIG_ROOM, "data": "f" * 64})
            await c.send(bytes(burst))
            self.stats.counts["messages_sent"] += n
            self.stats.counts["attack_flood_messages"] += n
            # Its own ping waits behind its fan-out: not a bystander's figure.
            await c.send(jframe({"type": "ping", "ref": "flood"}))
            await c.expect(lambda m: m.get("ref") == "flood", "pong after the flood")
            await self.linger(until, 0.5)
        return jframe({"type": "room_message"})[:8]

    async def run_rejoin(self, c: Conn, until: float) -> bytes:
        """Bursts of re-joins of the big room: each reply carries its member list."""
        rng = self.rng
        me = await self.json_hello(c)
        ref = 0
        while time.monotonic() < until:
            burst = bytearray()
            for _ in range(rng.randrange(20, 200)):
                ref += 1
                burst += jframe({"type": "join_room", "room": BIG_ROOM, "ref": ref})
                self.stats.counts["attack_rejoins"] += 1
            await c.send(bytes(burst))
            reply = await c.expect(lambda m, r=ref: m.get("ref") == r, "the last re-join's reply")
            if reply["type"] != "joined" or me not in reply["members"]:
                raise Mismatch(f"json: re-join got {str(reply)[:200]}")
            await self.linger(until, 0.5)
        return b"1"

    async def run_churn(self, c: Conn, until: float) -> bytes:
        """Connections opened and dropped at once, some before saying anything."""
        rng = self.rng
        await self.json_hello(c)
        for _ in range(rng.randrange(5, 20)):
            node = self.pick_node()
            other = await Conn.open(self.nodes[node][0], "json", node)
            try:
                if rng.random() < 0.7:
                    await self.json_hello(other)
                if rng.random() < 0.5:
                    other.reset()
                else:
                    other.writer.close()
                self.stats.counts["attack_churn_connections"] += 1
            finally:
                self.finish(other)
            if time.monotonic() > until:
                break
        return b""

    # --- cross-node private messages ----------------------------------------------
    async def responder(self, node: int) -> None:
        """A json session on ``node`` that sends every private message back to its sender."""
        c = await Conn.open(self.nodes[node][0], "json", node)
        counts = self.stats.counts

        def answer(msg: Any) -> bool:
            if msg["type"] != "private":
                return False
            reply = {"type": "private", "target": msg["from"], "data": msg["data"]}
            c.writer.write(jframe(reply))
            counts["privates_answered"] += 1
            return True

        try:
            self.responders[node] = await self.json_hello(c)
            c.handler = answer
            await c.task
            raise Mismatch(f"responder on node {node}: {c.ended}")
        finally:
            self.responders.pop(node, None)
            self.finish(c)
