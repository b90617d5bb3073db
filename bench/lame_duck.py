"""Lame duck with many sessions (PROTOCOL.md 11.3): the longest loop turn of a draining server.

A server (this file with ``--serve``, a child process: RLIMIT_NOFILE is per
process) holds N json connections that this process opens. The drain then
closes them gradually over the grace period; the server samples its own loop
(a 2 ms timer: how late it ran is the longest turn before it, and the CPU
time spent between two samples, which a loaded machine does not inflate) from
the drain's start to its end, and this process records when each client got ``closing``.
Figures: the slowest turns, and how the closes spread (the quantiles of the
close times against the schedule's 10% + 90% x k/n of the grace period).

    .venv/bin/python bench/lame_duck.py [--connections 10000] [--grace 10]

The drain to a second node of a cluster, and what the clients recover there,
is bench/lame_duck_cluster.py.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchlib import exit_on_signals, machine, raise_nofile, result_path, write_json

SAMPLE_S = 0.002


# ----------------------------------------------------------- the server (child)
async def serve(n: int, grace: float) -> None:
    import asyncio.base_events

    from verb_console.runtime import Runtime
    from verb_console.settings import Settings

    tmp = Path(tempfile.mkdtemp(prefix="lame-duck-"))
    runtime = Runtime(
        Settings(
            host="127.0.0.1",
            port=0,
            protocol="json",
            grace_period=grace,
            max_connections=n + 100,
            max_per_ip=0,
            admin_socket=str(tmp / "admin.sock"),
            upload_dir=str(tmp / "uploads"),
        )
    )
    await runtime.start()
    print(json.dumps({"port": runtime.port}), flush=True)
    loop = asyncio.get_running_loop()
    await loop.run_in_executor(None, sys.stdin.readline)  # every client is connected
    hub = runtime.hub
    late: list[float] = []
    # CPU this thread spent between two samples: on a loaded machine the wall
    # clock also counts the time the process waited for a core, this does not.
    cpu: list[float] = []
    last_cpu = [time.thread_time()]

    def sample(due: float) -> None:
        now = loop.time()
        late.append(now - due)
        t = time.thread_time()
        cpu.append(t - last_cpu[0])
        last_cpu[0] = t
        if hub.state != "stopped":
            loop.call_at(now + SAMPLE_S, sample, now + SAMPLE_S)

    # Each turn of the loop (one _run_once: every callback ready at once), timed
    # in this thread's CPU time, so a machine short of cores does not inflate it.
    turns: list[float] = []
    base = asyncio.base_events.BaseEventLoop
    run_once = base._run_once  # type: ignore[attr-defined]

    def timed_run_once(self: Any) -> None:
        t = time.thread_time()
        run_once(self)
        turns.append(time.thread_time() - t)

    base._run_once = timed_run_once  # type: ignore[attr-defined]
    started = time.monotonic()
    hub.begin_shutdown()
    loop.call_at(loop.time() + SAMPLE_S, sample, loop.time() + SAMPLE_S)
    await hub.wait_stopped()
    base._run_once = run_once  # type: ignore[attr-defined]
    turns.sort()
    late.sort()
    cpu.sort()
    print(
        json.dumps(
            {
                "drain_s": round(time.monotonic() - started, 3),
                "samples": len(late),
                "max_turn_ms": round(late[-1] * 1000, 2),
                "p99_turn_ms": round(late[int(len(late) * 0.99)] * 1000, 2),
                "turns_over_20ms": sum(1 for x in late if x > 0.020),
                "turns": len(turns),
                "max_turn_cpu_ms": round(turns[-1] * 1000, 2),
                "p99_turn_cpu_ms": round(turns[int(len(turns) * 0.99)] * 1000, 3),
                "turns_over_20ms_cpu": sum(1 for x in turns if x > 0.020),
                "max_cpu_between_samples_ms": round(cpu[-1] * 1000, 2),
                "p99_cpu_between_samples_ms": round(cpu[int(len(cpu) * 0.99)] * 1000, 2),
                "cpu_gaps_over_20ms": sum(1 for x in cpu if x > 0.020),
            }
        ),
        flush=True,
    )


# ----------------------------------------------------------- the clients (this process)
class Client(asyncio.Protocol):
    def __init__(self, started: list[float]) -> None:
        self.started = started
        self.closed_at: float | None = None
        self.buf = b""

    def data_received(self, data: bytes) -> None:
        if self.closed_at is None and b'"closing"' in self.buf[-64:] + data:
            self.closed_at = time.monotonic() - self.started[0]
        self.buf = (self.buf + data)[-128:]


async def drive(args: argparse.Namespace) -> dict[str, Any]:
    raise_nofile(args.connections + 1000)
    server = await asyncio.create_subprocess_exec(
        sys.executable,
        __file__,
        "--serve",
        "--connections",
        str(args.connections),
        "--grace",
        str(args.grace),
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
    )
    assert server.stdout is not None and server.stdin is not None
    port = json.loads(await server.stdout.readline())["port"]
    loop = asyncio.get_running_loop()
    started = [0.0]
    clients: list[Client] = []
    for at in range(0, args.connections, 500):
        batch = min(500, args.connections - at)
        made = await asyncio.gather(
            *(
                loop.create_connection(lambda: Client(started), "127.0.0.1", port)
                for _ in range(batch)
            )
        )
        clients.extend(c for _, c in made)
    await asyncio.sleep(1.0)
    started[0] = time.monotonic()
    server.stdin.write(b"go\n")
    await server.stdin.drain()
    result = json.loads(await server.stdout.readline())
    await server.wait()
    times = sorted(c.closed_at for c in clients if c.closed_at is not None)
    n = len(times)

    def at(q: float) -> float:
        return round(times[min(n - 1, int(q * n))], 2) if n else float("nan")

    schedule = {q: round(args.grace * (0.1 + 0.9 * q), 2) for q in (0.1, 0.5, 0.9)}
    result.update(
        {
            "connections": args.connections,
            "grace_s": args.grace,
            "closing_seen": n,
            "close_s": {f"p{int(q * 100)}": at(q) for q in (0.0, 0.1, 0.5, 0.9, 1.0)},
            "schedule_s": {f"p{int(q * 100)}": v for q, v in schedule.items()},
        }
    )
    return result


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--connections", type=int, default=10_000)
    p.add_argument("--grace", type=float, default=10.0)
    p.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--out", type=Path)
    args = p.parse_args(argv)
    if args.serve:
        raise_nofile(args.connections + 1000)
        asyncio.run(serve(args.connections, args.grace))
        return 0
    exit_on_signals()
    when = datetime.datetime.now().astimezone()
    result = asyncio.run(drive(args))
    print(json.dumps(result, indent=2))
    out = args.out or result_path("lame_duck", when)
    write_json(out, {"when": when.isoformat(), "machine": machine(), "result": result})
    print(f"written to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
