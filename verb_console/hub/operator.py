"""The operator's actions on a running hub: broadcast from the server, close sessions."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from .bus import Bus
from .rooms import RoomRegistry
from .session import CloseReason

if TYPE_CHECKING:
    from .session import Session


class OperatorActions:
    """What the console's keys, ``ctl`` and other nodes ask of the server; part of the hub."""

    rooms: RoomRegistry
    bus: Bus | None
    sessions: dict[str, Session]
    connections: dict[str, Session]
    id_suffix: str

    def event(self, kind: str, text: str) -> None:  # pragma: no cover - the hub's
        raise NotImplementedError

    def operator_broadcast(
        self, text: str, room: str | None = None, *, local_only: bool = False
    ) -> int:
        """Send ``text`` from the server to every session (or to one room's members).

        In a cluster it reaches the other nodes too, unless ``local_only`` (the
        delivery of another node's operator broadcast). Returns the sessions here.
        """
        now = int(time.time() * 1000)
        bus = None if local_only else self.bus
        if room is not None:
            r = self.rooms.get(room)
            if bus is not None and (r is not None or any(bus.remote_members(room))):
                bus.operator_broadcast(text, room)
            if r is None:
                if bus is None or not any(bus.remote_members(room)):
                    self.event("operator", f"broadcast to unknown room {room!r} dropped")
                return 0
            r.messages += 1
            n = self.rooms.post(
                r, {"type": "room_message", "room": room, "from": "server", "data": text}
            )
            self.event("operator", f"broadcast to room {room} ({sessions_text(n)}): {text}")
            return n
        message = {"type": "broadcast", "from": "server", "data": text, "timestamp": now}
        if bus is not None:
            bus.operator_broadcast(text, None)
        n = 0
        for session in list(self.sessions.values()):
            if session.accepts_notices and not session.closing:
                session.notify(message)
                n += 1
        self.event("operator", f"broadcast to {sessions_text(n)}: {text}")
        return n

    def operator_close(self, session_id: str, *, local_only: bool = False) -> bool:
        """Close a session (in a cluster, on whichever node holds it)."""
        session = self.sessions.get(session_id)
        if session is None and self.bus is not None and not local_only:
            if session_id.endswith(self.id_suffix):
                return False
            sent = self.bus.operator_close(session_id)
            if sent:
                self.event("operator", f"asked the node of {session_id} to close it")
            return sent
        if session is None or session.closing:
            return False
        self.event("operator", f"closed session {session_id}")
        session.close(CloseReason.OPERATOR)
        return True

    def operator_close_ip(self, address: str) -> int:
        victims = [s for s in self.connections.values() if s.address == address and not s.closing]
        for session in victims:
            session.close(CloseReason.OPERATOR)
        self.event("operator", f"closed {sessions_text(len(victims))} of {address}")
        return len(victims)


def sessions_text(n: int) -> str:
    """``1 session``, ``2,000 sessions``."""
    return f"{n:,} session" if n == 1 else f"{n:,} sessions"
