"""Cluster nodes in this process (real hubs, real sockets, a real redis-server): operator
actions across nodes, mux stream ids, and a hub with no cluster left as it was."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from cluster_harness import RedisServer, wait_for
from helpers import JsonClient

from verb_console.client import MuxClient

pytestmark = pytest.mark.timeout(60)


async def two_nodes(start_server: Any, redis_server: RedisServer, tmp_path: Path) -> Any:
    a = await start_server(
        cluster=redis_server.url, node_name="a", upload_dir=str(tmp_path / "ua"), max_per_ip=0
    )
    b = await start_server(
        cluster=redis_server.url, node_name="b", upload_dir=str(tmp_path / "ub"), max_per_ip=0
    )
    return a, b


async def test_an_operator_on_one_node_closes_a_session_on_another(
    start_server: Any, connect: Any, redis_server: RedisServer, tmp_path: Path
) -> None:
    a, b = await two_nodes(start_server, redis_server, tmp_path)
    cb = await connect(b)
    await wait_for(lambda: _async(cb.id in a.hub.bus.directory.sessions), 5)
    assert a.hub.operator_close(cb.id) is True
    assert await cb.recv(3) == {"type": "closing", "reason": "operator"}
    await cb.expect_eof(3)
    # No live node of that name, or this node and no such session: refused.
    assert a.hub.operator_close("10.0.0.1:1@nowhere") is False
    assert a.hub.operator_close("10.0.0.1:1@a") is False
    # A live node, but no session of that id on it: not found, so not closed.
    assert a.hub.operator_close("10.0.0.1:1@b") is False
    # Once a hears that b has closed it, the session is not found either.
    await wait_for(lambda: _async(cb.id not in a.hub.bus.directory.sessions), 5)
    assert a.hub.operator_close(cb.id) is False


async def test_operator_broadcasts_reach_every_node(
    start_server: Any, connect: Any, redis_server: RedisServer, tmp_path: Path
) -> None:
    a, b = await two_nodes(start_server, redis_server, tmp_path)
    ca, cb = await connect(a), await connect(b)
    await wait_for(lambda: _async(cb.id in a.hub.bus.directory.sessions), 5)
    assert a.hub.operator_broadcast("hello all") == 1
    for c in (ca, cb):
        got = await c.recv(3)
        assert (got["type"], got["from"], got["data"]) == ("broadcast", "server", "hello all")

    await cb.request({"type": "join_room", "room": "ops"})
    await wait_for(lambda: _async(cb.id in a.hub.bus.remote_members("ops")), 5)
    # The room has no member on a, yet the operator there reaches it.
    a.hub.operator_broadcast("to the room", room="ops")
    got = await cb.recv(3)
    assert (got["type"], got["room"], got["from"], got["data"]) == (
        "room_message",
        "ops",
        "server",
        "to the room",
    )
    await ca.expect_nothing(0.3)


async def test_mux_json_streams_are_cluster_sessions(
    start_server: Any, connect: Any, redis_server: RedisServer, tmp_path: Path
) -> None:
    a = await start_server(
        cluster=redis_server.url,
        node_name="a",
        protocol="mux",
        upload_dir=str(tmp_path / "ua"),
        max_per_ip=0,
    )
    b = await start_server(
        cluster=redis_server.url, node_name="b", upload_dir=str(tmp_path / "ub"), max_per_ip=0
    )
    cb = await connect(b)
    async with await MuxClient.connect("127.0.0.1", a.port) as mux:
        stream = (await mux.open_stream("json")).json()
        welcome = await stream.receive()
        assert welcome["id"] == f"{mux.local_id}#1@a" and welcome["node"] == "a"
        await wait_for(lambda: _async(welcome["id"] in b.hub.bus.directory.sessions), 5)
        await cb.send({"type": "private", "target": welcome["id"], "data": "to a stream"})
        got = await stream.receive()
        assert (got["type"], got["from"], got["data"]) == ("private", cb.id, "to a stream")
        await stream.send({"type": "broadcast", "data": "from a stream"})
        got = await cb.recv(3)
        assert (got["from"], got["data"]) == (welcome["id"], "from a stream")


async def test_without_cluster_ids_and_welcome_are_as_on_one_server(
    server: Any, connect: Any
) -> None:
    c: JsonClient = await connect(server)
    assert c.id == c.local_id
    assert "node" not in c.welcome
    assert server.hub.bus is None


async def _async(value: bool) -> bool:
    await asyncio.sleep(0)
    return value


async def test_a_room_joined_while_the_node_links_still_gets_other_nodes_messages(
    start_server: Any, connect: Any, redis_server: RedisServer, tmp_path: Path
) -> None:
    b = await start_server(
        cluster=redis_server.url, node_name="b", upload_dir=str(tmp_path / "ub"), max_per_ip=0
    )
    a = await start_server(
        cluster=redis_server.url, node_name="a", upload_dir=str(tmp_path / "ua"), max_per_ip=0
    )
    ca = await connect(a)
    await ca.request({"type": "join_room", "room": "early"})
    joined_before_link = a.hub.bus.link.state != "up"
    cb = await connect(b)
    await cb.request({"type": "join_room", "room": "early"})

    async def heard() -> bool:
        await cb.send({"type": "room_message", "room": "early", "data": "hi"})
        try:
            while True:
                msg = await ca.recv(0.3)
                if msg["type"] == "room_message" and msg["from"] == cb.id:
                    return True
        except TimeoutError:
            return False

    await wait_for(heard, 5)
    assert joined_before_link
