"""Room history on a cluster (PROTOCOL.md 11.2): kept in a real Redis, the same
position on every node, recovered on any node, and a new epoch when Redis lost it."""

from __future__ import annotations

import asyncio
import contextlib
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from cluster_harness import NodeProcess, RedisServer, wait_for
from helpers import JsonClient, frame
from test_cluster import linked, next_of

pytestmark = [
    pytest.mark.timeout(90),
    pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals"),
]

NodeFactory = Callable[..., Awaitable[NodeProcess]]


@pytest.fixture
async def node(tmp_path: Path, redis_server: RedisServer) -> AsyncIterator[NodeFactory]:
    started: list[NodeProcess] = []

    async def start(name: str, *args: str) -> NodeProcess:
        n = await NodeProcess.start(tmp_path, redis_server.url, name, *args)
        started.append(n)
        return n

    yield start
    for n in started:
        n.kill()
    for n in started:
        with contextlib.suppress(Exception):
            await n.stop()


@pytest.fixture
async def client() -> AsyncIterator[Callable[[int], Awaitable[JsonClient]]]:
    opened: list[JsonClient] = []

    async def connect(port: int) -> JsonClient:
        c = await JsonClient.connect(port)
        opened.append(c)
        return c

    yield connect
    for c in opened:
        with contextlib.suppress(Exception):
            await c.close()


async def room_messages(c: JsonClient, n: int) -> list[dict[str, Any]]:
    return [await next_of(c, "room_message") for _ in range(n)]


async def test_offsets_are_the_same_on_every_node_and_recovery_works_on_another(
    node: NodeFactory, client: Any
) -> None:
    a, b = await node("a"), await node("b")
    ca, ca2, cb = await client(a.port), await client(a.port), await client(b.port)
    await linked(ca, cb)
    first = await ca.request({"type": "join_room", "room": "r"})
    assert first["offset"] == 0 and isinstance(first["epoch"], str)
    assert (await ca2.request({"type": "join_room", "room": "r"}))["epoch"] == first["epoch"]
    joined = await cb.request({"type": "join_room", "room": "r"})
    assert (joined["epoch"], joined["offset"]) == (first["epoch"], 0)
    await next_of(ca, "user_joined", connectionId=cb.id)

    # From both nodes, interleaved: one order, consecutive offsets, for everyone.
    for i in range(6):
        sender = (ca, cb)[i % 2]
        await sender.send({"type": "room_message", "room": "r", "data": i})
    seen = {}
    for c, n in ((ca, 3), (ca2, 6), (cb, 3)):
        got = await room_messages(c, n)
        seen[c] = [(m["offset"], m["data"]) for m in got]
        assert [o for o, _ in seen[c]] == sorted(o for o, _ in seen[c])
    assert sorted(o for o, _ in seen[ca2]) == [1, 2, 3, 4, 5, 6]
    everyone = dict(seen[ca2])
    for c in (ca, cb):
        assert all(everyone[o] == d for o, d in seen[c])
    # The sender never gets its own message; each gets the other node's.
    assert {d % 2 for _, d in seen[ca]} == {1} and {d % 2 for _, d in seen[cb]} == {0}

    # cb goes; four more are sent; a newcomer on node a recovers them from Redis.
    await cb.close()
    for i in range(6, 10):
        await ca.send({"type": "room_message", "room": "r", "data": i})
    await room_messages(ca2, 4)
    back = await client(a.port)
    joined = await back.request(
        {"type": "join_room", "room": "r", "since": {"epoch": first["epoch"], "offset": 6}}
    )
    assert (joined["recovered"], joined["offset"], joined["epoch"]) == (True, 10, first["epoch"])
    replay = await room_messages(back, 4)
    assert [(m["offset"], m["data"], m["from"]) for m in replay] == [
        (7, 6, ca.id),
        (8, 7, ca.id),
        (9, 8, ca.id),
        (10, 9, ca.id),
    ]
    await ca.send({"type": "room_message", "room": "r", "data": "next"})
    got = await next_of(back, "room_message")
    assert (got["offset"], got["data"]) == (11, "next")


async def test_recovered_from_redis_after_a_node_restarted(node: NodeFactory, client: Any) -> None:
    a, b = await node("a"), await node("b")
    ca, cb = await client(a.port), await client(b.port)
    await linked(ca, cb)
    epoch = (await cb.request({"type": "join_room", "room": "r"}))["epoch"]
    await ca.request({"type": "join_room", "room": "r"})
    await ca.send({"type": "room_message", "room": "r", "data": "one"})
    assert (await next_of(cb, "room_message"))["offset"] == 1
    await b.stop()  # killed: cb's connection with it
    for i in range(3):
        await ca.send({"type": "room_message", "room": "r", "data": i})
    b2 = await node("b2")
    back = await client(b2.port)
    since = {"epoch": epoch, "offset": 1}
    joined = await back.request({"type": "join_room", "room": "r", "since": since})
    assert joined["recovered"] is True and joined["offset"] == 4
    assert [m["data"] for m in await room_messages(back, 3)] == [0, 1, 2]
    # A since equal to the latest: recovered, nothing replayed; above it: not.
    again = await client(b2.port)
    latest = {"epoch": epoch, "offset": 4}
    joined = await again.request({"type": "join_room", "room": "r", "since": latest})
    assert joined["recovered"] is True
    await again.expect_nothing(0.3)
    ahead = {"epoch": epoch, "offset": 5}
    joined = await again.request({"type": "join_room", "room": "q", "since": ahead})
    assert joined["recovered"] is False


