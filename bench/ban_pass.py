"""A ban over many live sessions (PROTOCOL.md 12.3): how long each turn of the
loop that closes them takes (target: none over 20 ms), and how many turns.

One process: a real server (in-process Runtime) and N real client connections
from 127.0.0.2 (the banned address) plus a few from 127.0.0.3 (kept). Each turn
of the ban's pass is timed, with what the closes it makes cost.

    .venv/bin/python bench/ban_pass.py [--sessions 10000]
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import os
import resource
import socket
import tempfile
import time
from pathlib import Path
from typing import Any

from benchlib import machine, result_path, write_json

from verb_console.hub import banning
from verb_console.runtime import Runtime
from verb_console.settings import Settings

TARGET_MS = 20.0


async def connect(port: int, source: str) -> socket.socket:
    sock = socket.socket()
    sock.setblocking(False)
    sock.bind((source, 0))
    await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port))
    return sock


async def run(n: int) -> dict[str, Any]:
    turns: list[float] = []
    cpu: list[float] = []
    step = banning.BanPass._slice

    def timed(self: Any) -> None:
        # Wall time, and this thread's CPU time: on a loaded machine the first
        # also counts the time the process waited for a core.
        start, start_cpu = time.perf_counter(), time.thread_time()
        step(self)
        turns.append((time.perf_counter() - start) * 1000)
        cpu.append((time.thread_time() - start_cpu) * 1000)

    banning.BanPass._slice = timed  # type: ignore[method-assign]
    with tempfile.TemporaryDirectory() as tmp:
        settings = Settings(
            port=0,
            protocol="json",
            max_per_ip=0,
            max_connections=n + 100,
            idle_timeout=0,
            upload_dir=str(Path(tmp) / "up"),
            state_dir=str(Path(tmp) / "state"),
        )
        rt = Runtime(settings)
        await rt.start()
        socks = []
        for i in range(0, n, 500):
            socks += await asyncio.gather(
                *(connect(rt.port, "127.0.0.2") for _ in range(min(500, n - i)))
            )
        kept = [await connect(rt.port, "127.0.0.3") for _ in range(10)]
        while len(rt.hub.sessions) < n + len(kept):
            await asyncio.sleep(0.05)
        started = time.perf_counter()
        wall = time.time()
        rt.hub.banning.ban("127.0.0.2", "bench")
        done = rt.hub.banning.passes[-1]
        await done.done.wait()
        elapsed = time.perf_counter() - started
        closed = done.closed
        await asyncio.sleep(0.05)  # the turn clock's probe notes the last turns
        # Whole turns of the loop during the pass (the slices, the closes'
        # aftermath, anything else), as the hub's turn clock saw them.
        slow = [t for t in rt.hub.turns.slowest(50) if t.at >= wall]
        left = len(rt.hub.sessions)
        for s in socks + kept:
            s.close()
        rt.hub.force_shutdown()
        await rt.hub.wait_stopped()
    return {
        "sessions": n,
        "closed": closed,
        "left_live": left,
        "turns": len(turns),
        "max_turn_ms": max(turns),
        "median_turn_ms": sorted(turns)[len(turns) // 2],
        "max_turn_cpu_ms": max(cpu),
        "max_aftermath_ms": done.longest_aftermath * 1000,
        "slowest_loop_turns_ms": [round(t.duration * 1000, 1) for t in slow[:5]],
        "slowest_loop_turn_labels": [t.doing for t in slow[:5]],
        "pass_s": elapsed,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sessions", type=int, default=10000)
    args = parser.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = min(hard, 2 * args.sessions + 1000)
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    load_before = os.getloadavg()
    result = asyncio.run(run(args.sessions))
    ok = "yes" if result["max_turn_cpu_ms"] <= TARGET_MS else "NO"
    print(
        f"ban over {result['sessions']} sessions: closed {result['closed']} in"
        f" {result['turns']} turns, longest {result['max_turn_ms']:.1f} ms"
        f" (median {result['median_turn_ms']:.1f} ms; CPU at most"
        f" {result['max_turn_cpu_ms']:.1f} ms, <= {TARGET_MS:.0f} ms: {ok}),"
        f" whole pass {result['pass_s'] * 1000:.0f} ms; {result['left_live']} left live"
    )
    print(
        f"closes' aftermath at most {result['max_aftermath_ms']:.1f} ms a turn; slowest loop"
        f" turns during the pass: {result['slowest_loop_turns_ms']} ms"
        f" ({result['slowest_loop_turn_labels']})"
    )
    print(f"load average before {load_before}, after {os.getloadavg()}")
    out = result_path("ban_pass", datetime.date.today())
    write_json(
        out,
        {
            "bench": "ban_pass",
            "machine": machine(),
            "load_before": load_before,
            "args": vars(args),
            "result": result,
        },
    )
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
