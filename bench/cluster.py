"""The cluster's cost: two ``verb-console --headless --cluster`` nodes on one redis-server.

Measured side by side in one run, as ratios where there is a local reference:

- fan-out: server CPU per delivery on node B with 500 receivers on B, the sender
  on node A (cross-node) against the sender on B (local); target at most 1.2x;
- private-message round trip between a session on A and one on B, idle
  (target p50 < 1 ms, p99 < 2 ms), next to the same round trip on one node;
- cross-node room messages per second through one node (target >= 50,000);
- two nodes sharing one port (``reuse_port``) against one node: pings per second
  and server CPU per ping (load from the shared ``loadgen.js``).

    .venv/bin/python bench/cluster.py [--seconds 3] [--shared DIR]
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchlib import (
    CPU_SETS,
    VERB_READY,
    Server,
    Servers,
    exit_on_signals,
    free_port,
    machine,
    node_cmd,
    raise_nofile,
    result_path,
    shared_dir,
    table,
    verb_console_cmd,
    write_json,
)

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from cluster_harness import redis_server_binary

RECEIVERS = 500
WINDOW = 1000


def frame(obj: Any) -> bytes:
    body = json.dumps(obj, separators=(",", ":")).encode()
    return b"%d\n%s" % (len(body), body)


class Redis:
    def __init__(self) -> None:
        self.port = free_port()
        self.dir = tempfile.mkdtemp(prefix="bench-redis-")
        self.proc = subprocess.Popen(
            [
                *(redis_server_binary(), "--port", str(self.port), "--bind", "127.0.0.1"),
                *("--save", "", "--appendonly", "no", "--dir", self.dir),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        time.sleep(0.3)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(5)


def node(name: str, url: str, *extra: str, port: int = 0, pin: bool = True) -> Server:
    cfg = Path(tempfile.mkdtemp(prefix=f"bench-{name}-"))
    argv = [*verb_console_cmd(), "--headless", "--port", str(port), "--protocol", "json"]
    argv += ["--max-per-ip", "0", "--cluster", url, "--node-name", name, *extra]
    argv += ["--upload-dir", str(cfg / "uploads")]
    server = Server(name, argv, VERB_READY, cwd=cfg)
    if not pin:
        server._preexec = lambda: None  # type: ignore[method-assign]
    return server


class Conn:
    """A json client that counts the frames it receives (one newline per frame)."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.frames = 0
        self.id = ""

    @classmethod
    async def open(cls, port: int) -> Conn:
        reader, writer = await asyncio.open_connection("127.0.0.1", port, limit=1 << 22)
        c = cls(reader, writer)
        header = await reader.readuntil(b"\n")
        c.id = json.loads(await reader.readexactly(int(header[:-1])))["id"]
        return c

    async def recv(self) -> dict[str, Any]:
        header = await self.reader.readuntil(b"\n")
        return dict(json.loads(await self.reader.readexactly(int(header[:-1]))))

    async def count(self) -> None:
        with_counts = self.reader
        while data := await with_counts.read(1 << 18):
            self.frames += data.count(b"\n")


async def fanout(sender_port: int, receiver_port: int, b: Server, seconds: float) -> float:
    """Node B's CPU microseconds per delivered broadcast copy."""
    receivers = [await Conn.open(receiver_port) for _ in range(RECEIVERS)]
    sender = await Conn.open(sender_port)
    tasks = [asyncio.ensure_future(r.count()) for r in receivers]
    sink = asyncio.ensure_future(sender.count())
    await asyncio.sleep(1.0)  # the nodes learn of each other's sessions

    def delivered() -> int:
        return sum(r.frames for r in receivers)

    async def burst(k: int) -> None:
        target = delivered() + k * RECEIVERS
        sender.writer.write(
            b"".join(frame({"type": "broadcast", "data": "x" * 32}) for _ in range(k))
        )
        while delivered() < target:
            await asyncio.sleep(0.001)

    await burst(20)  # warm up
    start_n, start_cpu, t0 = delivered(), b.cpu_s(), time.monotonic()
    while time.monotonic() - t0 < seconds:
        await burst(20)
    cpu, n = b.cpu_s() - start_cpu, delivered() - start_n
    for c in [*receivers, sender]:
        c.writer.close()
    for t in [*tasks, sink]:
        t.cancel()
    return cpu / n * 1e6


async def round_trips(port_x: int, port_y: int, n: int) -> tuple[float, float]:
    """p50 and p99 (ms) of a private message to a session and its answer back."""
    x, y = await Conn.open(port_x), await Conn.open(port_y)
    await asyncio.sleep(1.0)

    async def echo() -> None:
        while True:
            msg = await y.recv()
            if msg["type"] == "private":
                y.writer.write(frame({"type": "private", "target": x.id, "data": msg["data"]}))

    task = asyncio.ensure_future(echo())
    times = []
    for i in range(n):
        t = time.perf_counter()
        x.writer.write(frame({"type": "private", "target": y.id, "data": i}))
        while (await x.recv()).get("data") != i:
            pass
        times.append((time.perf_counter() - t) * 1000)
        await asyncio.sleep(0.002)  # idle between round trips
    task.cancel()
    x.writer.close()
    y.writer.close()
    qs = statistics.quantiles(times, n=100)
    return qs[49], qs[98]


