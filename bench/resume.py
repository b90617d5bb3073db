"""What session resume and room history cost, and how fast a resume is (PROTOCOL.md 11).

1. ``compare``: server CPU per ping and per fan-out delivery (bench/compare.py's
   load) with ``--resume-window 120 --history-size 100`` against the same server
   with both off (``--history-size 0``), in alternated rounds. Target: on / off
   <= 1.05 for both.
2. ``kept``: a session detached while 1,000 private messages arrive, then
   resumed: the time from sending ``resume`` to the last replayed message.
   Target: p99 < 50 ms.

    .venv/bin/python bench/resume.py [--rounds 5] [--trials 30] [--shared DIR]
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from benchlib import (
    Servers,
    exit_on_signals,
    machine,
    median,
    result_path,
    shared_dir,
    table,
    verb_console_server,
    write_json,
)
from compare import VERB_FLAGS, measure

TARGET = 1.05
KEPT_TARGET_MS = 50.0
OFF, ON = "both off", "resume+history on"
FLAGS = {
    OFF: [*VERB_FLAGS, "--history-size", "0"],
    ON: [*VERB_FLAGS, "--resume-window", "120", "--history-size", "100"],
}


def frame(message: Any) -> bytes:
    body = json.dumps(message, separators=(",", ":")).encode()
    return b"%d\n%s" % (len(body), body)


async def read(reader: asyncio.StreamReader) -> dict[str, Any]:
    n = int(await reader.readuntil(b"\n"))
    return json.loads(await reader.readexactly(n))


async def one_kept_resume(port: int, kept: int) -> float:
    """Detach a session, send it ``kept`` private messages, resume it: ms to the last."""
    r1, w1 = await asyncio.open_connection("127.0.0.1", port)
    welcome = await read(r1)
    r2, w2 = await asyncio.open_connection("127.0.0.1", port)
    await read(r2)
    w1.close()
    await asyncio.sleep(0.05)  # the server notices the EOF and detaches the session
    payload = "x" * 100
    w2.write(
        b"".join(
            frame({"type": "private", "target": welcome["id"], "data": payload})
            for _ in range(kept)
        )
    )
    w2.write(frame({"type": "ping"}))
    while (await read(r2))["type"] != "pong":
        pass
    r3, w3 = await asyncio.open_connection("127.0.0.1", port)
    await read(r3)
    msg = {"type": "resume", "id": welcome["id"], "token": welcome["resume"], "seq": 0}
    t0 = time.perf_counter()
    w3.write(frame(msg))
    reply = await read(r3)
    if reply.get("type") != "resumed" or reply["replayed"] != kept:
        raise RuntimeError(f"resume failed: {reply}")
    # The replay, read in bulk: this measures the server, not a per-message await.
    buf = b""
    frames = 0
    while frames < kept:
        buf += await r3.read(1 << 20)
        while True:
            nl = buf.find(b"\n")
            if nl < 0 or len(buf) < nl + 1 + int(buf[:nl]):
                break
            buf = buf[nl + 1 + int(buf[:nl]) :]
            frames += 1
    elapsed = (time.perf_counter() - t0) * 1000
    w3.write(frame({"type": "bye"}))
    w2.write(frame({"type": "bye"}))
    for w in (w2, w3):
        w.close()
    return elapsed


def kept_bench(servers: Servers, trials: int, kept: int) -> dict[str, Any]:
    server = servers.start(verb_console_server(ON, FLAGS[ON]))
    try:
        times = sorted(asyncio.run(one_kept_resume(server.port, kept)) for _ in range(trials))
    finally:
        servers.stop(server)
    return {
        "kept": kept,
        "trials": trials,
        "ms": [round(t, 2) for t in times],
        "p50_ms": round(times[len(times) // 2], 2),
        "p99_ms": round(times[min(len(times) - 1, int(len(times) * 0.99))], 2),
        "target_ms": KEPT_TARGET_MS,
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--trials", type=int, default=30)
    p.add_argument("--kept", type=int, default=1000)
    p.add_argument("--shared", default=None)
    p.add_argument("--seconds", type=float, default=4)
    p.add_argument("--conns", type=int, default=50)
    p.add_argument("--window", type=int, default=20)
    p.add_argument("--receivers", type=int, default=500)
    p.add_argument("--pause", type=float, default=0.5)
    p.add_argument("--skip-compare", action="store_true")
    p.add_argument("--out", type=Path)
    args = p.parse_args(argv)
    exit_on_signals()
    shared = shared_dir(args.shared)
    started = datetime.datetime.now().astimezone()
    rounds: list[dict[str, Any]] = []
    load_before = os.getloadavg()
    with Servers() as servers:
        if not args.skip_compare:
            for i in range(args.rounds):
                order = [OFF, ON] if i % 2 == 0 else [ON, OFF]
                result: dict[str, Any] = {"order": order}
                for name in order:
                    server = servers.start(verb_console_server(name, FLAGS[name]))
                    try:
                        time.sleep(args.pause)
                        result[name] = measure(shared, server, args)
                    finally:
                        servers.stop(server)
                    ping, fan = result[name]["ping"], result[name]["fanout"]
                    print(
                        f"round {i + 1}/{args.rounds} {name:18} ping"
                        f" {ping['server_us_per_msg']:6.2f} us/msg  fan-out"
                        f" {fan['server_us_per_delivery']:6.2f} us/delivery",
                        flush=True,
                    )
                rounds.append(result)
        kept = kept_bench(servers, args.trials, args.kept)
    summary: dict[str, Any] = {}
    if rounds:
        for kind, key in (("ping", "server_us_per_msg"), ("fanout", "server_us_per_delivery")):
            on = [r[ON][kind][key] for r in rounds]
            off = [r[OFF][kind][key] for r in rounds]
            summary[kind] = {
                "on_us": on,
                "off_us": off,
                "on_median": median(on),
                "off_median": median(off),
                "ratio_of_medians": round(median(on) / median(off), 3),  # type: ignore[operator]
                "median_of_ratios": round(
                    median([a / b for a, b in zip(on, off, strict=True)]),  # type: ignore[arg-type]
                    3,
                ),
            }
        print()
        print(
            table(
                ["load", "off us", "on us", "on/off (of medians)", "median of rounds"],
                [
                    [
                        k,
                        v["off_median"],
                        v["on_median"],
                        v["ratio_of_medians"],
                        v["median_of_ratios"],
                    ]
                    for k, v in summary.items()
                ],
            )
        )
    print(
        f"\nresume with {kept['kept']} kept messages: p50 {kept['p50_ms']} ms,"
        f" p99 {kept['p99_ms']} ms (target < {KEPT_TARGET_MS} ms)"
    )
    out = args.out or result_path("resume", started)
    data = {
        "benchmark": "resume",
        "date": started.isoformat(timespec="seconds"),
        "loadavg_before": load_before,
        "loadavg_after": os.getloadavg(),
        "flags": FLAGS,
        "target": {"on / off": TARGET, "kept resume ms": KEPT_TARGET_MS},
        "machine": machine(),
        "compare": summary,
        "kept": kept,
        "raw": rounds,
    }
    print(f"\nwrote {write_json(out, data)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
