"""A node's Redis link rebuilt under faults leaves nothing behind (real nodes and Redis)."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from cluster_harness import NodeProcess, RedisServer, wait_for
from helpers import JsonClient

pytestmark = [
    pytest.mark.timeout(90),
    pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals"),
]

ROOMS = [f"gone-{i}" for i in range(5)]


@pytest.fixture
async def nodes(tmp_path: Path, redis_server: RedisServer) -> AsyncIterator[list[NodeProcess]]:
    started = [
        await NodeProcess.start(tmp_path, redis_server.url, "a"),
        await NodeProcess.start(tmp_path, redis_server.url, "b"),
    ]
    yield started
    for n in started:
        n.kill()
    for n in started:
        with contextlib.suppress(Exception):
            await n.stop()


async def channels(redis_server: RedisServer) -> set[bytes]:
    r = redis_server.client()
    try:
        return set(await r.pubsub_channels("vc:r:*"))
    finally:
        await r.aclose()


async def subscribers(redis_server: RedisServer) -> int:
    r = redis_server.client()
    try:
        return len(await r.client_list(_type="pubsub"))
    finally:
        await r.aclose()


async def relinked(node: NodeProcess, times: int) -> bool:
    return node.text().count("linked to Redis") >= times


async def freeze_and_leave(
    redis_server: RedisServer, nodes: list[NodeProcess], flood: int = 0
) -> None:
    """Freeze Redis until the links are being rebuilt, empty the rooms, resume.

    ``flood`` large broadcasts sent as Redis stops fill the node's socket to
    it, as a loaded node's is when a command times out.
    """
    a, b = nodes
    ca = await JsonClient.connect(a.port)
    cb = await JsonClient.connect(b.port)
    try:
        for room in ROOMS:
            await ca.request({"type": "join_room", "room": room})
            await cb.request({"type": "join_room", "room": room})
        wanted = {f"vc:r:{room}".encode() for room in ROOMS}
        await wait_for(lambda: _superset(redis_server, wanted), 5)
        redis_server.signal(signal.SIGSTOP)
        try:
            for _ in range(flood):
                await ca.send({"type": "broadcast", "data": "x" * 60_000})
            # A command times out (1 s) and the links are rebuilt, against a
            # Redis that answers nothing: the attempts subscribe and wait.
            await asyncio.sleep(4)
            for room in ROOMS:
                await ca.request({"type": "leave_room", "room": room})
                await cb.request({"type": "leave_room", "room": room})
            await asyncio.sleep(0.2)
        finally:
            redis_server.signal(signal.SIGCONT)
        for n in nodes:
            await wait_for(lambda n=n: relinked(n, 2), 10)
    finally:
        await ca.close()
        await cb.close()


async def _superset(redis_server: RedisServer, wanted: set[bytes]) -> bool:
    return await channels(redis_server) >= wanted


async def _none_left(redis_server: RedisServer) -> bool:
    return not await channels(redis_server) and await subscribers(redis_server) == 2


async def test_rooms_emptied_while_the_link_is_rebuilt_leave_no_channel(
    redis_server: RedisServer, nodes: list[NodeProcess]
) -> None:
    await freeze_and_leave(redis_server, nodes)
    try:
        # One subscriber connection per node, and no room channel: nobody is in one.
        await wait_for(lambda: _none_left(redis_server), 5)
    except AssertionError:
        print(
            "channels:",
            await channels(redis_server),
            "subscribers:",
            await subscribers(redis_server),
        )
        raise


async def test_a_rebuilt_link_leaves_no_task_exception_unretrieved(
    redis_server: RedisServer, nodes: list[NodeProcess]
) -> None:
    await freeze_and_leave(redis_server, nodes, flood=100)
    await asyncio.sleep(1)
    for n in nodes:
        text = n.text()
        assert "Redis link lost" in text  # the fault did rebuild the link
        assert "never retrieved" not in text, text
