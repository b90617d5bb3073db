"""Session resume (PROTOCOL.md section 11.1): detached sessions, ``resume``, its failures.

A json session whose connection ends in a way the server did not choose is
*detached* instead of ended: it keeps its id, user, rooms and counter, stays a
private-message target, and its deliveries go on into its ring (see
:mod:`.seq`) behind a :class:`DetachedOutlet`, until a ``resume`` on a new
connection plugs that connection in, or the window passes. An ended session
leaves a tombstone for another window, so that a late resume is told
``expired`` (or ``overflow``) rather than ``unknown``.
"""

from __future__ import annotations

import asyncio
import hmac
import secrets
import time
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol

from ..protocols.errors import ProtocolError
from ..protocols.json import encode, encode_error, parse_message
from .handover import Handover
from .room_history import HistoryStore
from .seq import SeqDelivery, retime
from .session import CloseReason, EventOutlet, Outlet, Session, SessionHost

if TYPE_CHECKING:
    from .snapshot import HubState

# A json session (.json_session, which imports this module).
JsonSession = Any

RESULTS = ("resumed", "unknown", "bad_token", "expired", "overflow", "gap", "forbidden")
"""What a ``resume`` came to: ``resumed`` or one of the failure reasons."""
TOMBSTONES_MAX = 100_000
"""Ended sessions remembered for ``expired``/``overflow`` at most (the oldest go first)."""
DETACHABLE = (CloseReason.CLIENT_CLOSED, CloseReason.CONNECTION_ERROR)
"""The ends the server did not choose: these detach a session instead of ending it."""

_FAILURE_TEXT = {
    "unknown": "No such session to resume",
    "bad_token": "Wrong resume token",
    "expired": "The session's resume window has passed",
    "overflow": "The session ended: more was delivered to it than the limit keeps",
    "gap": "Messages after that seq are no longer kept; start afresh",
    "forbidden": "The session belongs to another user",
}


def _stream_closed(outlet: Any) -> bool:
    """Whether a mux stream's session ends because the client closed the stream
    (its connection lives on: it ends for good), not with its connection."""
    mux = getattr(outlet, "mux", None)
    return mux is not None and mux.streams.get(outlet.stream_id) is not outlet


class ResumeHost(SessionHost, Protocol):
    """What resume needs of the server besides what a session does."""

    connections: dict[str, Session]
    state: HubState
    uploads: Any  # the upload store, or None (.uploads imports json_session)
    factories: dict[str, Any]  # session kinds by protocol (.kinds)

    def register(self, session: Session) -> None: ...


class Tombstone(NamedTuple):
    """An ended session a late resume is told about, until ``until`` (monotonic)."""

    reason: str  # expired or overflow
    token: bytes
    until: float


class Detached:
    """What a detached session keeps besides its ring (see :class:`.seq.Kept`)."""

    __slots__ = ("before", "deadline", "delivered", "since", "timer")

    def __init__(self, before: int, window: float) -> None:
        self.before = before
        self.delivered = 0
        self.since = time.time()
        self.deadline = self.since + window
        self.timer: asyncio.TimerHandle | None = None


class DetachedOutlet:
    """The outlet of a detached session: its deliveries are in its ring, so
    what is written here goes nowhere; ending it ends the session."""

    wire = None
    congested = False
    unsent = 0
    destroyed = False

    def __init__(self, manager: ResumeManager, session: JsonSession, old: Outlet) -> None:
        self._manager = manager
        self._session = session
        self.bytes_read = old.bytes_read
        self.bytes_written = old.bytes_written
        self.last_received = old.last_received

    def write(self, data: bytes) -> bool:
        return True

    def end(self) -> None:
        """The server ends the session on purpose (an operator close, the shutdown)."""
        self.destroyed = True
        s = self._session
        self._manager.end(s, s.close_reason or CloseReason.OPERATOR)

    def destroy(self) -> None:
        self.end()

    def hold(self, token: object) -> None:
        pass

    def release(self, token: object) -> None:
        pass


