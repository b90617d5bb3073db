"""What this node knows of the other nodes: their sessions and room members.

Fed by the membership events every node publishes, by each node's full state
after a (re)connect, and by the directory kept in Redis. A node's part is
replaced whole when its state arrives, and dropped when the node dies: the
changes come back as (room, session id) pairs, so the hub can tell its own
members ``user_joined`` or ``user_left``.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any

Change = tuple[str, str]  # (room, session id)


class NodeState:
    """One other node: its json sessions, its rooms' members, when it was last heard."""

    __slots__ = ("info", "last_heard", "rooms", "sessions")

    def __init__(self) -> None:
        self.sessions: set[str] = set()
        self.rooms: dict[str, set[str]] = {}
        self.last_heard = time.monotonic()
        self.info: dict[str, Any] = {}


class Directory:
    """The other nodes' sessions and room members, by node, by session and by room."""

    def __init__(self, own: str) -> None:
        self.own = own
        self.nodes: dict[str, NodeState] = {}
        self.sessions: dict[str, str] = {}  # session id -> node
        self.rooms: dict[str, dict[str, str]] = {}  # room -> {session id: node}

    def node(self, name: str) -> NodeState:
        state = self.nodes.get(name)
        if state is None:
            state = self.nodes[name] = NodeState()
        return state

    def heard(self, name: str, info: dict[str, Any] | None = None) -> None:
        state = self.node(name)
        state.last_heard = time.monotonic()
        if info is not None:
            state.info = info

    def members(self, room: str) -> Iterable[str]:
        return self.rooms.get(room, {}).keys()

    def node_of(self, session_id: str) -> str | None:
        return self.sessions.get(session_id)

    # --- single changes ---------------------------------------------------
    def add_session(self, node: str, sid: str) -> None:
        self.node(node).sessions.add(sid)
        self.sessions[sid] = node

    def remove_session(self, node: str, sid: str) -> None:
        state = self.nodes.get(node)
        if state is not None:
            state.sessions.discard(sid)
        if self.sessions.get(sid) == node:
            del self.sessions[sid]

    def join(self, node: str, room: str, sid: str) -> bool:
        """Record a member; True if it is new."""
        members = self.node(node).rooms.setdefault(room, set())
        if sid in members:
            return False
        members.add(sid)
        self.rooms.setdefault(room, {})[sid] = node
        return True

    def leave(self, node: str, room: str, sid: str) -> bool:
        """Forget a member; True if it was one."""
        state = self.nodes.get(node)
        members = state.rooms.get(room) if state is not None else None
        if members is None or sid not in members:
            return False
        members.discard(sid)
        if not members:
            del state.rooms[room]  # type: ignore[union-attr]
        by_room = self.rooms.get(room)
        if by_room is not None and by_room.get(sid) == node:
            del by_room[sid]
            if not by_room:
                del self.rooms[room]
        return True

    # --- whole nodes --------------------------------------------------------
    def replace(
        self, node: str, sessions: Iterable[str], rooms: dict[str, Iterable[str]]
    ) -> tuple[list[Change], list[Change]]:
        """Set a node's whole state; returns the members (joined, left) it changed."""
        if node == self.own:
            return [], []
        state = self.node(node)
        new_sessions = set(sessions)
        for sid in state.sessions - new_sessions:
            self.remove_session(node, sid)
        for sid in new_sessions - state.sessions:
            self.add_session(node, sid)
        joined: list[Change] = []
        left: list[Change] = []
        new_rooms = {room: set(members) for room, members in rooms.items()}
        for room, members in list(state.rooms.items()):
            for sid in members - new_rooms.get(room, set()):
                self.leave(node, room, sid)
                left.append((room, sid))
        for room, members in new_rooms.items():
            for sid in members:
                if self.join(node, room, sid):
                    joined.append((room, sid))
        return joined, left

    def purge(self, node: str) -> list[Change]:
        """Forget a dead node; returns the members it had."""
        state = self.nodes.pop(node, None)
        if state is None:
            return []
        left: list[Change] = []
        for room, members in state.rooms.items():
            by_room = self.rooms.get(room)
            for sid in members:
                left.append((room, sid))
                if by_room is not None and by_room.get(sid) == node:
                    del by_room[sid]
            if by_room is not None and not by_room:
                del self.rooms[room]
        for sid in state.sessions:
            if self.sessions.get(sid) == node:
                del self.sessions[sid]
        return left
