"""What the message tap costs the server: closed (nobody watching) and open.

Three ``verb-console --headless`` servers run side by side, each loaded in turn,
in a rotating order, with ``cpu_per_msg.py PID -- node loadgen.js ping 127.0.0.1
PORT 50 20 4`` from the shared measuring stick (server CPU time per pong):

- ``before``: the code of ``--baseline`` (a git revision, default ``HEAD~1``),
  extracted with ``git archive``: the server without the tap's hook at all;
- ``closed``: this tree, with no console watching (``Hub.tap`` is None);
- ``open``: this tree with the tap opened at start, as while the Tap pane shows
  (the launcher opens it; at 20 rows a second kept, every other ping is only counted).

Reported: per-server medians of us/msg and the ratios closed/before and
open/before (of the medians, and the median of the per-round ratios).

    .venv/bin/python bench/tap_cost.py [--rounds 3] [--baseline REV] [--shared DIR] [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from io import BytesIO
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_SHARED = ROOT.parent / "shared" / "bench"

# Starts the headless server with the tap open from the first message on.
OPEN_LAUNCHER = """
import sys
from verb_console.cli import main
from verb_console.hub.hub import Hub
_start = Hub.start
def start(self):
    _start(self)
    self.tap_switch.open()
Hub.start = start
sys.exit(main(sys.argv[1:]))
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def wait_listening(port: int, proc: subprocess.Popen[Any], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise RuntimeError(f"nothing listens on {port}")


def extract(rev: str, into: Path) -> None:
    """The package as it was at ``rev``."""
    data = subprocess.run(
        ["git", "-C", str(ROOT), "archive", rev, "verb_console"],
        capture_output=True,
        check=True,
    ).stdout
    with tarfile.open(fileobj=BytesIO(data)) as tar:
        tar.extractall(into, filter="data")


def cpu_per_msg(shared: Path, pid: int, port: int) -> dict[str, Any]:
    node = shutil.which("node")
    if node is None:
        sys.exit("node (Node.js) is needed for the load generator")
    load = [node, str(shared / "loadgen.js"), "ping", "127.0.0.1", str(port), "50", "20", "4"]
    cmd = [sys.executable, str(shared / "cpu_per_msg.py"), str(pid), "--", *load]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    lines = done.stdout.strip().splitlines()
    if not lines:
        raise RuntimeError(f"the load printed nothing: {done.stderr.strip()}")
    result: dict[str, Any] = json.loads(lines[-1])
    if "server_us_per_msg" not in result:
        raise RuntimeError(f"the load failed: {result}")
    return result


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--baseline", default="HEAD~1", help="git revision without the tap")
    p.add_argument("--shared", help="the shared bench dir (default <repo>/../shared/bench)")
    p.add_argument("--out", type=Path, help="also write the figures to this JSON file")
    args = p.parse_args(argv)
    shared = Path(args.shared) if args.shared else DEFAULT_SHARED

    work = Path(tempfile.mkdtemp(prefix="tap-cost-"))
    extract(args.baseline, work / "before")
    common = ["--headless", "--protocol", "json", "--max-per-ip", "100000"]
    launch = {
        "before": ([sys.executable, "-m", "verb_console"], str(work / "before")),
        "closed": ([sys.executable, "-m", "verb_console"], str(ROOT)),
        "open": ([sys.executable, "-c", OPEN_LAUNCHER], str(ROOT)),
    }
    procs: dict[str, tuple[subprocess.Popen[bytes], int]] = {}
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in launch}
    try:
        for name, (cmd, path) in launch.items():
            port = free_port()
            env = {**os.environ, "PYTHONPATH": path}
            upload_dir = work / f"uploads-{name}"
            proc = subprocess.Popen(
                [*cmd, "--port", str(port), "--upload-dir", str(upload_dir), *common],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                env=env,
                cwd=work,
                start_new_session=True,
            )
            procs[name] = (proc, port)
            wait_listening(port, proc)
        time.sleep(1.0)
        names = list(launch)
        for n in range(args.rounds):
            order = names[n % 3 :] + names[: n % 3]
            for name in order:
                proc, port = procs[name]
                r = cpu_per_msg(shared, proc.pid, port)
                runs[name].append(r)
                print(
                    f"  round {n + 1} {name:6s} {r['server_us_per_msg']:6.2f} us/msg"
                    f"  {r['msgs_per_s']:>7,} msgs/s",
                    file=sys.stderr,
                )
                time.sleep(0.5)
    finally:
        for proc, _port in procs.values():
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(10)
                except subprocess.TimeoutExpired:
                    proc.kill()
        shutil.rmtree(work, ignore_errors=True)

    us = {name: [r["server_us_per_msg"] for r in rs] for name, rs in runs.items()}
    med = {name: statistics.median(v) for name, v in us.items()}

    def ratios(name: str) -> dict[str, float]:
        per_round = [a / b for a, b in zip(us[name], us["before"], strict=True)]
        return {
            "ratio_of_medians": round(med[name] / med["before"], 3),
            "median_of_round_ratios": round(statistics.median(per_round), 3),
        }

    results = {
        "load": "node loadgen.js ping 127.0.0.1 PORT 50 20 4",
        "baseline": args.baseline,
        "rounds": args.rounds,
        "us_per_msg": us,
        "median_us_per_msg": {k: round(v, 2) for k, v in med.items()},
        "closed_vs_before": ratios("closed"),
        "open_vs_before": ratios("open"),
        "load_average": os.getloadavg(),
    }
    print(json.dumps(results, indent=2))
    if args.out:
        args.out.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
