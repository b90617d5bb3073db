"""What a policy costs (PROTOCOL.md 12.1): server CPU per message with a policy
of 100 users and 1,000 patterns against the same server with none, alternated in
one run (target: at most 1.05x for ping and for fan-out). ``--patterns 1000``
gives every user 1,000 patterns of each kind (200,000 in all) instead.

Both servers run with the same auth file (a policy needs one); the load is
Python, authenticates every connection as ``u0`` and is pinned apart from the
server (as bench/compare.py). ``u0`` is the worst case the policy allows: its
join and publish patterns match the bench's room only at the last pattern,
and its ``rate`` is set (high enough never to refuse), so every
message but ``ping`` goes through its guard (the rate bucket, then the cached
answer for its room).

- ping: connections each keep a window of pings in flight;
- fan-out: one sender's room messages to the other members of one room.

    .venv/bin/python bench/policy.py [--rounds 5] [--seconds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import hashlib
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

TOKEN = "bench-token-u0"
ROOM = "bench-room"
TARGET = 1.05


def write_files(directory: Path, per_list: int) -> dict[str, str]:
    """100 users with tokens, and a policy giving each ``per_list`` join and as
    many publish patterns (100 x 5 x 2 = 1,000 patterns by default), the bench's
    room matched by each list's last pattern."""
    tokens = directory / "tokens"
    lines = [f"u{i}:{hashlib.sha256(f'bench-token-u{i}'.encode()).hexdigest()}" for i in range(100)]
    tokens.write_text("\n".join(lines) + "\n")
    text = "[default]\nbroadcast = false\n"
    for i in range(100):
        patterns = [f"room-{i}-{k}-*" for k in range(per_list - 1)] + ["bench-*"]
        listed = ", ".join(json.dumps(p) for p in patterns)
        text += f"\n[users.u{i}]\njoin = [{listed}]\npublish = [{listed}]\nrate = 100000000\n"
    policy = directory / "policy.toml"
    policy.write_text(text)
    return {"tokens": str(tokens), "policy": str(policy), "dir": str(directory)}


def server(name: str, files: dict[str, str], with_policy: bool) -> Server:
    argv = [*verb_console_cmd(), "--headless", "--port", "0", "--protocol", "json"]
    argv += ["--max-per-ip", "0", "--idle-timeout", "0", "--auth-file", files["tokens"]]
    if with_policy:
        argv += ["--policy", files["policy"]]
    return Server(
        name, argv, VERB_READY, env={"VERB_CONSOLE_LOOP": "uvloop"}, cwd=Path(files["dir"])
    )


# --------------------------------------------------------------- load (a child process)


def frame(obj: Any) -> bytes:
    body = json.dumps(obj, separators=(",", ":")).encode()
    return b"%d\n%s" % (len(body), body)


async def read_frame(reader: asyncio.StreamReader) -> bytes:
    header = await reader.readuntil(b"\n")
    return await reader.readexactly(int(header))


async def logged_in(port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port, limit=1 << 22)
    await read_frame(reader)
    writer.write(frame({"type": "auth", "token": TOKEN}))
    reply = json.loads(await read_frame(reader))
    assert reply["type"] == "authenticated", reply
    return reader, writer


async def load_ping(port: int, conns: int, depth: int, seconds: float) -> dict:
    pings = frame({"type": "ping"}) * depth
    counts = [0] * conns
    start = asyncio.Event()
    deadline = [0.0]

    async def one(i: int) -> None:
        reader, writer = await logged_in(port)
        await start.wait()
        while time.monotonic() < deadline[0]:
            writer.write(pings)
            for _ in range(depth):
                await read_frame(reader)
            counts[i] += depth
        writer.close()

    tasks = [asyncio.create_task(one(i)) for i in range(conns)]
    await asyncio.sleep(0.5)
    deadline[0] = time.monotonic() + seconds
    print("GO", flush=True)
    start.set()
    await asyncio.gather(*tasks)
    return {"msgs": sum(counts), "seconds": seconds}


