"""The server and its console at 1,000 to 100,000 sessions (issue 21).

N sessions are json streams of mux connections, 256 a connection (a process
here may hold 20,000 descriptors), each in a room of 100 (N/100 rooms, so that
the Rooms pane and its member table have rows), opened by this file run as a child process
(``--open``), which then keeps a trickle of pings going on random streams
(``--churn`` a second) so the consoles have changes to follow. For each of

- headless: ``verb-console --headless``;
- hosted: ``verb-console`` on a pseudo-terminal (120x40, the default refresh),
  the console in the server's own process;
- attached: a headless server and ``verb-console attach`` on a pty,

in one run, it reports:

- memory per session: the server's RSS growth over the opening, per session;
- a bystander's ping: a mux connection of its own pinging on its control
  stream every 20 ms, p50/p99/max, over every pane shown;
- refresh time per pane: the CPU a second the console adds over headless
  (hosted: in the server; attached: in the server and in ``attach``) while
  that pane shows, per refresh;
- the server's slowest loop turns over each mode (``ctl status``: the last
  minute's, with what the turn was doing);
- time to drain: from SIGTERM until the server has exited (each client
  connection closes at its first ``server_shutdown``).

    .venv/bin/python bench/scale.py [--sessions 1000,10000,100000] [--out FILE]
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import json
import os
import random
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))
sys.path.insert(0, str(HERE))

from benchlib import free_port, machine, raise_nofile, write_json  # noqa: E402
from ptyconsole import PtyConsole  # noqa: E402

STREAMS = 256
ROOM_SIZE = 100  # members of each room
REFRESH_HZ = 4.0  # the console's default
PANES = ("1", "2", "3", "4", "5", "6")
PANE_S = 4.0  # seconds each pane shows while measured


def mframe(sid: int, payload: bytes) -> bytes:
    return struct.pack(">II", sid, len(payload)) + payload


def jframe(message: Any) -> bytes:
    body = json.dumps(message, separators=(",", ":")).encode()
    return b"%d\n%s" % (len(body), body)


# ----- the client side: N sessions, then a trickle of pings ---------------------------


class Holder(asyncio.Protocol):
    """One mux connection of 256 json streams; closes at the first server_shutdown."""

    def __init__(self, ready: asyncio.Future[None], first: int) -> None:
        self.ready = ready
        self.first = first  # the session number of its first stream (for its rooms)
        self.created = 0
        self.tail = b""
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        frames = [
            mframe(
                0,
                json.dumps(
                    {"type": "stream_create", "streamId": sid, "streamType": "json", "metadata": {}}
                ).encode(),
            )
            for sid in range(1, 2 * STREAMS, 2)
        ]
        frames += [
            mframe(sid, jframe({"type": "join_room", "room": f"r{(self.first + n) // ROOM_SIZE}"}))
            for n, sid in enumerate(range(1, 2 * STREAMS, 2))
        ]
        transport.write(b"".join(frames))

    def data_received(self, data: bytes) -> None:
        if not self.ready.done():
            # Ready once every stream is in its room; a marker may span two reads.
            seen = self.tail + data
            self.created += seen.count(b'"joined"')
            self.tail = seen[-7:]
            if self.created >= STREAMS:
                self.ready.set_result(None)
        if b'"server_shutdown"' in data and self.transport is not None:
            self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.ready.done():
            self.ready.set_exception(ConnectionError("closed while opening"))


async def hold(port: int, sessions: int, churn: float) -> None:
    loop = asyncio.get_running_loop()
    holders: list[Holder] = []
    connections = -(-sessions // STREAMS)
    for start in range(0, connections, 16):
        batch = []
        for n in range(start, min(connections, start + 16)):
            ready: asyncio.Future[None] = loop.create_future()
            _t, holder = await loop.create_connection(
                lambda r=ready, f=n * STREAMS: Holder(r, f), "127.0.0.1", port
            )
            holders.append(holder)
            batch.append(ready)
        await asyncio.gather(*batch)
    print("ready", flush=True)
    ping = jframe({"type": "ping"})
    every = 1.0 / churn if churn > 0 else 3600.0
    while True:
        await asyncio.sleep(every)
        h = random.choice(holders)
        if h.transport is not None and not h.transport.is_closing():
            h.transport.write(mframe(random.randrange(1, 2 * STREAMS, 2), ping))
        if all(h.transport is None or h.transport.is_closing() for h in holders):
            return


def open_main(port: int, sessions: int, churn: float) -> None:
    raise_nofile(sessions // STREAMS + 1024)
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    asyncio.run(hold(port, sessions, churn))


# ----- measuring -----------------------------------------------------------------


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def cpu_s(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as fh:
        f = fh.read().rsplit(")", 1)[1].split()
    return (int(f[11]) + int(f[12])) / os.sysconf("SC_CLK_TCK")


class Bystander:
    """Pings on a mux connection's control stream every 20 ms, in a thread."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port))
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.rtts: list[float] = []
        self.on = threading.Event()
        self.stopped = False
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        buf, n = b"", 0
        while not self.stopped:
            if not self.on.wait(0.05):
                continue
            t0 = time.perf_counter()
            self.sock.sendall(mframe(0, json.dumps({"type": "ping", "ref": n}).encode()))
            while True:
                while len(buf) < 8 or len(buf) < 8 + struct.unpack_from(">II", buf)[1]:
                    data = self.sock.recv(65536)
                    if not data:
                        return
                    buf += data
                sid, size = struct.unpack_from(">II", buf)
                payload, buf = buf[8 : 8 + size], buf[8 + size :]
                if sid == 0 and json.loads(payload).get("ref") == n:
                    break
            self.rtts.append(time.perf_counter() - t0)
            n += 1
            time.sleep(max(0.0, 0.02 - (time.perf_counter() - t0)))

    def take(self) -> list[float]:
        out, self.rtts = self.rtts, []
        return out

    def close(self) -> None:
        self.stopped = True
        self.on.set()
        self.thread.join(5)
        self.sock.close()


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


