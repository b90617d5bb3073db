"""Server CPU per message: verb-console against py_limit.py and node_peer.js, side by side.

Each round starts every server afresh (in a rotated order), runs the shared load
generator against it through ``cpu_per_msg.py`` -- pipelined pings, then a fan-out
to many receivers -- and stops it. The figure is the server process's CPU time per
ping answered and per broadcast copy delivered: on a 2-core machine the load
generator caps the message rate, so the CPU cost is what compares fairly.

verb-console runs with its defaults (every limit and figure on), except that the
per-IP throttle must admit the benchmark's own connections: ``--max-per-ip
100000``. It is measured on uvloop (its default) and on the standard asyncio loop
(``VERB_CONSOLE_LOOP=asyncio``).

``--resume-ab`` measures instead the same server with session resume and room
history on (``--resume-window 120 --history-size 100``: a counter and a ring
append per delivery) against both off (``--resume-window 0 --history-size 0``),
in alternated rounds (PROTOCOL.md section 11; target: within 1.05x).

    .venv/bin/python bench/compare.py [--rounds 5] [--shared DIR] [--resume-ab]
"""

from __future__ import annotations

import argparse
import datetime
import os
import sys
import time
from pathlib import Path
from typing import Any

from benchlib import (
    Server,
    Servers,
    cpu_per_msg,
    exit_on_signals,
    machine,
    median,
    node_peer_server,
    py_limit_server,
    result_path,
    shared_dir,
    table,
    verb_console_server,
    write_json,
)

TARGET = 1.25  # verb-console at most 1.25x py_limit's CPU per message
RESUME_TARGET = 1.05  # resume and history on at most 1.05x both off
VERB_FLAGS = ["--max-per-ip", "100000"]
VC, VC_ASYNCIO, PY_LIMIT, NODE = "verb-console", "verb-console (asyncio)", "py_limit", "node_peer"
AB = "verb-console (--ab tree)"
VC_ON, VC_OFF = "verb-console resume+history on", "verb-console resume+history off"
ON_FLAGS = ["--resume-window", "120", "--history-size", "100"]
OFF_FLAGS = ["--resume-window", "0", "--history-size", "0"]


def factories(
    shared: Path, with_asyncio: bool, ab: Path | None = None, resume_ab: bool = False
) -> dict[str, Any]:
    if resume_ab:
        return {
            VC_OFF: lambda: verb_console_server(VC_OFF, [*VERB_FLAGS, *OFF_FLAGS]),
            VC_ON: lambda: verb_console_server(VC_ON, [*VERB_FLAGS, *ON_FLAGS]),
        }
    f: dict[str, Any] = {
        PY_LIMIT: lambda: py_limit_server(shared, "uvloop", "orjson"),
        NODE: lambda: node_peer_server(shared),
        VC: lambda: verb_console_server(VC, VERB_FLAGS, loop="uvloop"),
    }
    if with_asyncio:
        f[VC_ASYNCIO] = lambda: verb_console_server(VC_ASYNCIO, VERB_FLAGS, loop="asyncio")
    if ab is not None:
        f[AB] = lambda: verb_console_server(AB, VERB_FLAGS, loop="uvloop", source=ab)
    return f


def measure(shared: Path, server: Server, args: argparse.Namespace) -> dict[str, Any]:
    ping = cpu_per_msg(
        shared,
        server.pid,
        ["ping", "127.0.0.1", server.port, args.conns, args.window, args.seconds],
    )
    time.sleep(args.pause)
    fanout = cpu_per_msg(
        shared, server.pid, ["fanout", "127.0.0.1", server.port, args.receivers, args.seconds]
    )
    if ping.get("errors"):
        raise RuntimeError(f"{server.name}: {ping['errors']} error replies during ping")
    if not ping.get("msgs") or not fanout.get("deliveries"):
        raise RuntimeError(f"{server.name}: no messages measured: {ping} {fanout}")
    return {"ping": ping, "fanout": fanout}


def ratio(a: float | None, b: float | None) -> float | None:
    return round(a / b, 3) if a and b else None


def summarize(names: list[str], rounds: list[dict[str, Any]]) -> dict[str, Any]:
    per: dict[str, dict[str, Any]] = {}
    for name in names:
        pings = [r[name]["ping"]["server_us_per_msg"] for r in rounds]
        fans = [r[name]["fanout"]["server_us_per_delivery"] for r in rounds]
        per[name] = {
            "ping_us_per_msg": pings,
            "fanout_us_per_delivery": fans,
            "ping_median": median(pings),
            "fanout_median": median(fans),
            "ping_msgs_per_s_median": median([r[name]["ping"]["msgs_per_s"] for r in rounds]),
            "ping_p99_ms_median": median([r[name]["ping"]["p99_ms"] for r in rounds]),
            "fanout_p50_ms_median": median([r[name]["fanout"]["p50_ms"] for r in rounds]),
        }
    ratios: dict[str, Any] = {}
    dens = (PY_LIMIT, NODE, VC, AB)
    pairs = [(num, den) for num in (VC, VC_ASYNCIO) for den in dens if num != den]
    pairs.append((VC_ON, VC_OFF))
    for num, den in pairs:
        if num not in per or den not in per:
            continue
        for kind, key, raw in (
            ("ping", "ping_median", "ping_us_per_msg"),
            ("fanout", "fanout_median", "fanout_us_per_delivery"),
        ):
            # The ratio of the medians, and the median of the ratios of each round
            # (both servers measured minutes apart at most: less exposed to drift).
            paired = [a / b for a, b in zip(per[num][raw], per[den][raw], strict=True) if a and b]
            ratios[f"{num} / {den} {kind}"] = {
                "of_medians": ratio(per[num][key], per[den][key]),
                "median_of_rounds": median(paired),
            }
    return {"servers": per, "ratios": ratios}


