"""A cluster of real ``verb-console --headless`` nodes on a real redis-server (PROTOCOL.md 10)."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import signal
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from cluster_harness import NodeProcess, RedisServer, free_port, wait_for
from helpers import JsonClient, frame

pytestmark = [
    pytest.mark.timeout(90),
    pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals"),
]

NodeFactory = Callable[..., Awaitable[NodeProcess]]


@pytest.fixture
async def node(tmp_path: Path, redis_server: RedisServer) -> AsyncIterator[NodeFactory]:
    started: list[NodeProcess] = []

    async def start(name: str, *args: str, port: int = 0) -> NodeProcess:
        n = await NodeProcess.start(tmp_path, redis_server.url, name, *args, port=port)
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


async def next_of(c: JsonClient, kind: str, timeout: float = 3.0, **fields: Any) -> dict[str, Any]:
    """The next message of type ``kind`` (with ``fields``), skipping others."""
    deadline = time.monotonic() + timeout
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            raise AssertionError(f"no {kind} {fields} within {timeout}s")
        msg = await c.recv(left)
        if msg["type"] == kind and all(msg.get(k) == v for k, v in fields.items()):
            return msg


async def knows(c: JsonClient, target: str) -> bool:
    """True once ``target`` is a private-message target for ``c``'s node."""
    await c.send({"type": "private", "target": target, "data": "?", "ref": "probe"})
    try:
        reply = await c.recv(0.3)  # a private message has no reply unless it fails
    except TimeoutError:
        return True
    assert reply.get("code") == "unknown_target", reply
    return False


async def linked(a: JsonClient, b: JsonClient) -> None:
    """Wait until each of two clients on different nodes can reach the other."""
    await wait_for(lambda: knows(a, b.id), 5)
    await next_of(b, "private", data="?")
    await wait_for(lambda: knows(b, a.id), 5)
    await next_of(a, "private", data="?")


async def cross_node_ok(sender: JsonClient, receiver: JsonClient, timeout: float) -> float:
    """Seconds until a broadcast from ``sender`` reaches ``receiver`` (retried)."""
    start = time.monotonic()
    n = 0
    while time.monotonic() - start < timeout:
        n += 1
        await sender.send({"type": "broadcast", "data": f"probe-{n}"})
        try:
            while True:
                msg = await receiver.recv(0.3)
                if msg["type"] == "broadcast" and msg["from"] == sender.id:
                    return time.monotonic() - start
        except TimeoutError:
            continue
    raise AssertionError(f"no cross-node delivery within {timeout}s")


async def test_sessions_on_two_nodes_talk_as_on_one(node: NodeFactory, client: Any) -> None:
    a, b = await node("a"), await node("b")
    ca, cb = await client(a.port), await client(b.port)
    assert ca.welcome["node"] == "a" and cb.welcome["node"] == "b"
    assert ca.id == f"{ca.local_id}@a" and cb.id == f"{cb.local_id}@b"
    await linked(ca, cb)

    await ca.send({"type": "broadcast", "data": {"x": 1}})
    got = await cb.recv()
    assert got["type"] == "broadcast" and got["from"] == ca.id and got["data"] == {"x": 1}
    await ca.expect_nothing(0.3)  # the sender receives nothing

    await cb.send({"type": "private", "target": ca.id, "data": "psst"})
    got = await ca.recv()
    assert (got["type"], got["from"], got["data"]) == ("private", cb.id, "psst")
    err = await ca.request({"type": "private", "target": "10.0.0.1:1@b", "data": 1, "ref": 7})
    assert (err["type"], err["code"], err["ref"]) == ("error", "unknown_target", 7)

    joined = await ca.request({"type": "join_room", "room": "lobby"})
    assert joined["members"] == [ca.id]
    cb2 = await client(b.port)
    await wait_for(lambda: knows(cb2, ca.id), 5)
    await next_of(ca, "private", data="?")
    joined = await cb2.request({"type": "join_room", "room": "lobby", "ref": "j"})
    # The room's position is the cluster's (PROTOCOL.md 11.2): no message yet.
    assert joined == {"type": "joined", "room": "lobby", "members": sorted([ca.id, cb2.id])} | {
        "ref": "j",
        "epoch": joined["epoch"],
        "offset": 0,
    }
    note = await next_of(ca, "user_joined")
    assert (note["connectionId"], note["room"]) == (cb2.id, "lobby")

    await cb2.send({"type": "room_message", "room": "lobby", "data": "hello"})
    got = await next_of(ca, "room_message")
    assert (got["from"], got["data"], got["room"]) == (cb2.id, "hello", "lobby")
    await ca.send({"type": "room_message", "room": "lobby", "data": "back"})
    got = await next_of(cb2, "room_message")
    assert (got["from"], got["data"]) == (ca.id, "back")
    await cb.expect_nothing(0.3)  # not a member: no room traffic

    assert await cb2.request({"type": "leave_room", "room": "lobby"}) == {
        "type": "left",
        "room": "lobby",
    }
    note = await next_of(ca, "user_left")
    assert (note["connectionId"], note["room"]) == (cb2.id, "lobby")

    # A session that ends leaves its rooms everywhere and is no longer a target.
    await cb2.request({"type": "join_room", "room": "lobby"})
    await next_of(ca, "user_joined", connectionId=cb2.id)
    gone = cb2.id
    await cb2.close()
    await next_of(ca, "user_left", connectionId=gone)
    await wait_for(lambda: _not(knows(ca, gone)), 5)


