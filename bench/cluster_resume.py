"""A cluster's resume and recovery (PROTOCOL.md 11 on a cluster): two
``verb-console --headless --cluster`` nodes on one redis-server.

1. ``resume``: a session detached on node A (its connection cut after 10
   messages it did not read), resumed on node B: the time from sending
   ``resume`` to the last replayed message. Target: p99 < 100 ms.
2. ``recovery``: a client that missed 100 room messages joins the room on the
   other node with ``since``: the time from sending ``join_room`` to the last
   replayed message, all of them read from Redis. Target: p99 < 20 ms.
3. ``room rate``: bench/cluster.py's cross-node room messages per second (one
   sender on A, one member on B), with room history kept in Redis against
   ``--history-size 0``, in alternated rounds: what the Lua step per room
   message costs.

    .venv/bin/python bench/cluster_resume.py [--trials 50]
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import json
import os
import sys
import time
from typing import Any

from benchlib import Servers, exit_on_signals, machine, result_path, table, write_json
from cluster import Redis, frame, node, room_rate

RESUME_TARGET_MS = 100.0
RECOVERY_TARGET_MS = 20.0


async def read(reader: asyncio.StreamReader) -> dict[str, Any]:
    n = int(await reader.readuntil(b"\n"))
    return dict(json.loads(await reader.readexactly(n)))


async def open_conn(port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter, dict]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port, limit=1 << 22)
    return reader, writer, await read(reader)


async def until(reader: asyncio.StreamReader, kind: str, **fields: Any) -> dict[str, Any]:
    while True:
        msg = await read(reader)
        if msg["type"] == kind and all(msg.get(k) == v for k, v in fields.items()):
            return msg


async def one_resume(port_a: int, port_b: int, kept: int) -> float:
    """ms from ``resume`` on node B to the last of ``kept`` replayed messages."""
    r1, w1, welcome = await open_conn(port_a)
    r2, w2, _ = await open_conn(port_b)
    # Node B knows node A's session once a private message to it arrives.
    while True:
        w2.write(frame({"type": "private", "target": welcome["id"], "data": "?"}))
        try:
            seen = await asyncio.wait_for(until(r1, "private"), 0.3)
            break
        except TimeoutError:
            continue
    for i in range(kept):
        w2.write(frame({"type": "private", "target": welcome["id"], "data": i}))
    w2.write(frame({"type": "ping"}))
    await until(r2, "pong")
    await asyncio.sleep(0.05)  # node A has them in the session's ring
    w1.transport.abort()
    await asyncio.sleep(0.05)  # node A notices and detaches the session
    r3, w3, _ = await open_conn(port_b)
    token = welcome["resume"]
    msg = {"type": "resume", "id": welcome["id"], "token": token, "seq": seen["seq"]}
    t0 = time.perf_counter()
    w3.write(frame(msg))
    reply = await read(r3)
    # At least the kept ones (a probe that came late is replayed too).
    if reply.get("type") != "resumed" or reply["replayed"] < kept:
        raise RuntimeError(f"resume failed: {reply}")
    for _ in range(reply["replayed"]):
        await read(r3)
    elapsed = (time.perf_counter() - t0) * 1000
    for w in (w3, w2):
        w.write(frame({"type": "bye"}))
        w.close()
    return elapsed


async def one_recovery(port_a: int, port_b: int, missed: int, room: str) -> float:
    """ms from ``join_room`` with ``since`` on node B to the last of ``missed`` replayed."""
    rs, ws, _ = await open_conn(port_a)
    ro, wo, _ = await open_conn(port_a)  # an observer: the messages are out when it has them
    for w, r in ((ws, rs), (wo, ro)):
        w.write(frame({"type": "join_room", "room": room}))
        joined = await until(r, "joined")
    epoch, offset = joined["epoch"], joined["offset"]
    for i in range(missed):
        ws.write(frame({"type": "room_message", "room": room, "data": {"n": i, "x": "y" * 64}}))
    await until(ro, "room_message", offset=offset + missed)
    rb, wb, _ = await open_conn(port_b)
    since = {"epoch": epoch, "offset": offset}
    t0 = time.perf_counter()
    wb.write(frame({"type": "join_room", "room": room, "since": since}))
    reply = await until(rb, "joined")
    if reply.get("recovered") is not True:
        raise RuntimeError(f"not recovered: {reply}")
    for _ in range(missed):
        await until(rb, "room_message")
    elapsed = (time.perf_counter() - t0) * 1000
    for w in (ws, wo, wb):
        w.write(frame({"type": "bye"}))
        w.close()
    return elapsed


def summary(times: list[float], target: float) -> dict[str, Any]:
    times = sorted(times)
    return {
        "trials": len(times),
        "ms": [round(t, 2) for t in times],
        "p50_ms": round(times[len(times) // 2], 2),
        "p99_ms": round(times[min(len(times) - 1, int(len(times) * 0.99))], 2),
        "target_ms": target,
    }


async def run(port_a: int, port_b: int, trials: int, kept: int, missed: int) -> dict[str, Any]:
    resumes: list[float] = []
    recoveries: list[float] = []
    for i in range(trials):  # alternated, so that both see the same load
        resumes.append(await one_resume(port_a, port_b, kept))
        recoveries.append(await one_recovery(port_a, port_b, missed, f"bench-{i}"))
    return {
        "resume": summary(resumes, RESUME_TARGET_MS) | {"kept": kept},
        "recovery": summary(recoveries, RECOVERY_TARGET_MS) | {"missed": missed},
    }


def rate_rounds(rounds: int, seconds: float) -> dict[str, Any]:
    """Cross-node room messages/s, history on and off, alternated; fresh nodes each."""
    rates: dict[str, list[float]] = {"history": [], "no history": []}
    for i in range(rounds):
        order = ["history", "no history"] if i % 2 == 0 else ["no history", "history"]
        for name in order:
            extra = () if name == "history" else ("--history-size", "0")
            redis = Redis()
            try:
                with Servers() as servers:
                    a = servers.start(node("a", redis.url, *extra, pin=False))
                    b = servers.start(node("b", redis.url, *extra, pin=False))
                    rate, _ = asyncio.run(room_rate(a.port, b.port, seconds))
                    rates[name].append(round(rate))
            finally:
                redis.stop()
            print(f"round {i + 1}/{rounds} {name:10} {rate:10,.0f} room messages/s", flush=True)
    on, off = sorted(rates["history"]), sorted(rates["no history"])
    return {
        "rounds": rates,
        "median_history": on[len(on) // 2],
        "median_no_history": off[len(off) // 2],
        "ratio": round(on[len(on) // 2] / off[len(off) // 2], 3),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--trials", type=int, default=50)
    p.add_argument("--kept", type=int, default=10)
    p.add_argument("--missed", type=int, default=100)
    p.add_argument("--rate-rounds", type=int, default=4)
    p.add_argument("--seconds", type=float, default=2.0)
    args = p.parse_args(argv)
    exit_on_signals()
    when = datetime.datetime.now(datetime.UTC)
    load_before = os.getloadavg()
    redis = Redis()
    try:
        with Servers() as servers:
            flags = ("--resume-window", "60", "--history-size", "200")
            a = servers.start(node("a", redis.url, *flags, pin=False))
            b = servers.start(node("b", redis.url, *flags, pin=False))
            time.sleep(1.0)
            results = asyncio.run(run(a.port, b.port, args.trials, args.kept, args.missed))
    finally:
        redis.stop()
    if args.rate_rounds:
        results["room_rate"] = rate_rounds(args.rate_rounds, args.seconds)
    results |= {
        "benchmark": "cluster_resume",
        "machine": machine(),
        "when": when.isoformat(),
        "loadavg_before": load_before,
        "loadavg_after": os.getloadavg(),
    }
    rs, rc = results["resume"], results["recovery"]
    print(
        table(
            ["measure", "p50 ms", "p99 ms", "target p99"],
            [
                [f"cross-node resume ({rs['kept']} kept)", rs["p50_ms"], rs["p99_ms"], "< 100"],
                [f"recovery of {rc['missed']} from Redis", rc["p50_ms"], rc["p99_ms"], "< 20"],
            ],
        )
    )
    rate = results.get("room_rate")
    if rate:
        print(
            f"cross-node room messages/s: history in Redis {rate['median_history']:,},"
            f" no history {rate['median_no_history']:,} ({rate['ratio']}x)"
        )
    print(f"results: {write_json(result_path('cluster_resume', when), results)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
