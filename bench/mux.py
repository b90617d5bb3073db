"""Server CPU per json ping over mux against plain json, on the same headless server.

    python bench/mux.py [--rounds 5] [--conns 50] [--window 20] [--seconds 4]

One ``verb-console --headless --protocol auto`` server serves both kinds of load.
The load generator is this same file run as a separate process (``--loadgen``):
an asyncio client whose every connection either speaks plain json or opens one
json stream on a mux connection (each ping in its own mux frame, or with
``--mux-framing per-write`` each write's pings in one frame), keeps
``--window`` pings in flight and counts pongs. The same generator for both
sides keeps the ratio fair. Rounds alternate plain and mux; the server's CPU
time (utime + stime from /proc/PID/stat) per pong is reported per round, then
the medians and the mux/plain ratio (target: at most 1.3).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from benchlib import pin_load, pin_server  # noqa: E402

from verb_console.protocols import json as jcodec  # noqa: E402
from verb_console.protocols import mux as mcodec  # noqa: E402

PING = jcodec.encode({"type": "ping"})
MUX_PING = mcodec.encode_frame(1, PING)
OPEN_STREAM = mcodec.encode_control(
    {"type": "stream_create", "streamId": 1, "streamType": "json", "metadata": {}}
)
TARGET_RATIO = 1.3


# --------------------------------------------------------------------------- load generator


class PingConnection(asyncio.Protocol):
    """Keeps ``window`` pings in flight; counts the pongs (every frame after the welcome)."""

    def __init__(
        self, mux: bool, window: int, ready: asyncio.Future[None], per_write: bool = False
    ) -> None:
        self.mux = mux
        self.per_write = per_write
        self.window = window
        self.ready = ready
        self.json = jcodec.JsonDecoder()
        self.frames = mcodec.MuxDecoder() if mux else None
        self.transport: asyncio.Transport | None = None
        self.welcomed = False
        self.counting = False
        self.pongs = 0
        self.ping = MUX_PING if mux else PING

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        # An auto listener waits for the client's first bytes: the json side's
        # first ping draws the welcome, the mux side opens its stream.
        self.transport.write(OPEN_STREAM if self.mux else PING)  # type: ignore[union-attr]

    def data_received(self, data: bytes) -> None:
        if self.frames is not None:
            bodies = []
            for frame in self.frames.feed(data):
                if frame.stream_id == 1:
                    bodies += self.json.feed(frame.payload)
        else:
            bodies = self.json.feed(data)
        n = len(bodies)
        if not self.welcomed and n:
            self.welcomed = True
            n -= 1  # the welcome
            if not self.ready.done():
                self.ready.set_result(None)
            if not self.mux:
                n -= 1  # the pong to the first ping
            self.send(self.window)
            n = max(n, 0)
        if n:
            if self.counting:
                self.pongs += n
            self.send(n)

    def send(self, n: int) -> None:
        if self.per_write:
            # All pings of one write in one mux frame, as MuxStream.write would send them.
            self.transport.write(mcodec.encode_frame(1, PING * n))  # type: ignore[union-attr]
        else:
            self.transport.write(self.ping * n)  # type: ignore[union-attr]


async def loadgen(
    host: str, port: int, mux: bool, conns: int, window: int, seconds: float, per_write: bool
) -> None:
    loop = asyncio.get_running_loop()
    protos: list[PingConnection] = []
    readies = []
    for _ in range(conns):
        ready = loop.create_future()
        _, proto = await loop.create_connection(
            lambda r=ready: PingConnection(mux, window, r, mux and per_write), host, port
        )
        protos.append(proto)
        readies.append(ready)
    await asyncio.wait_for(asyncio.gather(*readies), 10)
    await asyncio.sleep(0.3)  # warm up
    for p in protos:
        p.counting = True
    # Tell the parent when the measured window starts and ends.
    print("start", flush=True)
    t0 = time.perf_counter()
    await asyncio.sleep(seconds)
    for p in protos:
        p.counting = False
    took = time.perf_counter() - t0
    msgs = sum(p.pongs for p in protos)
    print("stop", flush=True)
    print(json.dumps({"mux": mux, "msgs": msgs, "seconds": round(took, 3)}), flush=True)
    for p in protos:
        if p.transport is not None:
            p.transport.close()


# --------------------------------------------------------------------------- driver


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_listening(port: int, proc: subprocess.Popen[bytes], timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"server exited with {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), 0.2) as s:
                # An auto listener would wait for bytes: a json ping draws the welcome.
                s.sendall(PING)
                s.recv(1)
            return
        except OSError:
            time.sleep(0.1)
    raise SystemExit("server did not start listening")


def run_round(args: argparse.Namespace, pid: int, port: int, mux: bool) -> dict[str, float]:
    cmd = [sys.executable, __file__, "--loadgen", "--port", str(port)]
    cmd += ["--conns", str(args.conns), "--window", str(args.window)]
    cmd += ["--seconds", str(args.seconds), "--mux-framing", args.mux_framing]
    cmd += ["--mux"] if mux else []
    gen = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, preexec_fn=pin_load)
    assert gen.stdout is not None
    c0 = c1 = 0.0
    result: dict[str, float] = {}
    for line in gen.stdout:
        line = line.strip()
        if line == "start":
            c0 = cpu_seconds(pid)
        elif line == "stop":
            c1 = cpu_seconds(pid)
        elif line.startswith("{"):
            result = json.loads(line)
    if gen.wait() != 0 or not result.get("msgs"):
        raise SystemExit(f"load generator failed ({gen.returncode})")
    cpu = c1 - c0
    return {
        "msgs": result["msgs"],
        "msgs_per_s": result["msgs"] / result["seconds"],
        "server_cpu_s": cpu,
        "us_per_msg": cpu / result["msgs"] * 1e6,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--loadgen", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--mux", action="store_true", help="loadgen: ping over a mux json stream")
    parser.add_argument(
        "--mux-framing",
        choices=["per-ping", "per-write"],
        default="per-ping",
        help="each ping in its own mux frame (default), or each write's pings in one frame",
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--conns", type=int, default=50)
    parser.add_argument("--window", type=int, default=20, help="pings in flight per connection")
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--rounds", type=int, default=5, help="rounds of each kind")
    parser.add_argument("--loop", choices=["uvloop", "asyncio"], default="uvloop")
    args = parser.parse_args()

    if args.loadgen:
        runner = asyncio.run
        if args.loop == "uvloop":
            try:
                import uvloop

                runner = uvloop.run
            except ImportError:
                pass
        per_write = args.mux_framing == "per-write"
        runner(
            loadgen(
                args.host, args.port, args.mux, args.conns, args.window, args.seconds, per_write
            )
        )
        return 0

    port = args.port or free_port()
    exe = Path(sys.executable).with_name("verb-console")
    with tempfile.TemporaryDirectory(prefix="verb-mux-bench-") as tmp:
        command = [str(exe), "--headless", "--port", str(port), "--protocol", "auto"]
        command += ["--max-per-ip", "100000", "--upload-dir", tmp, "--idle-timeout", "0"]
        server = subprocess.Popen(
            command,
            stdout=subprocess.DEVNULL,
            stderr=open(Path(tmp) / "server.log", "wb"),  # noqa: SIM115
            preexec_fn=pin_server,
        )
        try:
            wait_listening(port, server)
            rows: dict[str, list[dict[str, float]]] = {"plain": [], "mux": []}
            for i in range(args.rounds):
                for kind in ("plain", "mux") if i % 2 == 0 else ("mux", "plain"):
                    r = run_round(args, server.pid, port, kind == "mux")
                    rows[kind].append(r)
                    print(
                        f"round {i + 1} {kind:5}: {r['msgs_per_s']:9.0f} msgs/s, "
                        f"server {r['us_per_msg']:6.2f} us/msg",
                        flush=True,
                    )
            med = {k: statistics.median(r["us_per_msg"] for r in v) for k, v in rows.items()}
            rate = {k: statistics.median(r["msgs_per_s"] for r in v) for k, v in rows.items()}
            ratio = med["mux"] / med["plain"]
            summary = {
                "conns": args.conns,
                "window": args.window,
                "seconds": args.seconds,
                "rounds": args.rounds,
                "mux_framing": args.mux_framing,
                "plain_us_per_msg": round(med["plain"], 2),
                "mux_us_per_msg": round(med["mux"], 2),
                "plain_msgs_per_s": round(rate["plain"]),
                "mux_msgs_per_s": round(rate["mux"]),
                "ratio": round(ratio, 3),
                "target": TARGET_RATIO,
                "met": ratio <= TARGET_RATIO,
            }
            print(json.dumps(summary))
        finally:
            server.send_signal(signal.SIGTERM)
            try:
                server.wait(10)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait()
    return 0


if __name__ == "__main__":
    sys.exit(main())
