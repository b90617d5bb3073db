"""Soak test: minutes of mixed traffic and attacks on real servers, then a leak check.

    python bench/soak.py --seconds 120 --clients 300
    python bench/soak.py --seconds 120 --clients 300 --cluster   # two nodes on a redis-server
    python bench/soak.py --seconds 5 --clients 40 --json        # the CI version

The server is a real ``verb-console --headless`` process on an ``auto``
listener (in ``--cluster`` mode, two of them, nodes A and B, on a real
redis-server), so that its descriptors and memory are its own; the soak reads
its figures over the admin socket and from /proc. The clients (bench/soak_clients.py)
speak every protocol (json chat and uploads, binary heartbeats, echoes and
uploads, echo lines, mux connections with json, echo and binary streams, their
json streams carrying uploads too) and leave in every way: a normal close, a
reset, a reset in the middle of a frame or of an upload, or a half-close.
Attackers are mixed in: partial ~1 MiB json frames, mux connections whose
streams each hold a partial ~1 MiB frame, mux streams full of uploads in
flight, fan-out floods into a big room of readers, bursts of re-joins of that
room, and reconnect churn; each leaves without finishing. In a cluster the
clients are spread over both nodes, rooms span them, and private messages go
across (through a session on each node that sends them back).

Before the run (after a warm-up of the same traffic, so that one-time
allocations are counted in the baseline) and after it (once every client has
gone, and then a few seconds more: nothing is triggered, the server must give
memory back by itself) the soak reads each server's sessions, connections, rooms,
open transfers, descriptors, temporary upload files and resident memory
(VmRSS), and the peak RSS during the run. A leak is any of these that did not
come back: sessions, connections, rooms, transfers and temporary files to zero,
descriptors to where they started, RSS to within 10% of where it started; in a
cluster also Redis's keys and ``PUBSUB CHANNELS`` to their baseline. The exit
status is 0 when nothing leaked and no client saw a wrong answer. Results go to
``bench/results/soak-DATE.json`` (``soak-cluster-DATE.json``; ``--out FILE``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime
import json
import os
import random
import re
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchlib import Server, exit_on_signals, machine, result_path, verb_console_cmd, write_json
from soak_clients import ATTACK_KINDS, BIG_ROOM, NORMAL_KINDS, Conn, Driver, Stats, jframe

from verb_console.admin.client import AdminClient

MEMORY_TOLERANCE = 0.10
TEMP_RE = re.compile(r"\.verb-upload-[0-9a-f]{32}\.part")
READY = re.compile(r"listening on \S+:(\d+) \(auto\)")
# Directory entries of a session cut off live 15 s (cluster/keys.py ENTRY_TTL_MS)
# before any node prunes them; a closed one goes at once.
REDIS_SETTLE = 25.0
MiB = 1024 * 1024

CONFIG = """\
log_level = "info"
"""


def proc_status(pid: int, field: str) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def memory_map(pid: int) -> dict[str, int]:
    """Resident bytes by kind of mapping: the brk heap, anonymous maps (thread arenas,
    Python's arenas, large buffers), files (code), stacks."""
    out = {"heap": 0, "anon": 0, "file": 0, "other": 0, "anon_maps_over_1mib": 0}
    kind = "other"
    size = 0
    with open(f"/proc/{pid}/smaps") as f:
        for line in f:
            first = line.split(None, 1)[0]
            if "-" in first and not first.endswith(":"):
                parts = line.split()
                start, end = (int(x, 16) for x in parts[0].split("-"))
                size = end - start
                path = parts[5] if len(parts) > 5 else ""
                kind = (
                    "heap"
                    if path == "[heap]"
                    else "anon"
                    if not path
                    else "file"
                    if path.startswith("/")
                    else "other"
                )
                if kind == "anon" and size > MiB:
                    out["anon_maps_over_1mib"] += 1
            elif first == "Rss:":
                out[kind] += int(line.split()[1]) * 1024
    return out


class Node:
    """One ``verb-console --headless`` process and a connection to its admin socket."""

    def __init__(self, name: str, workdir: Path, cluster: str = "") -> None:
        self.name = name
        self.cluster = cluster
        self.dir = workdir / name
        self.upload_dir = self.dir / "uploads"
        self.upload_dir.mkdir(parents=True)
        (self.dir / "soak.toml").write_text(CONFIG)
        self.socket = self.dir / "admin.sock"
        argv = [*verb_console_cmd(), "--headless", "--port", "0", "--protocol", "auto"]
        argv += ["--config", str(self.dir / "soak.toml"), "--upload-dir", str(self.upload_dir)]
        argv += ["--admin-socket", str(self.socket), "--max-per-ip", "0"]
        argv += ["--max-connections", "20000", "--idle-timeout", "30"]
        argv += ["--handshake-timeout", "5"]
        if cluster:
            argv += ["--cluster", cluster, "--node-name", name]
        self.server = Server(name, argv, READY, cwd=self.dir)
        # Unpinned: the clients, the nodes and redis share the cores as the kernel sees fit.
        self.server._preexec = lambda: None  # type: ignore[method-assign]
        self.admin: AdminClient | None = None
        self.rss_peak = 0

    @property
    def pid(self) -> int:
        return self.server.pid

    @property
    def port(self) -> int:
        return self.server.port

    async def start(self) -> None:
        await asyncio.to_thread(self.server.start, 30.0)
        self.admin = await AdminClient.connect(self.socket)
        deadline = time.monotonic() + 20
        while self.cluster and (await self.ask("status")).get("link") != "up":
            if time.monotonic() > deadline:
                raise RuntimeError(f"node {self.name} did not link to Redis")
            await asyncio.sleep(0.1)

    def rss(self) -> int:
        return proc_status(self.pid, "VmRSS") * 1024

    async def ask(self, op: str, **args: Any) -> Any:
        assert self.admin is not None
        return await asyncio.wait_for(self.admin.request(op, **args), 30)

    async def figures(self) -> dict[str, Any]:
        status = await self.ask("status")
        rooms = await self.ask("rooms")
        transfers = await self.ask("transfers")
        closed = await self.ask("closed_sessions")
        return {
            "sessions": status["sessions"],
            "connections": status["connections"],
            "rooms": len(rooms),
            # The list holds the last ended and refused uploads too.
            "transfers": sum(1 for t in transfers if t["state"] == "active"),
            "closed_kept": len(closed),
            "fds": len(os.listdir(f"/proc/{self.pid}/fd")),
            "threads": proc_status(self.pid, "Threads"),
            "temp_files": sum(1 for n in os.listdir(self.upload_dir) if TEMP_RE.fullmatch(n)),
            "rss": self.rss(),
            "rss_hwm": proc_status(self.pid, "VmHWM") * 1024,
            "rss_by_mapping": memory_map(self.pid),
            "totals": status["totals"],
            "cluster": status.get("cluster"),
        }

    async def inspect(self, session_id: str) -> Any:
        try:
            page = await self.ask("sessions", filter=session_id, limit=1)
        except Exception as exc:
            return f"cannot ask: {exc}"
        return [dict(zip(page["fields"], row, strict=False)) for row in page["rows"]]

    def log_problems(self) -> dict[str, Any]:
        """Lines of the server's log at ERROR or worse (with each traceback's last
        line, the exception), and a tally of its warnings."""
        errors: list[str] = []
        warnings: dict[str, int] = {}
        in_traceback = False
        for line in self.server.output().splitlines():
            if line.startswith("Traceback"):
                in_traceback = True
            elif in_traceback and not line.startswith(" "):
                in_traceback = line.startswith(("During handling", "The above")) or not line
                if not in_traceback:
                    errors.append("  " + line[:300])
            elif " ERROR " in line or " CRITICAL " in line:
                errors.append(line[:300])
            elif " WARNING " in line:
                # "... WARNING verb_console.x: what happened ..." -> "verb_console.x: what"
                text = line.split(" WARNING ", 1)[1]
                key = " ".join(re.sub(r"[\d.:]+", "N", text).split()[:5])
                warnings[key] = warnings.get(key, 0) + 1
        count = sum(1 for e in errors if not e.startswith("  "))
        return {"errors": count, "error_samples": errors[:20], "warnings": warnings}

    async def stop(self) -> None:
        if self.admin is not None:
            with contextlib.suppress(Exception):
                await self.admin.aclose()
        await asyncio.to_thread(self.server.stop)


class Redis:
    """A redis-server with no persistence, and a client to read its keys and channels."""

    def __init__(self, workdir: Path) -> None:
        sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
        from cluster_harness import RedisServer

        self.server = RedisServer(workdir)
        self.client: Any = None

    async def start(self) -> None:
        await self.server.start()
        self.client = self.server.client()

    @property
    def url(self) -> str:
        return self.server.url

    async def state(self) -> dict[str, Any]:
        keys = sorted(k.decode() for k in await self.client.keys("*"))
        channels = sorted(c.decode() for c in await self.client.pubsub_channels())
        return {"dbsize": await self.client.dbsize(), "keys": keys, "channels": channels}

    async def stop(self) -> None:
        if self.client is not None:
            with contextlib.suppress(Exception):
                await self.client.aclose()
        with contextlib.suppress(Exception):
            await self.server.kill()


async def big_room_members(driver: Driver, count: int) -> list[Conn]:
    """``count`` json sessions in the big room for the whole run, spread over the nodes."""
    members = []
    for i in range(count):
        node = i % len(driver.nodes)
        c = await Conn.open(driver.nodes[node][0], "json", node)
        await driver.json_hello(c)
        await c.send(jframe({"type": "join_room", "room": BIG_ROOM, "ref": "in"}))
        await c.expect(lambda m: m.get("ref") == "in", "joined")
        members.append(c)
    return members


async def traffic(driver: Driver, clients: int, seconds: float, members: int) -> None:
    """Keep ``clients`` clients busy for ``seconds``: each one that leaves is replaced."""
    kinds = NORMAL_KINDS + ATTACK_KINDS
    responders = [asyncio.create_task(driver.responder(n)) for n in range(len(driver.nodes))]
    room = await big_room_members(driver, members)
    if len(driver.nodes) > 1:
        # Until every node's directory has the responders, a private to one is unknown_target.
        while len(driver.responders) < len(driver.nodes):
            await asyncio.sleep(0.05)
        await asyncio.sleep(1.0)
    until = time.monotonic() + seconds

    async def slot(i: int) -> None:
        while time.monotonic() < until:
            await driver.client(kinds[i % len(kinds)], until)

    try:
        await asyncio.gather(*(slot(i) for i in range(clients)))
    finally:
        for task in responders:
            task.cancel()
        for task in responders:
            with contextlib.suppress(BaseException):
                await task
        for c in room:
            await c.leave(driver.rng.choice(["fin", "rst"]), b"")
            driver.finish(c)


async def settle(nodes: list[Node], timeout: float = 20.0) -> list[dict[str, Any]]:
    """Each node's figures once every client has gone (or the timeout passed)."""
    deadline = time.monotonic() + timeout
    while True:
        figures = [await n.figures() for n in nodes]
        done = all(f["connections"] == 0 and f["transfers"] == 0 for f in figures)
        if done or time.monotonic() > deadline:
            return figures
        await asyncio.sleep(0.2)


async def sample_peaks(nodes: list[Node], stop: asyncio.Event) -> None:
    while not stop.is_set():
        for n in nodes:
            with contextlib.suppress(OSError):
                n.rss_peak = max(n.rss_peak, n.rss())
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), 0.2)


