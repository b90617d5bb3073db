"""The operator's actions on a running hub: broadcast from the server, close sessions."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any, Protocol

from ..protocols.json import encode
from ..units import plural
from .bus import Bus
from .rooms import RoomRegistry
from .session import CloseReason
from .session_pass import NoticePass

if TYPE_CHECKING:
    from .session import Session


class OperatorHost(Protocol):
    """What the operator's actions reach of their hub."""

    rooms: RoomRegistry
    bus: Bus | None
    sessions: dict[str, Session]
    connections: dict[str, Session]
    id_suffix: str
    shared_history: Any  # .shared_history.SharedHistory, on a cluster with room history

    def event(self, kind: str, text: str) -> None: ...


class Operator:
    """What the console's keys, ``ctl`` and other nodes ask of the server.

    Holds no state of its own: it acts on its hub's sessions, rooms and bus, and
    logs to the hub's event log. The hub's ``operator_*`` methods are these.
    """

    __slots__ = ("hub",)

    def __init__(self, hub: OperatorHost) -> None:
        self.hub = hub

    def broadcast(self, text: str, room: str | None = None, *, local_only: bool = False) -> int:
        """Send ``text`` from the server to every session (or to one room's members).

        In a cluster it reaches the other nodes too, unless ``local_only`` (the
        delivery of another node's operator broadcast). Returns the sessions here.
        """
        hub = self.hub
        now = int(time.time() * 1000)
        bus = None if local_only else hub.bus
        if room is not None:
            r = hub.rooms.get(room)
            shared = hub.shared_history
            if shared is not None and not local_only:
                return self._shared_room(text, room, r, shared)
            if bus is not None and (r is not None or any(bus.remote_members(room))):
                bus.operator_broadcast(text, room)
            if r is None:
                if bus is None or not any(bus.remote_members(room)):
                    hub.event("operator", f"broadcast to unknown room {room!r} dropped")
                return 0
            r.messages += 1
            n = hub.rooms.post(
                r, {"type": "room_message", "room": room, "from": "server", "data": text}
            )
            hub.event("operator", f"broadcast to room {room} ({sessions_text(n)}): {text}")
            return n
        message = {"type": "broadcast", "from": "server", "data": text, "timestamp": now}
        if bus is not None:
            bus.operator_broadcast(text, None)
        n = sum(1 for s in hub.sessions.values() if s.accepts_notices and not s.closing)
        NoticePass(hub, message, "operator broadcast").start()
        hub.event("operator", f"broadcast to {sessions_text(n)}: {text}")
        return n

    def _shared_room(self, text: str, room: str, r: Any, shared: Any) -> int:
        """An operator room message on a cluster with room history: posted to the
        bus like a member's (see .shared_history), to reach every node with its offset."""
        hub = self.hub
        bus = hub.bus
        if r is None and (bus is None or not any(bus.remote_members(room))):
            hub.event("operator", f"broadcast to unknown room {room!r} dropped")
            return 0
        message = {
            "type": "room_message",
            "room": room,
            "from": "server",
            "data": text,
            "timestamp": int(time.time() * 1000),
        }
        n = 0
        if r is not None:
            r.messages += 1
            n = len(r.members)
        shared.post(r, room, encode(message), None)
        hub.event("operator", f"broadcast to room {room} ({sessions_text(n)}): {text}")
        return n

    def close(self, session_id: str, *, local_only: bool = False) -> bool:
        """Close a session (in a cluster, on whichever node holds it)."""
        hub = self.hub
        session = hub.sessions.get(session_id)
        if session is None and hub.bus is not None and not local_only:
            if session_id.endswith(hub.id_suffix):
                return False
            sent = hub.bus.operator_close(session_id)
            if sent:
                hub.event("operator", f"asked the node of {session_id} to close it")
            return sent
        if session is None or session.closing:
            return False
        hub.event("operator", f"closed session {session_id}")
        session.close(CloseReason.OPERATOR)
        return True

    def close_ip(self, address: str) -> int:
        """Close every connection from ``address``; returns how many."""
        hub = self.hub
        victims = [s for s in hub.connections.values() if s.address == address and not s.closing]
        for session in victims:
            session.close(CloseReason.OPERATOR)
        hub.event("operator", f"closed {sessions_text(len(victims))} of {address}")
        return len(victims)


def sessions_text(n: int) -> str:
    """``1 session``, ``2,000 sessions``."""
    return plural(n, "session")