async def room_rate(port_a: int, port_b: int, seconds: float) -> tuple[float, int]:
    """Room messages per second from one sender on A to one member on B."""
    sender, member = await Conn.open(port_a), await Conn.open(port_b)
    member.writer.write(frame({"type": "join_room", "room": "t"}))
    await member.recv()
    sender.writer.write(frame({"type": "join_room", "room": "t"}))
    # The member is told the sender joined; that frame is not a room message, so
    # it is read here, before the count of room messages starts.
    while (await member.recv())["type"] != "user_joined":
        pass
    await asyncio.sleep(1.0)
    counting = asyncio.ensure_future(member.count())
    batch = b"".join(frame({"type": "room_message", "room": "t", "data": i}) for i in range(200))
    sent = 0
    t0 = time.monotonic()
    start = member.frames
    while time.monotonic() - t0 < seconds:
        sender.writer.write(batch)
        sent += 200
        await sender.writer.drain()
        # A window of messages in flight; what the node dropped (its queue is capped)
        # never arrives, so the wait for it is short.
        stall = time.monotonic() + 0.02
        while sent - (member.frames - start) > WINDOW and time.monotonic() < stall:
            await asyncio.sleep(0.0005)
    await asyncio.sleep(0.2)
    got = member.frames - start
    rate = got / (time.monotonic() - t0 - 0.2)
    counting.cancel()
    sender.writer.close()
    member.writer.close()
    return rate, sent - got


def pings(shared: Path, port: int, servers: list[Server], seconds: float) -> dict[str, float]:
    cpu0 = sum(s.cpu_s() for s in servers)
    out = subprocess.run(
        [
            node_cmd(),
            str(shared / "loadgen.js"),
            "ping",
            "127.0.0.1",
            str(port),
            "50",
            "20",
            str(seconds),
        ],
        capture_output=True,
        text=True,
        check=True,
        preexec_fn=(lambda: os.sched_setaffinity(0, CPU_SETS[1])) if CPU_SETS else None,
    )
    r = json.loads(out.stdout.strip().splitlines()[-1])
    cpu = sum(s.cpu_s() for s in servers) - cpu0
    return {"msgs_per_s": r["msgs_per_s"], "cpu_us_per_msg": cpu / max(r["msgs"], 1) * 1e6}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--round-trips", type=int, default=1000)
    parser.add_argument("--shared", default=None)
    args = parser.parse_args(argv)
    exit_on_signals()
    shared = shared_dir(args.shared)
    raise_nofile(4 * RECEIVERS + 200)
    if CPU_SETS is not None:
        os.sched_setaffinity(0, CPU_SETS[1])
    when = datetime.datetime.now(datetime.UTC)
    results: dict[str, Any] = {"machine": machine(), "when": when.isoformat()}
    redis = Redis()
    try:
        with Servers() as servers:
            a = servers.start(node("a", redis.url))
            b = servers.start(node("b", redis.url))
            local = asyncio.run(fanout(b.port, b.port, b, args.seconds))
            cross = asyncio.run(fanout(a.port, b.port, b, args.seconds))
            results["fanout_cpu_us_per_delivery"] = {
                "local": local,
                "cross": cross,
                "ratio": cross / local,
            }
            results["private_rtt_ms"] = {
                "one_node": asyncio.run(round_trips(b.port, b.port, args.round_trips)),
                "cross_node": asyncio.run(round_trips(a.port, b.port, args.round_trips)),
            }
            rate, lost = asyncio.run(room_rate(a.port, b.port, args.seconds))
            results["cross_room_msgs_per_s"] = rate
            results["cross_room_dropped"] = lost
        with Servers() as servers:
            cfg = Path(tempfile.mkdtemp(prefix="bench-share-")) / "share.toml"
            cfg.write_text("reuse_port = true\n")
            port = free_port()
            one = servers.start(node("solo", redis.url, "--config", str(cfg), port=port, pin=False))
            solo = pings(shared, port, [one], args.seconds)
            two = servers.start(node("pair", redis.url, "--config", str(cfg), port=port, pin=False))
            pair = pings(shared, port, [one, two], args.seconds)
            results["shared_port_pings"] = {"one_node": solo, "two_nodes": pair}
    finally:
        redis.stop()
    f = results["fanout_cpu_us_per_delivery"]
    rtt = results["private_rtt_ms"]
    sp = results["shared_port_pings"]
    print(
        table(
            ["figure", "value", "reference", "ratio / target"],
            [
                [
                    "fan-out CPU/delivery on B, sender on A",
                    f"{f['cross']:.2f} us",
                    f"local {f['local']:.2f} us",
                    f"{f['ratio']:.2f}x (<= 1.2x)",
                ],
                [
                    "private round trip A<->B p50 / p99",
                    f"{rtt['cross_node'][0]:.2f} / {rtt['cross_node'][1]:.2f} ms",
                    f"one node {rtt['one_node'][0]:.2f} / {rtt['one_node'][1]:.2f} ms",
                    "< 1 / < 2 ms",
                ],
                [
                    "cross-node room messages/s",
                    f"{results['cross_room_msgs_per_s']:,.0f}",
                    f"dropped {results['cross_room_dropped']:,}",
                    ">= 50,000",
                ],
                [
                    "pings/s, two nodes sharing a port",
                    f"{sp['two_nodes']['msgs_per_s']:,.0f}",
                    f"one node {sp['one_node']['msgs_per_s']:,.0f}",
                    f"{sp['two_nodes']['msgs_per_s'] / sp['one_node']['msgs_per_s']:.2f}x",
                ],
                [
                    "server CPU/ping, two nodes sharing a port",
                    f"{sp['two_nodes']['cpu_us_per_msg']:.2f} us",
                    f"one node {sp['one_node']['cpu_us_per_msg']:.2f} us",
                    f"{sp['two_nodes']['cpu_us_per_msg'] / sp['one_node']['cpu_us_per_msg']:.2f}x",
                ],
            ],
        )
    )
    print(f"results: {write_json(result_path('cluster', when), results)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