async def load_fanout(port: int, receivers: int, seconds: float) -> dict:
    joins = frame({"type": "join_room", "room": ROOM})
    members = [await logged_in(port) for _ in range(receivers + 1)]
    for reader, writer in members:
        writer.write(joins)
        while json.loads(await read_frame(reader))["type"] != "joined":
            pass
    # The join notices of later members, read before the clock starts.
    await asyncio.sleep(0.3)
    counts = [0] * receivers
    stop = asyncio.Event()

    async def receive(i: int, reader: asyncio.StreamReader) -> None:
        while not stop.is_set():
            body = await read_frame(reader)
            if body.startswith(b'{"type":"room_message"'):
                counts[i] += 1

    tasks = [asyncio.create_task(receive(i, m[0])) for i, m in enumerate(members[1:])]
    _, sender = members[0]
    batch = frame({"type": "room_message", "room": ROOM, "data": "x" * 32}) * 20
    print("GO", flush=True)
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        sender.write(batch)
        await sender.drain()
        await asyncio.sleep(0)
    # Let what is under way arrive, then count.
    await asyncio.sleep(0.5)
    stop.set()
    for t in tasks:
        t.cancel()
    return {"deliveries": sum(counts), "seconds": seconds}


def child(argv: list[str]) -> None:
    import uvloop

    kind, port, rest = argv[0], int(argv[1]), argv[2:]
    if kind == "ping":
        coro: Any = load_ping(port, int(rest[0]), int(rest[1]), float(rest[2]))
    else:
        coro = load_fanout(port, int(rest[0]), float(rest[1]))
    print(json.dumps(uvloop.run(coro)), flush=True)


# --------------------------------------------------------------- parent


def run_load(srv: Server, kind: str, *args: Any) -> dict:
    """One load child; the server's CPU is counted from the child's GO to its end."""
    cmd = [sys.executable, __file__, "client", kind, str(srv.port), *map(str, args)]
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
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--conns", type=int, default=50)
    parser.add_argument("--depth", type=int, default=20)
    parser.add_argument("--receivers", type=int, default=50)
    parser.add_argument(
        "--patterns", type=int, default=5, help="join (and publish) patterns per user"
    )
    args = parser.parse_args()
    exit_on_signals()
    load_before = os.getloadavg()
    rounds: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp, Servers() as servers:
        files = write_files(Path(tmp), args.patterns)
        for r in range(args.rounds):
            order = [("none", False), ("policy", True)]
            if r % 2:
                order.reverse()
            row: dict[str, Any] = {}
            for name, with_policy in order:
                srv = servers.start(server(name, files, with_policy))
                ping = run_load(srv, "ping", args.conns, args.depth, args.seconds)
                fan = run_load(srv, "fanout", args.receivers, args.seconds)
                servers.stop(srv)
                row[f"ping_us_{name}"] = ping["server_cpu_s"] / ping["msgs"] * 1e6
                row[f"fanout_us_{name}"] = fan["server_cpu_s"] / fan["deliveries"] * 1e6
                row[f"ping_per_s_{name}"] = ping["msgs"] / ping["seconds"]
                row[f"deliveries_per_s_{name}"] = fan["deliveries"] / fan["seconds"]
            rounds.append(row)
            print(json.dumps({k: round(v, 3) for k, v in row.items()}), flush=True)
    load_after = os.getloadavg()

    def med(key: str) -> float:
        found = median([row[key] for row in rounds])
        assert found is not None
        return found

    figures = {}
    rows = []
    for kind in ("ping", "fanout"):
        a, b = med(f"{kind}_us_policy"), med(f"{kind}_us_none")
        # The ratio of medians, and the median of the per-round ratios (alternated pairs).
        paired = median([row[f"{kind}_us_policy"] / row[f"{kind}_us_none"] for row in rounds])
        figures[kind] = {"policy_us": a, "none_us": b, "ratio": a / b, "paired_ratio": paired}
        ok = "yes" if (paired or 0) <= TARGET else "NO"
        rows.append([kind, f"{b:.2f}", f"{a:.2f}", f"{a / b:.3f}", f"{paired:.3f}", ok])
    print(
        table(
            ["CPU per message", "no policy us", "policy us", "ratio", "paired", "<= 1.05x"],
            rows,
        )
    )
    print(f"load average before {load_before}, after {load_after}")
    out = result_path("policy", datetime.date.today())
    write_json(
        out,
        {
            "bench": "policy",
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
