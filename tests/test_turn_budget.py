"""Fairness: no turn of the event loop does more than a bounded amount of message
work, however many connections are busy (hub/pacer.py), and nothing is lost or
reordered for it.

A loop hook (a callback that puts itself back with ``call_soon``, so it runs once
every turn) reads the hub's work count (messages read plus messages written) each
turn; the largest difference between two of its runs is the most one turn did.
"""

from __future__ import annotations

import asyncio
import json
import struct
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

import pytest
from helpers import frame

from verb_console.hub.pacer import Pacer
from verb_console.hub.snapshot import Stats
from verb_console.runtime import Runtime

BUDGET = 64
SHARE = 8
# Between two runs of the hook there is at most one turn's budget, plus one
# step's overshoot: a step stops after the message that crossed its end.
BOUND = 2 * (BUDGET + SHARE)


class TurnProbe:
    """Runs once every loop turn and keeps the most work one turn did."""

    def __init__(self, runtime: Runtime) -> None:
        self.stats = runtime.hub.stats
        self.loop = asyncio.get_running_loop()
        self.last = self.work()
        self.most = 0
        self.turns = 0
        self.busy_turns = 0
        self.running = True
        self.loop.call_soon(self.tick)

    def work(self) -> int:
        return self.stats.msgs_in + self.stats.msgs_out

    def tick(self) -> None:
        now = self.work()
        did = now - self.last
        self.last = now
        self.most = max(self.most, did)
        self.turns += 1
        self.busy_turns += did > 0
        if self.running:
            self.loop.call_soon(self.tick)

    def stop(self) -> None:
        self.running = False


async def drain(reader: asyncio.StreamReader, want: int, count: Callable[[bytes], int]) -> bytes:
    """Read until ``count`` of what was read reaches ``want``."""
    buf = bytearray()
    while count(bytes(buf)) < want:
        chunk = await asyncio.wait_for(reader.read(1 << 20), 30)
        assert chunk, "the server closed the connection"
        buf += chunk
    return bytes(buf)


def json_bodies(data: bytes) -> list[dict[str, Any]]:
    out = []
    off = 0
    while off < len(data):
        nl = data.index(b"\n", off)
        length = int(data[off:nl])
        out.append(json.loads(data[nl + 1 : nl + 1 + length]))
        off = nl + 1 + length
    return out


async def json_client(port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter, str]:
    r, w = await asyncio.open_connection("127.0.0.1", port, limit=1 << 22)
    length = int(await r.readline())
    welcome = json.loads(await r.readexactly(length))
    return r, w, welcome["id"]


async def test_a_broadcast_storm_of_many_connections_keeps_every_turn_within_the_budget(
    start_server,
) -> None:
    runtime = await start_server(max_per_ip=0, turn_budget=BUDGET, turn_share=SHARE)
    clients = [await json_client(runtime.port) for _ in range(20)]
    probe = TurnProbe(runtime)
    # Every client writes 30 broadcasts and a ping in one write: 20 x 30 x 19 deliveries.
    for i, (_, w, _) in enumerate(clients):
        w.write(
            b"".join(frame({"type": "broadcast", "data": [i, n]}) for n in range(30))
            + frame({"type": "ping"})
        )
    want = 30 * 19 + 1

    def count(data: bytes) -> int:
        return data.count(b'"type":"broadcast"') + data.count(b'"type":"pong"')

    got = await asyncio.gather(*(drain(r, want, count) for r, _, _ in clients))
    probe.stop()
    for (_, _, me), data in zip(clients, got, strict=True):
        bodies = json_bodies(data)
        # From each sender, its 30 broadcasts, in order.
        by_sender: dict[str, list[int]] = {}
        for b in bodies:
            if b["type"] == "broadcast":
                by_sender.setdefault(b["from"], []).append(b["data"][1])
        assert me not in by_sender
        assert len(by_sender) == 19
        assert all(seq == list(range(30)) for seq in by_sender.values())
    assert probe.most <= BOUND, f"one turn did {probe.most} units of work"
    # The work was spread over many turns rather than done in a few long ones.
    assert probe.busy_turns >= 20 * 30 * 19 // BOUND
    for _, w, _ in clients:
        w.close()


async def test_room_messages_reach_every_member_in_one_order_when_fan_outs_are_split(
    start_server,
) -> None:
    runtime = await start_server(max_per_ip=0, turn_budget=BUDGET, turn_share=SHARE)
    clients = [await json_client(runtime.port) for _ in range(12)]
    for _, w, _ in clients:
        w.write(frame({"type": "join_room", "room": "r"}))
    # Everyone's joined, and the user_joined notices of those after them.
    for i, (r, _, _) in enumerate(clients):
        await drain(r, 1 + (len(clients) - 1 - i), lambda d: d.count(b'"type":"'))
    for i, (_, w, _) in enumerate(clients):
        w.write(
            b"".join(
                frame({"type": "room_message", "room": "r", "data": [i, n]}) for n in range(10)
            )
        )
    got = await asyncio.gather(
        *(drain(r, 11 * 10, lambda d: d.count(b'"type":"room_message"')) for r, _, _ in clients)
    )
    orders = []
    for data in got:
        msgs = [tuple(b["data"]) for b in json_bodies(data) if b["type"] == "room_message"]
        orders.append(msgs)
    # Each member lacks only its own ten; in between, everyone saw one order.
    for i, order in enumerate(orders):
        assert len(order) == 110
        assert [m for m in order if m[0] == i] == []
        for j in range(len(clients)):
            if j != i:
                assert [m[1] for m in order if m[0] == j] == list(range(10))
    for i, order in enumerate(orders):
        for k, other in enumerate(orders):
            common = [m for m in order if m[0] not in (i, k)]
            assert common == [m for m in other if m[0] not in (i, k)]
    for _, w, _ in clients:
        w.close()


