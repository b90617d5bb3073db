"""Upload throughput and latency under upload, against the disk's own speed.

    python bench/upload.py [--size BYTES] [--json-size BYTES] [--dir DIR] [--pingers 50]

In one run, on one disk (``--dir``, default a fresh directory under the system
temporary directory):

a. the disk's sequential write speed with fsync:
   ``dd if=/dev/zero of=FILE bs=1M count=N conv=fsync`` (N = size in MiB);
b. a binary upload of a ``--size`` file (default 1 GiB) through a headless
   server subprocess, timed from START to ``file_complete`` (which comes after
   the server's fsync and link): target at least 0.7x the dd speed;
c. a json (base64 chunks) upload of a ``--json-size`` file: target 100 MB/s;
d. the ping round trips of ``--pingers`` other json clients (default 50) while
   a ``--size`` binary upload runs: target p99 under 20 ms. The same clients'
   round trips with no upload running are shown for comparison.

The uploads are made by ``examples/upload.py`` in a subprocess of their own, so
the client's CPU is not the pingers'. The server is ``python -m verb_console
--headless`` with the per-IP throttle off (every client comes from 127.0.0.1).
Results are printed and, with ``--out FILE``, written as JSON.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
EXAMPLE = REPO / "examples" / "upload.py"
MiB = 1 << 20
GiB = 1 << 30
READY = re.compile(r"listening on \S+:(\d+) \(")

TARGET_RATIO = 0.7
TARGET_JSON = 100e6
TARGET_P99_MS = 20.0


def human(nbytes: float) -> str:
    return f"{nbytes / 1e6:,.1f} MB/s"


def dd_speed(directory: Path, size: int) -> tuple[float, float]:
    """(bytes per second, seconds) of a dd write of ``size`` bytes with fsync."""
    target = directory / "dd.bin"
    count = max(1, size // MiB)
    t0 = time.perf_counter()
    subprocess.run(
        ["dd", "if=/dev/zero", f"of={target}", "bs=1M", f"count={count}", "conv=fsync"],
        check=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    took = time.perf_counter() - t0
    target.unlink()
    return count * MiB / took, took


def make_source(path: Path, size: int) -> None:
    """A file of ``size`` random-looking bytes (a random block, varied per block)."""
    block = bytearray(os.urandom(4 * MiB))
    with path.open("wb") as fh:
        left = size
        i = 0
        while left > 0:
            block[:8] = i.to_bytes(8, "big")
            n = min(left, len(block))
            fh.write(block[:n] if n < len(block) else block)
            left -= n
            i += 1
        fh.flush()
        os.fsync(fh.fileno())


class Server:
    """``python -m verb_console --headless`` on a free port, logging to a file."""

    def __init__(self, upload_dir: Path, log_path: Path, max_file: int) -> None:
        self.log_path = log_path
        self._log = log_path.open("wb")
        env = dict(os.environ)
        env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "verb_console",
                "--headless",
                "--port",
                "0",
                "--protocol",
                "auto",
                "--upload-dir",
                str(upload_dir),
                "--max-per-ip",
                "0",
                "--max-file-size",
                str(max_file),
                "--upload-quota",
                str(4 * max_file),
            ],
            stdout=subprocess.DEVNULL,
            stderr=self._log,
            env=env,
        )
        self.port = self._wait_ready()

    def _wait_ready(self) -> int:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            found = READY.search(self.log_path.read_text(errors="replace"))
            if found:
                return int(found.group(1))
            if self.proc.poll() is not None:
                break
            time.sleep(0.05)
        self.stop()
        sys.exit(f"the server did not start:\n{self.log_path.read_text(errors='replace')}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()


async def run_upload(port: int, source: Path, protocol: str, name: str) -> dict[str, Any]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        str(EXAMPLE),
        str(source),
        "--port",
        str(port),
        "--protocol",
        protocol,
        "--name",
        name,
        "--json",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await proc.communicate()
    if proc.returncode != 0:
        raise RuntimeError(f"{protocol} upload failed: {err.decode().strip()}")
    result = json.loads(out)
    if not result["ok"]:
        raise RuntimeError(f"{protocol} upload: checksums differ")
    return result


class Pinger:
    """One json client that pings in a loop and records each round trip."""

    def __init__(self) -> None:
        self.samples: list[tuple[float, float]] = []  # (sent at, round trip seconds)
        self.reader: asyncio.StreamReader
        self.writer: asyncio.StreamWriter

    async def open(self, port: int) -> None:
        self.reader, self.writer = await asyncio.open_connection("127.0.0.1", port)
        self.writer.write(b'15\n{"type":"ping"}')
        await self.writer.drain()
        await self._frame()  # welcome
        await self._frame()  # pong

    async def _frame(self) -> bytes:
        header = await self.reader.readuntil(b"\n")
        return await self.reader.readexactly(int(header[:-1]))

    async def run(self, stop: asyncio.Event, interval: float) -> None:
        ping = b'15\n{"type":"ping"}'
        while not stop.is_set():
            t0 = time.perf_counter()
            self.writer.write(ping)
            await self._frame()
            self.samples.append((t0, time.perf_counter() - t0))
            await asyncio.sleep(interval)

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(Exception):
            await self.writer.wait_closed()


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    k = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[k]


def latency_figures(values: list[float]) -> dict[str, float]:
    ms = [v * 1000 for v in values]
    return {
        "count": len(ms),
        "p50_ms": percentile(ms, 50),
        "p99_ms": percentile(ms, 99),
        "max_ms": max(ms) if ms else float("nan"),
        "mean_ms": statistics.fmean(ms) if ms else float("nan"),
    }


async def ping_under_upload(
    port: int, source: Path, pingers: int, interval: float, idle_seconds: float
) -> dict[str, Any]:
    clients = [Pinger() for _ in range(pingers)]
    for c in clients:
        await c.open(port)
    # Baseline: the same clients with no upload running.
    stop = asyncio.Event()
    tasks = [asyncio.create_task(c.run(stop, interval)) for c in clients]
    warm = time.perf_counter() + 0.5  # the first round of 50 pings goes out at once
    await asyncio.sleep(idle_seconds + 0.5)
    stop.set()
    await asyncio.gather(*tasks)
    idle = [rtt for c in clients for sent, rtt in c.samples if sent >= warm]
    for c in clients:
        c.samples.clear()
    stop = asyncio.Event()
    tasks = [asyncio.create_task(c.run(stop, interval)) for c in clients]
    t0 = time.perf_counter()
    try:
        result = await run_upload(port, source, "binary", "under-load.bin")
    finally:
        stop.set()
        await asyncio.gather(*tasks)
    t1 = time.perf_counter()
    busy = [rtt for c in clients for sent, rtt in c.samples if t0 <= sent <= t1]
    for c in clients:
        await c.close()
    return {
        "idle": latency_figures(idle),
        "during_upload": latency_figures(busy),
        "upload_seconds": result["seconds"],
        "upload_speed": result["bytes"] / result["seconds"],
    }


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=GiB, help="binary upload size (1 GiB)")
    parser.add_argument("--json-size", type=int, help="json upload size (default: --size)")
    parser.add_argument("--dir", type=Path, help="where to write (default: a temp directory)")
    parser.add_argument("--pingers", type=int, default=50)
    parser.add_argument("--ping-interval", type=float, default=0.1, help="seconds between pings")
    parser.add_argument("--out", type=Path, help="also write the results here as JSON")
    parser.add_argument("--keep", action="store_true", help="keep the work directory")
    return parser.parse_args()


async def main_async(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    size = args.size
    json_size = args.json_size or size
    need = max(size, json_size) * 2 + size + 64 * MiB
    free = shutil.disk_usage(work).free
    if free < need:
        sys.exit(f"{work}: {free / GiB:.1f} GiB free, this run needs {need / GiB:.1f} GiB")
    results: dict[str, Any] = {"size": size, "json_size": json_size, "dir": str(work)}

    source = work / "source.bin"
    make_source(source, max(size, json_size))
    json_source = source
    if json_size != size:
        json_source = work / "json-source.bin"
        make_source(json_source, json_size)
        bin_source = work / "bin-source.bin"
        make_source(bin_source, size)
        source.unlink()
    else:
        bin_source = source

    up = work / "up"
    server = Server(up, work / "server.log", max(size, json_size))
    try:
        # The disk's speed varies from run to run: dd goes right before the upload,
        # after a small dd that flushes what making the source left dirty.
        dd_speed(work, 64 * MiB)
        speed, took = dd_speed(work, size)
        results["dd"] = {"bytes_per_s": speed, "seconds": took}
        print(f"a. dd with fsync, {size // MiB} MiB: {human(speed)} ({took:.2f}s)")
        r = await run_upload(server.port, bin_source, "binary", "binary.bin")
        b_speed = r["bytes"] / r["seconds"]
        ratio = b_speed / speed
        results["binary"] = {
            "bytes_per_s": b_speed,
            "seconds": r["seconds"],
            "sent_seconds": r["sent_seconds"],
            "server_avg_speed": r["server"]["avgSpeed"],
            "ratio_vs_dd": ratio,
            "target_met": ratio >= TARGET_RATIO,
        }
        print(
            f"b. binary upload: {human(b_speed)} ({r['seconds']:.2f}s, of which "
            f"{r['seconds'] - r['sent_seconds']:.2f}s after the last byte was sent), "
            f"{ratio:.2f}x dd (target >= {TARGET_RATIO}x) "
            f"{'OK' if ratio >= TARGET_RATIO else 'MISSED'}"
        )
        (up / "binary.bin").unlink()

        r = await run_upload(server.port, json_source, "json", "json.bin")
        j_speed = r["bytes"] / r["seconds"]
        results["json"] = {
            "bytes_per_s": j_speed,
            "seconds": r["seconds"],
            "sent_seconds": r["sent_seconds"],
            "server_avg_speed": r["server"]["avgSpeed"],
            "target_met": j_speed >= TARGET_JSON,
        }
        print(
            f"c. json upload: {human(j_speed)} ({r['seconds']:.2f}s) "
            f"(target >= {human(TARGET_JSON)}) {'OK' if j_speed >= TARGET_JSON else 'MISSED'}"
        )
        (up / "json.bin").unlink()

        lat = await ping_under_upload(
            server.port, bin_source, args.pingers, args.ping_interval, idle_seconds=2.0
        )
        p99 = lat["during_upload"]["p99_ms"]
        lat["target_met"] = p99 < TARGET_P99_MS
        results["latency"] = lat
        idle, busy = lat["idle"], lat["during_upload"]
        print(
            f"d. {args.pingers} json clients pinging every {args.ping_interval * 1000:.0f} ms "
            f"during a {size // MiB} MiB binary upload ({human(lat['upload_speed'])}): "
            f"p50 {busy['p50_ms']:.2f} ms, p99 {p99:.2f} ms, max {busy['max_ms']:.2f} ms "
            f"over {busy['count']} pings (target p99 < {TARGET_P99_MS:g} ms) "
            f"{'OK' if lat['target_met'] else 'MISSED'}"
        )
        print(
            f"   without an upload: p50 {idle['p50_ms']:.2f} ms, p99 {idle['p99_ms']:.2f} ms, "
            f"max {idle['max_ms']:.2f} ms over {idle['count']} pings"
        )
    finally:
        server.stop()
    return results


def main() -> int:
    args = parse_args()
    base = args.dir
    if base is not None:
        base.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="verb-upload-bench-", dir=base))
    try:
        results = asyncio.run(main_async(args, work))
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    if args.out is not None:
        args.out.write_text(json.dumps(results, indent=2) + "\n")
    met = all(results[k]["target_met"] for k in ("binary", "json", "latency"))
    return 0 if met else 1


if __name__ == "__main__":
    sys.exit(main())