class ResumeManager:
    """The detached sessions of one server and the ``resume`` of them."""

    def __init__(self, hub: ResumeHost) -> None:
        self.hub = hub
        self.window = hub.settings.resume_window
        self.detached: dict[str, JsonSession] = {}
        self.tombstones: dict[str, Tombstone] = {}
        #: ``resume`` requests by result (see :data:`RESULTS`).
        self.results = dict.fromkeys(RESULTS, 0)
        # Resumes of sessions other nodes hold, and the giving up of ours (a cluster).
        self.handover = Handover(self)

    @staticmethod
    def new_token() -> str:
        """A resume token: 192 random bits."""
        return secrets.token_urlsafe(24)

    # ----------------------------------------------------------- detach
    def detach(self, s: Any, reason: str) -> bool:
        """Keep ``s`` detached instead of ending it, if its end allows; True if so."""
        hub = self.hub
        if (
            getattr(s, "ring", None) is None  # not a json session with resume on
            or s.final
            or s.detached is not None
            or reason not in DETACHABLE
            or _stream_closed(s.outlet)
            or hub.state.value != "running"
            or (hub.auth is not None and s.user is None)
        ):
            return False
        s.unplug()
        if hub.uploads is not None:
            hub.uploads.abort_owner(s.id, "detached")
        old = s.outlet
        s.outlet = DetachedOutlet(self, s, old)
        s.closing = False
        s.close_reason = None
        detail = s.close_detail
        s.close_detail = ""
        retime(s, time.monotonic(), hub.settings.max_pending, delivered=False)
        kept = s.detached = Detached(len(s.ring), self.window)
        kept.timer = asyncio.get_running_loop().call_later(self.window, self._expire, s)
        self.detached[s.id] = s
        why = f" ({detail})" if detail else ""
        hub.event("close", f"{s.id} detached: {reason}{why}; resumable for {self.window:g} s")
        return True

    def _expire(self, s: JsonSession) -> None:
        kept = s.detached
        if kept is None or s.closing:
            return
        kept.timer = None
        self._bury(s, "expired")
        s.closing = True
        s.close_reason = CloseReason.DETACHED_TIMEOUT
        self.end(s, CloseReason.DETACHED_TIMEOUT)

    def overflowed(self, s: JsonSession) -> None:
        """More was delivered to detached ``s`` than the limit keeps: it ends, as a
        slow consumer does (after the delivery that is under way)."""
        if s.closing:
            return
        s.closing = True
        s.close_reason = CloseReason.SLOW_CONSUMER
        self.hub.stats.slow_consumers += 1
        self._bury(s, "overflow")
        asyncio.get_running_loop().call_soon(self.end, s, CloseReason.SLOW_CONSUMER)

    def end(self, s: JsonSession, reason: str) -> None:
        """End detached ``s`` as any session ends (its rooms are told ``user_left``)."""
        kept = s.detached
        if kept is None:
            return
        if kept.timer is not None:
            kept.timer.cancel()
        s.detached = None
        self.detached.pop(s.id, None)
        s.closing = True
        if s.close_reason is None:
            s.close_reason = reason
        self.hub.end_session(s, reason)

    def _bury(self, s: JsonSession, reason: str) -> None:
        tombs = self.tombstones
        now = time.monotonic()
        # Oldest first: drop the ones whose time is up, and the oldest past the bound.
        for sid in list(tombs):
            if tombs[sid].until > now and len(tombs) < TOMBSTONES_MAX:
                break
            del tombs[sid]
        token = (s.resume_token or "").encode()
        tombs[s.id] = Tombstone(reason, token, now + max(self.window, 1.0))

    def close_all(self) -> None:
        """The server stops: every detached session ends."""
        for s in list(self.detached.values()):
            s.closing = True
            s.close_reason = CloseReason.SHUTDOWN
            self.end(s, CloseReason.SHUTDOWN)

    # ----------------------------------------------------------- resume
    def resume(self, p: JsonSession, msg: dict[str, Any]) -> JsonSession | None:
        """Make ``p``'s connection the session ``msg`` names; returns that session,
        or None while another node is asked for it (see .handover).

        Raises ``resume_failed`` (``p`` goes on as the fresh session it is), or
        ``bad_message`` for a malformed request.
        """
        sid = msg.get("id")
        token = msg.get("token")
        seq = msg.get("seq")
        if type(sid) is not str or type(token) is not str or type(seq) is not int or seq < 0:
            raise ProtocolError(
                "bad_message", "resume needs a string id and token and an integer seq >= 0"
            )
        hub = self.hub
        s: Any = hub.json_sessions.get(sid)
        if s is p:
            s = None
        if (
            s is None
            and hub.bus is not None
            and sid not in self.tombstones
            and self.handover.ask(p, sid, token, seq, msg.get("ref"))
        ):
            return None  # another node holds it: see .handover
        reason = self.check(s, sid, token, seq, p.user)
        if reason != "resumed":
            raise self._failed(p, reason)
        ring = s.ring
        self._plug(s, p)
        frames = list(ring)[len(ring) - (s.seq - seq) :] if s.seq > seq else []
        # Replayed now: kept for another RING_SECONDS, as a fresh delivery is.
        s.marks.clear()
        s.mark_at = time.monotonic()
        if ring:
            s.marks.append((s.mark_at, s.seq - len(ring) + 1))
        self.results["resumed"] += 1
        hub.event("resume", f"{p.id} resumed {s.id} ({len(frames)} replayed)")
        resumed = {"type": "resumed", "id": s.id, "seq": s.seq, "replayed": len(frames)}
        ref = msg.get("ref")
        if ref is not None:
            resumed["ref"] = ref
        # The reply, then the kept messages, in one write before anything new.
        s._out = [encode(resumed), *frames]
        s.flush()
        return s

    def check(self, s: Any, sid: str, token: str, seq: int, user: str | None) -> str:
        """Whether session ``s`` (None: not here) may be resumed by ``user`` with
        ``token`` after ``seq``: ``resumed``, or the failure's reason."""
        given = token.encode()
        if s is None or s.closing or s.ring is None or s.resume_token is None:
            tomb = self.tombstones.get(sid)
            if tomb is not None and tomb.until <= time.monotonic():
                del self.tombstones[sid]
                tomb = None
            if tomb is None:
                return "unknown"
            if not hmac.compare_digest(tomb.token, given):
                return "bad_token"
            return tomb.reason
        if not hmac.compare_digest(s.resume_token.encode(), given):
            return "bad_token"
        if self.hub.auth is not None and s.user != user:
            return "forbidden"
        if seq > s.seq or s.seq - seq > len(s.ring):
            return "gap"
        return "resumed"

    def release(self, s: JsonSession, node: str) -> None:
        """Give ``s`` up to ``node`` (see .handover): it leaves this node without
        anyone being told; its connection, if any, is closed without a word."""
        hub = self.hub
        kept = s.detached
        if kept is None:
            self._cut(s)
            s.outlet = DetachedOutlet(self, s, s.outlet)
        else:
            if kept.timer is not None:
                kept.timer.cancel()
            s.detached = None
            self.detached.pop(s.id, None)
        for name in list(s.rooms):
            hub.rooms.leave(s, name)
        if hub.bus is not None:
            hub.bus.released(s.id, node)
        # Not ended in the cluster: it lives on at ``node``.
        hub.json_sessions.pop(s.id, None)
        s.closing = True
        s.close_reason = CloseReason.RESUMED
        s.close_detail = f"resumed on node {node}"
        hub.event("resume", f"{s.id} handed over to node {node}")
        hub.end_session(s, CloseReason.RESUMED)

    def _failed(self, p: JsonSession, reason: str) -> ProtocolError:
        self.results[reason] += 1
        hub = self.hub
        if reason == "bad_token":
            # As a wrong authentication token counts (PROTOCOL.md section 8).
            hub.auth_failures.record(p.address)
        hub.event("resume", f"{p.id}: resume failed: {reason}")
        return ProtocolError("resume_failed", _FAILURE_TEXT[reason], reason=reason)

    def _plug_fresh(self, s: JsonSession, p: JsonSession) -> None:
        """Move ``p``'s connection under ``s``, made anew here (see .handover)."""
        self._plug(s, p, fresh=True)

    def _plug(self, s: JsonSession, p: JsonSession, fresh: bool = False) -> None:
        """Move ``p``'s connection under ``s``: ``p`` ends silently."""
        hub = self.hub
        kept = s.detached
        if fresh:
            pass
        elif kept is None:
            self._cut(s)  # attached: its old connection is half-open
        else:
            if kept.timer is not None:
                kept.timer.cancel()
            s.detached = None
            self.detached.pop(s.id, None)
        outlet = p.outlet
        # The partial frame after the resume message is the resumed session's now.
        s.take_input(p)
        s.outlet = outlet
        s.address = p.address
        s.port = p.port
        s.parent = p.parent
        s.closing = False
        if p.parent is None:
            hub.connections[p.id] = s
        if isinstance(outlet, EventOutlet):
            outlet.off("data", p.feed)
            outlet.on("data", s.feed)
        else:
            stream: Any = outlet
            stream.session = s
        hub.changes.mark(s)  # attached again, for the console's orders
        p.closing = True
        p.close_reason = CloseReason.RESUMED
        p.close_detail = f"resumed {s.id}"
        hub.end_session(p, CloseReason.RESUMED)

    def _cut(self, s: JsonSession) -> None:
        """Close ``s``'s present connection without a word, keeping ``s``."""
        hub = self.hub
        old: Any = s.outlet
        s.unplug()
        if isinstance(old, EventOutlet):
            key = getattr(old, "id", "") + hub.id_suffix
            if hub.connections.get(key) is s:
                del hub.connections[key]
            old.off("data", s.feed)
            old.destroy()
        else:
            old.session = None
            old.mux.end_stream(old, announce=False)


