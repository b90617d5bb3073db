"""A session resumed on another node (PROTOCOL.md 11.1): the hand-over through Redis.

The asking node publishes ``R`` and the ask (JSON) on the holding node's own
channel; that node answers ``H`` and the answer (the failure's reason, or the
session's state) on the asker's. Only the two nodes read those channels.
Once the asker has made the session anew it tells every node ``mv`` on the
membership channel: each moves the session and its room memberships in its
directory to the new node, telling its members nothing, since for them
nothing changed.

The node that gave a session up sends on, for :data:`FORWARD_S`, what still
comes to it for that session (private messages sent before the others knew)
to the session's new node.
"""

from __future__ import annotations

import time
from typing import Any

import orjson

from . import keys

FORWARD_S = 10.0
"""How long a node sends on what comes for a session it handed over."""


class Handovers:
    """One node's side of cross-node resumes (see the module's doc)."""

    def __init__(self, bus: Any) -> None:  # the node's RedisBus (.node imports this)
        self.bus = bus
        # Sessions handed over: id -> (their new node, until when it is forwarded).
        self.moved: dict[str, tuple[str, float]] = {}
        # Asks this node made: ask id -> the node asked, and the rooms subscribed for it.
        self.asked: dict[int, tuple[str, list[str]]] = {}

    # ----------------------------------------------------------- asking
    def ask(
        self, sid: str, token: str, seq: int, user: str | None, ask_id: int
    ) -> list[str] | None:
        bus = self.bus
        node = bus.directory.node_of(sid)
        state = bus.directory.nodes.get(node) if node is not None else None
        if node is None or state is None or bus.link.state != "up":
            return None
        # Its rooms, subscribed to first: what they are sent after the other node
        # lets go reaches this node (the hub keeps it aside until the answer).
        rooms = sorted(room for room, members in state.rooms.items() if sid in members)
        for room in rooms:
            bus.want(room)
        body = {"r": ask_id, "n": bus.node, "s": sid, "t": token, "q": seq, "u": user}
        if not bus.enqueue(("PUBLISH", bus.node_channel(node), b"R" + orjson.dumps(body))):
            return None
        self.asked[ask_id] = (node, rooms)
        return rooms

    def on_ask(self, data: bytes) -> None:
        """Another node asks for one of this node's sessions."""
        bus = self.bus
        ask = orjson.loads(data)
        node = ask["n"]
        user = ask.get("u")
        reason, state = bus.hub.inbound.hand_over(ask["s"], ask["t"], ask["q"], user, node)
        answer = {"r": ask["r"], "reason": reason, "state": state}
        bus.enqueue(("PUBLISH", bus.node_channel(node), b"H" + orjson.dumps(answer)))

    def on_answer(self, data: bytes) -> None:
        answer = orjson.loads(data)
        asked = self.asked.pop(answer["r"], None)
        self.bus.hub.inbound.handed(answer["r"], answer["reason"], answer.get("state"))
        if asked is not None:
            self._unwant(asked[1])

    def _unwant(self, rooms: list[str]) -> None:
        """The rooms subscribed for an ask that no member here needs now."""
        bus = self.bus
        for room in rooms:
            if bus.hub.rooms.get(room) is None and room not in bus.joins.values():
                bus.unwant(keys.room_channel(room))

    def node_gone(self, node: str) -> None:
        """A node died: what was asked of it will not be answered."""
        inbound = self.bus.hub.inbound
        for ask_id, (asked, rooms) in list(self.asked.items()):
            if asked == node:
                del self.asked[ask_id]
                inbound.handed(ask_id, "unknown", None)
                self._unwant(rooms)

    def lost(self) -> None:
        """The link went down: nothing asked will be answered."""
        self.asked.clear()
        self.bus.hub.inbound.asks_lost()

    # ----------------------------------------------------------- the move
    def adopted(self, sid: str, node: str, rooms: list[str]) -> None:
        """Tell the cluster: ``sid`` (of ``node``) lives here now, in ``rooms``."""
        bus = self.bus
        now_ms = int(time.time() * 1000)
        expiry = now_ms + keys.ENTRY_TTL_MS
        bus.enqueue(("HSET", keys.SESSIONS, sid, bus.node))
        bus.enqueue(("ZADD", keys.SESSIONS_EXPIRY, expiry, sid))
        for room in rooms:
            bus.want(room)
            bus.enqueue(("HSET", keys.room_key(room), sid, bus.node))
            bus.enqueue(("ZADD", keys.room_expiry_key(room), expiry, sid))
            bus.enqueue(("ZADD", keys.ROOMS, expiry, room))
        bus.event({"o": "mv", "s": sid, "f": node, "r": rooms})

    def on_moved(self, node: str, ev: dict[str, Any]) -> None:
        """Another node took session ``ev["s"]`` over from ``ev["f"]``: moved in the
        directory, with no word to the members."""
        d = self.bus.directory
        sid, old = ev["s"], ev["f"]
        d.remove_session(old, sid)
        state = d.nodes.get(old)
        if state is not None:
            for room in list(state.rooms):
                d.leave(old, room, sid)
        d.add_session(node, sid)
        for room in ev["r"]:
            d.join(node, room, sid)

    def released(self, sid: str, node: str) -> None:
        """This node gave ``sid`` up to ``node``."""
        bus = self.bus
        now = time.monotonic()
        moved = self.moved
        for old in list(moved):
            if moved[old][1] > now:
                break
            del moved[old]
        moved[sid] = (node, now + FORWARD_S)
        d = bus.directory
        d.add_session(node, sid)
        # Rooms left with no member here: their channels are not needed now.
        for channel, room in list(bus.wanted.items()):
            if bus.hub.rooms.get(room) is None and room not in bus.joins.values():
                bus.unwant(channel)

    def forward(self, target: str, frame: bytes) -> bool:
        """A private message for a session handed over lately: sent on to its node."""
        moved = self.moved.get(target)
        if moved is None or moved[1] < time.monotonic():
            return False
        bus = self.bus
        bus.publish(bus.node_channel(moved[0]), b"P" + target.encode() + b"\n" + frame)
        return True
