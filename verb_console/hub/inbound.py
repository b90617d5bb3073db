"""What other nodes send this node's sessions: the hub's delivery entry points.

``cluster/`` calls these (see :mod:`.bus`); each delivers as a local message
would, paced with every other fan-out, and with session resume on, stamped with
each recipient's ``seq``.
"""

from __future__ import annotations

from typing import Any

from .shared_history import Position


class Inbound:
    """Deliveries from other nodes to the sessions of one hub."""

    __slots__ = ("hub",)

    def __init__(self, hub: Any) -> None:  # the Hub (typed loosely: it holds this part)
        self.hub = hub

    def broadcast(self, frame: bytes) -> int:
        """Another node's client broadcast: to every json session here."""
        sessions = self.hub.json_sessions
        self.hub.pacer.fan_out(sessions.values(), frame)
        return len(sessions)

    def private(self, target: str, frame: bytes) -> bool:
        """Another node's private message for ``target``; False if it is not (or no longer) here."""
        hub = self.hub
        session = hub.json_sessions.get(target)
        if session is None:
            return False
        # A fan-out of one, as the node's broadcasts and room messages are: it
        # keeps its place behind those still waiting in the pacer (a node's
        # messages arrive in the order they were sent, whatever their kind).
        hub.pacer.fan_out((session,), frame)
        return True

    def room(self, name: str, frame: bytes) -> int:
        """A framed message from another node for the members of ``name`` here."""
        rooms = self.hub.rooms
        room = rooms.get(name)
        shared = self.hub.shared_history
        if shared is not None:
            shared.saw(name, frame, room)
        if room is None:
            return 0
        return rooms.send_frame(room, frame)

    def room_notice(self, name: str, message: dict[str, Any]) -> int:
        """Another node's ``user_joined`` or ``user_left`` for the members of ``name`` here."""
        rooms = self.hub.rooms
        room = rooms.get(name)
        if room is None or not room.members:
            return 0
        return rooms.send(room, message)

    # --- room history kept by the cluster (see .shared_history)
    def room_kept(self, post_id: int, frame: bytes) -> None:
        """This node's room message ``post_id`` back from the bus, with its offset."""
        shared = self.hub.shared_history
        if shared is not None:
            shared.arrived(post_id, frame)

    def position(self, join_id: int, position: Position | None) -> None:
        """The room's position a ``join_room`` of this node asked for (None: none known)."""
        shared = self.hub.shared_history
        if shared is not None:
            shared.position(join_id, position)

    def history_lost(self) -> None:
        """Room posts and joins under way will get no answer: the bus's link went down."""
        shared = self.hub.shared_history
        if shared is not None:
            shared.lost()

    # --- session resume across nodes (see .handover)
    def hand_over(
        self, session_id: str, token: str, seq: int, user: str | None, node: str
    ) -> tuple[str, dict[str, Any] | None]:
        """Another node asks for a session of this one: the failure reason, or
        ``resumed`` and the session's state (it no longer lives here then)."""
        manager = self.hub.resume
        if manager is None:
            return "unknown", None
        return manager.handover.give_up(session_id, token, seq, user, node)

    def handed(self, ask_id: int, reason: str, state: dict[str, Any] | None) -> None:
        """The answer to this node's ask ``ask_id`` (see :meth:`hand_over`)."""
        manager = self.hub.resume
        if manager is not None:
            manager.handover.answered(ask_id, reason, state)

    def asks_lost(self) -> None:
        """No answer will come to what this node asked (the bus's link went down)."""
        manager = self.hub.resume
        if manager is not None:
            manager.handover.fail_all()