def first_message(s: JsonSession, bodies: list[Any]) -> None:
    """A session's first message: a ``resume`` hands the connection to the session
    it names, and the rest of the read goes there; anything else is handled as usual."""
    s.fresh = False
    body = bodies[0]
    if isinstance(body, ProtocolError) or b"resume" not in body:
        s._handle(bodies)
        return
    try:
        msg, kind, ref = parse_message(body)
    except ProtocolError:
        s._handle(bodies)
        return
    if kind != "resume":
        s._handle(bodies)
        return
    s.msgs_in += 1
    s.stats.msgs_in += 1
    target = s
    manager = s.hub.resume
    try:
        if manager is None:
            raise ProtocolError("resume_failed", "Session resume is off", reason="unknown")
        resumed = manager.resume(s, msg)
        if resumed is None:
            # Waiting for another node: the rest waits with what comes next.
            s._backlog.extend(bodies[1:])
            return
        target = resumed
    except ProtocolError as exc:
        s.deliver(encode_error(exc, ref))
    rest = bodies[1:]
    if rest and not target.closing:
        target._handle(rest)


def handle_bye(s: JsonSession, msg: dict[str, Any], ref: Any) -> None:
    """``bye``: ended for good, as if the client had closed; never detached."""
    s.final = True
    s.close(CloseReason.CLIENT_CLOSED)


def handle_resume(s: JsonSession, msg: dict[str, Any], ref: Any) -> None:
    """Only a session's first message may be a resume (see :func:`first_message`)."""
    raise ProtocolError("bad_message", "resume must be the first message after auth")


def install_resume(hub: Any) -> tuple[ResumeManager | None, SeqDelivery | None]:
    """Set a hub up for its settings' resume and room history (PROTOCOL.md 11):
    returns its resume manager and delivery with ``seq`` (None, None: resume is off)."""
    s = hub.settings
    if s.history_size > 0:
        hub.rooms.history = HistoryStore(s.history_size, s.history_ttl, s.history_total)
    if s.resume_window <= 0:
        return None, None
    manager = ResumeManager(hub)
    seq = SeqDelivery(s.max_pending)
    hub.pacer.fan = seq.fan_out
    # A drain ends every detached session: nobody can come back to resume it.
    hub.on_drain.append(manager.close_all)
    return manager, seq


def every_second(hub: Any) -> None:
    """Let kept deliveries and room messages past their time go (the hub's ticker)."""
    if hub.rooms.history is not None:
        hub.rooms.history.sweep(hub.rooms.rooms)
    if hub.seq is not None:
        hub.seq.sweep(hub.json_sessions.values())
