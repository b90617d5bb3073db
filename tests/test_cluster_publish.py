"""How a node publishes to Redis and learns the others (real hubs in this process, a real
redis-server): an idle node's message leaves at once, a burst still arrives whole and in
order, and a node that links just after another finds that one's sessions."""

from __future__ import annotations

import asyncio
import signal
import time
from pathlib import Path
from typing import Any

import pytest
from cluster_harness import RedisServer, wait_for

from verb_console.cluster.link import COMMAND_TIMEOUT_S
from verb_console.protocols.json import encode

pytestmark = pytest.mark.timeout(60)


async def _nodes(start_server: Any, redis_server: RedisServer, tmp_path: Path) -> Any:
    a = await start_server(
        cluster=redis_server.url, node_name="a", upload_dir=str(tmp_path / "ua"), max_per_ip=0
    )
    b = await start_server(
        cluster=redis_server.url, node_name="b", upload_dir=str(tmp_path / "ub"), max_per_ip=0
    )
    return a, b


async def _idle(bus: Any) -> bool:
    await asyncio.sleep(0.05)
    return not bus.queue and bus.link.state == "up"


async def test_an_idle_node_writes_a_private_message_to_redis_in_the_same_turn(
    start_server: Any, connect: Any, redis_server: RedisServer, tmp_path: Path
) -> None:
    a, b = await _nodes(start_server, redis_server, tmp_path)
    ca, cb = await connect(a), await connect(b)
    bus = a.hub.bus

    async def known() -> bool:
        await asyncio.sleep(0)
        return cb.id in bus.directory.sessions

    await wait_for(known, 5)
    await wait_for(lambda: _idle(bus), 5)
    published, dropped = bus.published, bus.dropped
    frame = encode({"type": "private", "from": ca.id, "data": "now", "timestamp": 0})
    assert bus.private(cb.id, frame) is True
    # Before the loop runs anything else: written, nothing left for the writer task.
    assert not bus.queue
    assert bus.published == published + 1
    got = await cb.recv(3)
    assert (got["type"], got["from"], got["data"]) == ("private", ca.id, "now")
    # The writer read Redis's reply to it, and the node is idle again.
    await wait_for(lambda: _idle(bus), 5)
    assert bus.dropped == dropped


