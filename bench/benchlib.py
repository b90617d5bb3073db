"""Helpers shared by the benchmarks: start and stop servers, run the load, read /proc.

Every server is a subprocess whose output goes to a temporary file (a pipe nobody
reads could fill up and stall it); its "listening" line is awaited by polling that
file. :class:`Servers` is a context manager that stops every server it started,
whatever happens, and SIGTERM/SIGHUP of the benchmark unwind through it too.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import re
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent
DEFAULT_SHARED = REPO.parent / "shared" / "bench"
RESULTS_DIR = BENCH_DIR / "results"

# verb-console logs "... listening on 127.0.0.1:PORT (json)" on stderr.
VERB_READY = re.compile(r"listening on \S+:(\d+) \(json\)")
PY_LIMIT_READY = re.compile(r"py limit listening on (\d+)")
NODE_READY = re.compile(r"node peer listening on (\d+)")


def exit_on_signals() -> None:
    """Turn SIGTERM/SIGHUP into SystemExit so ``finally`` blocks stop the servers."""

    def bail(signum: int, frame: Any) -> None:
        raise SystemExit(128 + signum)

    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, bail)


def _cpu_sets() -> tuple[set[int], set[int]] | None:
    """Server on one core, load generator on the others.

    On two cores, where the kernel happened to put the server and the load
    generator swung one server's CPU per message by up to 2x between rounds;
    pinning them apart makes rounds comparable. BENCH_PIN=0 turns it off.
    """
    if os.environ.get("BENCH_PIN", "1") == "0" or not hasattr(os, "sched_getaffinity"):
        return None
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        return None
    return {cpus[0]}, set(cpus[1:])


CPU_SETS = _cpu_sets()


def pin_server() -> None:
    """preexec_fn for a server process."""
    if CPU_SETS is not None:
        os.sched_setaffinity(0, CPU_SETS[0])


def pin_load() -> None:
    """preexec_fn for a load-generator process (its children inherit it)."""
    if CPU_SETS is not None:
        os.sched_setaffinity(0, CPU_SETS[1])


def shared_dir(path: str | None) -> Path:
    d = Path(path) if path else DEFAULT_SHARED
    missing = [
        f
        for f in ("py_limit.py", "node_peer.js", "loadgen.js", "cpu_per_msg.py")
        if not (d / f).is_file()
    ]
    if missing:
        sys.exit(f"shared bench dir {d} lacks {', '.join(missing)} (use --shared DIR)")
    return d.resolve()


def verb_console_cmd() -> list[str]:
    """The ``verb-console`` of this interpreter's environment."""
    script = Path(sys.executable).parent / "verb-console"
    if script.is_file():
        return [str(script)]
    found = shutil.which("verb-console")
    return [found] if found else [sys.executable, "-m", "verb_console"]


def node_cmd() -> str:
    node = shutil.which("node")
    if node is None:
        sys.exit("node (Node.js) is needed for the load generator and node_peer.js")
    return node


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def raise_nofile(want: int) -> int:
    """Raise this process's RLIMIT_NOFILE soft limit towards ``want``; returns the new limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = want if hard == resource.RLIM_INFINITY else min(want, hard)
    if soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


class Server:
    """One server subprocess; :meth:`start` returns once its ready line is out."""

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        ready: re.Pattern[str],
        *,
        env: dict[str, str] | None = None,
        cwd: Path | None = None,
        nofile: int | None = None,
    ) -> None:
        self.name = name
        self.argv = list(argv)
        self.ready = ready
        self.env = env
        self.cwd = cwd
        self.nofile = nofile
        self.proc: subprocess.Popen[bytes] | None = None
        self.port = 0
        # Lives as long as the server: closed (and removed) by stop().
        self._log = tempfile.NamedTemporaryFile(prefix=f"bench-{name}-", suffix=".log")  # noqa: SIM115

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def _preexec(self) -> None:
        pin_server()
        if self.nofile:
            _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
            resource.setrlimit(resource.RLIMIT_NOFILE, (min(self.nofile, hard), hard))

    def start(self, timeout: float = 20.0) -> Server:
        env = dict(os.environ)
        if self.env:
            env.update(self.env)
        self.proc = subprocess.Popen(
            self.argv,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            cwd=self.cwd,
            env=env,
            preexec_fn=self._preexec,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            m = self.ready.search(self.output())
            if m:
                self.port = int(m.group(1))
                return self
            if self.proc.poll() is not None:
                break
            time.sleep(0.05)
        tail = self.output()[-2000:]
        self.stop()
        raise RuntimeError(f"{self.name} did not start ({' '.join(self.argv)}):\n{tail}")

    def output(self) -> str:
        with open(self._log.name, "rb") as fh:
            return fh.read().decode("utf-8", "replace")

    def stop(self) -> None:
        proc = self.proc
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
        with contextlib.suppress(OSError):
            self._log.close()

    # ----------------------------------------------------------- /proc figures
    def rss_kib(self) -> int:
        with open(f"/proc/{self.pid}/status") as fh:
            for line in fh:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
        raise RuntimeError("no VmRSS")

    def cpu_s(self) -> float:
        with open(f"/proc/{self.pid}/stat") as fh:
            f = fh.read().rsplit(")", 1)[1].split()
        return (int(f[11]) + int(f[12])) / os.sysconf("SC_CLK_TCK")


class Servers(contextlib.AbstractContextManager["Servers"]):
    """Starts servers and stops every one of them on exit, errors included."""

    def __init__(self) -> None:
        self.running: list[Server] = []

    def start(self, server: Server) -> Server:
        self.running.append(server)
        return server.start()

    def stop(self, server: Server) -> None:
        server.stop()
        with contextlib.suppress(ValueError):
            self.running.remove(server)

    def __exit__(self, *exc: object) -> None:
        for server in reversed(self.running):
            server.stop()
        self.running.clear()


def py_limit_server(shared: Path, loop: str = "uvloop", codec: str = "orjson") -> Server:
    port = free_port()
    return Server(
        "py_limit",
        [sys.executable, str(shared / "py_limit.py"), str(port), loop, codec],
        PY_LIMIT_READY,
        cwd=shared,
    )


def node_peer_server(shared: Path) -> Server:
    port = free_port()
    return Server("node_peer", [node_cmd(), str(shared / "node_peer.js"), str(port)], NODE_READY)


def verb_console_server(
    name: str,
    extra: Sequence[str],
    *,
    loop: str = "uvloop",
    cwd: Path | None = None,
    source: Path | None = None,
) -> Server:
    """A headless verb-console; ``source``: the ``verb_console`` package in that
    directory (an exported tree of another commit) instead of this one's."""
    argv = [*verb_console_cmd(), "--headless", "--port", "0", "--protocol", "json", *extra]
    env = {"VERB_CONSOLE_LOOP": loop}
    if source is not None:
        env["PYTHONPATH"] = str(source)
    return Server(name, argv, VERB_READY, env=env, cwd=cwd or Path(tempfile.gettempdir()))


