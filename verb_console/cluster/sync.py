"""What a node keeps of the cluster's directory in Redis (PROTOCOL.md section 10): its
own sessions and room members written in, the other live nodes' read out.

The link (:mod:`.link`) calls these when it comes up and on its heartbeat;
keeping them apart leaves the link to its one job, staying connected.
"""

from __future__ import annotations

import time
from typing import Any

import orjson
from redis.asyncio import Redis

from . import keys
from .base import LinkBus
from .commands import pairs, pairs_rev
from .history import PRUNE_SHA, meta_key


def announce(node: str, sessions: list[str], rooms: dict[str, list[str]]) -> list[tuple[Any, ...]]:
    """Queue entries that write this node's state into the directory and tell it."""
    expiry = int(time.time() * 1000) + keys.ENTRY_TTL_MS
    out: list[tuple[Any, ...]] = []
    if sessions:
        out.append(("HSET", keys.SESSIONS, *pairs(sessions, node)))
        out.append(("ZADD", keys.SESSIONS_EXPIRY, *pairs_rev(sessions, expiry)))
    for room, members in rooms.items():
        out.append(("HSET", keys.room_key(room), *pairs(members, node)))
        out.append(("ZADD", keys.room_expiry_key(room), *pairs_rev(members, expiry)))
        out.append(("ZADD", keys.ROOMS, expiry, room))
    state = {"o": "st", "n": node, "s": sessions, "r": rooms}
    out.append(("PUBLISH", keys.MEMBERS, orjson.dumps(state)))
    return out


async def bootstrap(bus: LinkBus, client: Redis) -> None:
    """Learn the other live nodes' sessions and members from the directory.

    Only adds: what left while this node was away is told by its node's
    state when that node links again, or by its death.
    """
    raw_names: list[Any] = await client.hkeys(keys.NODES)
    names = [n.decode() for n in raw_names]
    names = [n for n in names if n != bus.node]
    pipe = client.pipeline(transaction=False)
    for name in names:
        pipe.exists(keys.heartbeat_key(name))
    live = {n for n, alive in zip(names, await pipe.execute(), strict=True) if alive}
    raw_rooms: list[Any] = await client.zrange(keys.ROOMS, 0, -1)
    rooms = [r.decode() for r in raw_rooms]
    pipe = client.pipeline(transaction=False)
    pipe.hgetall(keys.SESSIONS)
    for room in rooms:
        pipe.hgetall(keys.room_key(room))
    found = await pipe.execute()
    d = bus.directory
    for sid, node in found[0].items():
        if node.decode() in live:
            d.add_session(node.decode(), sid.decode())
    joined = []
    for room, members in zip(rooms, found[1:], strict=True):
        for sid, node in members.items():
            n = node.decode()
            if n in live and d.join(n, room, sid.decode()):
                joined.append((room, sid.decode()))
    for name in live:
        d.heard(name)
    bus.tell_members(joined, [])


def refresh(bus: LinkBus, pipe: Any) -> None:
    """Renew this node's directory entries, and prune what expired (any reader may)."""
    sessions, rooms = bus.local_state()
    node = bus.node
    history = bus.history
    now_ms = int(time.time() * 1000)
    expiry = now_ms + keys.ENTRY_TTL_MS
    if sessions:
        pipe.hset(keys.SESSIONS, mapping=dict.fromkeys(sessions, node))
        pipe.zadd(keys.SESSIONS_EXPIRY, dict.fromkeys(sessions, expiry))
    pipe.eval(keys.PRUNE_SCRIPT, 2, keys.SESSIONS, keys.SESSIONS_EXPIRY, now_ms)
    for room, members in rooms.items():
        pipe.hset(keys.room_key(room), mapping=dict.fromkeys(members, node))
        pipe.zadd(keys.room_expiry_key(room), dict.fromkeys(members, expiry))
        pipe.zadd(keys.ROOMS, {room: expiry})
        pipe.eval(keys.PRUNE_SCRIPT, 2, keys.room_key(room), keys.room_expiry_key(room), now_ms)
        if history is not None:
            # A room with members here keeps its position (see .history).
            pipe.pexpire(meta_key(room), history.meta_ttl_ms)
    pipe.eval(keys.PRUNE_ROOMS_SCRIPT, 1, keys.ROOMS, now_ms)
    if history is not None:
        pipe.evalsha(PRUNE_SHA, 0, now_ms - history.ttl_ms)