async def _not(coro: Awaitable[bool]) -> bool:
    return not await coro


async def test_a_name_a_live_node_holds_is_refused(
    tmp_path: Path, redis_server: RedisServer, node: NodeFactory
) -> None:
    await node("same")
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "verb_console",
        "--headless",
        "--port",
        "0",
        "--cluster",
        redis_server.url,
        "--node-name",
        "same",
        "--upload-dir",
        str(tmp_path / "up2"),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    _, err = await asyncio.wait_for(proc.communicate(), 20)
    assert proc.returncode == 2
    lines = [line for line in err.decode().splitlines() if "error" in line]
    assert lines == ["verb-console: error: --cluster: node name 'same' is held by a live node"]


async def test_a_bad_node_name_is_one_line_and_status_2(redis_server: RedisServer) -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "verb_console",
        "--headless",
        "--cluster",
        redis_server.url,
        "--node-name",
        "no spaces",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    _, err = await asyncio.wait_for(proc.communicate(), 20)
    assert proc.returncode == 2
    assert len(err.decode().strip().splitlines()) == 1
    assert "--node-name" in err.decode()


async def test_messages_between_two_sessions_arrive_in_order_once(
    node: NodeFactory, client: Any
) -> None:
    a, b = await node("a"), await node("b")
    ca, cb = await client(a.port), await client(b.port)
    await linked(ca, cb)
    await ca.request({"type": "join_room", "room": "r"})
    await cb.request({"type": "join_room", "room": "r"})
    await next_of(ca, "user_joined", connectionId=cb.id)
    n = 3000
    for i in range(n):
        kind = ("private", "room_message", "broadcast")[i % 3]
        msg: dict[str, Any] = {"type": kind, "data": i}
        if kind == "private":
            msg["target"] = cb.id
        elif kind == "room_message":
            msg["room"] = "r"
        ca.writer.write(frame(msg))
    await ca.writer.drain()
    seen = []
    while len(seen) < n:
        got = await cb.recv(5)
        if got["type"] in ("private", "room_message", "broadcast") and got.get("from") == ca.id:
            seen.append(got["data"])
    assert seen == list(range(n))
    await cb.expect_nothing(0.5)


async def test_a_killed_node_is_noticed_within_10_seconds(node: NodeFactory, client: Any) -> None:
    a, b = await node("a"), await node("b")
    ca, cb = await client(a.port), await client(b.port)
    await linked(ca, cb)
    await ca.request({"type": "join_room", "room": "r"})
    await cb.request({"type": "join_room", "room": "r"})
    await next_of(ca, "user_joined", connectionId=cb.id)
    t0 = time.monotonic()
    await b.stop(signal.SIGKILL)
    note = await next_of(ca, "user_left", timeout=10)
    assert (note["connectionId"], note["room"]) == (cb.id, "r")
    assert time.monotonic() - t0 < 10
    err = await ca.request({"type": "private", "target": cb.id, "data": 1})
    assert err["code"] == "unknown_target"
    cb3 = await client(a.port)
    joined = await cb3.request({"type": "join_room", "room": "r"})
    assert joined["members"] == sorted([ca.id, cb3.id])


