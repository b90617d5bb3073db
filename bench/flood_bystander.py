"""A bystander's ping while one client floods 200 readers, against a separate
``verb-console --headless`` process.

    python bench/flood_bystander.py [--seconds 10] [--readers 200] [--processes 4]
        [--interval 0.02]

One flooder writes broadcast frames in 256 KiB writes for ``--seconds`` (each
write is some 7,500 broadcasts, 1.5 million deliveries to 200 readers; the
deadline is checked inside a write too). The readers, asyncio protocols spread
over ``--processes`` processes of their own, keep reading and check that each
got every broadcast, in order. A bystander in a process of its own sends a mux control ping
every ``--interval`` seconds and times each pong, before the flood (idle), during
it, and until the readers have everything. The target: the bystander's p99 under
50 ms with no message lost.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import multiprocessing as mp
import os
import re
import selectors
import socket
import struct
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import benchlib

AUTO_READY = re.compile(r"listening on \S+:(\d+) \(auto\)")
WRITE = 256 * 1024
# What a reader looks for in each broadcast: who sent it, and its sequence number.
BROADCAST = re.compile(rb'"type":"broadcast","from":"([^"]+)","data":(\d+)')
MARK = b'"type":"broadcast"'


def jframe(message: Any) -> bytes:
    body = json.dumps(message, separators=(",", ":")).encode()
    return b"%d\n%s" % (len(body), body)


def mframe(sid: int, payload: bytes) -> bytes:
    return struct.pack(">II", sid, len(payload)) + payload


def read_json_frames(sock: socket.socket, want: int) -> list[dict[str, Any]]:
    buf = b""
    out: list[dict[str, Any]] = []
    while len(out) < want:
        data = sock.recv(65536)
        if not data:
            raise RuntimeError("closed")
        buf += data
        while (nl := buf.find(b"\n")) >= 0 and len(buf) >= nl + 1 + int(buf[:nl]):
            n = int(buf[:nl])
            out.append(json.loads(buf[nl + 1 : nl + 1 + n]))
            buf = buf[nl + 1 + n :]
    return out


class Reader(asyncio.Protocol):
    """One json reader: counts the flooder's broadcasts and checks their order
    with C-speed scans only (the count, the first and the last sequence)."""

    def __init__(self, group: ReaderGroup) -> None:
        self.group = group
        self.tail = b""
        self.next = 0  # next expected sequence number
        self.gaps = 0
        self.greeted = asyncio.get_running_loop().create_future()
        self.closed = False

    def connection_made(self, transport: Any) -> None:
        transport.write(jframe({"type": "ping"}))  # an auto listener speaks once spoken to

    def data_received(self, data: bytes) -> None:
        self.group.last = time.monotonic()
        buf = self.tail + data
        if not self.greeted.done():
            # welcome and pong: two frames before any broadcast.
            if buf.count(b'"type":"pong"') == 0:
                self.tail = buf
                return
            self.greeted.set_result(None)
            buf = buf[buf.index(b'"type":"pong"') :]
            buf = buf[buf.index(b"}") + 1 :]
        # Complete frames end before the last header: "...}<digits>\n{...".
        # A body ends with its only "}", so one that ends the read is whole.
        nl = buf.rfind(b"\n")
        cut = len(buf) if buf.endswith(b"}") else buf.rfind(b"}", 0, nl) + 1
        if cut <= 0:
            self.tail = buf
            return
        done, self.tail = buf[:cut], buf[cut:]
        n = done.count(MARK)
        if not n:
            return
        first = BROADCAST.search(done)
        end = BROADCAST.search(done, done.rfind(MARK))
        assert first is not None and end is not None
        lo, hi = int(first.group(2)), int(end.group(2))
        if lo != self.next or hi - lo + 1 != n:
            self.gaps += 1
        self.next = hi + 1

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True


class ReaderGroup:
    def __init__(self) -> None:
        self.last = time.monotonic()


async def readers_async(port: int, count: int, ready: Any, total: Any) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    group = ReaderGroup()
    readers: list[Reader] = []
    transports = []
    for _ in range(count):
        t, r = await loop.create_connection(lambda: Reader(group), "127.0.0.1", port)
        readers.append(r)
        transports.append(t)
    await asyncio.wait_for(asyncio.gather(*(r.greeted for r in readers)), 60)
    ready.release()
    while True:
        await asyncio.sleep(0.1)
        want = total.value
        if want >= 0 and (
            all(r.next >= want or r.closed for r in readers) or time.monotonic() - group.last > 10
        ):
            break
    for t in transports:
        t.close()
    return {
        "received": [r.next for r in readers],
        "gaps": sum(r.gaps for r in readers),
        "closed": sum(1 for r in readers if r.closed),
    }


def readers_main(port: int, count: int, ready: Any, results: Any, total: Any) -> None:
    """Open ``count`` json connections, then read everything they are sent until
    each has the flooder's ``total`` broadcasts (or 10 s pass with nothing more):
    per reader, the flooder's sequence numbers, checked for gaps."""
    benchlib.pin_load()
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    results.put(asyncio.run(readers_async(port, count, ready, total)))