def server_argv(port: int, sock: Path, sessions: int) -> list[str]:
    argv = ["--port", str(port), "--protocol", "mux", "--max-per-ip", "0"]
    argv += ["--max-connections", str(sessions // STREAMS + 100), "--idle-timeout", "0"]
    return [*argv, "--admin-socket", str(sock), "--grace-period", "60"]


def wait_listening(proc: subprocess.Popen[Any], port: int, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the server exited ({proc.returncode})")
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError("the server never listened")


def open_sessions(port: int, sessions: int, churn: float) -> tuple[subprocess.Popen[str], float]:
    t0 = time.monotonic()
    argv = [sys.executable, __file__, "--open", str(port), str(sessions), str(churn)]
    child = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True)
    assert child.stdout is not None
    line = child.stdout.readline()
    if not line.startswith("ready"):
        raise RuntimeError(f"the sessions did not open: {line!r}")
    return child, time.monotonic() - t0


def headless_proc(port: int, sock: Path, sessions: int, cwd: str) -> subprocess.Popen[Any]:
    argv = [sys.executable, "-m", "verb_console", "--headless", *server_argv(port, sock, sessions)]
    return subprocess.Popen(
        argv,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        cwd=cwd,
    )


def slowest_turns(sock: Path) -> list[list[Any]]:
    """The server's slowest loop turns of the last minute ([ms, doing, seconds ago]), from
    ``ctl status``."""
    argv = [sys.executable, "-m", "verb_console", "ctl", "--admin-socket", str(sock)]
    done = subprocess.run([*argv, "--json", "status"], capture_output=True, text=True, timeout=60)
    if done.returncode != 0:
        return []
    turns = json.loads(done.stdout)["slowest_turns"]
    return [[t["duration_ms"], t["doing"], round(t["at"] - time.time(), 1)] for t in turns]


def drain(proc: subprocess.Popen[Any]) -> float:
    t0 = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    proc.wait(600)
    return round(time.monotonic() - t0, 3)


def one_mode(mode: str, sessions: int, churn: float) -> dict[str, Any]:
    port = free_port()
    tmp = tempfile.mkdtemp(prefix="bench-scale-")
    sock = Path(tmp) / "admin.sock"
    console: PtyConsole | None = None
    attach: PtyConsole | None = None
    if mode == "hosted":
        console = PtyConsole(server_argv(port, sock, sessions), cols=120, rows=40, cwd=tmp)
        server: subprocess.Popen[Any] = console.proc
    else:
        server = headless_proc(port, sock, sessions, tmp)
    wait_listening(server, port)
    time.sleep(1.0)
    rss0 = rss_kib(server.pid)
    clients, opened_s = open_sessions(port, sessions, churn)
    time.sleep(2.0)
    out: dict[str, Any] = {
        "open_s": round(opened_s, 1),
        "memory_per_session_kib": round((rss_kib(server.pid) - rss0) / sessions, 2),
    }
    if mode == "attached":
        attach = PtyConsole(["attach", "--admin-socket", str(sock)], cols=120, rows=40, cwd=tmp)
        attach.wait_for("SESSION", timeout=60)
    if console is not None:
        console.wait_for("SESSION", timeout=60)
    by = Bystander(port)
    shown_at = time.monotonic()
    panes: dict[str, Any] = {}
    every: list[float] = []
    for key in PANES if mode != "headless" else ("-",):
        shown = console or attach
        if shown is not None:
            shown.type(key)
        time.sleep(1.0)
        c0 = cpu_s(server.pid)
        a0 = cpu_s(attach.proc.pid) if attach is not None else 0.0
        by.take()
        by.on.set()
        t0 = time.monotonic()
        time.sleep(PANE_S)
        took = time.monotonic() - t0
        by.on.clear()
        rtts = by.take()
        every += rtts
        row: dict[str, Any] = {"server_cpu_per_s": round((cpu_s(server.pid) - c0) / took, 4)}
        if attach is not None:
            row["attach_cpu_per_s"] = round((cpu_s(attach.proc.pid) - a0) / took, 4)
        row["bystander"] = summary(rtts)
        panes[key] = row
    out["panes"] = panes
    out["bystander"] = summary(every)
    # Turns more seconds ago than the panes took came before them (start, opening).
    out["panes_s"] = round(time.monotonic() - shown_at, 1)
    out["slowest_turns"] = slowest_turns(sock)
    by.close()
    if attach is not None:
        attach.stop()
    out["drain_s"] = drain(server)
    if console is not None:
        console.stop()
    clients.kill()
    clients.wait(10)
    return out


def run(args: argparse.Namespace) -> dict[str, Any]:
    raise_nofile(65536)
    results: dict[str, Any] = {
        "bench": "scale",
        "when": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "machine": machine(),
        "churn_pings_per_s": args.churn,
        "refresh_hz": REFRESH_HZ,
        "runs": {},
    }
    for sessions in args.sessions:
        load0 = os.getloadavg()[0]
        by_mode = {}
        for mode in ("headless", "hosted", "attached"):
            print(f"{sessions} sessions, {mode}...", file=sys.stderr, flush=True)
            by_mode[mode] = one_mode(mode, sessions, args.churn)
            print(f"  {json.dumps(by_mode[mode])}", file=sys.stderr, flush=True)
        base = by_mode["headless"]["panes"]["-"]["server_cpu_per_s"]
        for mode in ("hosted", "attached"):
            for row in by_mode[mode]["panes"].values():
                extra = row["server_cpu_per_s"] - base + row.get("attach_cpu_per_s", 0.0)
                row["refresh_ms"] = round(max(0.0, extra) / REFRESH_HZ * 1000, 2)
        hosted = by_mode["hosted"]["bystander"].get("p99_ms")
        alone = by_mode["headless"]["bystander"].get("p99_ms")
        by_mode["hosted_p99_over_headless"] = round(hosted / alone, 2) if alone else None
        by_mode["load_avg_1m"] = [round(load0, 2), round(os.getloadavg()[0], 2)]
        results["runs"][str(sessions)] = by_mode
    return results


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--open":
        open_main(int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4]))
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--sessions", default="1000,10000", type=lambda s: [int(x) for x in s.split(",")]
    )
    parser.add_argument("--churn", type=float, default=200.0, help="pings a second, in all")
    today = datetime.date.today()
    parser.add_argument("--out", default=str(HERE / "results" / f"scale-{today}.json"))
    args = parser.parse_args()
    results = run(args)
    write_json(Path(args.out), results)
    print(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
