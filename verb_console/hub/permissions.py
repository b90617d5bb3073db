"""Who may do what, live (PROTOCOL.md sections 12.1 and 12.2).

:class:`Permissions` is the hub's part: it admits an authenticated user (the
``max_sessions`` count, a banned user), gives each admitted session a
:class:`Guard`, and applies a reloaded policy and auth file to the sessions
already in. A guard wraps only the message handlers its user's rules restrict:
a user who may do everything keeps the session's own handlers, so the hot path
of an unrestricted session is exactly the one without a policy.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import fields
from typing import Any, Protocol

from ..protocols.errors import ProtocolError
from ..units import plural
from .policy import Policy, Rules
from .rooms import valid_room_name
from .snapshot import Refusals


class Session(Protocol):
    """What of a session the permissions read and set (sessions import this module)."""

    protocol: str
    guard: Guard | None
    user: str | None


__all__ = ["REFUSALS", "UNLIMITED", "Guard", "Permissions"]

# Never limited by ``rate`` and never take a token (PROTOCOL.md 12.1).
UNLIMITED = frozenset({"ping", "bye"})
# What refusals are counted by, per session and in total: the overview's fields.
REFUSALS = tuple(f.name for f in fields(Refusals))
# Rooms whose answer one session remembers; a session trying endless names
# starts its cache again rather than growing it.
CACHE_ROOMS = 1024
# Sessions that are not counted against max_sessions: a mux connection (its
# streams are), a connection whose protocol is not known yet (its successor is).
NOT_COUNTED = frozenset({"mux", "auto"})

Handler = Callable[[Any, dict[str, Any], Any], None]


class Guard:
    """One admitted session's rules, its rate bucket, its cached answers and refusals."""

    __slots__ = (
        "at",
        "base",
        "counted",
        "joins",
        "publishes",
        "refused",
        "rules",
        "tokens",
        "user",
    )

    def __init__(self, user: str, rules: Rules, counted: bool) -> None:
        self.user = user
        self.rules = rules
        # Whether this session counts against the user's ``max_sessions``.
        self.counted = counted
        # The token bucket: full (twice the rate) when the session starts.
        self.tokens = 2.0 * rules.rate
        self.at = time.monotonic()
        self.joins: dict[str, bool] = {}
        self.publishes: dict[str, bool] = {}
        self.refused = dict.fromkeys(REFUSALS, 0)
        # The session's own handlers, which the guarded ones call (json only).
        self.base: Mapping[str, Handler] | None = None

    def retune(self, rules: Rules) -> None:
        """New rules (a reload): answers are asked again; the bucket keeps what it
        holds up to the new capacity (a bucket that was not limited starts full)."""
        if self.rules.rate > 0:
            self.take_refill()
            self.tokens = min(self.tokens, 2.0 * rules.rate)
        else:
            # Unlimited until now: the bucket starts full, as a new session's does.
            self.tokens = 2.0 * rules.rate
            self.at = time.monotonic()
        self.rules = rules
        self.joins = {}
        self.publishes = {}

    def take_refill(self) -> None:
        """Add what the bucket earned since it was last looked at."""
        rate = self.rules.rate
        now = time.monotonic()
        self.tokens = min(2.0 * rate, self.tokens + (now - self.at) * rate)
        self.at = now

    def take(self) -> bool:
        """One token for one message, or False when the bucket is empty."""
        rate = self.rules.rate
        now = time.monotonic()
        tokens = self.tokens + (now - self.at) * rate
        cap = 2.0 * rate
        if tokens > cap:
            tokens = cap
        self.at = now
        if tokens < 1.0:
            self.tokens = tokens
            return False
        self.tokens = tokens - 1.0
        return True

    def may_join(self, room: str) -> bool:
        ok = self.joins.get(room)
        if ok is None:
            ok = self.rules.may_join(room)
            if len(self.joins) >= CACHE_ROOMS:
                self.joins = {}
            self.joins[room] = ok
        return ok

    def may_publish(self, room: str) -> bool:
        ok = self.publishes.get(room)
        if ok is None:
            ok = self.rules.may_publish(room)
            if len(self.publishes) >= CACHE_ROOMS:
                self.publishes = {}
            self.publishes[room] = ok
        return ok

    def handlers(
        self, base: Mapping[str, Handler], totals: dict[str, int]
    ) -> Mapping[str, Handler]:
        """``base`` with the handlers these rules restrict wrapped; ``base`` itself
        when nothing is restricted."""
        self.base = base
        rules = self.rules
        if rules.unrestricted:
            return base
        wrapped = dict(base)
        for kind, handler in base.items():
            check = _CHECKS.get(kind)
            if check is not None and _check_needed(kind, rules):
                wrapped[kind] = _guarded(self, totals, handler, check, rules.rate > 0)
            elif rules.rate > 0 and kind not in UNLIMITED:
                wrapped[kind] = _guarded(self, totals, handler, None, True)
        return wrapped


def _check_needed(kind: str, rules: Rules) -> bool:
    if kind == "join_room":
        return not rules.join_all
    if kind == "room_message":
        return not rules.publish_all
    if kind == "broadcast":
        return not rules.broadcast
    return not rules.private  # private