async def test_redis_restarted_empty_changes_the_epoch(
    redis_server: RedisServer, node: NodeFactory, client: Any
) -> None:
    a, b = await node("a"), await node("b")
    ca, cb = await client(a.port), await client(b.port)
    await linked(ca, cb)
    epoch = (await ca.request({"type": "join_room", "room": "r"}))["epoch"]
    await cb.request({"type": "join_room", "room": "r"})
    for i in range(3):
        await ca.send({"type": "room_message", "room": "r", "data": i})
    await room_messages(cb, 3)
    await redis_server.restart()

    async def whole() -> bool:
        c = await JsonClient.connect(b.port)
        try:
            joined = await c.request({"type": "join_room", "room": "probe"}, timeout=2)
            return "epoch" in joined
        except (OSError, TimeoutError):
            return False
        finally:
            await c.close()

    await wait_for(whole, 15, 0.2)
    back = await client(b.port)
    joined = await back.request(
        {"type": "join_room", "room": "r", "since": {"epoch": epoch, "offset": 2}}
    )
    assert joined["recovered"] is False and joined["epoch"] != epoch
    await back.expect_nothing(0.3)  # nothing replayed


async def test_history_is_bounded_by_its_size(node: NodeFactory, client: Any) -> None:
    a = await node("a", "--history-size", "3")
    ca, cb = await client(a.port), await client(a.port)
    epoch = (await ca.request({"type": "join_room", "room": "r"}))["epoch"]
    await cb.request({"type": "join_room", "room": "r"})
    for i in range(5):
        await ca.send({"type": "room_message", "room": "r", "data": i})
    await room_messages(cb, 5)
    c1 = await client(a.port)
    joined = await c1.request(
        {"type": "join_room", "room": "r", "since": {"epoch": epoch, "offset": 1}}
    )
    assert joined["recovered"] is False
    await c1.expect_nothing(0.3)
    c2 = await client(a.port)
    joined = await c2.request(
        {"type": "join_room", "room": "r", "since": {"epoch": epoch, "offset": 2}}
    )
    assert joined["recovered"] is True
    assert [m["offset"] for m in await room_messages(c2, 3)] == [3, 4, 5]


async def test_history_is_bounded_in_total_and_by_its_ttl(
    tmp_path: Path, redis_server: RedisServer, node: NodeFactory, client: Any
) -> None:
    """Past ``history_total`` the oldest messages of all rooms go first; a kept
    message older than ``--history-ttl`` is not replayed, and the epoch stays."""
    config = tmp_path / "small.toml"
    config.write_text("history_total = 3000\n")
    a = await node("a", "--config", str(config), "--history-ttl", "1")
    ca, cb = await client(a.port), await client(a.port)
    epochs = {}
    for room in ("x", "y"):
        epochs[room] = (await ca.request({"type": "join_room", "room": room}))["epoch"]
        await cb.request({"type": "join_room", "room": room})
        await next_of(ca, "user_joined", connectionId=cb.id)
        for i in range(10):  # ~200 bytes each: 2,000 a room
            await ca.send({"type": "room_message", "room": room, "data": f"{i:03}" + "z" * 100})
        assert (await room_messages(cb, 10))[-1]["offset"] == 10
    r = redis_server.client()
    try:
        assert 0 < int(await r.get("vc:hbytes")) <= 3000
    finally:
        await r.aclose()
    c1 = await client(a.port)
    got = await c1.request(
        {"type": "join_room", "room": "x", "since": {"epoch": epochs["x"], "offset": 0}}
    )
    assert got["recovered"] is False  # x's oldest went first
    got = await c1.request(
        {"type": "join_room", "room": "y", "since": {"epoch": epochs["y"], "offset": 0}}
    )
    assert got["recovered"] is True
    assert [m["offset"] for m in await room_messages(c1, 10)] == list(range(1, 11))

    await asyncio.sleep(1.3)  # past the TTL: nothing is replayed, the position stays
    c2 = await client(a.port)
    since = {"epoch": epochs["y"], "offset": 9}
    got = await c2.request({"type": "join_room", "room": "y", "since": since})
    assert (got["recovered"], got["epoch"], got["offset"]) == (False, epochs["y"], 10)
    since = {"epoch": epochs["y"], "offset": 10}
    got = await c2.request({"type": "join_room", "room": "y", "since": since})
    assert got["recovered"] is True


async def test_the_kept_bytes_add_up(
    redis_server: RedisServer, node: NodeFactory, client: Any
) -> None:
    """What Redis counts of the rooms' history is the size of what it keeps, as
    messages are added and the oldest dropped."""
    a = await node("a", "--history-size", "3")
    ca, cb = await client(a.port), await client(a.port)
    for room in ("x", "y"):
        await ca.request({"type": "join_room", "room": room})
        await cb.request({"type": "join_room", "room": room})
        await next_of(ca, "user_joined", connectionId=cb.id)
        # A burst, in one write: kept by runs of the script of many messages each.
        ca.writer.write(
            b"".join(
                frame({"type": "room_message", "room": room, "data": "z" * (i % 50)})
                for i in range(300)
            )
        )
        got = await room_messages(cb, 300)
        assert [m["offset"] for m in got] == list(range(1, 301))
        assert [len(m["data"]) for m in got] == [i % 50 for i in range(300)]
    r = redis_server.client()
    try:
        kept = {}
        for room in ("x", "y"):
            items = await r.lrange(f"vc:hl:{room}", 0, -1)
            assert len(items) == 3
            kept[room] = sum(len(i.partition(b" ")[2]) for i in items)
            assert int(await r.hget("vc:hroombytes", room)) == kept[room]
        assert int(await r.get("vc:hbytes")) == sum(kept.values())
    finally:
        await r.aclose()
