"""A fan-out's cost per recipient: no Python call per plain TCP session, and the
same bytes and counters for every kind of recipient as one ``deliver`` each."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from types import CodeType, FrameType
from typing import Any

import pytest
from helpers import JsonClient, eventually

import verb_console
from verb_console.client import MuxClient
from verb_console.hub import json_handlers

PACKAGE = str(Path(verb_console.__file__).parent)


class CallCounter:
    """Counts the calls of the server's own Python functions made while one
    function runs (``sys.setprofile``); the event loop's are not counted (the
    standard loop's ``transport.write`` is Python, uvloop's is not)."""

    def __init__(self, code: CodeType) -> None:
        self.code = code
        self.inside = 0
        self.calls: list[int] = []

    def __call__(self, f: FrameType, event: str, arg: Any) -> None:
        if event == "call":
            if f.f_code is self.code:
                self.inside += 1
                self.calls.append(0)
            elif self.inside and f.f_code.co_filename.startswith(PACKAGE):
                self.calls[-1] += 1
        elif event == "return" and f.f_code is self.code:
            self.inside -= 1

    def __enter__(self) -> CallCounter:
        sys.setprofile(self)
        return self

    def __exit__(self, *exc: object) -> None:
        sys.setprofile(None)


async def settle(client: JsonClient) -> None:
    """Read what was sent to ``client`` so far (a pong comes after it)."""
    await client.send({"type": "ping"})
    while (await client.recv())["type"] != "pong":
        pass


@pytest.mark.parametrize(
    ("kind", "handler"),
    [
        ("broadcast", json_handlers.handle_broadcast),
        ("room_message", json_handlers.handle_room_message),
    ],
)
async def test_a_fan_out_makes_no_python_call_per_plain_tcp_recipient(
    start_server, connect, kind: str, handler: Any
) -> None:
    server = await start_server(max_per_ip=0)
    sender = await connect(server)
    receivers: list[JsonClient] = []
    calls: list[int] = []
    if kind == "room_message":
        await sender.request({"type": "join_room", "room": "lobby"})
    for n in (4, 40):
        while len(receivers) < n:
            c = await connect(server)
            if kind == "room_message":
                assert (await c.request({"type": "join_room", "room": "lobby"}))["type"] == "joined"
            receivers.append(c)
        for c in [sender, *receivers]:
            await settle(c)
        data = f"to {n}"
        message = {"type": kind, "data": data, "room": "lobby"}
        with CallCounter(handler.__code__) as counter:
            await sender.send(message)
            await eventually(lambda: bool(counter.calls) and not counter.inside)
        for c in receivers:
            got = await c.recv()
            assert (got["type"], got["data"], got["from"]) == (kind, data, sender.id)
        assert len(counter.calls) == 1
        calls.append(counter.calls[0])
    # Ten times the recipients, the same Python calls: none is made per recipient
    # (``Session.deliver`` and the socket's ``write`` were two each).
    assert calls[0] == calls[1], calls


async def test_one_fan_out_reaches_every_kind_of_recipient_with_the_counters_deliver_kept(
    start_server, tls_files
) -> None:
    # An auto listener with TLS: a TLS client, a plaintext one and a mux stream
    # (plaintext mux) share the port, and one broadcast reaches all three.
    runtime = await start_server(
        protocol="auto", max_per_ip=0, tls_cert=tls_files.cert, tls_key=tls_files.key
    )
    hub, port = runtime.hub, runtime.port
    reader, writer = await asyncio.open_connection("127.0.0.1", port)  # no TLS
    plain = JsonClient(reader, writer)
    secure = await JsonClient.connect(port, welcome=False)  # TLS (the port is registered)
    sender = await JsonClient.connect(port, welcome=False)
    for c in (plain, secure, sender):
        await c.send({"type": "ping"})
        c.welcome = await c.recv()
        assert (await c.recv())["type"] == "pong"
    async with await MuxClient.connect("127.0.0.1", port) as mux:
        stream = (await mux.open_stream("json")).json()
        assert (await stream.receive())["type"] == "welcome"
        ids = {"plain": plain.id, "tls": secure.id, "mux stream": stream.id}
        sessions = {kind: hub.json_sessions[sid] for kind, sid in ids.items()}
        # Only the plaintext connection is written past its outlet's write():
        # TLS bytes go through the TLS layer, a stream's through its mux connection.
        assert sessions["plain"].outlet.wire is not None
        assert sessions["tls"].outlet.wire is None
        assert sessions["mux stream"].outlet.wire is None

        def counters() -> dict[str, tuple[int, int]]:
            return {k: (s.msgs_out, s.outlet.bytes_written) for k, s in sessions.items()}

        before, stats_before = counters(), hub.stats.copy()
        received_before = (plain.bytes_received, secure.bytes_received)
        await sender.send({"type": "broadcast", "data": "to all kinds"})
        for client in (plain, secure, stream):
            got = await client.receive() if client is stream else await client.recv()
            assert (got["type"], got["data"]) == ("broadcast", "to all kinds")
            assert got["from"] == sender.id
        size = plain.bytes_received - received_before[0]
        assert secure.bytes_received - received_before[1] == size
        after = counters()
        for kind in sessions:
            assert after[kind] == (before[kind][0] + 1, before[kind][1] + size), kind
        assert hub.stats.msgs_out - stats_before.msgs_out == 3
        assert hub.stats.bytes_out - stats_before.bytes_out == 3 * size
        await stream.close()
    for c in (plain, secure, sender):
        await c.close()
