"""What the console costs: refresh time with 10,000 sessions, and server CPU per message.

Part A, refresh time. The console app is built as ``verb-console`` builds it
(:func:`build_app`) and run headless with ``app.run_test`` at 120x40, on uvloop;
its startup starts the real server in the app's loop. A child process opens
10,000 real json connections on loopback and keeps some of them pinging without
pause (each pinger sends its next ping when the pong arrives), so the hub's
counters move while the console samples them. With every connection shown in
the Connections table, one refresh of that pane (``refresh_view(now)``: sample
the view, sort, filter, diff the visible lines) is timed many times, in wall
time and in this thread's CPU time, for the default sort and for two sorts that
reorder under traffic. Target: under 20 ms.

Part B, CPU per message. Two server processes run side by side:
``verb-console`` with its console really rendering to a pseudo-terminal of
120x40 (this script reads and discards what it draws), and
``verb-console --headless``. Each round loads each of them, in alternating
order, with ``cpu_per_msg.py PID -- node loadgen.js ping 127.0.0.1 PORT 50 20 4``
(50 connections x 20 pipelined pings for 4 s) from the shared measuring stick,
which reports the server process's CPU time per pong. Reported: per-server
medians, the ratio of the medians and the median of the per-round ratios,
console / headless. Target: at most 1.15x.

    .venv/bin/python bench/console_cost.py [--sessions 10000] [--pingers 50]
        [--samples 240] [--rounds 5] [--filter TEXT ...] [--shared DIR] [--skip-a]
        [--skip-b] [--out FILE]

Figures of 2026-11-25 (2 cores, Python 3.11, uvloop), one run:

- A: 10,000 sessions, 50 pinging: one refresh 56.6 ms median, 206 ms p95,
  243 ms max wall (53.8 / 196 / 222 ms CPU): target missed. Nearly all of it is
  ``Hub.sessions_info()`` building 10,000 frozen ``SessionInfo`` records per
  tick (about 5 us each), and the p95 is the garbage collector's full
  collections that these allocations set off.
- B: 9.01 vs 8.31 us of server CPU per ping, console / headless 1.08x (ratio
  of medians), 1.07x (median of the 5 round ratios): target met.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import fcntl
import json
import logging
import os
import platform
import resource
import shutil
import signal
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import termios
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
DEFAULT_SHARED = REPO.parent / "shared" / "bench"
SIZE = (120, 40)
BUDGET_MS = 20.0
RATIO_TARGET = 1.15


# ----- small helpers ------------------------------------------------------------------


def frame(obj: Any) -> bytes:
    body = json.dumps(obj, separators=(",", ":")).encode()
    return b"%d\n%s" % (len(body), body)


def raise_nofile(want: int) -> int:
    """Raise this process's soft RLIMIT_NOFILE towards ``want`` (children inherit it)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = want if hard == resource.RLIM_INFINITY else min(want, hard)
    if soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def percentile(values: Sequence[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * p))]


def summary_ms(seconds: Sequence[float]) -> dict[str, float]:
    ms = [s * 1000 for s in seconds]
    return {
        "median": round(statistics.median(ms), 2),
        "p95": round(percentile(ms, 0.95), 2),
        "max": round(max(ms), 2),
    }


def verb_console_cmd() -> list[str]:
    script = Path(sys.executable).parent / "verb-console"
    if script.is_file():
        return [str(script)]
    found = shutil.which("verb-console")
    return [found] if found else [sys.executable, "-m", "verb_console"]


# ----- part A: the client side, run in a child process ---------------------------------


class _Client(asyncio.Protocol):
    """One json connection; a pinger sends its next ping as soon as a pong arrives."""

    def __init__(self, counts: dict[str, int], welcomed: asyncio.Event, need: int) -> None:
        self.counts = counts
        self.welcomed = welcomed
        self.need = need
        self.buf = bytearray()
        self.transport: asyncio.Transport | None = None
        self.pinger = False

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
            body = bytes(buf[nl + 1 : nl + 1 + n])
            del buf[: nl + 1 + n]
            if b'"welcome"' in body:
                self.counts["welcome"] += 1
                if self.counts["welcome"] >= self.need:
                    self.welcomed.set()
            elif b'"pong"' in body:
                self.counts["pong"] += 1
                if self.pinger and self.transport is not None:
                    self.transport.write(PING)

    def connection_lost(self, exc: Exception | None) -> None:
        self.counts["lost"] += 1


