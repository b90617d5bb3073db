"""One node's side of the cluster: the :class:`~verb_console.hub.bus.Bus` on Redis.

What the hub tells the bus is queued (capped: past the cap, or while Redis is
unreachable, it is dropped and counted) and published by one writer task in
pipelines, in the order it happened, so messages from one session reach
another in the order sent. One dedicated pub/sub connection receives; the node
subscribes to a room's channel only while it has members of the room.

The link (:mod:`.link`) connects, subscribes, announces this node's state and
reads the others'; it rebuilds everything after any failure, including a
subscription that silently stopped delivering (found by a probe the node
publishes to itself every second).
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections import deque
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import orjson

from ..hub.snapshot import ClusterInfo, NodeInfo
from ..protocols.json import encode
from . import keys
from .base import SUBSCRIBE, UNSUBSCRIBE
from .directory import Change, Directory
from .link import Link

if TYPE_CHECKING:
    from ..hub.hub import Hub

log = logging.getLogger("verb_console.cluster")

_NAME = re.compile(r"[A-Za-z0-9_.-]{1,32}\Z")

DEFAULT_QUEUE_LIMIT = 10000
# Above the largest json frame (1 MiB by default) and far below Redis's pub/sub
# output-buffer limits (8 MiB soft, 32 MiB hard): one message never trips them.
DEFAULT_MAX_MESSAGE = 1024 * 1024 + 4096


def valid_node_name(name: str) -> bool:
    """1 to 32 characters of ``A-Za-z0-9_.-`` (PROTOCOL.md section 10)."""
    return _NAME.match(name) is not None


class RedisBus:
    """The hub's bus to the other nodes of a cluster, through one Redis."""

    def __init__(
        self,
        hub: Hub,
        url: str,
        node: str,
        *,
        queue_limit: int = DEFAULT_QUEUE_LIMIT,
        max_message: int = DEFAULT_MAX_MESSAGE,
    ) -> None:
        self.hub = hub
        self.url = url
        self.node = node
        self.node_b = node.encode()
        self.own_channel = keys.node_channel(node)
        self.directory = Directory(node)
        self.queue: deque[tuple[Any, ...]] = deque()
        self.queue_limit = queue_limit
        self.max_message = max_message
        self.wake = asyncio.Event()
        # Room channels wanted (the node has members there), and which room each is.
        self.wanted: dict[bytes, str] = {}
        self._node_channels: dict[str, bytes] = {}
        # Figures
        self.published = 0  # queue entries written to Redis
        self.received = 0  # messages from other nodes
        self.dropped = 0  # not sent: queue full, Redis unreachable, or too large
        self.undeliverable = 0  # for a session that had gone by the time it arrived
        self.rate_out = 0.0
        self.rate_in = 0.0
        self.link = Link(self)

    # ----------------------------------------------------------- lifecycle
    async def start(self) -> None:
        """Claim the node's name (NodeNameTaken if a live node holds it), then run the link."""
        await self.link.claim()
        self.link.start()

    async def aclose(self) -> None:
        """Leave the cluster: flush what is queued, say goodbye, drop the heartbeat."""
        await self.link.aclose()

    # ----------------------------------------------------------- publishing
    def enqueue(self, item: tuple[Any, ...]) -> bool:
        if self.link.state != "up" or len(self.queue) >= self.queue_limit:
            self.dropped += 1
            return False
        # Nothing waiting before it: written now (the writer reads the reply).
        if self.queue or not self.link.write_now(item):
            self.queue.append(item)
        self.wake.set()
        return True

    def publish(self, channel: bytes, payload: bytes) -> None:
        if len(payload) > self.max_message:
            self.dropped += 1
            return
        self.enqueue(("PUBLISH", channel, payload))

    def event(self, message: dict[str, Any]) -> None:
        """A membership or node event on the channel every node reads."""
        message["n"] = self.node
        self.publish(keys.MEMBERS, orjson.dumps(message))

    def node_channel(self, node: str) -> bytes:
        channel = self._node_channels.get(node)
        if channel is None:
            channel = self._node_channels[node] = keys.node_channel(node)
        return channel

    # ----------------------------------------------------------- Bus
    def session_started(self, session_id: str) -> None:
        expiry = int(time.time() * 1000) + keys.ENTRY_TTL_MS
        self.enqueue(("HSET", keys.SESSIONS, session_id, self.node))
        self.enqueue(("ZADD", keys.SESSIONS_EXPIRY, expiry, session_id))
        self.event({"o": "ss", "s": session_id})

    def session_ended(self, session_id: str) -> None:
        self.event({"o": "se", "s": session_id})
        self.enqueue(("HDEL", keys.SESSIONS, session_id))
        self.enqueue(("ZREM", keys.SESSIONS_EXPIRY, session_id))

    def broadcast(self, frame: bytes) -> None:
        self.publish(keys.BROADCAST, self.node_b + b"\n" + frame)

    def private(self, target: str, frame: bytes) -> bool:
        node = self.directory.node_of(target)
        if node is None:
            return False
        self.publish(self.node_channel(node), b"P" + target.encode() + b"\n" + frame)
        return True

    def room_joined(self, room: str, session_id: str) -> None:
        channel = keys.room_channel(room)
        if channel not in self.wanted:
            self.wanted[channel] = room
            # Subscribed before the join is told, so no reply to it can be missed.
            self.enqueue((SUBSCRIBE, channel))
        expiry = int(time.time() * 1000) + keys.ENTRY_TTL_MS
        self.enqueue(("HSET", keys.room_key(room), session_id, self.node))
        self.enqueue(("ZADD", keys.room_expiry_key(room), expiry, session_id))
        self.enqueue(("ZADD", keys.ROOMS, expiry, room))
        self.event({"o": "j", "r": room, "s": session_id})

    def room_left(self, room: str, session_id: str) -> None:
        self.event({"o": "l", "r": room, "s": session_id})
        self.enqueue(
            (
                "EVAL",
                keys.LEAVE_SCRIPT,
                3,
                keys.room_key(room),
                keys.room_expiry_key(room),
                keys.ROOMS,
                session_id,
                room,
            )
        )
        if self.hub.rooms.get(room) is None:
            channel = keys.room_channel(room)
            if self.wanted.pop(channel, None) is not None:
                self.enqueue((UNSUBSCRIBE, channel))

    def room_message(self, room: str, frame: bytes) -> None:
        self.publish(keys.room_channel(room), self.node_b + b"\n" + frame)

    def remote_members(self, room: str) -> Iterable[str]:
        return self.directory.members(room)

    def operator_broadcast(self, text: str, room: str | None) -> None:
        if room is None:
            self.event({"o": "ob", "t": text})
            return
        frame = encode(
            {
                "type": "room_message",
                "room": room,
                "from": "server",
                "data": text,
                "timestamp": int(time.time() * 1000),
            }
        )
        self.publish(keys.room_channel(room), self.node_b + b"\n" + frame)

    def operator_close(self, session_id: str) -> bool:
        # "Closed" means found: the session is in the directory as a live
        # session of the node its id names (as for private messages), so an id
        # no node holds is refused here rather than reported as sent.
        node = session_id.rpartition("@")[2]
        if node == self.node or self.directory.node_of(session_id) != node:
            return False
        self.publish(self.node_channel(node), b"C" + session_id.encode())
        return True

    # ----------------------------------------------------------- receiving
    def on_message(self, channel: bytes, data: bytes) -> None:
        """One message from Redis (the link's reader calls it)."""
        if channel == keys.BROADCAST:
            node, _, frame = data.partition(b"\n")
            if node != self.node_b:
                self.received += 1
                self.hub.deliver_broadcast(frame)
        elif channel == keys.MEMBERS:
            self.on_event(orjson.loads(data))
        elif channel == self.own_channel:
            self.on_direct(data)
        else:
            room = self.wanted.get(channel)
            if room is not None:
                node, _, frame = data.partition(b"\n")
                if node != self.node_b:
                    self.received += 1
                    self.hub.deliver_room(room, frame)

    def on_direct(self, data: bytes) -> None:
        kind = data[:1]
        if kind == b"P":
            target, _, frame = data[1:].partition(b"\n")
            self.received += 1
            if not self.hub.deliver_private(target.decode(), frame):
                self.undeliverable += 1
        elif kind == b"p":
            self.link.probe_returned(data[1:])
        elif kind == b"C":
            self.received += 1
            self.hub.operator_close(data[1:].decode(), local_only=True)

    def on_event(self, ev: dict[str, Any]) -> None:
        node = ev["n"]
        if node == self.node:
            return
        d = self.directory
        op = ev["o"]
        if op == "hb":
            d.heard(node, ev.get("i"))
            return
        d.heard(node)
        if op == "j":
            if d.join(node, ev["r"], ev["s"]):
                self.tell_members([(ev["r"], ev["s"])], [])
        elif op == "l":
            if d.leave(node, ev["r"], ev["s"]):
                self.tell_members([], [(ev["r"], ev["s"])])
        elif op == "ss":
            d.add_session(node, ev["s"])
        elif op == "se":
            d.remove_session(node, ev["s"])
        elif op == "st":
            self.tell_members(*d.replace(node, ev["s"], ev["r"]))
        elif op == "bye":
            self.forget_node(node, "left the cluster")
        elif op == "ob":
            self.received += 1
            self.hub.operator_broadcast(ev["t"], local_only=True)

    def tell_members(self, joined: list[Change], left: list[Change]) -> None:
        """Tell this node's room members who joined and left on other nodes."""
        hub = self.hub
        for room, sid in left:
            hub.room_notice(room, {"type": "user_left", "connectionId": sid, "room": room})
        for room, sid in joined:
            hub.room_notice(room, {"type": "user_joined", "connectionId": sid, "room": room})

    def forget_node(self, node: str, why: str) -> None:
        state = self.directory.nodes.get(node)
        if state is None:
            return
        sessions = list(state.sessions)
        left = self.directory.purge(node)
        self.hub.event("server", f"cluster: node {node} {why} ({len(sessions)} sessions)")
        self.tell_members([], left)
        # Any node may clean a dead node's directory entries; the TTLs would anyway.
        for sid in sessions:
            self.enqueue(("HDEL", keys.SESSIONS, sid))
            self.enqueue(("ZREM", keys.SESSIONS_EXPIRY, sid))
        for room, sid in left:
            self.enqueue(
                (
                    "EVAL",
                    keys.LEAVE_SCRIPT,
                    3,
                    keys.room_key(room),
                    keys.room_expiry_key(room),
                    keys.ROOMS,
                    sid,
                    room,
                )
            )
        self.enqueue(("HDEL", keys.NODES, node))

    @property
    def link_state(self) -> str:
        return self.link.state

    # ----------------------------------------------------------- state
    def local_state(self) -> tuple[list[str], dict[str, list[str]]]:
        """This node's json sessions and its rooms' members."""
        hub = self.hub
        rooms = {name: list(room.members) for name, room in hub.rooms.rooms.items()}
        return list(hub.json_sessions), rooms

    def info(self) -> ClusterInfo:
        """The figures the console's Cluster pane and ``ctl status`` show."""
        now = time.monotonic()
        hub = self.hub
        up = self.link.state == "up"
        nodes = [NodeInfo(self.node, len(hub.sessions), len(hub.rooms), 0.0 if up else None, True)]
        for name, state in sorted(self.directory.nodes.items()):
            sessions = state.info.get("sessions", len(state.sessions))
            rooms = state.info.get("rooms", len(state.rooms))
            age = round(now - state.last_heard, 1)
            nodes.append(NodeInfo(name, sessions, rooms, age, False))
        return ClusterInfo(
            node=self.node,
            link=self.link.state,
            link_since=self.link.since,
            nodes=tuple(nodes),
            published=self.published,
            received=self.received,
            dropped=self.dropped,
            undeliverable=self.undeliverable,
            msgs_out_per_s=round(self.rate_out, 1),
            msgs_in_per_s=round(self.rate_in, 1),
            queued=len(self.queue),
            reconnects=self.link.reconnects,
        )