def report(summary: dict[str, Any], n_rounds: int) -> str:
    per = summary["servers"]
    rows = [
        [
            name,
            s["ping_median"],
            s["fanout_median"],
            s["ping_msgs_per_s_median"],
            s["fanout_p50_ms_median"],
        ]
        for name, s in per.items()
    ]
    out = [
        f"Server CPU per message, medians of {n_rounds} rounds (lower is better)",
        "",
        table(
            ["server", "ping us/msg", "fan-out us/delivery", "ping msgs/s", "fan-out p50 ms"],
            rows,
        ),
        "",
        table(
            ["ratio", "of medians", "median of rounds"],
            [[k, v["of_medians"], v["median_of_rounds"]] for k, v in summary["ratios"].items()],
        ),
        "",
    ]
    for kind in ("ping", "fanout"):
        for num, den, target in ((VC, PY_LIMIT, TARGET), (VC_ON, VC_OFF, RESUME_TARGET)):
            r = summary["ratios"].get(f"{num} / {den} {kind}")
            if r and r["of_medians"] is not None:
                verdict = "met" if r["of_medians"] <= target else "MISSED"
                out.append(
                    f"target {kind}: {num} / {den} = {r['of_medians']:.2f} (<= {target} {verdict})"
                )
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        description="Server CPU per ping and per fan-out delivery: verb-console vs "
        "py_limit.py and node_peer.js, interleaved rounds, medians and ratios.",
    )
    p.add_argument("--rounds", type=int, default=5, help="rounds of every server (default 5)")
    p.add_argument(
        "--shared", help="the shared bench dir (default <repo>/../shared/bench)", default=None
    )
    p.add_argument("--seconds", type=float, default=4, help="load duration per run (default 4)")
    p.add_argument("--conns", type=int, default=50, help="ping connections (default 50)")
    p.add_argument("--window", type=int, default=20, help="pings in flight per conn (default 20)")
    p.add_argument("--receivers", type=int, default=500, help="fan-out receivers (default 500)")
    p.add_argument(
        "--no-asyncio",
        action="store_true",
        help="skip verb-console on the standard asyncio loop",
    )
    p.add_argument(
        "--resume-ab",
        action="store_true",
        help="resume and room history on against both off, alternated (no other server)",
    )
    p.add_argument("--pause", type=float, default=0.5, help="seconds between runs (default 0.5)")
    p.add_argument(
        "--ab",
        type=Path,
        metavar="DIR",
        help="also the verb_console package in DIR (an exported tree of another commit),"
        " in the same rounds: ratios against it say what a change cost",
    )
    p.add_argument(
        "--out", type=Path, help="JSON results file (default bench/results/compare-DATE.json)"
    )
    args = p.parse_args(argv)
    if args.rounds < 1:
        p.error("--rounds must be at least 1")
    exit_on_signals()
    shared = shared_dir(args.shared)
    make = factories(
        shared, not args.no_asyncio, args.ab.resolve() if args.ab else None, args.resume_ab
    )
    names = list(make)
    started = datetime.datetime.now().astimezone()
    rounds: list[dict[str, Any]] = []
    with Servers() as servers:
        for i in range(args.rounds):
            order = names[i % len(names) :] + names[: i % len(names)]
            result: dict[str, Any] = {"order": order}
            for name in order:
                server = servers.start(make[name]())
                try:
                    time.sleep(args.pause)
                    result[name] = measure(shared, server, args)
                finally:
                    servers.stop(server)
                ping, fan = result[name]["ping"], result[name]["fanout"]
                print(
                    f"round {i + 1}/{args.rounds} {name:24} ping {ping['server_us_per_msg']:6.2f}"
                    f" us/msg ({ping['msgs_per_s']} msgs/s)  fan-out"
                    f" {fan['server_us_per_delivery']:6.2f} us/delivery",
                    flush=True,
                )
                time.sleep(args.pause)
            rounds.append(result)
    summary = summarize(names, rounds)
    print()
    print(report(summary, len(rounds)))
    out = args.out or result_path("compare_resume" if args.resume_ab else "compare", started)
    data = {
        "benchmark": "compare",
        "date": started.isoformat(timespec="seconds"),
        "rounds": len(rounds),
        "load": {
            "ping": f"loadgen.js ping 127.0.0.1 PORT {args.conns} {args.window} {args.seconds:g}",
            "fanout": f"loadgen.js fanout 127.0.0.1 PORT {args.receivers} {args.seconds:g}",
        },
        "verb_console_flags": ["--headless", "--protocol", "json", *VERB_FLAGS],
        "target": {"verb-console / py_limit": TARGET}
        if not args.resume_ab
        else {f"{VC_ON} / {VC_OFF}": RESUME_TARGET, "on": ON_FLAGS, "off": OFF_FLAGS},
        "loadavg": os.getloadavg(),
        "machine": machine(),
        **summary,
        "raw": rounds,
    }
    print(f"\nwrote {write_json(out, data)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
