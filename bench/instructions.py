"""Server instructions per fan-out delivery, counted by valgrind: an A/B that a
busy machine cannot blur.

CPU time per message (``compare.py``) moves by tens of percent with the
machine's load; the instructions a server runs for the same work do not. Each
server runs under ``valgrind --tool=cachegrind --cache-sim=no`` twice, once for
``--short`` and once for ``--long`` rounds of one broadcast to ``--receivers``
connections (the next round starts when every receiver has the last one, so a
round is the same work at any speed). Start-up, connecting and shutting down are
the same in both runs, so the difference of the two totals divided by the extra
deliveries is the instructions per delivery. The load generator is this
script's own asyncio client, outside valgrind.

The servers: ``py_limit`` (the shared measuring stick's uvloop + orjson server),
``verb-console`` (this tree, headless, json, every default but ``--max-per-ip``)
and, with ``--baseline REV``, the package as it was at REV (``git archive``).

Counted: user-space instructions of the server process, the interpreter and
uvloop included; the kernel's work (one ``send`` per delivery for every server
here) is not, so the ratio of CPU time per delivery is nearer 1 than this one.

    .venv/bin/python bench/instructions.py [--receivers 500] [--short 100] [--long 300]
        [--baseline REV] [--shared DIR] [--out FILE]
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from io import BytesIO
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from benchlib import (
    PY_LIMIT_READY,
    REPO,
    VERB_READY,
    Server,
    Servers,
    exit_on_signals,
    free_port,
    machine,
    raise_nofile,
    result_path,
    shared_dir,
    table,
    write_json,
)

VALGRIND = ["valgrind", "--tool=cachegrind", "--cache-sim=no"]


def frame(body: bytes) -> bytes:
    return b"%d\n%s" % (len(body), body)


class Receiver:
    """One connection that counts the broadcasts carrying the current round's mark."""

    def __init__(self, load: Load, reader: asyncio.StreamReader) -> None:
        self.load = load
        self.reader = reader

    async def run(self) -> None:
        buf = b""
        while True:
            data = await self.reader.read(65536)
            if not data:
                return
            buf += data
            while True:
                nl = buf.find(b"\n")
                if nl < 0:
                    break
                end = nl + 1 + int(buf[:nl])
                if len(buf) < end:
                    break
                body, buf = buf[nl + 1 : end], buf[end:]
                if self.load.mark in body:
                    self.load.got += 1
                    if self.load.got == self.load.receivers:
                        self.load.round_done.set()


class Load:
    """``receivers`` connections and one sender; ``rounds`` broadcasts, one at a time."""

    def __init__(self, port: int, receivers: int) -> None:
        self.port = port
        self.receivers = receivers
        self.mark = b""
        self.got = 0
        self.round_done = asyncio.Event()

    async def run(self, rounds: int, timeout: float) -> int:
        conns = []
        tasks = []
        for _ in range(self.receivers):
            reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
            conns.append(writer)
            tasks.append(asyncio.create_task(Receiver(self, reader).run()))
        _, sender = await asyncio.open_connection("127.0.0.1", self.port)
        await asyncio.sleep(1.0)  # every greeting read before the first round
        delivered = 0
        try:
            for n in range(1, rounds + 1):
                self.mark = b"round-%d-" % n
                self.got = 0
                self.round_done.clear()
                data = (self.mark + b"x" * 64)[:64].decode()
                sender.write(frame(b'{"type":"broadcast","data":"%s"}' % data.encode()))
                await asyncio.wait_for(self.round_done.wait(), timeout)
                delivered += self.got
        finally:
            for w in [*conns, sender]:
                w.close()
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        await asyncio.sleep(0.5)  # the server sees every connection close
        return delivered