async def memory_back(nodes: list[Node], before: list[int], wait: float) -> list[list[int]]:
    """RSS of each node every second for up to ``wait`` s, until all are within tolerance."""
    series: list[list[int]] = [[] for _ in nodes]
    deadline = time.monotonic() + wait
    while True:
        for s, n in zip(series, nodes, strict=True):
            s.append(n.rss())
        back = all(s[-1] <= b * (1 + MEMORY_TOLERANCE) for s, b in zip(series, before, strict=True))
        if back or time.monotonic() > deadline:
            return series
        await asyncio.sleep(1.0)


async def redis_back(redis: Redis, base: dict[str, Any], wait: float) -> tuple[dict, float]:
    started = time.monotonic()
    while True:
        state = await redis.state()
        same = state["keys"] == base["keys"] and state["channels"] == base["channels"]
        if same or time.monotonic() - started > wait:
            return state, round(time.monotonic() - started, 1)
        await asyncio.sleep(0.5)


async def soak(args: argparse.Namespace) -> dict[str, Any]:
    workdir = Path(tempfile.mkdtemp(prefix="verb-soak-"))
    redis = Redis(workdir) if args.cluster else None
    names = ["A", "B"] if args.cluster else ["solo"]
    nodes: list[Node] = []
    try:
        if redis is not None:
            await redis.start()
        for name in names:
            node = Node(name, workdir, redis.url if redis is not None else "")
            nodes.append(node)
            await node.start()
        stats = Stats()
        fresh = [n.rss() for n in nodes]
        redis_fresh = None
        if redis is not None:
            await asyncio.sleep(1.5)  # the nodes' heartbeats and figures are in
            redis_fresh = await redis.state()
        fresh_maps = [memory_map(n.pid) for n in nodes]

        async def inspect(node: int, session_id: str) -> Any:
            return await nodes[node].inspect(session_id)

        driver = Driver(
            [(n.port, n.upload_dir) for n in nodes], stats, random.Random(args.seed), inspect
        )
        # Warm-up, so that one-time allocations are in the baseline. A server keeps the
        # last 1,000 closed sessions and log events: the baseline is taken once they
        # are full, as they are for the rest of the run. The allocator's high-water
        # mark also needs a while at full load to settle: warm up for a fifth of the
        # run, at least --warmup s, before taking the baseline.
        warm_until = time.monotonic() + max(args.warmup, args.seconds / 5)
        for _ in range(60):
            await traffic(driver, args.clients, 2.0, args.big_room)
            before = await settle(nodes)
            full = all(f["closed_kept"] >= 1000 for f in before)
            if full and time.monotonic() >= warm_until:
                break
        await asyncio.sleep(args.settle_before)
        before = await settle(nodes)
        # Sessions cut off in the warm-up stay in Redis's directory until their
        # entries expire: the baseline is Redis as it was before any client.
        redis_before, _ = (
            await redis_back(redis, redis_fresh, REDIS_SETTLE)
            if redis is not None and redis_fresh is not None
            else (None, 0.0)
        )
        stats = driver.stats = Stats()
        for n in nodes:
            n.rss_peak = n.rss()
        stop = asyncio.Event()
        sampler = asyncio.create_task(sample_peaks(nodes, stop))
        started = time.monotonic()
        await traffic(driver, args.clients, args.seconds, args.big_room)
        elapsed = time.monotonic() - started
        stop.set()
        await sampler
        after = await settle(nodes)
        left_at = time.monotonic()
        series = await memory_back(nodes, [f["rss"] for f in before], args.wait)
        rss_wait = round(time.monotonic() - left_at, 1)
        after = await settle(nodes)
        redis_after, redis_wait = (
            await redis_back(redis, redis_before, REDIS_SETTLE)
            if redis is not None and redis_before is not None
            else (None, 0.0)
        )
        logs = [n.log_problems() for n in nodes]
        for log, rss, fresh_map in zip(logs, fresh, fresh_maps, strict=True):
            log["rss_fresh"] = rss
            log["rss_fresh_by_mapping"] = fresh_map
        peaks = [n.rss_peak for n in nodes]
    finally:
        for n in nodes:
            await n.stop()
        if redis is not None:
            await redis.stop()
        shutil.rmtree(workdir, ignore_errors=True)
    return report(
        args, stats, elapsed, nodes, before, after, peaks, series, rss_wait, logs,
        redis_before, redis_after, redis_wait,
    )  # fmt: skip


