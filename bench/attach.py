"""The admin socket and ``verb-console attach`` at 10,000 sessions.

A headless server holds 10,000 idle json sessions (opened by
``console_cost.py --serve-clients`` in a child process). Measured, in one run:

- page: one ``sessions`` request for a page of 100, sorted by ``bytes_out``
  (reversed) and filtered on ``127.0.0.1`` (every session matches, the worst
  case), round trip over the admin socket, many times. Target: at most 5 ms.
- first frame: ``verb-console attach`` started on a pseudo-terminal until it
  draws the live table with a session in it. Target: under 1 s. (Also given:
  the same without the Python process start, i.e. connect + first round of
  the remote view, measured in this process.)
- re-attach: the server is killed and started again on the same admin socket;
  from its listening line until the attached console shows a session of the
  new server. Target: under 2 s.
- per round: the server's CPU time per round of an attached console's view
  (``RemoteHubView`` in this process, rounds back to back, the Connections
  pane's default order: newest first), over many rounds, less the server's
  idle CPU over the same time. What an attached console costs the server four
  times a second, without the load generator's noise.
- CPU: server CPU per ping (``cpu_per_msg.py`` with ``loadgen.js ping``, 50
  connections x 20 pipelined, 4 s) of two headless servers of 10,000 sessions
  each, one of them with an attached console drawing on a pty; rounds
  alternate. Target: attached / headless at most 1.05x.

    .venv/bin/python bench/attach.py [--sessions 10000] [--rounds 3] [--shared DIR] [--out FILE]
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))
sys.path.insert(0, str(HERE))

from benchlib import (  # noqa: E402
    cpu_per_msg,
    free_port,
    machine,
    raise_nofile,
    result_path,
    shared_dir,
    verb_console_cmd,
    write_json,
)
from ptyconsole import PtyConsole  # noqa: E402

from verb_console.admin.client import AdminClient  # noqa: E402
from verb_console.admin.remote_view import RemoteHubView  # noqa: E402

PING_LOAD = ["ping", "127.0.0.1", "PORT", 50, 20, 4]


class Headless:
    def __init__(self, port: int, sock: Path, sessions: int) -> None:
        self.port, self.sock = port, sock
        argv = [*verb_console_cmd(), "--headless", "--port", str(port), "--protocol", "json"]
        argv += ["--max-per-ip", "0", "--max-connections", str(sessions + 1000)]
        argv += ["--idle-timeout", "0", "--admin-socket", str(sock)]
        self.dir = tempfile.mkdtemp(prefix="bench-attach-")
        self.proc = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            cwd=self.dir,
            text=True,
        )
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            if "listening on" in line:
                self.ready_at = time.monotonic()
                break
        else:
            raise RuntimeError("the server did not start")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


def open_sessions(port: int, sessions: int) -> subprocess.Popen[str]:
    argv = [sys.executable, str(HERE / "console_cost.py"), "--serve-clients", str(port)]
    child = subprocess.Popen(
        [*argv, str(sessions), "0"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert child.stdout is not None
    line = child.stdout.readline()
    if not line.startswith("ready"):
        raise RuntimeError(f"the clients did not connect: {line!r}")
    return child


async def page_round_trips(sock: Path, count: int) -> list[float]:
    trips = []
    async with await AdminClient.connect(sock) as admin:
        for _ in range(count):
            t0 = time.perf_counter()
            page = await admin.request(
                "sessions", sort="bytes_out", reverse=True, filter="127.0.0.1", limit=100
            )
            trips.append(time.perf_counter() - t0)
            assert len(page["rows"]) == 100
    return trips


async def first_round(sock: Path) -> float:
    view = RemoteHubView(sock)
    t0 = time.monotonic()
    task = asyncio.create_task(view.run())
    while view.first_frame_at is None:
        await asyncio.sleep(0.001)
    view.stop()
    await task
    return view.first_frame_at - t0


def cpu_s(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as fh:
        f = fh.read().rsplit(")", 1)[1].split()
    return (int(f[11]) + int(f[12])) / os.sysconf("SC_CLK_TCK")


class _CountedView(RemoteHubView):
    """A remote view that stops itself after ``want`` rounds."""

    want = 0
    rounds = 0

    async def _round(self, client: AdminClient) -> None:
        await super()._round(client)
        self.rounds += 1
        if self.rounds >= self.want:
            self.stop()


async def view_rounds(sock: Path, rounds: int) -> None:
    view = _CountedView(sock, interval=0.0)
    view.want = rounds
    view.session_page("connected_at", True, "", 0, 200)  # the pane's default: newest first
    await view.run()


def cpu_per_round(server: Headless, rounds: int, repeats: int = 3) -> list[float]:
    """Server CPU (ms) per round of an attached view, less its idle CPU meanwhile."""
    out = []
    for _ in range(repeats):
        c0, t0 = cpu_s(server.proc.pid), time.monotonic()
        time.sleep(1.0)
        idle_per_s = (cpu_s(server.proc.pid) - c0) / (time.monotonic() - t0)
        c0, t0 = cpu_s(server.proc.pid), time.monotonic()
        asyncio.run(view_rounds(server.sock, rounds))
        used = cpu_s(server.proc.pid) - c0 - idle_per_s * (time.monotonic() - t0)
        out.append(round(used / rounds * 1000, 3))
    return out


def ms(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)
    return {
        "median_ms": round(statistics.median(values) * 1000, 2),
        "p95_ms": round(ordered[int(len(ordered) * 0.95) - 1] * 1000, 2),
        "max_ms": round(ordered[-1] * 1000, 2),
    }


def run(args: argparse.Namespace) -> dict[str, object]:
    raise_nofile(4 * args.sessions + 2048)
    shared = shared_dir(args.shared)
    tmp = Path(tempfile.mkdtemp(prefix="bench-attach-sock-"))
    sock_a, sock_b = tmp / "a.sock", tmp / "b.sock"
    port_a, port_b = free_port(), free_port()
    a = Headless(port_a, sock_a, args.sessions)
    b = Headless(port_b, sock_b, args.sessions)
    clients = [open_sessions(port_a, args.sessions), open_sessions(port_b, args.sessions)]
    console: PtyConsole | None = None
    out: dict[str, object] = {"sessions": args.sessions}
    try:
        out["page"] = ms(asyncio.run(page_round_trips(sock_a, 300)))
        out["first_round_in_process_ms"] = round(asyncio.run(first_round(sock_a)) * 1000, 1)
        view_cost = cpu_per_round(a, args.view_rounds)
        out["server_cpu_ms_per_view_round"] = view_cost
        out["server_cpu_ms_per_view_round_median"] = statistics.median(view_cost)
        started = time.monotonic()
        console = PtyConsole(["attach", "--admin-socket", str(sock_a)], cols=160, rows=40)
        console.wait_for("127.0.0.1:", timeout=30)
        out["attach_first_frame_s"] = round(time.monotonic() - started, 3)

        us: dict[str, list[float]] = {"attached": [], "headless": []}
        servers = {"attached": a, "headless": b}
        for n in range(args.rounds):
            for name in ["attached", "headless"] if n % 2 == 0 else ["headless", "attached"]:
                server = servers[name]
                load = [str(server.port) if x == "PORT" else x for x in PING_LOAD]
                result = cpu_per_msg(shared, server.proc.pid, load)
                us[name].append(result["server_us_per_msg"])
                print(f"  round {n + 1} {name:9s} {us[name][-1]:.2f} us/ping", file=sys.stderr)
        med = {k: statistics.median(v) for k, v in us.items()}
        out["cpu_us_per_ping"] = us
        out["cpu_ratio_of_medians"] = round(med["attached"] / med["headless"], 3)
        per_round = [x / y for x, y in zip(us["attached"], us["headless"], strict=True)]
        out["cpu_median_of_round_ratios"] = round(statistics.median(per_round), 3)

        # Restart under the attached console (its sessions go with it).
        clients[0].stdin.close()  # type: ignore[union-attr]
        clients[0].wait(30)
        a.stop()
        console.wait_for("DISCONNECTED", timeout=10)
        time.sleep(0.5)
        a = Headless(port_a, sock_a, args.sessions)
        mark = console.received()
        clients[0] = open_sessions(port_a, 10)
        console.wait_for("127.0.0.1:", since=mark, timeout=30)
        out["reattach_after_restart_s"] = round(time.monotonic() - a.ready_at, 3)
    finally:
        if console is not None:
            console.stop()
        for child in clients:
            if child.poll() is None:
                child.kill()
        a.stop()
        b.stop()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sessions", type=int, default=10000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--view-rounds", type=int, default=400, help="attached-view rounds per CPU sample"
    )
    parser.add_argument("--shared", help="the shared measuring stick (default ../shared/bench)")
    parser.add_argument("--out", help="results file (default bench/results/attach-DATE.json)")
    args = parser.parse_args()
    figures = run(args)
    for key, value in figures.items():
        print(f"{key:>28}: {value}")
    when = datetime.datetime.now(datetime.UTC)
    path = Path(args.out) if args.out else result_path("attach", when)
    print("results:", write_json(path, {"figures": figures, "machine": machine()}))


if __name__ == "__main__":
    main()