def _room_of(msg: dict[str, Any]) -> str | None:
    room = msg.get("room")
    # A room that is not a valid name is the handler's error (bad_message, bad_room).
    return room if type(room) is str and valid_room_name(room) else None


def _check_join(g: Guard, msg: dict[str, Any]) -> str | None:
    room = _room_of(msg)
    return None if room is None or g.may_join(room) else f"Forbidden: join_room to room {room}"


def _check_publish(g: Guard, msg: dict[str, Any]) -> str | None:
    room = _room_of(msg)
    if room is None or g.may_publish(room):
        return None
    return f"Forbidden: room_message to room {room}"


def _check_broadcast(g: Guard, msg: dict[str, Any]) -> str | None:
    return None if g.rules.broadcast else "Forbidden: broadcast"


def _check_private(g: Guard, msg: dict[str, Any]) -> str | None:
    return None if g.rules.private else "Forbidden: private"


Check = Callable[[Guard, dict[str, Any]], "str | None"]
_CHECKS: dict[str, Check] = {
    "join_room": _check_join,
    "room_message": _check_publish,
    "broadcast": _check_broadcast,
    "private": _check_private,
}


def _guarded(
    guard: Guard, totals: dict[str, int], handler: Handler, check: Check | None, limited: bool
) -> Handler:
    refused = guard.refused

    def run(s: Any, msg: dict[str, Any], ref: Any) -> None:
        if limited and not guard.take():
            refused["rate_limited"] += 1
            totals["rate_limited"] += 1
            rate = guard.rules.rate
            raise ProtocolError("rate_limited", f"Rate limited: {rate:g} messages per second")
        if check is not None:
            why = check(guard, msg)
            if why is not None:
                refused["forbidden"] += 1
                totals["forbidden"] += 1
                raise ProtocolError("forbidden", why)
        handler(s, msg, ref)

    return run


class Permissions:
    """The hub's policy, the sessions each user holds, and the refusals counted."""

    def __init__(self) -> None:
        # None: no policy, every authenticated user may do everything.
        self.policy: Policy | None = None
        # Live sessions per user that count against ``max_sessions`` (policy on).
        self.by_user: dict[str, int] = {}
        # The same count on the cluster's other nodes, as they last told it.
        self.remote_count: Callable[[str], int] = lambda _user: 0
        self.totals = dict.fromkeys(REFUSALS, 0)
        # Whether a user is banned now (section 12.3); set by the ban list.
        self.user_banned: Callable[[str], bool] = lambda _user: False

    def refuse(self, code: str) -> None:
        self.totals[code] += 1

    def sessions_of(self, user: str) -> int:
        """The user's live sessions counted against ``max_sessions``, every node."""
        return self.by_user.get(user, 0) + self.remote_count(user)

    def refusal(self, user: str, counted: bool = True) -> tuple[str, str] | None:
        """Why a new session of ``user`` is refused, as (code, message), or None.
        ``counted``: whether it counts against ``max_sessions`` (a mux connection
        does not; its streams do)."""
        if self.user_banned(user):
            self.totals["banned"] += 1
            return "banned", f"User {user} is banned"
        policy = self.policy
        if policy is None or not counted:
            return None
        limit = policy.rules(user).max_sessions
        if limit and self.sessions_of(user) >= limit:
            self.totals["too_many_sessions"] += 1
            return "too_many_sessions", f"User {user} has {plural(limit, 'session')} already"
        return None

    def install(self, session: Session, user: str | None) -> None:
        """Make ``session`` one of ``user`` (None: no one's), with its guard (policy on)."""
        session.user = user
        policy = self.policy
        if policy is None or user is None:
            return
        counted = session.protocol not in NOT_COUNTED
        guard = Guard(user, policy.rules(user), counted)
        session.guard = guard
        if counted:
            self.by_user[user] = self.by_user.get(user, 0) + 1
        base = getattr(session, "handlers", None)
        if base is not None:
            session.handlers = guard.handlers(base, self.totals)  # type: ignore[attr-defined]

    def admit(self, session: Session, user: str) -> tuple[str, str] | None:
        """Whether ``user`` may have ``session`` (just authenticated): None admits it
        (and gives it its guard), else the error (code, message) it is refused with."""
        refused = self.refusal(user, session.protocol not in NOT_COUNTED)
        if refused is None:
            self.install(session, user)
        return refused

    def ended(self, session: Session) -> None:
        """A session with a guard ended: it no longer counts."""
        guard = session.guard
        if guard is None or not guard.counted:
            return
        guard.counted = False
        left = self.by_user.get(guard.user, 0) - 1
        if left > 0:
            self.by_user[guard.user] = left
        else:
            self.by_user.pop(guard.user, None)

    def retune(self, session: Session, policy: Policy | None) -> None:
        """Give a live session its user's rules under ``policy`` (a reload)."""
        guard = session.guard
        if guard is None:
            return
        rules = policy.rules(guard.user) if policy is not None else Rules()
        guard.retune(rules)
        if guard.base is not None:
            session.handlers = guard.handlers(guard.base, self.totals)  # type: ignore[attr-defined]

    def users(self) -> Iterable[str]:
        return self.by_user.keys()
