"""What accepting through the PROXY protocol costs (PROTOCOL.md 12.4): connections
per second and server CPU per connection, plain against PROXY v1 and v2 headers
from a trusted address, alternated in one run (target: at most 1.1x).

Each connection is opened, sends its header (when proxied) and a ping, reads the
welcome and the pong, and closes; ``--parallel`` of them run at once. The load
is Python, pinned apart from the server (as bench/compare.py); the server's CPU
is read from /proc, and on a busy 2-core machine it is the fairer figure.

    .venv/bin/python bench/proxy_accept.py [--rounds 6] [--seconds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import itertools
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchlib import (
    VERB_READY,
    Server,
    Servers,
    exit_on_signals,
    machine,
    median,
    pin_load,
    result_path,
    table,
    verb_console_cmd,
    write_json,
)

TARGET = 1.1
KINDS = ("plain", "v1", "v2")
ORDERS = [list(p) for p in itertools.permutations(KINDS)]


def server(name: str, proxied: bool) -> Server:
    argv = [*verb_console_cmd(), "--headless", "--port", "0", "--protocol", "json"]
    argv += ["--max-per-ip", "0", "--idle-timeout", "0", "--max-connections", "100000"]
    if proxied:
        argv += ["--proxy-protocol", "127.0.0.1/32"]
    env = {"VERB_CONSOLE_LOOP": "uvloop"}
    return Server(name, argv, VERB_READY, env=env, cwd=Path(tempfile.gettempdir()))


# --------------------------------------------------------------- load (a child process)


async def load(port: int, kind: str, parallel: int, seconds: float) -> dict:
    from verb_console.protocols.proxy import encode_v1, encode_v2

    ping = b'15\n{"type":"ping"}'
    counts = [0] * parallel
    deadline = [0.0]
    start = asyncio.Event()

    async def one(i: int) -> None:
        n = 0
        await start.wait()
        while time.monotonic() < deadline[0]:
            n += 1
            source = (f"198.51.{i}.{n % 250 + 1}", 1024 + n % 60000)
            if kind == "v1":
                first = encode_v1(source, ("127.0.0.1", port)) + ping
            elif kind == "v2":
                first = encode_v2(source, ("127.0.0.1", port)) + ping
            else:
                first = ping
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.write(first)
            for _ in range(2):  # welcome, pong
                header = await reader.readuntil(b"\n")
                await reader.readexactly(int(header))
            writer.close()
            counts[i] += 1

    tasks = [asyncio.create_task(one(i)) for i in range(parallel)]
    await asyncio.sleep(0.2)
    print("GO", flush=True)
    deadline[0] = time.monotonic() + seconds
    start.set()
    await asyncio.gather(*tasks)
    return {"connections": sum(counts), "seconds": seconds}


def child(argv: list[str]) -> None:
    import uvloop

    port, kind, parallel, seconds = int(argv[0]), argv[1], int(argv[2]), float(argv[3])
    print(json.dumps(uvloop.run(load(port, kind, parallel, seconds))), flush=True)


# --------------------------------------------------------------- parent


def run_load(srv: Server, kind: str, parallel: int, seconds: float) -> dict:
    cmd = [sys.executable, __file__, "client", str(srv.port), kind, str(parallel), str(seconds)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, preexec_fn=pin_load)
    assert proc.stdout is not None
    line = proc.stdout.readline()
    assert line.strip() == "GO", line
    cpu0 = srv.cpu_s()
    out = proc.stdout.read()
    proc.wait(300)
    cpu1 = srv.cpu_s()
    result: dict = json.loads(out.strip().splitlines()[-1])
    result["server_cpu_s"] = cpu1 - cpu0
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--parallel", type=int, default=8)
    args = parser.parse_args()
    exit_on_signals()
    load_before = os.getloadavg()
    rounds: list[dict[str, Any]] = []
    with Servers() as servers:
        for r in range(args.rounds):
            # Every order in turn, so each kind runs first, second and last as
            # often: on a shared machine the load drifts within a round.
            order = ORDERS[r % len(ORDERS)]
            row: dict[str, Any] = {}
            for kind in order:
                srv = servers.start(server(kind, kind != "plain"))
                result = run_load(srv, kind, args.parallel, args.seconds)
                servers.stop(srv)
                row[f"per_s_{kind}"] = result["connections"] / result["seconds"]
                row[f"cpu_us_{kind}"] = result["server_cpu_s"] / result["connections"] * 1e6
            rounds.append(row)
            print(json.dumps({k: round(v, 1) for k, v in row.items()}), flush=True)
    load_after = os.getloadavg()
    figures: dict[str, Any] = {}
    rows = []
    for kind in ("v1", "v2"):
        rate = median([row["per_s_plain"] / row[f"per_s_{kind}"] for row in rounds])
        cpu = median([row[f"cpu_us_{kind}"] / row["cpu_us_plain"] for row in rounds])
        assert rate is not None and cpu is not None
        figures[kind] = {
            "plain_per_s": median([row["per_s_plain"] for row in rounds]),
            "proxied_per_s": median([row[f"per_s_{kind}"] for row in rounds]),
            "slowdown_paired": rate,
            "cpu_ratio_paired": cpu,
        }
        ok = "yes" if rate <= TARGET else "NO"
        f = figures[kind]
        rows.append(
            [kind, f"{f['plain_per_s']:.0f}", f"{f['proxied_per_s']:.0f}", f"{rate:.3f}",
             f"{cpu:.3f}", ok]
        )  # fmt: skip
    print(
        table(["PROXY", "plain conn/s", "proxied conn/s", "slowdown", "CPU ratio", "<= 1.1x"], rows)
    )
    print(f"load average before {load_before}, after {load_after}")
    out = result_path("proxy_accept", datetime.date.today())
    write_json(
        out,
        {
            "bench": "proxy_accept",
            "machine": machine(),
            "load_before": load_before,
            "load_after": load_after,
            "args": vars(args),
            "rounds": rounds,
            "figures": figures,
        },
    )
    print(f"wrote {out}")


if __name__ == "__main__":
    if sys.argv[1:2] == ["client"]:
        child(sys.argv[2:])
    else:
        main()
