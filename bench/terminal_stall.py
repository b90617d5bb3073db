"""A terminal that stops reading for 60 s, while a client pings every 200 ms.

``verb-console --demo`` runs on a pseudo-terminal of 200x60 that this script
reads until the console is up, then stops reading for ``--stall`` seconds (the
tty's buffer fills within seconds, as sshd's does behind a stalled link). One
json client pings the server every 200 ms the whole time. Reported: pings sent
and answered, median, p99 and max round trip. Target: every ping answered,
p99 under 100 ms. Then the terminal is read again and the time until the
console draws a whole frame is reported.

    .venv/bin/python bench/terminal_stall.py [--stall 60] [--out FILE]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import datetime

from benchlib import machine, result_path, write_json
from ptyconsole import PtyConsole, free_port, p99, ping_for, wait_listening


async def run(stall: float) -> dict[str, float]:
    port = free_port()
    with tempfile.TemporaryDirectory() as cwd:
        console = PtyConsole(["--demo", "--port", str(port), "--grace-period", "3"], cwd=cwd)
        try:
            await wait_listening(port, console.proc)
            console.wait_for("Connections")
            console.reading.clear()
            trips = await ping_for(port, stall)
            mark = console.received()
            resumed = time.monotonic()
            console.reading.set()
            console.wait_for("Connections", since=mark, timeout=30)
            catch_up = time.monotonic() - resumed
        finally:
            console.stop()
    return {
        "stall_s": stall,
        "pings": len(trips),
        "expected_pings": int(stall / 0.2),
        "median_ms": statistics.median(trips) * 1000,
        "p99_ms": p99(trips) * 1000,
        "max_ms": max(trips) * 1000,
        "catch_up_s": catch_up,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--stall", type=float, default=60.0, help="seconds unread (default 60)")
    parser.add_argument("--out", help="results file (default bench/results/stall-DATE.json)")
    args = parser.parse_args()
    figures = asyncio.run(run(args.stall))
    for key, value in figures.items():
        print(f"{key:>15}: {value:.1f}" if isinstance(value, float) else f"{key:>15}: {value}")
    when = datetime.datetime.now(datetime.UTC)
    path = Path(args.out) if args.out else result_path("stall", when)
    print("results:", write_json(path, {"figures": figures, "machine": machine()}))


if __name__ == "__main__":
    main()