def cpu_per_msg(shared: Path, pid: int, load: Sequence[str | int], timeout: float = 120) -> dict:
    """Run ``cpu_per_msg.py PID -- node loadgen.js LOAD...`` and return its JSON line."""
    cmd = [
        sys.executable,
        str(shared / "cpu_per_msg.py"),
        str(pid),
        "--",
        node_cmd(),
        str(shared / "loadgen.js"),
        *map(str, load),
    ]
    res = subprocess.run(
        cmd, capture_output=True, text=True, cwd=shared, timeout=timeout, preexec_fn=pin_load
    )
    lines = res.stdout.strip().splitlines()
    if res.returncode != 0 or not lines:
        raise RuntimeError(f"load failed ({res.returncode}): {res.stdout}\n{res.stderr}")
    result: dict = json.loads(lines[-1])
    if "error" in result:
        raise RuntimeError(f"load generator error: {result['error']}")
    return result


def median(values: Sequence[float]) -> float | None:
    return round(statistics.median(values), 3) if values else None


def machine() -> dict[str, Any]:
    node = shutil.which("node")
    node_version = (
        subprocess.run([node, "--version"], capture_output=True, text=True).stdout.strip()
        if node
        else None
    )
    info: dict[str, Any] = {
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "node": node_version,
        "platform": platform.platform(),
    }
    for mod in ("uvloop", "orjson"):
        with contextlib.suppress(ImportError):
            info[mod] = __import__(mod).__version__
    with contextlib.suppress(Exception):
        info["git_commit"] = subprocess.run(
            ["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
        ).stdout.strip()
        # Figures of a tree with uncommitted changes to the package are not of that commit.
        info["package_changed_since_commit"] = bool(
            subprocess.run(
                ["git", "-C", str(REPO), "status", "--porcelain", "--", "verb_console"],
                capture_output=True,
                text=True,
            ).stdout.strip()
        )
    return info


def result_path(kind: str, when: Any) -> Path:
    """``bench/results/KIND-DATE.json``; a later run the same day gets ``-2``, ``-3``..."""
    base = f"{kind}-{when:%Y-%m-%d}"
    path = RESULTS_DIR / f"{base}.json"
    n = 1
    while path.exists():
        n += 1
        path = RESULTS_DIR / f"{base}-{n}.json"
    return path


def write_json(path: Path, data: dict[str, Any]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2) + "\n")
    return path


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A plain-text table, first column left-aligned, the rest right-aligned."""
    cells = [[str(h) for h in headers]] + [["-" if c is None else str(c) for c in r] for r in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]

    def fmt(row: list[str]) -> str:
        return "  ".join(
            c.ljust(widths[i]) if i == 0 else c.rjust(widths[i]) for i, c in enumerate(row)
        )

    lines = [fmt(cells[0]), "  ".join("-" * w for w in widths)]
    lines += [fmt(r) for r in cells[1:]]
    return "\n".join(lines)


Factory = Callable[[], Server]
