"""The operator's actions on a running hub: broadcast from the server, close sessions."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any, Protocol

from ..units import plural
from .bus import Bus
from .rooms import RoomRegistry
from .session import CloseReason
from .slices import Slices

if TYPE_CHECKING:
    from .session import Session


class OperatorHost(Protocol):
    """What the operator's actions reach of their hub."""

    rooms: RoomRegistry
    bus: Bus | None
    sessions: dict[str, Session]
    connections: dict[str, Session]
    id_suffix: str
    turns: Any  # the hub's TurnClock, told of the slices of a broadcast

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
        targets = [s for s in hub.sessions.values() if s.accepts_notices and not s.closing]

        def send(session: Session) -> None:
            if not session.closing:
                session.notify(message)

        # A slice per turn: at 100,000 sessions the encoding alone is a quarter second.
        Slices(targets, send, "operator broadcast", clock=hub.turns).start()
        hub.event("operator", f"broadcast to {sessions_text(len(targets))}: {text}")
        return len(targets)

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