def bystander_main(port: int, interval: float, phase: Any, results: Any) -> None:
    """Ping on the control stream of a mux connection every ``interval`` s; the
    round trips of each phase (phase.value: 0 idle, 1 flood, 2 catching up, 3 stop)."""
    benchlib.pin_load()
    s = socket.create_connection(("127.0.0.1", port))
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    rtts: dict[int, list[float]] = {0: [], 1: [], 2: []}
    buf = b""
    n = 0
    while phase.value < 3:
        p = phase.value
        t0 = time.perf_counter()
        s.sendall(mframe(0, json.dumps({"type": "ping", "ref": n}).encode()))
        while True:
            while len(buf) < 8 or len(buf) < 8 + struct.unpack_from(">II", buf)[1]:
                data = s.recv(65536)
                if not data:
                    raise RuntimeError("bystander closed")
                buf += data
            sid, size = struct.unpack_from(">II", buf)
            payload, buf = buf[8 : 8 + size], buf[8 + size :]
            if sid == 0 and json.loads(payload).get("ref") == n:
                break
        rtts[p].append(time.perf_counter() - t0)
        n += 1
        time.sleep(max(0.0, interval - (time.perf_counter() - t0)))
    results.put(rtts)
    s.close()


def summary(rtts: list[float]) -> dict[str, Any]:
    if not rtts:
        return {"pings": 0}
    ms = sorted(r * 1000 for r in rtts)
    return {
        "pings": len(ms),
        "p50_ms": round(ms[len(ms) // 2], 2),
        "p99_ms": round(ms[min(len(ms) - 1, int(len(ms) * 0.99))], 2),
        "max_ms": round(ms[-1], 2),
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    load = [round(x, 2) for x in os.getloadavg()]
    work = Path(tempfile.mkdtemp(prefix="flood-"))
    config = work / "server.toml"
    config.write_text("max_per_ip = 0\n")
    argv = [*benchlib.verb_console_cmd(), "--headless", "--port", "0", "--protocol", "auto"]
    argv += ["--config", str(config), "--upload-dir", str(work / "up")]
    argv += ["--admin-socket", str(work / "admin.sock")]
    server = benchlib.Server("verb-console", argv, AUTO_READY, cwd=work, nofile=4096)
    ctx = mp.get_context("fork")
    with benchlib.Servers() as servers:
        servers.start(server)
        port = server.port
        ready = ctx.Semaphore(0)
        phase = ctx.Value("i", 0)
        total = ctx.Value("q", -1)
        reader_results: Any = ctx.Queue()
        bystander_results: Any = ctx.Queue()
        groups = [
            args.readers // args.processes + (1 if i < args.readers % args.processes else 0)
            for i in range(args.processes)
        ]
        groups = [g for g in groups if g]
        readers = [
            ctx.Process(target=readers_main, args=(port, g, ready, reader_results, total))
            for g in groups
        ]
        for p in readers:
            p.start()
        for _ in readers:
            if not ready.acquire(timeout=60):
                raise RuntimeError("readers did not connect")
        bystander = ctx.Process(
            target=bystander_main, args=(port, args.interval, phase, bystander_results)
        )
        bystander.start()
        flooder = socket.create_connection(("127.0.0.1", port))
        flooder.sendall(jframe({"type": "ping"}))
        me = read_json_frames(flooder, 2)[0]["id"]
        flooder.setblocking(False)
        time.sleep(args.idle)
        rss_before = server.rss_kib()
        phase.value = 1
        seq = 0
        writes = 0
        t0 = time.monotonic()
        deadline = t0 + args.seconds
        sel = selectors.DefaultSelector()
        sel.register(flooder, selectors.EVENT_WRITE)
        while time.monotonic() < deadline:
            ends = []
            parts = []
            size = 0
            while size < WRITE:
                f = jframe({"type": "broadcast", "data": seq + len(parts)})
                parts.append(f)
                size += len(f)
                ends.append(size)
            data = memoryview(b"".join(parts))
            # The server pauses reading this client while it works: the flood goes
            # as fast as the server takes it, and stops at the deadline even in
            # the middle of a write (after the frame that was being sent).
            sent = 0
            stop = len(data)
            while sent < stop:
                if time.monotonic() >= deadline and stop == len(data):
                    stop = next(e for e in ends if e >= sent)
                    if sent == stop:
                        break
                try:
                    sent += flooder.send(data[sent:stop])
                except BlockingIOError:
                    sel.select(0.01)
            seq += sum(1 for e in ends if e <= sent)
            writes += 1
        flood_s = time.monotonic() - t0
        phase.value = 2
        total.value = seq
        got: dict[str, Any] = {"received": [], "gaps": 0, "closed": 0}
        for _ in readers:
            part = reader_results.get(timeout=600)
            got["received"] += part["received"]
            got["gaps"] += part["gaps"]
            got["closed"] += part["closed"]
        phase.value = 3
        rtts = bystander_results.get(timeout=60)
        for p in readers:
            p.join(10)
        bystander.join(10)
        rss_after = server.rss_kib()
        flooder.close()
    complete = sum(1 for n in got["received"] if n == seq)
    return {
        "machine": benchlib.machine(),
        "load_average": load,
        "args": vars(args),
        "flooder": me,
        "writes": writes,
        "broadcasts": seq,
        "deliveries": seq * args.readers,
        "flood_s": round(flood_s, 2),
        "readers_complete": complete,
        "readers": args.readers,
        "gaps": got["gaps"],
        "readers_closed": got["closed"],
        "idle": summary(rtts[0]),
        "flood": summary(rtts[1]),
        "catching_up": summary(rtts[2]),
        "flood_and_after": summary(rtts[1] + rtts[2]),
        "server_rss_kib": [rss_before, rss_after],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=10.0, help="how long the flood lasts")
    parser.add_argument("--readers", type=int, default=200)
    parser.add_argument("--processes", type=int, default=4, help="reader processes")
    parser.add_argument("--interval", type=float, default=0.02, help="seconds between pings")
    parser.add_argument("--idle", type=float, default=2.0, help="seconds of pings before it")
    parser.add_argument("--out", help="results file (default bench/results/flood-DATE.json)")
    args = parser.parse_args()
    benchlib.exit_on_signals()
    result = run(args)
    rows = [
        [phase, s.get("pings"), s.get("p50_ms"), s.get("p99_ms"), s.get("max_ms")]
        for phase, s in (
            ("idle", result["idle"]),
            ("flood", result["flood"]),
            ("catching up", result["catching_up"]),
            ("flood + after", result["flood_and_after"]),
        )
    ]
    print(benchlib.table(["bystander ping", "pings", "p50 ms", "p99 ms", "max ms"], rows))
    print(
        f"{result['writes']} writes of 256 KiB, {result['broadcasts']} broadcasts,"
        f" {result['deliveries']} deliveries in {result['flood_s']} s;"
        f" readers with every broadcast: {result['readers_complete']}/{result['readers']},"
        f" gaps {result['gaps']}, readers closed {result['readers_closed']}"
    )
    path = Path(args.out) if args.out else benchlib.result_path("flood", dt.date.today())
    print("results:", benchlib.write_json(path, result))


if __name__ == "__main__":
    main()