def report(
    args: argparse.Namespace,
    stats: Stats,
    elapsed: float,
    nodes: list[Node],
    before: list[dict[str, Any]],
    after: list[dict[str, Any]],
    peaks: list[int],
    series: list[list[int]],
    rss_wait: float,
    logs: list[dict[str, Any]],
    redis_before: dict[str, Any] | None,
    redis_after: dict[str, Any] | None,
    redis_wait: float,
) -> dict[str, Any]:
    counts = stats.counts
    per_node = {}
    leaks_found = 0
    memory_ok = True
    for n, b, a, peak, s, log in zip(nodes, before, after, peaks, series, logs, strict=True):
        leaks = {k: a[k] for k in ("sessions", "connections", "rooms", "transfers", "temp_files")}
        leaks["fds"] = a["fds"] - b["fds"]
        leaks_found += sum(1 for v in leaks.values() if v != 0)
        rss_after = s[-1]
        growth = (rss_after - b["rss"]) / b["rss"]
        memory_ok = memory_ok and growth <= MEMORY_TOLERANCE
        per_node[n.name] = {
            "leaks": leaks,
            "rss_fresh": log["rss_fresh"],
            "rss_fresh_by_mapping": log["rss_fresh_by_mapping"],
            "rss_before": b["rss"],
            "rss_peak": peak,
            "rss_after": rss_after,
            "rss_growth": round(growth, 4),
            "rss_after_series": s,
            "threads_before": b["threads"],
            "threads_after": a["threads"],
            "server_msgs_in": a["totals"]["msgs_in"] - b["totals"]["msgs_in"],
            "server_msgs_out": a["totals"]["msgs_out"] - b["totals"]["msgs_out"],
            "slow_consumers": a["totals"]["slow_consumers"] - b["totals"]["slow_consumers"],
            "cluster": {
                k: a["cluster"][k] - b["cluster"][k]
                for k in ("published", "received", "dropped", "undeliverable", "reconnects")
            }
            if a["cluster"] and b["cluster"]
            else None,
            "server_errors": log["errors"],
            "server_error_samples": log["error_samples"],
            "server_warnings": log["warnings"],
            "before": b,
            "after": a,
        }
    redis_ok = True
    redis_report = None
    if redis_before is not None and redis_after is not None:
        redis_ok = (
            redis_after["keys"] == redis_before["keys"]
            and redis_after["channels"] == redis_before["channels"]
        )
        redis_report = {
            "ok": redis_ok,
            "seconds_to_baseline": redis_wait,
            "dbsize_before": redis_before["dbsize"],
            "dbsize_after": redis_after["dbsize"],
            "channels_before": len(redis_before["channels"]),
            "channels_after": len(redis_after["channels"]),
            "keys_left": sorted(set(redis_after["keys"]) - set(redis_before["keys"]))[:20],
            "channels_left": sorted(set(redis_after["channels"]) - set(redis_before["channels"]))[
                :20
            ],
            "before": redis_before,
        }
    rtts = sorted(stats.ping_rtts)

    def pct(p: float) -> float | None:
        return round(rtts[min(len(rtts) - 1, int(p * len(rtts)))] * 1000, 2) if rtts else None

    def by(prefix: str) -> dict[str, int]:
        return {k[len(prefix) :]: v for k, v in sorted(counts.items()) if k.startswith(prefix)}

    server_errors = sum(log["errors"] for log in logs)
    ok = (
        leaks_found == 0 and memory_ok and redis_ok and counts["errors"] == 0 and server_errors == 0
    )
    return {
        "mode": "cluster" if args.cluster else "single",
        "nodes": [n.name for n in nodes],
        "seconds": round(elapsed, 1),
        "concurrent_clients": args.clients,
        "big_room_members": args.big_room,
        "clients": counts["clients"],
        "clients_by_kind": by("clients_"),
        "messages_sent": counts["messages_sent"],
        "messages_received": counts["messages_received"],
        "disconnects": counts["disconnects"],
        "disconnects_by_kind": by("leave_"),
        "uploads_started": counts["uploads_started"],
        "uploads_completed": counts["uploads_completed"],
        "uploads_abandoned": counts["uploads_abandoned"],
        "uploads_over_mux": counts["uploads_over_mux"],
        "uploads_refused": counts["uploads_refused"],
        "attacks": by("attack_"),
        "server_refusals": by("refused_"),
        "privates_cross_node": counts["privates_cross_node"],
        "privates_answered": counts["privates_answered"],
        "ping_ms": {"count": len(rtts), "p50": pct(0.5), "p99": pct(0.99), "max": pct(1.0)},
        "client_errors": counts["errors"],
        "client_error_samples": stats.errors[:10],
        "server_errors": server_errors,
        "leaks_found": leaks_found,
        "memory_ok": memory_ok,
        "rss_wait_seconds": rss_wait,
        "per_node": per_node,
        "redis": redis_report,
        "ok": ok,
        "load_average": os.getloadavg(),
        "machine": machine(),
    }