HEADER = struct.Struct(">II")


def mux_frame(stream_id: int, payload: bytes) -> bytes:
    return HEADER.pack(stream_id, len(payload)) + payload


async def test_mux_streams_echo_and_binary_sessions_share_the_turn_budget(
    start_server,
) -> None:
    runtime = await start_server(
        protocol="auto", max_per_ip=0, turn_budget=BUDGET, turn_share=SHARE
    )
    port = runtime.port
    probe = TurnProbe(runtime)
    lines = 3000
    # Echo: a write of 3,000 lines each, from four connections.
    echoes = []
    for _ in range(4):
        r, w = await asyncio.open_connection("127.0.0.1", port, limit=1 << 22)
        w.write(b"hi\n" * lines)
        echoes.append((r, w))
    # Binary: 3,000 heartbeats each, from four connections.
    heartbeat = struct.pack(">HIH", 0x0001, 0, 0)
    binaries = []
    for _ in range(4):
        r, w = await asyncio.open_connection("127.0.0.1", port, limit=1 << 22)
        w.write(heartbeat * lines)
        binaries.append((r, w))
    # Mux: one connection, eight echo streams of 400 lines each, in one write.
    mr, mw = await asyncio.open_connection("127.0.0.1", port, limit=1 << 22)
    control = [
        mux_frame(
            0,
            json.dumps(
                {"type": "stream_create", "streamId": 2 * i + 1, "streamType": "echo"}
            ).encode(),
        )
        for i in range(8)
    ]
    mw.write(b"".join(control) + b"".join(mux_frame(2 * i + 1, b"hi\n" * 400) for i in range(8)))
    await asyncio.gather(
        *(drain(r, lines, lambda d: d.count(b"hi\n")) for r, _ in echoes),
        *(drain(r, lines * 12, len) for r, _ in binaries),
        drain(mr, 8 * 400, lambda d: d.count(b"hi\n")),
    )
    probe.stop()
    assert probe.most <= BOUND, f"one turn did {probe.most} units of work"
    for _, w in [*echoes, *binaries, (mr, mw)]:
        w.close()


async def test_a_fan_out_outside_any_step_is_bounded_and_kept_in_order() -> None:
    """The pacer on its own: a fan-out larger than a step's share is delivered in
    pieces over later turns, and one made meanwhile waits behind it."""

    class Sink:
        closing = False
        msgs_out = 0
        _out = None
        # A recipient's hub, as far as a fan-out reads it: no console order is kept.
        hub = SimpleNamespace(changes=SimpleNamespace(mark_all=lambda recipients: None))

        def __init__(self) -> None:
            self.got: list[bytes] = []
            self.outlet = self

        bytes_written = 0
        wire = None
        congested = False

        def write(self, data: bytes) -> bool:
            self.got.append(data)
            return True

        def check_pending(self) -> None:
            pass

    stats = Stats()
    pacer = Pacer(stats, budget=10, share=4)
    sinks = [Sink() for _ in range(25)]
    pacer.fan_out(sinks, b"a")  # type: ignore[arg-type]
    pacer.fan_out(sinks[:5], b"b")  # type: ignore[arg-type]
    assert sum(len(s.got) for s in sinks) == 4
    turns = 0
    while pacer.waiting[1]:
        before = stats.msgs_out
        await asyncio.sleep(0)
        turns += 1
        assert stats.msgs_out - before <= 10
    assert turns >= 2
    assert all(s.got == [b"a", b"b"] for s in sinks[:5])
    assert all(s.got == [b"a"] for s in sinks[5:])


@pytest.mark.parametrize("budget", [1, 3])
async def test_a_newcomer_is_answered_while_busy_connections_still_have_work(
    start_server, budget: int
) -> None:
    """With a tiny budget the busy connections' work takes many turns; a fresh
    client's ping is answered long before it is done."""
    runtime = await start_server(max_per_ip=0, turn_budget=budget * 16, turn_share=budget)
    clients = [await json_client(runtime.port) for _ in range(10)]
    for i, (_, w, _) in enumerate(clients):
        w.write(b"".join(frame({"type": "broadcast", "data": [i, n]}) for n in range(40)))
    r, w, _ = await json_client(runtime.port)
    w.write(frame({"type": "ping"}))
    data = await drain(r, 1, lambda d: d.count(b'"type":"pong"'))
    # The busy ones' 10 x 40 x 10 deliveries (the newcomer's too) are far from done.
    delivered = runtime.hub.stats.msgs_out
    assert delivered < 10 * 40 * 10 // 2
    assert b'"type":"pong"' in data
    await asyncio.gather(
        *(drain(cr, 9 * 40, lambda d: d.count(b'"type":"broadcast"')) for cr, _, _ in clients)
    )
    for _, cw, _ in [*clients, (r, w, "")]:
        cw.close()