def counted(
    servers: Servers,
    name: str,
    argv: list[str],
    ready: re.Pattern[str],
    env: dict[str, str],
    receivers: int,
    rounds: int,
) -> tuple[int, int]:
    """(instructions, deliveries) of one server process run for ``rounds`` rounds."""
    with tempfile.TemporaryDirectory(prefix="bench-instructions-") as tmp:
        out = Path(tmp) / "cachegrind.out"
        server = Server(
            name,
            [*VALGRIND, f"--cachegrind-out-file={out}", *argv],
            ready,
            env={"PYTHONHASHSEED": "0", **env},
            cwd=Path(tmp),
            nofile=receivers + 1000,
        )
        servers.running.append(server)
        server.start(timeout=180)  # an interpreter under valgrind starts slowly
        delivered = asyncio.run(Load(server.port, receivers).run(rounds, timeout=120))
        proc = server.proc
        assert proc is not None
        proc.terminate()  # valgrind writes its counts on the way out
        proc.wait(120)
        servers.stop(server)
        for line in out.read_text().splitlines():
            if line.startswith("summary:"):
                return int(line.split()[1]), delivered
    raise RuntimeError(f"{name}: cachegrind wrote no summary")


def extract(rev: str, into: Path) -> Path:
    """The package as it was at ``rev``, for PYTHONPATH."""
    data = subprocess.run(
        ["git", "-C", str(REPO), "archive", rev, "verb_console"], capture_output=True, check=True
    ).stdout
    with tarfile.open(fileobj=BytesIO(data)) as tar:
        tar.extractall(into, filter="data")
    return into


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--receivers", type=int, default=500)
    p.add_argument("--short", type=int, default=100, help="rounds of the shorter run")
    p.add_argument("--long", type=int, default=300, help="rounds of the longer run")
    p.add_argument("--baseline", help="also count the package at this git revision")
    p.add_argument("--shared", help="the shared bench directory (py_limit.py)")
    p.add_argument("--out", help="results file (default bench/results/instructions-DATE.json)")
    args = p.parse_args(argv)
    if args.long <= args.short:
        p.error("--long must be more rounds than --short")
    if shutil.which("valgrind") is None:
        sys.exit("valgrind is needed (apt-get install valgrind)")
    exit_on_signals()
    raise_nofile(args.receivers + 1000)
    shared = shared_dir(args.shared)
    verb = [sys.executable, "-m", "verb_console", "--headless", "--port", "0"]
    verb += ["--protocol", "json", "--max-per-ip", "100000"]
    started = dt.datetime.now()
    with tempfile.TemporaryDirectory(prefix="bench-baseline-") as base_dir:
        port = free_port()
        variants: list[tuple[str, list[str], re.Pattern[str], dict[str, str]]] = [
            (
                "py_limit",
                [sys.executable, str(shared / "py_limit.py"), str(port), "uvloop", "orjson"],
                PY_LIMIT_READY,
                {},
            ),
            ("verb-console", verb, VERB_READY, {"PYTHONPATH": str(REPO)}),
        ]
        if args.baseline:
            extract(args.baseline, Path(base_dir))
            variants.append(
                (f"verb-console@{args.baseline}", verb, VERB_READY, {"PYTHONPATH": base_dir})
            )
        rows: dict[str, Any] = {}
        with Servers() as servers:
            for name, cmd, ready, env in variants:
                runs = {}
                for rounds in (args.short, args.long):
                    t0 = time.monotonic()
                    ir, delivered = counted(servers, name, cmd, ready, env, args.receivers, rounds)
                    runs[rounds] = (ir, delivered)
                    print(
                        f"{name}: {rounds} rounds, {delivered} deliveries, {ir:,} instructions"
                        f" ({time.monotonic() - t0:.0f} s)",
                        flush=True,
                    )
                (ir1, d1), (ir2, d2) = runs[args.short], runs[args.long]
                rows[name] = {
                    "runs": {
                        str(k): {"instructions": v[0], "deliveries": v[1]} for k, v in runs.items()
                    },
                    "per_delivery": round((ir2 - ir1) / (d2 - d1)),
                }
    floor = rows["py_limit"]["per_delivery"]
    out_rows = [
        [n, r["per_delivery"], f"{r['per_delivery'] / floor:.2f}x"] for n, r in rows.items()
    ]
    print()
    print(table(["server", "instructions per delivery", "/ py_limit"], out_rows))
    result = {
        "kind": "instructions",
        "started": started.isoformat(timespec="seconds"),
        "machine": machine(),
        "receivers": args.receivers,
        "rounds": [args.short, args.long],
        "baseline": args.baseline,
        "servers": rows,
    }
    path = Path(args.out) if args.out else result_path("instructions", started)
    write_json(path, result)
    print(f"\nwritten to {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
