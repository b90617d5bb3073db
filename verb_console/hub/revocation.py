"""Applying a reloaded auth file and policy to the sessions already in
(PROTOCOL.md section 12.2).

One pass over the sessions, a bounded slice per turn of the event loop
(:mod:`.session_pass`: at most :data:`CHUNK` sessions, and a few milliseconds of
work), so a reload over ten thousand sessions never holds the loop. The new policy is in
force for new sessions before the pass starts; a session the pass has not
reached yet that joins a room meanwhile is checked when the pass reaches it,
so a reload in the middle of a storm of joins leaves no one where they may no
longer be.
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from typing import Any

from .policy import Policy
from .session import CloseReason, Session
from .session_pass import SessionPass

__all__ = ["CHUNK", "Revocation", "by_certificate"]

# Sessions one turn of the loop looks at, at most.
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


class Revocation(SessionPass):
    """One pass: close the sessions of users with no token left, take sessions out
    of rooms they may no longer join, and give the rest their new rules."""

    label = "reload pass"

    def __init__(
        self,
        hub: Any,
        users: Collection[str] | None,
        policy: Policy | None,
        on_done: Callable[[Revocation], None] | None = None,
    ) -> None:
        super().__init__(hub)
        # Users with a token now; None: authentication is off (nobody is revoked).
        self.users = users
        self.policy = policy
        self.on_done = on_done
        self.revoked_sessions = 0
        self.revoked_users: set[str] = set()
        self.rooms_left = 0

    def chunk(self) -> int:
        return CHUNK

    def finished(self) -> None:
        if self.on_done is not None:
            self.on_done(self)

    def visit(self, session: Session) -> bool:
        before = (self.revoked_sessions, self.rooms_left)
        self._apply(session)
        return (self.revoked_sessions, self.rooms_left) != before

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