async def test_a_burst_across_nodes_arrives_whole_and_in_order(
    start_server: Any, connect: Any, redis_server: RedisServer, tmp_path: Path
) -> None:
    a, b = await _nodes(start_server, redis_server, tmp_path)
    ca, cb = await connect(a), await connect(b)

    async def known() -> bool:
        await asyncio.sleep(0)
        return cb.id in a.hub.bus.directory.sessions

    await wait_for(known, 5)
    dropped = a.hub.bus.dropped
    # The first goes at once, the rest queue behind it: one order all the same.
    burst = b"".join(encode({"type": "private", "target": cb.id, "data": n}) for n in range(300))
    await ca.send_raw(burst[: len(burst) // 3])
    await asyncio.sleep(0)
    await ca.send_raw(burst[len(burst) // 3 :])
    got = [await cb.recv(5) for _ in range(300)]
    assert [m["data"] for m in got] == list(range(300))
    assert {m["from"] for m in got} == {ca.id}
    assert a.hub.bus.dropped == dropped


async def test_a_node_linking_in_its_neighbour_s_first_second_learns_its_sessions(
    start_server: Any, connect: Any, redis_server: RedisServer, tmp_path: Path
) -> None:
    # A's sessions are told before B subscribes, so B must find them in the
    # directory, which it reads for the nodes listed there: A must be listed
    # from its link on, not from its first heartbeat a second later.
    a = await start_server(
        cluster=redis_server.url, node_name="a", upload_dir=str(tmp_path / "ua"), max_per_ip=0
    )
    await wait_for(lambda: _idle(a.hub.bus), 5)
    ca = await connect(a)
    await wait_for(lambda: _idle(a.hub.bus), 5)
    b = await start_server(
        cluster=redis_server.url, node_name="b", upload_dir=str(tmp_path / "ub"), max_per_ip=0
    )
    await wait_for(lambda: _idle(b.hub.bus), 5)

    async def known() -> bool:
        await asyncio.sleep(0)
        return ca.id in b.hub.bus.directory.sessions

    await wait_for(known, 3)
    cb = await connect(b)
    await cb.send({"type": "private", "target": ca.id, "data": "found"})
    got = await ca.recv(3)
    assert (got["type"], got["from"], got["data"]) == ("private", cb.id, "found")


async def test_bus_stats_is_a_snapshot_of_the_link_and_node_figures(
    start_server: Any, connect: Any, redis_server: RedisServer, tmp_path: Path
) -> None:
    a, b = await _nodes(start_server, redis_server, tmp_path)
    ca, cb = await connect(a), await connect(b)
    bus = a.hub.bus

    async def known() -> bool:
        await asyncio.sleep(0)
        return cb.id in bus.directory.sessions

    await wait_for(known, 5)
    before = bus.stats()
    assert (before.node, before.link) == ("a", "up")
    await ca.send({"type": "private", "target": cb.id, "data": "hi"})
    assert (await cb.recv(3))["data"] == "hi"
    after = bus.stats()
    # The link counted what it wrote; the snapshot taken before did not move.
    assert after.published > before.published
    assert bus.link.stats().published == after.published
    probes = before.probe_lags.count
    await wait_for(lambda: _probed(bus, probes), 5)
    assert before.probe_lags.count == probes
    # The cluster pane's figures are the same record's.
    info = bus.info()
    assert info.reconnects == after.reconnects and info.link == "up"


async def _probed(bus: Any, seen: int) -> bool:
    await asyncio.sleep(0.05)
    return bool(bus.stats().probe_lags.count > seen)


async def test_a_frozen_redis_holds_a_sender_no_longer_than_a_command_s_timeout(
    start_server: Any, connect: Any, redis_server: RedisServer, tmp_path: Path
) -> None:
    """A private message after a room message waits for the room message to come
    back from Redis (docs/cluster.md); a frozen Redis answers nothing, and the
    sender is let go when the post's command times out (1 s), with the link
    rebuilt, not after twice that."""
    a, b = await _nodes(start_server, redis_server, tmp_path)
    ca, cb = await connect(a), await connect(b)
    await ca.request({"type": "join_room", "room": "r"})
    await cb.request({"type": "join_room", "room": "r"})

    async def known() -> bool:
        await asyncio.sleep(0)
        return cb.id in a.hub.bus.directory.sessions

    await wait_for(known, 5)
    await wait_for(lambda: _idle(a.hub.bus), 5)
    assert (await ca.recv())["type"] == "user_joined"
    # Right after a heartbeat is answered (its probe is back), so that the next
    # one, a second later, is not what finds Redis frozen first.
    link = a.hub.bus.link
    last = link._probe_back

    async def heartbeat_answered() -> bool:
        await asyncio.sleep(0.002)
        return link._probe_back != last

    await wait_for(heartbeat_answered, 5, interval=0)
    redis_server.signal(signal.SIGSTOP)
    try:
        frozen = time.monotonic()
        await ca.send_raw(
            encode({"type": "room_message", "room": "r", "data": "out"})
            + encode({"type": "private", "target": cb.id, "data": "held"})
            + encode({"type": "ping"})
        )
        got = await ca.recv(5)
        held = time.monotonic() - frozen
        assert got["type"] == "pong", got
        # The post's command times out after 1 s; a loaded machine gets half a second more.
        assert COMMAND_TIMEOUT_S <= held < 1.5 * COMMAND_TIMEOUT_S + 0.1, held
        assert a.hub.bus.link.state != "up"
    finally:
        redis_server.signal(signal.SIGCONT)