async def test_redis_restarted_empty_is_whole_again_within_5_seconds(
    redis_server: RedisServer, node: NodeFactory, client: Any
) -> None:
    a, b = await node("a"), await node("b")
    ca, cb = await client(a.port), await client(b.port)
    ca2 = await client(a.port)
    await linked(ca, cb)
    await ca.request({"type": "join_room", "room": "r"})
    await cb.request({"type": "join_room", "room": "r"})
    await next_of(ca, "user_joined", connectionId=cb.id)

    await redis_server.kill()
    # Each node goes on serving its own sessions.
    await ca.send({"type": "broadcast", "data": "local"})
    got = await next_of(ca2, "broadcast")
    assert got["data"] == "local"
    await ca.send({"type": "room_message", "room": "r", "data": "lost"})
    await asyncio.sleep(1)

    await redis_server.start()  # empty, same port
    took = await cross_node_ok(ca, cb, 5)
    assert took < 5
    # Membership is whole again: a newcomer on b sees a's members, and the directory has them.
    cb2 = await client(b.port)

    async def whole() -> bool:
        joined = await cb2.request({"type": "join_room", "room": "r"})
        return bool(joined["members"] == sorted([ca.id, cb.id, cb2.id]))

    took += await wait_for(whole, 5 - took)
    # The directory is written by each node's publisher, after the reply that
    # node gave: it too must be whole within the 5 s, not at the same instant.
    r = redis_server.client()

    async def directory_whole() -> bool:
        members = await r.hgetall("vc:rm:r")
        return {k.decode() for k in members} == {ca.id, cb.id, cb2.id}

    try:
        await wait_for(directory_whole, max(5 - took, 0.5))
    finally:
        await r.aclose()
    await cb.send({"type": "room_message", "room": "r", "data": "after"})
    got = await next_of(ca, "room_message", data="after")
    assert got["from"] == cb.id


async def test_redis_frozen_then_resumed(
    redis_server: RedisServer, node: NodeFactory, client: Any
) -> None:
    a, b = await node("a"), await node("b")
    ca, cb = await client(a.port), await client(b.port)
    ca2 = await client(a.port)
    await linked(ca, cb)
    redis_server.signal(signal.SIGSTOP)
    try:
        await asyncio.sleep(2)
        # A hang with no FIN: the node goes on serving locally, without waiting on Redis.
        t0 = time.monotonic()
        assert (await ca.request({"type": "ping"}))["type"] == "pong"
        await ca.send({"type": "broadcast", "data": "local"})
        assert (await next_of(ca2, "broadcast"))["data"] == "local"
        assert time.monotonic() - t0 < 0.5
        await asyncio.sleep(1)
    finally:
        redis_server.signal(signal.SIGCONT)
    assert await cross_node_ok(ca, cb, 5) < 5
    assert await cross_node_ok(cb, ca, 5) < 5


async def test_a_killed_subscriber_connection_is_rebuilt(
    redis_server: RedisServer, node: NodeFactory, client: Any
) -> None:
    a, b = await node("a"), await node("b")
    ca, cb = await client(a.port), await client(b.port)
    await linked(ca, cb)
    r = redis_server.client()
    killed = await r.execute_command("CLIENT", "KILL", "TYPE", "pubsub")
    await r.aclose()
    assert killed == 2
    try:
        assert await cross_node_ok(ca, cb, 5) < 5
        assert await cross_node_ok(cb, ca, 5) < 5
    except AssertionError:
        # The nodes' logs say which link step did not come back.
        print("node a:", a.text(), "node b:", b.text(), sep="\n")
        raise


async def test_a_flood_past_a_tiny_output_buffer_limit_recovers(
    tmp_path: Path, client: Any
) -> None:
    redis = await RedisServer(
        tmp_path, None, "--client-output-buffer-limit", "pubsub", "64kb", "32kb", "1"
    ).start()
    nodes: list[NodeProcess] = []
    try:
        a = await NodeProcess.start(tmp_path, redis.url, "a")
        nodes.append(a)
        b = await NodeProcess.start(tmp_path, redis.url, "b")
        nodes.append(b)
        ca, cb = await client(a.port), await client(b.port)
        await linked(ca, cb)
        await ca.request({"type": "join_room", "room": "flood"})
        await cb.request({"type": "join_room", "room": "flood"})
        await next_of(ca, "user_joined", connectionId=cb.id)
        blob = "x" * 4000
        # b reads nothing for a second, so Redis buffers the flood for it, past the limit.
        # The flood (40 MB) must outgrow what the kernel buffers for a stopped reader on
        # loopback too: tcp_rmem lets a receive buffer grow to 32 MB on some machines.
        b.proc.send_signal(signal.SIGSTOP)
        try:
            ca.writer.write(
                b"".join(
                    frame({"type": "room_message", "room": "flood", "data": blob})
                    for _ in range(10_000)
                )
            )
            await ca.writer.drain()
            await asyncio.sleep(1.0)
        finally:
            b.proc.send_signal(signal.SIGCONT)
        # Redis cut b's subscriber off; b notices, links again, and traffic flows.
        await wait_for(lambda: _true(b"Redis link lost" in b"".join(b.log)), 10)
        assert b.proc.returncode is None and a.proc.returncode is None
        while True:  # what did get through first
            try:
                await cb.recv(0.5)
            except TimeoutError:
                break
        assert await cross_node_ok(ca, cb, 5) < 5
    finally:
        for n in nodes:
            with contextlib.suppress(Exception):
                await n.stop()
        await redis.kill()