def print_report(r: dict[str, Any]) -> None:
    print(f"soak ({r['mode']}): {r['seconds']} s, {r['concurrent_clients']} concurrent clients")
    print(f"  clients       {r['clients']}  {r['clients_by_kind']}")
    print(f"  messages      {r['messages_sent']} sent, {r['messages_received']} received")
    print(f"  disconnects   {r['disconnects']}  {r['disconnects_by_kind']}")
    print(
        f"  uploads       {r['uploads_started']} started, {r['uploads_completed']} completed, "
        f"{r['uploads_abandoned']} abandoned mid-way, {r['uploads_over_mux']} over mux streams, "
        f"{r['uploads_refused']} refused at a limit"
    )
    print(f"  attacks       {r['attacks']}")
    print(f"  limits hit    {r['server_refusals']}")
    if r["mode"] == "cluster":
        print(
            f"  privates      {r['privates_cross_node']} across nodes, "
            f"{r['privates_answered']} sent back"
        )
    p = r["ping_ms"]
    print(f"  bystander ping {p['count']} pings, p50 {p['p50']} ms, p99 {p['p99']} ms")
    print(f"  client errors {r['client_errors']}  {r['client_error_samples']}")
    for name, n in r["per_node"].items():
        print(
            f"  node {name:5} leaks {n['leaks']}; server errors {n['server_errors']} "
            f"{n['server_error_samples']}"
        )
        print(
            f"             RSS {n['rss_fresh'] / MiB:.1f} MiB fresh, "
            f"{n['rss_before'] / MiB:.1f} before, peak "
            f"{n['rss_peak'] / MiB:.1f}, after {n['rss_after'] / MiB:.1f} "
            f"({n['rss_growth'] * 100:+.1f}%) {r['rss_wait_seconds']} s after the clients left; "
            f"{n['server_msgs_in']} msgs in, {n['server_msgs_out']} out, "
            f"{n['slow_consumers']} slow consumers"
        )
        if n["cluster"]:
            print(f"             cross-node {n['cluster']}")
    if r["redis"] is not None:
        rd = r["redis"]
        print(
            f"  redis         keys {rd['dbsize_before']} before, {rd['dbsize_after']} after; "
            f"channels {rd['channels_before']} before, {rd['channels_after']} after "
            f"({rd['seconds_to_baseline']} s); left {rd['keys_left']} {rd['channels_left']}"
        )
    print(f"  verdict       {'ok' if r['ok'] else 'FAILED'}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--seconds", type=float, default=120.0, help="the measured run")
    parser.add_argument("--clients", type=int, default=300, help="clients at a time")
    parser.add_argument("--big-room", type=int, default=100, help="members the floods reach")
    parser.add_argument("--cluster", action="store_true", help="two nodes on a redis-server")
    parser.add_argument("--warmup", type=float, default=4.0, help="least warm-up (s)")
    parser.add_argument(
        "--settle-before", type=float, default=2.0, help="s idle before the baseline"
    )
    parser.add_argument(
        "--wait", type=float, default=10.0, help="s the RSS has to come back after the run"
    )
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    parser.add_argument("--out", help="results file (default bench/results/soak-DATE.json)")
    args = parser.parse_args(argv)
    exit_on_signals()
    result = asyncio.run(soak(args))
    kind = "soak-cluster" if args.cluster else "soak"
    out = Path(args.out) if args.out else result_path(kind, datetime.date.today())
    write_json(out, result)
    if args.json:
        print(json.dumps(result))
    else:
        print_report(result)
        print(f"  results       {out}")
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
