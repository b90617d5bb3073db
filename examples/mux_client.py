"""Three sessions over one TCP connection: a json, an echo and a binary stream.

Start a server (``verb-console --headless --protocol auto`` or ``--protocol mux``),
then::

    python examples/mux_client.py --host 127.0.0.1 --port 8080

It opens the three streams, shows each working, prints what it did, closes them
and exits 0 (1 when something did not go as the protocol says).
"""

from __future__ import annotations

import argparse
import asyncio
import sys

from verb_console.client import MuxClient, MuxError
from verb_console.protocols import binary as b


async def run(host: str, port: int) -> None:
    client = await MuxClient.connect(host, port)
    try:
        print(f"connected to {host}:{port} as {client.local_id}")
        pong = await client.ping()
        print(f"control ping -> pong at {pong['timestamp']}")

        # json: welcome, then a ping on the stream itself
        js = await client.open_stream("json")
        chat = js.json()
        welcome = await chat.receive()
        check(welcome.get("type") == "welcome", f"expected a welcome, got {welcome}")
        print(f"stream {js.stream_id} (json): welcome, session id {welcome['id']}")
        pong = await chat.request({"type": "ping", "ref": "example"})
        check(pong.get("type") == "pong" and pong.get("ref") == "example", f"got {pong}")
        print(f"stream {js.stream_id} (json): ping -> pong (ref {pong['ref']})")

        # echo: greeting line, then one line echoed
        es = await client.open_stream("echo")
        lines = es.lines()
        greeting = await lines.readline()
        print(f"stream {es.stream_id} (echo): {greeting}")
        await lines.send_line("hello over mux")
        echoed = await lines.readline()
        check(echoed == "Echo: hello over mux", f"got {echoed!r}")
        print(f"stream {es.stream_id} (echo): sent 'hello over mux' -> {echoed!r}")

        # binary: heartbeat and a DATA echo
        bs = await client.open_stream("binary")
        frames = bs.binary()
        ack = await frames.heartbeat()
        check(ack.type == b.HEARTBEAT_ACK and ack.payload == b"pong", f"got {ack}")
        print(f"stream {bs.stream_id} (binary): HEARTBEAT -> HEARTBEAT_ACK {ack.payload!r}")
        payload = b"\x00\x01binary payload\xff"
        echo = await frames.echo(payload, flags=7)
        check(echo == (b.DATA, 7, payload), f"got {echo}")
        print(
            f"stream {bs.stream_id} (binary): DATA of {len(payload)} bytes echoed "
            f"(flags {echo.flags})"
        )

        for stream in (js, es, bs):
            await stream.close()
        print(f"closed streams {js.stream_id}, {es.stream_id}, {bs.stream_id}")
    finally:
        await client.close()


def check(ok: bool, what: str) -> None:
    if not ok:
        raise RuntimeError(what)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8080)
    args = parser.parse_args(argv)
    try:
        asyncio.run(asyncio.wait_for(run(args.host, args.port), 30))
    except (OSError, RuntimeError, MuxError, TimeoutError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