async def _true(value: bool) -> bool:
    return value


async def test_two_nodes_share_one_port(
    tmp_path: Path, redis_server: RedisServer, node: NodeFactory, client: Any
) -> None:
    config = tmp_path / "shared.toml"
    config.write_text("reuse_port = true\n")
    port = free_port()
    await node("a", "--config", str(config), port=port)
    await node("b", "--config", str(config), port=port)
    seen = set()
    for _ in range(24):
        c = await client(port)
        seen.add(c.welcome["node"])
    assert seen == {"a", "b"}


async def test_the_directory_returns_to_its_baseline_when_clients_leave(
    redis_server: RedisServer, node: NodeFactory, client: Any
) -> None:
    await node("a")
    b = await node("b")
    r = redis_server.client()
    try:
        await asyncio.sleep(1.5)
        base_keys = sorted(await r.keys("*"))
        base_channels = sorted(await r.pubsub_channels())
        cs = [await client(b.port) for _ in range(5)]
        for i, c in enumerate(cs):
            await c.request({"type": "join_room", "room": f"room-{i % 2}"})
        await asyncio.sleep(0.3)
        assert await r.hlen("vc:sessions") == 5
        assert len(await r.pubsub_channels()) == len(base_channels) + 2
        for c in cs:
            await c.close()

        async def back() -> bool:
            # The rooms' positions outlive their members for the TTL (PROTOCOL.md 11.2).
            keys_now = sorted(k for k in await r.keys("*") if not _history_key(k))
            channels = sorted(await r.pubsub_channels())
            return keys_now == base_keys and channels == base_channels

        await wait_for(back, 5)
    finally:
        await r.aclose()


async def test_a_soak_of_clients_coming_and_going_leaves_redis_as_it_was(
    redis_server: RedisServer, node: NodeFactory, client: Any
) -> None:
    """Rounds of clients on two nodes join rooms that span both, talk across
    them and leave, half closing and half cut off (abort, no FIN from a close):
    afterwards Redis holds the same keys and pub/sub channels as before (but the
    rooms' history, kept for its TTL after the last member left: PROTOCOL.md 11.2)."""
    a = await node("a")
    b = await node("b")
    r = redis_server.client()
    try:
        await asyncio.sleep(1.5)
        base_keys = sorted(await r.keys("*"))
        base_channels = sorted(await r.pubsub_channels())
        for round_no in range(3):
            cs = [await client(n.port) for _ in range(4) for n in (a, b)]
            for i, c in enumerate(cs):
                joined = await c.request({"type": "join_room", "room": f"soak-{round_no}-{i % 3}"})
                assert joined["type"] == "joined", joined
            # cs alternates nodes a and b; 0 and 3 are in room 0, one on each node.
            sender, member = cs[0], cs[3]
            assert sender.welcome["node"] != member.welcome["node"]
            room = f"soak-{round_no}-0"
            await wait_for(functools.partial(_room_reaches, sender, member, room), 5)
            assert len(await r.pubsub_channels()) == len(base_channels) + 3
            for i, c in enumerate(cs):
                if i % 2:
                    c.writer.transport.abort()
                else:
                    await c.close()

            async def back() -> bool:
                keys_now = sorted(k for k in await r.keys("*") if not _history_key(k))
                channels = sorted(await r.pubsub_channels())
                return keys_now == base_keys and channels == base_channels

            await wait_for(back, 5)
        assert await r.hlen("vc:sessions") == 0
    finally:
        await r.aclose()


def _history_key(key: bytes) -> bool:
    return key.startswith((b"vc:h:", b"vc:hl:")) or key in (
        b"vc:hrooms",
        b"vc:hroombytes",
        b"vc:hbytes",
    )


async def _room_reaches(sender: JsonClient, member: JsonClient, room: str) -> bool:
    """True if a room message from ``sender`` reaches ``member`` within 0.3 s."""
    await sender.send({"type": "room_message", "room": room, "data": "soak"})
    try:
        while True:
            msg = await member.recv(0.3)
            if msg["type"] == "room_message" and msg.get("from") == sender.id:
                return True
    except TimeoutError:
        return False
