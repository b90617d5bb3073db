"""What ``--metrics`` costs: server CPU per ping while scraped every second, and one scrape.

Part A, CPU per ping. Three servers run side by side: ``verb-console --headless``
without metrics, the same with ``--metrics 127.0.0.1:PORT`` scraped every second
by a thread of this script for the whole run, and the shared stick's
``py_limit.py``. Each round loads each, in turn (the order rotates), with
``cpu_per_msg.py PID -- node loadgen.js ping 127.0.0.1 PORT 50 20 4``; reported
are the medians of the server CPU per pong, the ratio of the medians and the
median of the per-round ratios, metrics on / off. Target: at most 1.02x.

Part B, one scrape at 10,000 sessions. A headless server with metrics holds
10,000 real json connections opened by this script; ``/metrics`` is fetched
many times over HTTP, and each fetch is timed (wall, request to last byte) as
is the server's CPU time per scrape (from /proc, over all the fetches).
Target: under 5 ms.

    .venv/bin/python bench/metrics.py [--rounds 5] [--sessions 10000] [--scrapes 50]
        [--shared DIR] [--skip-a] [--skip-b] [--out FILE]
"""

from __future__ import annotations

import argparse
import datetime
import socket
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import benchlib as bl


def http_get(port: int, path: str = "/metrics", timeout: float = 10.0) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout) as s:
        s.sendall(f"GET {path} HTTP/1.1\r\nHost: bench\r\n\r\n".encode())
        chunks = []
        while chunk := s.recv(65536):
            chunks.append(chunk)
    data = b"".join(chunks)
    if not data.startswith(b"HTTP/1.1 200"):
        raise RuntimeError(f"scrape failed: {data[:200]!r}")
    return data


class Scraper(threading.Thread):
    """Scrapes ``/metrics`` every ``interval`` seconds until stopped."""

    def __init__(self, port: int, interval: float = 1.0) -> None:
        super().__init__(daemon=True)
        self.port = port
        self.interval = interval
        self.count = 0
        self.failed = 0
        self._stop_event = threading.Event()

    def run(self) -> None:
        while not self._stop_event.wait(self.interval):
            try:
                http_get(self.port)
                self.count += 1
            except (OSError, RuntimeError):
                self.failed += 1

    def stop(self) -> None:
        self._stop_event.set()
        self.join(5)


def metrics_server(name: str, metrics_port: int | None) -> bl.Server:
    extra = ["--max-per-ip", "0", "--max-connections", "20000"]
    if metrics_port is not None:
        extra += ["--metrics", f"127.0.0.1:{metrics_port}"]
    upload = tempfile.mkdtemp(prefix=f"bench-metrics-{name}-")
    server = bl.verb_console_server(name, [*extra, "--upload-dir", upload])
    server.nofile = 30000
    return server


def part_a(args: argparse.Namespace, shared: Path) -> dict[str, Any]:
    port = bl.free_port()
    runs: dict[str, list[float]] = {"off": [], "on": [], "py_limit": []}
    with bl.Servers() as servers:
        off = servers.start(metrics_server("metrics-off", None))
        on = servers.start(metrics_server("metrics-on", port))
        limit = servers.start(bl.py_limit_server(shared))
        scraper = Scraper(port)
        scraper.start()
        try:
            named = {"off": off, "on": on, "py_limit": limit}
            order = ["off", "on", "py_limit"]
            for n in range(args.rounds):
                for name in order[n % 3 :] + order[: n % 3]:
                    server = named[name]
                    load = ["ping", "127.0.0.1", server.port, 50, 20, 4]
                    r = bl.cpu_per_msg(shared, server.pid, load)
                    runs[name].append(r["server_us_per_msg"])
                    print(
                        f"  round {n + 1} {name:8s} {r['server_us_per_msg']:6.2f} us/msg"
                        f"  {r['msgs_per_s']:>8,} msgs/s",
                        file=sys.stderr,
                    )
        finally:
            scraper.stop()
    ratios = [b / a for a, b in zip(runs["off"], runs["on"], strict=True)]
    off_m, on_m = statistics.median(runs["off"]), statistics.median(runs["on"])
    return {
        "us_per_ping": {k: bl.median(v) for k, v in runs.items()},
        "runs": runs,
        "on_over_off_ratio_of_medians": round(on_m / off_m, 3),
        "on_over_off_median_of_round_ratios": round(statistics.median(ratios), 3),
        "verb_over_py_limit": round(off_m / statistics.median(runs["py_limit"]), 3),
        "scrapes_during_load": scraper.count,
        "scrapes_failed": scraper.failed,
        "target": "at most 1.02x",
    }


def open_sessions(port: int, n: int) -> list[socket.socket]:
    socks = []
    for i in range(n):
        s = socket.create_connection(("127.0.0.1", port), 10)
        socks.append(s)
        if i % 500 == 499:
            time.sleep(0.05)  # let the accept loop keep up
    return socks


def part_b(args: argparse.Namespace) -> dict[str, Any]:
    bl.raise_nofile(args.sessions + 1000)
    port = bl.free_port()
    with bl.Servers() as servers:
        server = servers.start(metrics_server("metrics-10k", port))
        socks = open_sessions(server.port, args.sessions)
        try:
            deadline = time.monotonic() + 60
            needle = f'verb_sessions{{protocol="json"}} {float(args.sessions)}'.encode()
            while needle not in http_get(port):
                if time.monotonic() > deadline:
                    raise RuntimeError("the server never showed every session")
                time.sleep(0.5)
            for _ in range(5):
                http_get(port)  # warm up
            walls = []
            cpu0 = server.cpu_s()
            for _ in range(args.scrapes):
                t0 = time.perf_counter()
                body = http_get(port)
                walls.append((time.perf_counter() - t0) * 1000)
            cpu1 = server.cpu_s()
        finally:
            for s in socks:
                s.close()
    walls.sort()
    return {
        "sessions": args.sessions,
        "scrapes": args.scrapes,
        "scrape_wall_ms": {
            "median": round(statistics.median(walls), 2),
            "p95": round(walls[int(len(walls) * 0.95) - 1], 2),
            "max": round(walls[-1], 2),
        },
        "server_cpu_ms_per_scrape": round((cpu1 - cpu0) * 1000 / args.scrapes, 2),
        "exposition_bytes": len(body.partition(b"\r\n\r\n")[2]),
        "target": "under 5 ms",
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--sessions", type=int, default=10000)
    parser.add_argument("--scrapes", type=int, default=50)
    parser.add_argument("--shared", default=None)
    parser.add_argument("--skip-a", action="store_true")
    parser.add_argument("--skip-b", action="store_true")
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    bl.exit_on_signals()
    shared = bl.shared_dir(args.shared)
    now = datetime.datetime.now(datetime.UTC)
    result: dict[str, Any] = {"when": now.isoformat(), "machine": bl.machine()}
    if not args.skip_a:
        result["cpu_per_ping"] = part_a(args, shared)
        print(result["cpu_per_ping"], file=sys.stderr)
    if not args.skip_b:
        result["one_scrape"] = part_b(args)
        print(result["one_scrape"], file=sys.stderr)
    path = Path(args.out) if args.out else bl.result_path("metrics", now)
    bl.write_json(path, result)
    print(f"written {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
