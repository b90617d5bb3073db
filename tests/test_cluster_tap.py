"""The message tap on a cluster node: a message that waits for its sender's room posts
(docs/cluster.md: a private message after a room message waits until the room
message is back from Redis) is one row of the tap, not one per attempt. A real
hub in this process, a real redis-server."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from cluster_harness import RedisServer
from helpers import eventually, frame

pytestmark = pytest.mark.timeout(60)


async def test_a_message_that_waits_for_room_posts_is_tapped_once(
    start_server: Any, connect: Any, redis_server: RedisServer, tmp_path: Path
) -> None:
    a = await start_server(
        cluster=redis_server.url, node_name="a", upload_dir=str(tmp_path / "u"), max_per_ip=0
    )
    await eventually(lambda: a.hub.bus is not None and a.hub.bus.link.state == "up")
    sender, target = await connect(a), await connect(a)
    await sender.request({"type": "join_room", "room": "r"})
    a.hub.tap_switch.open()
    # One read: the private message comes while the room message is out to Redis.
    await sender.send_raw(
        frame({"type": "room_message", "room": "r", "data": "first"})
        + frame({"type": "private", "target": target.id, "data": "second"})
    )
    got = await target.recv()
    assert (got["type"], got["data"]) == ("private", "second")
    batch = a.hub.tap_switch.since(0)
    assert batch is not None
    assert [(r.session, r.type) for r in batch.rows] == [
        (sender.id, "room_message"),
        (sender.id, "private"),
    ]
    assert (batch.seen, batch.skipped) == (2, 0)