PING = frame({"type": "ping"})


async def serve_clients(port: int, sessions: int, pingers: int) -> None:
    """Open ``sessions`` connections, start ``pingers`` of them, run until stdin closes."""
    loop = asyncio.get_running_loop()
    counts = {"welcome": 0, "pong": 0, "lost": 0}
    welcomed = asyncio.Event()
    clients: list[_Client] = []
    batch = 500
    for start in range(0, sessions, batch):
        made = await asyncio.gather(
            *(
                loop.create_connection(
                    lambda: _Client(counts, welcomed, sessions), "127.0.0.1", port
                )
                for _ in range(min(batch, sessions - start))
            )
        )
        clients.extend(c for _, c in made)
    await asyncio.wait_for(welcomed.wait(), 60)
    for client in clients[:: max(1, sessions // max(1, pingers))][:pingers]:
        client.pinger = True
        assert client.transport is not None
        client.transport.write(PING * 4)  # four in flight per pinger
    print(f"ready {counts['welcome']}", flush=True)

    stdin_closed = asyncio.Event()

    def on_stdin() -> None:
        if not os.read(sys.stdin.fileno(), 4096):
            stdin_closed.set()

    loop.add_reader(sys.stdin.fileno(), on_stdin)
    await stdin_closed.wait()
    print(json.dumps(counts), flush=True)
    for client in clients:
        if client.transport is not None:
            client.transport.close()
    await asyncio.sleep(1.0)  # let the closes go out as FINs, not resets at exit


# ----- part A: the console side --------------------------------------------------------


async def refresh_cost(
    sessions: int, pingers: int, samples: int, filters: Sequence[str] = ()
) -> dict[str, Any]:
    from verb_console.console.panes.connections import ConnectionsPane
    from verb_console.console.run import build_app
    from verb_console.settings import Settings

    # As in ``verb-console``: the hub's warnings (a client hanging up, say) stay off
    # the terminal, which belongs to the UI.
    logging.getLogger("verb_console").addHandler(logging.NullHandler())
    logging.getLogger("verb_console").propagate = False
    upload_dir = tempfile.mkdtemp(prefix="console-cost-")
    settings = Settings(
        port=0,
        protocol="json",
        upload_dir=upload_dir,
        max_per_ip=0,
        max_connections=max(20000, sessions + 100),
    )
    app, runtime = build_app(settings)
    result: dict[str, Any] = {"sessions": sessions, "pingers": pingers}
    child: subprocess.Popen[str] | None = None
    try:
        async with app.run_test(size=SIZE) as pilot:
            while runtime.server is None:
                await asyncio.sleep(0.05)
            child = subprocess.Popen(
                [
                    sys.executable,
                    __file__,
                    "--serve-clients",
                    str(runtime.port),
                    str(sessions),
                    str(pingers),
                ],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                text=True,
            )
            assert child.stdout is not None
            loop = asyncio.get_running_loop()
            t0 = time.monotonic()
            line = await asyncio.wait_for(loop.run_in_executor(None, child.stdout.readline), 180)
            if not line.startswith("ready"):
                raise RuntimeError(f"the client process failed: {line!r}")
            result["connect_seconds"] = round(time.monotonic() - t0, 1)
            hub = runtime.hub
            while len(hub.sessions) < sessions:
                await asyncio.sleep(0.1)
            pane = app.main.pane("connections")
            assert isinstance(pane, ConnectionsPane)
            await pilot.pause(1.0)  # a few of the app's own ticks
            if len(pane.table.rows) != sessions:
                raise RuntimeError(f"the table shows {len(pane.table.rows)} of {sessions}")

            sorts = {"uptime (default)": 3, "idle": 4, "msgs in": 5}
            per_sort: dict[str, Any] = {}
            all_wall: list[float] = []
            all_cpu: list[float] = []
            msgs0, w0 = hub.stats.msgs_in, time.monotonic()
            for label, column in sorts.items():
                pane.table.sort_by(column, False)
                wall: list[float] = []
                cpu: list[float] = []
                for _ in range(samples // len(sorts)):
                    # Let traffic (and the app's own 4 Hz ticks) run between samples.
                    await asyncio.sleep(0.03)
                    c = time.thread_time()
                    w = time.perf_counter()
                    pane.refresh_view(time.time())
                    wall.append(time.perf_counter() - w)
                    cpu.append(time.thread_time() - c)
                per_sort[label] = {"wall_ms": summary_ms(wall), "cpu_ms": summary_ms(cpu)}
                all_wall += wall
                all_cpu += cpu
            # The filter line, as typed after "/": each one with the default sort.
            pane.table.sort_by(sorts["uptime (default)"], False)
            per_filter: dict[str, Any] = {}
            for text in filters:
                pane.table.set_filter(text)
                wall, cpu = [], []
                for _ in range(max(10, samples // len(sorts))):
                    await asyncio.sleep(0.03)
                    c = time.thread_time()
                    w = time.perf_counter()
                    pane.refresh_view(time.time())
                    wall.append(time.perf_counter() - w)
                    cpu.append(time.thread_time() - c)
                per_filter[text] = {
                    "rows_shown": len(pane.table.rows),
                    "wall_ms": summary_ms(wall),
                    "cpu_ms": summary_ms(cpu),
                }
            pane.table.set_filter("")
            if per_filter:
                result["per_filter"] = per_filter
            elapsed = time.monotonic() - w0
            result["msgs_in_per_s_while_measuring"] = round((hub.stats.msgs_in - msgs0) / elapsed)
            result["rows_shown"] = len(pane.table.rows)
            result["samples"] = len(all_wall)
            result["wall_ms"] = summary_ms(all_wall)
            result["cpu_ms"] = summary_ms(all_cpu)
            result["per_sort"] = per_sort

            # One whole tick (header, drain banner, log collection, pane) for comparison.
            ticks: list[float] = []
            for _ in range(30):
                await asyncio.sleep(0.03)
                w = time.perf_counter()
                app.refresh_once()
                ticks.append(time.perf_counter() - w)
            result["whole_tick_wall_ms"] = summary_ms(ticks)

            assert child.stdin is not None
            child.stdin.close()
            tail = await loop.run_in_executor(None, child.stdout.read)
            with contextlib.suppress(ValueError, IndexError):
                result["client_counts"] = json.loads(tail.strip().splitlines()[-1])
            runtime.hub.force_shutdown()
            await asyncio.wait_for(runtime.hub.wait_stopped(), 30)
    finally:
        if child is not None and child.poll() is None:
            child.kill()
            child.wait()
        shutil.rmtree(upload_dir, ignore_errors=True)
    return result


def part_a(args: argparse.Namespace) -> dict[str, Any]:
    import uvloop

    return uvloop.run(refresh_cost(args.sessions, args.pingers, args.samples, args.filter))


# ----- part B: console vs headless, CPU per message ------------------------------------


class PtyConsole:
    """``verb-console`` with its UI on a 120x40 pseudo-terminal that is read and discarded."""

    def __init__(self, cmd: list[str], cols: int = SIZE[0], rows: int = SIZE[1]) -> None:
        master, slave = os.openpty()
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))
        env = dict(os.environ, TERM="xterm-256color", COLORTERM="truecolor")
        env.pop("TEXTUAL", None)

        def controlling_tty() -> None:
            os.setsid()
            fcntl.ioctl(0, termios.TIOCSCTTY, 0)

        self.proc = subprocess.Popen(
            cmd,
            stdin=slave,
            stdout=slave,
            stderr=slave,
            env=env,
            preexec_fn=controlling_tty,
            close_fds=True,
        )
        os.close(slave)
        self.master = master
        self.drawn = 0
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        while True:
            try:
                data = os.read(self.master, 65536)
            except OSError:
                return
            if not data:
                return
            self.drawn += len(data)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def stop(self) -> None:
        if self.proc.poll() is None:
            # Two signals: the first drains gracefully, the second closes everything now.
            for _ in range(2):
                with contextlib.suppress(ProcessLookupError):
                    self.proc.send_signal(signal.SIGTERM)
                time.sleep(0.3)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        with contextlib.suppress(OSError):
            os.close(self.master)


def wait_listening(port: int, proc: subprocess.Popen[Any], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with status {proc.returncode}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.5):
            return
        time.sleep(0.1)
    raise RuntimeError(f"nothing listening on {port} after {timeout}s")


def cpu_per_msg(shared: Path, pid: int, port: int) -> dict[str, Any]:
    node = shutil.which("node")
    if node is None:
        sys.exit("node (Node.js) is needed for the load generator")
    load = [node, str(shared / "loadgen.js"), "ping", "127.0.0.1", str(port), "50", "20", "4"]
    cmd = [sys.executable, str(shared / "cpu_per_msg.py"), str(pid), "--", *load]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=120).stdout
    result: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
    if "server_us_per_msg" not in result:
        raise RuntimeError(f"the load failed: {result}")
    return result


def part_b(args: argparse.Namespace) -> dict[str, Any]:
    shared = Path(args.shared) if args.shared else DEFAULT_SHARED
    base = ["--protocol", "json", "--max-per-ip", "100000"]
    upload_dirs = [tempfile.mkdtemp(prefix="console-cost-") for _ in range(2)]
    console_port, headless_port = free_port(), free_port()
    console: PtyConsole | None = None
    headless: subprocess.Popen[bytes] | None = None
    runs: dict[str, list[dict[str, Any]]] = {"console": [], "headless": []}
    drawn_per_s: list[float] = []
    try:
        console = PtyConsole(
            [
                *verb_console_cmd(),
                "--port",
                str(console_port),
                "--upload-dir",
                upload_dirs[0],
                *base,
            ]
        )
        headless = subprocess.Popen(
            [
                *verb_console_cmd(),
                "--headless",
                "--port",
                str(headless_port),
                "--upload-dir",
                upload_dirs[1],
                *base,
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_listening(console_port, console.proc)
        wait_listening(headless_port, headless)
        time.sleep(1.0)
        if console.drawn < 1000:
            raise RuntimeError("the console has drawn nothing on its terminal")
        servers = {
            "console": (console.pid, console_port),
            "headless": (headless.pid, headless_port),
        }
        for n in range(args.rounds):
            order = ["console", "headless"] if n % 2 == 0 else ["headless", "console"]
            for name in order:
                pid, port = servers[name]
                drawn0, t0 = console.drawn, time.monotonic()
                r = cpu_per_msg(shared, pid, port)
                if name == "console":
                    drawn_per_s.append((console.drawn - drawn0) / (time.monotonic() - t0))
                runs[name].append(r)
                print(
                    f"  round {n + 1} {name:8s} {r['server_us_per_msg']:6.2f} us/msg"
                    f"  {r['msgs_per_s']:>7,} msgs/s",
                    file=sys.stderr,
                )
                time.sleep(0.5)
        if console.proc.poll() is not None:
            raise RuntimeError("the console exited during the load")
    finally:
        if console is not None:
            console.stop()
        if headless is not None and headless.poll() is None:
            headless.send_signal(signal.SIGTERM)
            try:
                headless.wait(10)
            except subprocess.TimeoutExpired:
                headless.kill()
        for d in upload_dirs:
            shutil.rmtree(d, ignore_errors=True)
    us = {name: [r["server_us_per_msg"] for r in rs] for name, rs in runs.items()}
    med = {name: statistics.median(v) for name, v in us.items()}
    per_round = [c / h for c, h in zip(us["console"], us["headless"], strict=True)]
    return {
        "load": "node loadgen.js ping 127.0.0.1 PORT 50 20 4",
        "rounds": args.rounds,
        "us_per_msg": us,
        "msgs_per_s": {name: [r["msgs_per_s"] for r in rs] for name, rs in runs.items()},
        "median_us_per_msg": {k: round(v, 2) for k, v in med.items()},
        "ratio_of_medians": round(med["console"] / med["headless"], 3),
        "median_of_round_ratios": round(statistics.median(per_round), 3),
        "console_terminal_output_kib_per_s": round(statistics.median(drawn_per_s) / 1024, 1),
    }


# ----- report --------------------------------------------------------------------------


def report(results: dict[str, Any]) -> None:
    a = results.get("refresh")
    if a:
        print(
            f"\nA. One refresh of the Connections pane, {a['rows_shown']:,} live sessions, "
            f"{a['pingers']} pinging ({a['msgs_in_per_s_while_measuring']:,} msgs/s in), "
            f"{a['samples']} samples"
        )
        print(f"   {'sort':18s} {'wall median/p95/max ms':>26s}   {'cpu median/p95/max ms':>24s}")
        rows = [*a["per_sort"].items(), ("all", {"wall_ms": a["wall_ms"], "cpu_ms": a["cpu_ms"]})]
        for label, r in rows:
            w, c = r["wall_ms"], r["cpu_ms"]
            print(
                f"   {label:18s} {w['median']:8.2f} {w['p95']:8.2f} {w['max']:8.2f}"
                f"   {c['median']:8.2f} {c['p95']:8.2f} {c['max']:8.2f}"
            )
        for text, r in a.get("per_filter", {}).items():
            w, c = r["wall_ms"], r["cpu_ms"]
            print(
                f"   filter {text!r} ({r['rows_shown']:,} rows): wall {w['median']:.2f} /"
                f" {w['p95']:.2f} / {w['max']:.2f} ms, cpu {c['median']:.2f} /"
                f" {c['p95']:.2f} / {c['max']:.2f} ms"
            )
        t = a["whole_tick_wall_ms"]
        verdict = "met" if a["wall_ms"]["median"] < BUDGET_MS else "MISSED"
        print(f"   whole tick (refresh_once): median {t['median']} ms, max {t['max']} ms")
        print(f"   target: median under {BUDGET_MS:g} ms: {verdict}")
    b = results.get("cpu_per_msg")
    if b:
        print(f"\nB. Server CPU per ping, {b['load']}, {b['rounds']} interleaved rounds")
        for name in ("console", "headless"):
            values = " ".join(f"{v:.2f}" for v in b["us_per_msg"][name])
            print(f"   {name:8s} median {b['median_us_per_msg'][name]:6.2f} us/msg   ({values})")
        verdict = "met" if b["median_of_round_ratios"] <= RATIO_TARGET else "MISSED"
        print(
            f"   console / headless: {b['ratio_of_medians']:.3f}x (ratio of medians), "
            f"{b['median_of_round_ratios']:.3f}x (median of round ratios); "
            f"target <= {RATIO_TARGET}x: {verdict}"
        )
        print(
            f"   the console drew {b['console_terminal_output_kib_per_s']} KiB/s "
            "to its terminal under load"
        )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sessions", type=int, default=10000, help="live sessions for part A")
    p.add_argument("--pingers", type=int, default=50, help="sessions pinging in part A")
    p.add_argument("--samples", type=int, default=240, help="timed refreshes in part A")
    p.add_argument("--rounds", type=int, default=5, help="interleaved rounds in part B")
    p.add_argument("--shared", help="the shared bench dir (default <repo>/../shared/bench)")
    p.add_argument(
        "--filter",
        action="append",
        default=[],
        help="also time part A with this filter line (repeatable): 'proto:json idle>60'",
    )
    p.add_argument("--skip-a", action="store_true", help="skip the refresh timing")
    p.add_argument("--skip-b", action="store_true", help="skip console vs headless CPU")
    p.add_argument("--out", type=Path, help="also write the figures to this JSON file")
    p.add_argument("--serve-clients", nargs=3, type=int, help=argparse.SUPPRESS)
    args = p.parse_args(argv)

    if args.serve_clients:
        import uvloop

        port, sessions, pingers = args.serve_clients
        uvloop.run(serve_clients(port, sessions, pingers))
        return 0

    nofile = raise_nofile(2 * args.sessions + 1024)
    if nofile < args.sessions + 200:
        sys.exit(f"RLIMIT_NOFILE is {nofile}, too low for {args.sessions} connections")
    results: dict[str, Any] = {
        "machine": {
            "cores": os.cpu_count(),
            "python": platform.python_version(),
            "rlimit_nofile": nofile,
        }
    }
    if not args.skip_a:
        print("A: opening connections and timing refreshes...", file=sys.stderr)
        results["refresh"] = part_a(args)
    if not args.skip_b:
        print("B: console vs headless under ping load...", file=sys.stderr)
        results["cpu_per_msg"] = part_b(args)
    report(results)
    if args.out:
        args.out.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
