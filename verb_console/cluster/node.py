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

from ..hub.bans import Ban, BanError
from ..hub.bus import BusStats
from ..hub.snapshot import ClusterInfo, NodeInfo
from ..protocols.json import encode
from ..units import plural
from . import keys
from .bans import ClusterBans
from .base import SUBSCRIBE, UNSUBSCRIBE
from .directory import Change, Directory
from .handover import Handovers
from .history import HistoryConfig, PostCommands, ask_position, parse_position, post
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
        # Figures of the node's own; the link counts what it writes (Link.stats).
        self.received = 0  # messages from other nodes
        self.dropped = 0  # not sent: queue full, Redis unreachable, or too large
        self.undeliverable = 0  # for a session that had gone by the time it arrived
        # Room history kept in Redis (see .history); None: history is off.
        st = hub.settings
        self.history: HistoryConfig | None = (
            HistoryConfig(st.history_size, st.history_ttl, st.history_total)
            if st.history_size > 0
            else None
        )
        self.post_commands = PostCommands(self.history) if self.history is not None else None
        # Joins waiting for their room's position: join id -> room.
        self.joins: dict[int, str] = {}
        self.handovers = Handovers(self)
        self.link = Link(self)
        # Bans hold on every node (PROTOCOL.md 12.3); max_sessions counts every node's.
        self.bans = ClusterBans(self)
        hub.banning.listeners.append(self.ban_changed)
        hub.banning.keeps_unsent = True
        hub.permissions.remote_count = self.remote_sessions_of

    # ----------------------------------------------------------- lifecycle
    async def start(self) -> None:
        """Claim the node's name (NodeNameTaken if a live node holds it), then run the link."""
        await self.link.claim()
        self.link.start()

    async def aclose(self) -> None:
        """Leave the cluster: flush what is queued, say goodbye, drop the heartbeat."""
        await self.link.aclose()

    # ----------------------------------------------------------- for the link
    def drop_queue(self) -> None:
        """The link went down: what is queued is dropped, and counted."""
        self.dropped += len(self.queue)
        self.queue.clear()
        # What was asked of Redis and not answered never will be.
        self.joins.clear()
        self.hub.inbound.history_lost()
        self.handovers.lost()

    def note(self, text: str) -> None:
        """A row for the server's log (the link's news)."""
        self.hub.event("server", text)

    def load(self) -> dict[str, Any]:
        """What this node's heartbeat tells the others: its sessions and rooms, and
        its users' session counts (max_sessions counts every node's)."""
        hub = self.hub
        info: dict[str, Any] = {"sessions": len(hub.sessions), "rooms": len(hub.rooms)}
        if hub.permissions.by_user:
            info["users"] = hub.permissions.by_user
        return info

    @property
    def published(self) -> int:
        """Queue entries written to Redis (the link counts them)."""
        return self.link.published

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
        # Subscribed before the join is told, so no reply to it can be missed.
        self.want(room)
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
        if self.hub.rooms.get(room) is None and room not in self.joins.values():
            self.unwant(keys.room_channel(room))

    def room_message(self, room: str, frame: bytes) -> None:
        self.publish(keys.room_channel(room), self.node_b + b"\n" + frame)

    def room_post(self, room: str, frame: bytes, post_id: int) -> bool:
        return post(self, room, frame, post_id)

    def room_position(self, room: str, since: tuple[str, int] | None, join_id: int) -> bool:
        return ask_position(self, room, since, join_id)

    def resume_ask(
        self, session_id: str, token: str, seq: int, user: str | None, ask_id: int
    ) -> list[str] | None:
        return self.handovers.ask(session_id, token, seq, user, ask_id)

    def adopted(self, session_id: str, node: str, rooms: list[str]) -> None:
        self.handovers.adopted(session_id, node, rooms)

    def released(self, session_id: str, node: str) -> None:
        self.handovers.released(session_id, node)

    def want(self, room: str) -> None:
        """Subscribe to ``room``'s channel, if not yet: before what is queued next."""
        channel = keys.room_channel(room)
        if channel not in self.wanted:
            self.wanted[channel] = room
            self.enqueue((SUBSCRIBE, channel))

    def unwant(self, channel: bytes) -> None:
        if self.wanted.pop(channel, None) is not None:
            self.enqueue((UNSUBSCRIBE, channel))

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
                self.hub.inbound.broadcast(frame)
        elif channel == keys.MEMBERS:
            self.on_event(orjson.loads(data))
        elif channel == self.own_channel:
            self.on_direct(data)
        else:
            head, _, frame = data.partition(b"\n")
            node, _, post_id = head.partition(b" ")
            if node == self.node_b:
                # This node's room message, kept with its offset (see .history).
                if post_id and post_id != b"0":
                    self.hub.inbound.room_kept(int(post_id), frame)
                return
            room = self.wanted.get(channel)
            if room is not None:
                self.received += 1
                self.hub.inbound.room(room, frame)

    def on_direct(self, data: bytes) -> None:
        kind = data[:1]
        if kind == b"P":
            target, _, frame = data[1:].partition(b"\n")
            self.received += 1
            sid = target.decode()
            if not self.hub.inbound.private(sid, frame) and not self.handovers.forward(sid, frame):
                self.undeliverable += 1
        elif kind == b"p":
            self.link.probe_returned(data[1:])
        elif kind == b"R":
            self.handovers.on_ask(data[1:])
        elif kind == b"H":
            self.handovers.on_answer(data[1:])
        elif kind == b"J":
            head, _, rest = data[1:].partition(b"\n")
            join_id = int(head)
            if self.joins.pop(join_id, None) is not None:
                self.hub.inbound.position(join_id, parse_position(rest))
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
        elif op == "mv":
            self.handovers.on_moved(node, ev)
        elif op == "bye":
            self.forget_node(node, "left the cluster")
        elif op in ("ban", "unban"):
            try:
                ban = Ban.from_wire(ev["b"])
            except (BanError, KeyError, TypeError, ValueError) as exc:
                log.warning("cluster: a malformed %s from node %s: %s", op, node, exc)
                return
            self.hub.banning.apply_remote(op, ban, node)
        elif op == "ob":
            self.received += 1
            self.hub.operator_broadcast(ev["t"], local_only=True)

    def tell_members(self, joined: list[Change], left: list[Change]) -> None:
        """Tell this node's room members who joined and left on other nodes."""
        inbound = self.hub.inbound
        for room, sid in left:
            inbound.room_notice(room, {"type": "user_left", "connectionId": sid, "room": room})
        for room, sid in joined:
            inbound.room_notice(room, {"type": "user_joined", "connectionId": sid, "room": room})

    def forget_node(self, node: str, why: str) -> None:
        state = self.directory.nodes.get(node)
        if state is None:
            return
        sessions = list(state.sessions)
        left = self.directory.purge(node)
        self.handovers.node_gone(node)
        self.hub.event("server", f"cluster: node {node} {why} ({plural(len(sessions), 'session')})")
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

    # ----------------------------------------------------------- bans and users
    def ban_changed(self, kind: str, ban: Ban) -> None:
        """A ban made or lifted here: given to the cluster now if the link is up,
        else when it is back (:mod:`.bans`)."""
        self.bans.changed(kind, ban)

    async def sync_bans(self, client: Any) -> None:
        """On linking: give what was kept, then take the cluster's list (:mod:`.bans`)."""
        await self.bans.sync(client)

    def remote_sessions_of(self, user: str) -> int:
        """The user's counted sessions on the other nodes, as their heartbeats said."""
        total = 0
        for state in self.directory.nodes.values():
            users = state.info.get("users")
            if users:
                total += users.get(user, 0)
        return total

    @property
    def link_state(self) -> str:
        return self.link.state

    # ----------------------------------------------------------- state
    def local_state(self) -> tuple[list[str], dict[str, list[str]]]:
        """This node's json sessions and its rooms' members."""
        hub = self.hub
        rooms = {name: list(room.members) for name, room in hub.rooms.rooms.items()}
        return list(hub.json_sessions), rooms

    def stats(self) -> BusStats:
        """This node's traffic and link figures now (the Bus interface)."""
        link = self.link.stats()
        return BusStats(
            node=self.node,
            link=link.state,
            link_since=link.since,
            reconnects=link.reconnects,
            published=link.published,
            received=self.received,
            dropped=self.dropped,
            undeliverable=self.undeliverable,
            queued=len(self.queue),
            msgs_out_per_s=round(link.rate_out, 1),
            msgs_in_per_s=round(link.rate_in, 1),
            probe_lags=link.probe_lags,
        )

    def info(self) -> ClusterInfo:
        """The figures the console's Cluster pane and ``ctl status`` show."""
        now = time.monotonic()
        hub = self.hub
        stats = self.stats()
        up = stats.link == "up"
        nodes = [NodeInfo(self.node, len(hub.sessions), len(hub.rooms), 0.0 if up else None, True)]
        for name, state in sorted(self.directory.nodes.items()):
            sessions = state.info.get("sessions", len(state.sessions))
            rooms = state.info.get("rooms", len(state.rooms))
            age = round(now - state.last_heard, 1)
            nodes.append(NodeInfo(name, sessions, rooms, age, False))
        return ClusterInfo(
            node=self.node,
            link=stats.link,
            link_since=stats.link_since,
            nodes=tuple(nodes),
            published=stats.published,
            received=stats.received,
            dropped=stats.dropped,
            undeliverable=stats.undeliverable,
            msgs_out_per_s=stats.msgs_out_per_s,
            msgs_in_per_s=stats.msgs_in_per_s,
            queued=stats.queued,
            reconnects=stats.reconnects,
        )
