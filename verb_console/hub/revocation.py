"""Applying a reloaded auth file and policy to the sessions already in
(PROTOCOL.md section 12.2).

One pass over the sessions, a bounded chunk per turn of the event loop, so a
reload over ten thousand sessions never holds the loop. The new policy is in
force for new sessions before the pass starts; a session the pass has not
reached yet that joins a room meanwhile is checked when the pass reaches it,
so a reload in the middle of a storm of joins leaves no one where they may no
longer be.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Collection
from typing import Any

from .policy import Policy
from .session import CloseReason, Session

__all__ = ["CHUNK", "Revocation", "by_certificate"]

# Sessions one turn of the loop looks at.
CHUNK = 500


def by_certificate(hub: Any, session: Session) -> bool:
    """Whether ``session``'s user comes from its client certificate (not a token)."""
    conn = hub.connections.get(session.parent) if session.parent else session
    tls = getattr(conn.outlet, "tls", None) if conn is not None else None
    return tls is not None and getattr(tls, "peer_name", None) == session.user


def leave_revoked(hub: Any, session: Session, name: str) -> None:
    """Take ``session`` out of room ``name`` because its user may no longer join it."""
    room = hub.rooms.leave(session, name)
    session.notify({"type": "left", "room": name, "reason": "revoked"})
    if room is not None and room.members:
        hub.rooms.send(room, {"type": "user_left", "connectionId": session.id, "room": name})
    if hub.bus is not None and room is not None:
        hub.bus.room_left(name, session.id)


class Revocation:
    """One pass: close the sessions of users with no token left, take sessions out
    of rooms they may no longer join, and give the rest their new rules."""

    def __init__(
        self,
        hub: Any,
        users: Collection[str] | None,
        policy: Policy | None,
        on_done: Callable[[Revocation], None] | None = None,
    ) -> None:
        self.hub = hub
        # Users with a token now; None: authentication is off (nobody is revoked).
        self.users = users
        self.policy = policy
        self.on_done = on_done
        # Streams before connections: a revoked mux connection's streams each get
        # their own ``closing`` before the connection ends them all.
        self._todo = sorted(hub.sessions.values(), key=lambda s: s.parent is None)
        self._at = 0
        self.revoked_sessions = 0
        self.revoked_users: set[str] = set()
        self.rooms_left = 0
        self.done = asyncio.Event()

    def start(self) -> None:
        self._step()

    def _step(self) -> None:
        todo = self._todo
        end = min(self._at + CHUNK, len(todo))
        for session in todo[self._at : end]:
            self._apply(session)
        self._at = end
        if end < len(todo):
            asyncio.get_running_loop().call_soon(self._step)
            return
        self._todo = []
        self.done.set()
        if self.on_done is not None:
            self.on_done(self)

    def _apply(self, session: Session) -> None:
        user = session.user
        if session.closing or user is None:
            return
        hub = self.hub
        users = self.users
        if users is not None and user not in users and not by_certificate(hub, session):
            self.revoked_sessions += 1
            self.revoked_users.add(user)
            session.close(CloseReason.AUTH_REVOKED)
            return
        policy = self.policy
        if policy is None:
            return
        hub.permissions.retune(session, policy)
        if session.rooms:
            guard = session.guard
            may_join = guard.may_join if guard is not None else policy.rules(user).may_join
            for name in sorted(session.rooms):
                if not may_join(name):
                    leave_revoked(hub, session, name)
                    self.rooms_left += 1
