"""The read path: does the shared read buffer (asyncio.BufferedProtocol) pay off?

``verb_console.net.TCPSocket`` is an ``asyncio.BufferedProtocol`` whose reads land
in ONE buffer shared by every connection of a server (sized by
``readable_high_water_mark``, 256 KiB by default), copied out as ``bytes`` before
the listeners see them. This benchmark builds the same tiny json ping server
several ways -- same codec (``verb_console.protocols.json.JsonDecoder`` + orjson),
same reply, uvloop -- differing only in how bytes come in:

- ``protocol``: a plain ``asyncio.Protocol`` (``data_received(bytes)``);
- ``shared``: ``BufferedProtocol``, one buffer for all connections, copied to
  ``bytes`` per read (what ``TCPSocket`` does);
- ``shared-view``: the same without the copy (the decoder reads the memoryview);
- ``own``: ``BufferedProtocol`` with a 64 KiB buffer per connection, no copy.

Each is loaded by ``loadgen.js ping`` through ``cpu_per_msg.py`` in interleaved
rounds; the figure is the server's CPU time per ping answered (medians), and the
RSS of the server after the load.

    .venv/bin/python bench/read_path.py [--rounds 5] [--shared DIR]
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import re
import sys
import time
from pathlib import Path
from typing import Any

from benchlib import (
    Server,
    Servers,
    cpu_per_msg,
    exit_on_signals,
    free_port,
    machine,
    median,
    result_path,
    shared_dir,
    table,
    write_json,
)

MODES = ("protocol", "shared", "shared-view", "own")
READY = re.compile(r"read_path server listening on (\d+)")
SHARED_SIZE = 256 * 1024  # verb-console's default readable_high_water_mark
OWN_SIZE = 64 * 1024


# ----------------------------------------------------------------- the servers
def serve(mode: str, port: int) -> None:
    import orjson
    import uvloop

    from verb_console.protocols.json import JsonDecoder

    dumps, loads = orjson.dumps, orjson.loads
    now = time.time

    def handle(decoder: JsonDecoder, transport: asyncio.Transport, data: Any) -> None:
        bodies = decoder.feed(data)
        if not bodies:
            return
        out = []
        for body in bodies:
            msg = loads(body)
            if msg.get("type") == "ping":
                reply = {"type": "pong", "timestamp": int(now() * 1000)}
                if "ref" in msg:
                    reply["ref"] = msg["ref"]
            else:
                reply = {"type": "error", "code": "unknown_type", "message": "ping only"}
            b = dumps(reply)
            out.append(b"%d\n%s" % (len(b), b))
        transport.write(out[0] if len(out) == 1 else b"".join(out))

    welcome = b'{"type":"welcome","id":"x"}'
    welcome = b"%d\n%s" % (len(welcome), welcome)

    class Plain(asyncio.Protocol):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            self.t: asyncio.Transport = transport  # type: ignore[assignment]
            self.d = JsonDecoder()
            self.t.write(welcome)

        def data_received(self, data: bytes) -> None:
            handle(self.d, self.t, data)

    shared = memoryview(bytearray(SHARED_SIZE))

    class Shared(asyncio.BufferedProtocol):
        copy = True

        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            self.t: asyncio.Transport = transport  # type: ignore[assignment]
            self.d = JsonDecoder()
            self.buf = self.make_buffer()
            self.t.write(welcome)

        def make_buffer(self) -> memoryview:
            return shared

        def get_buffer(self, sizehint: int) -> memoryview:
            return self.buf

        def buffer_updated(self, nbytes: int) -> None:
            data = bytes(self.buf[:nbytes]) if self.copy else self.buf[:nbytes]
            handle(self.d, self.t, data)

    class SharedView(Shared):
        copy = False

    class Own(SharedView):
        def make_buffer(self) -> memoryview:
            return memoryview(bytearray(OWN_SIZE))

    factory = {"protocol": Plain, "shared": Shared, "shared-view": SharedView, "own": Own}[mode]

    async def main() -> None:
        loop = asyncio.get_running_loop()
        srv = await loop.create_server(factory, "127.0.0.1", port, backlog=4096)
        print(f"read_path server listening on {port} ({mode})", flush=True)
        await srv.serve_forever()

    uvloop.run(main())


# ----------------------------------------------------------------- the benchmark
def make_server(mode: str) -> Server:
    port = free_port()
    return Server(
        f"read_path-{mode}",
        [sys.executable, str(Path(__file__).resolve()), "--serve", mode, str(port)],
        READY,
    )


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        description="Server CPU per ping for one tiny json ping server read four ways "
        "(Protocol, shared BufferedProtocol buffer with and without a copy, per-connection "
        "buffer), interleaved rounds, medians.",
    )
    p.add_argument("--rounds", type=int, default=5, help="rounds of every mode (default 5)")
    p.add_argument("--seconds", type=float, default=4, help="load duration per run (default 4)")
    p.add_argument("--conns", type=int, default=50, help="ping connections (default 50)")
    p.add_argument("--window", type=int, default=20, help="pings in flight per conn (default 20)")
    p.add_argument(
        "--shared", help="the shared bench dir (default <repo>/../shared/bench)", default=None
    )
    p.add_argument(
        "--out", type=Path, help="JSON results file (default bench/results/read_path-DATE.json)"
    )
    p.add_argument("--serve", nargs=2, metavar=("MODE", "PORT"), help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.serve:
        serve(args.serve[0], int(args.serve[1]))
        return 0
    if args.rounds < 1:
        p.error("--rounds must be at least 1")
    exit_on_signals()
    shared = shared_dir(args.shared)
    started = datetime.datetime.now().astimezone()
    rounds: list[dict[str, Any]] = []
    with Servers() as servers:
        for i in range(args.rounds):
            order = list(MODES[i % len(MODES) :] + MODES[: i % len(MODES)])
            result: dict[str, Any] = {"order": order}
            for mode in order:
                server = servers.start(make_server(mode))
                try:
                    time.sleep(0.5)
                    r = cpu_per_msg(
                        shared,
                        server.pid,
                        ["ping", "127.0.0.1", server.port, args.conns, args.window, args.seconds],
                    )
                    r["rss_kib"] = server.rss_kib()
                finally:
                    servers.stop(server)
                if r.get("errors") or not r.get("msgs"):
                    raise RuntimeError(f"{mode}: bad run {r}")
                result[mode] = r
                print(
                    f"round {i + 1}/{args.rounds} {mode:12} {r['server_us_per_msg']:6.2f} us/msg"
                    f" ({r['msgs_per_s']} msgs/s, RSS {r['rss_kib']} KiB)",
                    flush=True,
                )
                time.sleep(0.5)
            rounds.append(result)
    summary: dict[str, Any] = {}
    for mode in MODES:
        us = [r[mode]["server_us_per_msg"] for r in rounds]
        summary[mode] = {
            "us_per_msg": us,
            "median_us_per_msg": median(us),
            "median_msgs_per_s": median([r[mode]["msgs_per_s"] for r in rounds]),
            "median_rss_kib": median([r[mode]["rss_kib"] for r in rounds]),
            # Same round, same minute: the ratio to the plain Protocol.
            "median_ratio_to_protocol": median(
                [r[mode]["server_us_per_msg"] / r["protocol"]["server_us_per_msg"] for r in rounds]
            ),
        }
    print()
    print(f"Server CPU per ping, medians of {len(rounds)} rounds (lower is better)\n")
    print(
        table(
            ["read path", "us/msg", "/ protocol", "msgs/s", "RSS KiB"],
            [
                [
                    m,
                    s["median_us_per_msg"],
                    s["median_ratio_to_protocol"],
                    s["median_msgs_per_s"],
                    s["median_rss_kib"],
                ]
                for m, s in summary.items()
            ],
        )
    )
    out = args.out or result_path("read_path", started)
    data = {
        "benchmark": "read_path",
        "date": started.isoformat(timespec="seconds"),
        "rounds": len(rounds),
        "load": f"loadgen.js ping 127.0.0.1 PORT {args.conns} {args.window} {args.seconds:g}",
        "machine": machine(),
        "modes": summary,
        "raw": rounds,
    }
    print(f"\nwrote {write_json(out, data)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
