"""Memory per idle connection: 10,000 concurrent idle connections held by the server.

The benchmark process opens the connections itself (asyncio, in batches), and each
waits for its welcome. With all of them open it checks a ping round-trip on a
sample and that none was closed, then reads the server's VmRSS from /proc. The
memory per idle connection is (RSS with N open - RSS before) / N, for verb-console
(json, the per-IP throttle off, room for 20,000 connections, the rest at defaults:
the idle timeout and its timer stay on) and for py_limit.py in the same run.

RLIMIT_NOFILE is raised for this process and, through the subprocess, for the
servers only; the library's defaults are untouched.

    .venv/bin/python bench/idle_connections.py [--connections 10000] [--shared DIR]
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import random
import sys
import time
from pathlib import Path
from typing import Any

from benchlib import (
    Server,
    Servers,
    exit_on_signals,
    machine,
    py_limit_server,
    raise_nofile,
    result_path,
    shared_dir,
    table,
    verb_console_server,
    write_json,
)

try:
    import orjson

    def _loads(b: bytes) -> Any:
        return orjson.loads(b)

    def _dumps(o: Any) -> bytes:
        return orjson.dumps(o)
except ImportError:  # pragma: no cover - orjson is a dependency of the package
    import json

    def _loads(b: bytes) -> Any:
        return json.loads(b)

    def _dumps(o: Any) -> bytes:
        return json.dumps(o).encode()


def frame(obj: Any) -> bytes:
    body = _dumps(obj)
    return b"%d\n%s" % (len(body), body)


class Client(asyncio.Protocol):
    """One idle client: keeps the frames it receives, says when one arrives."""

    def __init__(self) -> None:
        self.buf = bytearray()
        self.messages: list[dict[str, Any]] = []
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self.waiter: asyncio.Future[None] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        buf = self.buf
        buf += data
        while True:
            nl = buf.find(b"\n")
            if nl < 0:
                return
            n = int(buf[:nl])
            if len(buf) < nl + 1 + n:
                return
            self.messages.append(_loads(bytes(buf[nl + 1 : nl + 1 + n])))
            del buf[: nl + 1 + n]
            if self.waiter is not None and not self.waiter.done():
                self.waiter.set_result(None)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_exception(ConnectionError("closed by the server"))

    async def wait_for(self, kind: str, timeout: float) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            for m in self.messages:
                if m.get("type") == kind:
                    self.messages.remove(m)
                    return m
            if self.closed:
                raise ConnectionError(f"closed before {kind}")
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"no {kind} within {timeout}s")
            self.waiter = asyncio.get_running_loop().create_future()
            await asyncio.wait_for(self.waiter, left)


async def open_client(port: int, timeout: float) -> Client:
    loop = asyncio.get_running_loop()
    _, client = await asyncio.wait_for(loop.create_connection(Client, "127.0.0.1", port), timeout)
    await client.wait_for("welcome", timeout)
    return client


async def hold(server: Server, n: int, batch: int, sample: int, settle: float) -> dict[str, Any]:
    """Open ``n`` idle connections to ``server`` and measure its RSS before and after."""
    await asyncio.sleep(settle)
    rss_before = server.rss_kib()
    clients: list[Client] = []
    t0 = time.monotonic()
    for start in range(0, n, batch):
        got = await asyncio.gather(
            *(open_client(server.port, 30) for _ in range(min(batch, n - start)))
        )
        clients.extend(got)
    open_s = time.monotonic() - t0
    # A ping round-trip on a sample, with every connection open.
    picked = random.Random(1).sample(clients, min(sample, len(clients)))
    for i, c in enumerate(picked):
        assert c.transport is not None
        c.transport.write(frame({"type": "ping", "ref": i}))
    pongs = await asyncio.gather(*(c.wait_for("pong", 30) for c in picked))
    if any(p.get("ref") != i for i, p in enumerate(pongs)):
        raise RuntimeError("a pong came back with the wrong ref")
    await asyncio.sleep(settle)
    closed = sum(c.closed for c in clients)
    if closed:
        raise RuntimeError(f"{closed} connections were closed by {server.name}")
    rss_after = server.rss_kib()
    for c in clients:
        assert c.transport is not None
        c.transport.close()
    await asyncio.sleep(0.2)
    delta = rss_after - rss_before
    return {
        "connections": n,
        "welcomes": len(clients),
        "ping_sample_ok": len(pongs),
        "open_seconds": round(open_s, 2),
        "rss_before_kib": rss_before,
        "rss_after_kib": rss_after,
        "delta_kib": delta,
        "bytes_per_connection": round(delta * 1024 / n),
    }


def run_loop(coro: Any) -> Any:
    try:
        import uvloop
    except ImportError:  # pragma: no cover
        return asyncio.run(coro)
    return uvloop.run(coro)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        description="Server RSS per idle connection: N concurrent idle connections to "
        "verb-console and to py_limit.py, opened from this process.",
    )
    p.add_argument("--connections", type=int, default=10000, help="how many (default 10000)")
    p.add_argument("--batch", type=int, default=250, help="connects in flight (default 250)")
    p.add_argument("--sample", type=int, default=200, help="pinged connections (default 200)")
    p.add_argument("--settle", type=float, default=1.0, help="seconds before reading RSS")
    p.add_argument(
        "--shared", help="the shared bench dir (default <repo>/../shared/bench)", default=None
    )
    p.add_argument(
        "--out", type=Path, help="JSON results file (default bench/results/idle-DATE.json)"
    )
    args = p.parse_args(argv)
    exit_on_signals()
    shared = shared_dir(args.shared)
    n = args.connections
    nofile = n * 2 + 1024
    mine = raise_nofile(nofile)
    if mine < n + 100:
        sys.exit(f"RLIMIT_NOFILE is {mine}, too low for {n} connections")
    started = datetime.datetime.now().astimezone()
    results: dict[str, Any] = {}
    with Servers() as servers:
        candidates = {
            "verb-console": lambda: verb_console_server(
                "verb-console",
                ["--max-per-ip", "0", "--max-connections", str(max(20000, n + 100))],
            ),
            "py_limit": lambda: py_limit_server(shared, "uvloop", "orjson"),
        }
        for name, make in candidates.items():
            server = make()
            server.nofile = nofile
            servers.start(server)
            try:
                results[name] = run_loop(hold(server, n, args.batch, args.sample, args.settle))
            finally:
                servers.stop(server)
            r = results[name]
            print(
                f"{name:14} {r['welcomes']} welcomes, {r['ping_sample_ok']} pings ok, RSS"
                f" {r['rss_before_kib']} -> {r['rss_after_kib']} KiB:"
                f" {r['bytes_per_connection']} bytes/connection",
                flush=True,
            )
            time.sleep(1.0)
    vc, pl = results["verb-console"], results["py_limit"]
    ratio = round(vc["bytes_per_connection"] / pl["bytes_per_connection"], 2)
    print()
    print(
        table(
            ["server", "RSS before KiB", "RSS after KiB", "bytes/connection"],
            [
                [k, v["rss_before_kib"], v["rss_after_kib"], v["bytes_per_connection"]]
                for k, v in results.items()
            ],
        )
    )
    print(f"\nverb-console / py_limit memory per idle connection: {ratio}")
    out = args.out or result_path("idle", started)
    data = {
        "benchmark": "idle_connections",
        "date": started.isoformat(timespec="seconds"),
        "connections": n,
        "verb_console_flags": [
            "--headless",
            "--protocol",
            "json",
            "--max-per-ip",
            "0",
            "--max-connections",
            str(max(20000, n + 100)),
        ],
        "machine": machine(),
        "servers": results,
        "ratio_verb_console_over_py_limit": ratio,
    }
    print(f"wrote {write_json(out, data)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
