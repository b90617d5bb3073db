"""Session resume across the nodes of a cluster (PROTOCOL.md 11.1, its last point).

A ``resume`` of a session another node holds is asked of that node through the
bus (:meth:`.bus.Bus.resume_ask`). That node checks it as a local resume is
checked, and if it holds, gives the session up (:meth:`Handover.give_up`): its
connection, if it still has one, is closed without a word, and the session
leaves that node's registry and rooms without anyone being told; its state
(user, rooms, counter, the kept messages after the client's ``seq``, token)
goes back through the bus. The asking node makes the session anew under the
same id on the waiting connection (:meth:`Handover.adopt`), replays, and
tells the cluster that the session moved (nobody else notices a change).

The waiting connection does nothing else meanwhile (what it sends waits, in
order). No answer within :data:`HANDOVER_TIMEOUT_S` (the other node died, or
its link did) is ``resume_failed`` ``unknown``: the connection goes on as the
fresh session it is. A state that arrives after that is not lost: the
session is adopted detached, as if its client had just gone, and ends as any
detached session does.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from typing import Any

from ..protocols.json import encode, encode_error
from .session import CloseReason
from .shared_history import offset_of

HANDOVER_TIMEOUT_S = 3.0
"""How long a resume waits for the node holding its session."""


class _Gone:
    """The outlet of a session adopted with no connection (see ``_adopt_detached``)."""

    wire = None
    congested = False
    unsent = 0
    destroyed = False
    bytes_read = 0
    bytes_written = 0
    last_received = 0.0

    def write(self, data: bytes) -> bool:
        return True

    def end(self) -> None:
        pass

    def destroy(self) -> None:
        pass

    def hold(self, token: object) -> None:
        pass

    def release(self, token: object) -> None:
        pass


class _Nowhere:
    """Where a session adopted with no connection seems to come from."""

    outlet = _Gone()
    address = ""
    port = 0


class _Ask:
    __slots__ = ("kept", "p", "ref", "seq", "sid", "timer")

    def __init__(self, p: Any, sid: str, seq: int, ref: Any) -> None:
        self.p = p
        self.sid = sid
        self.seq = seq
        self.ref = ref
        self.timer: asyncio.TimerHandle | None = None
        # The session's rooms' messages that reach this node while it is asked for.
        self.kept: dict[str, list[bytes]] = {}


class Handover:
    """One node's resumes of other nodes' sessions, and its giving up of its own."""

    def __init__(self, manager: Any) -> None:  # its .resume.ResumeManager (which imports this)
        self.manager = manager
        self.hub = manager.hub
        self.asks: dict[int, _Ask] = {}
        self._next = 0
        #: Sessions handed to other nodes, and taken from them.
        self.given = 0
        self.taken = 0

    # ----------------------------------------------------------- asking
    def ask(self, p: Any, sid: str, token: str, seq: int, ref: Any) -> bool:
        """Ask the node holding ``sid`` for it; False if no live node holds it."""
        bus = self.hub.bus
        if bus is None:
            return False
        self._next += 1
        rid = self._next
        rooms = bus.resume_ask(sid, token, seq, p.user, rid)
        if rooms is None:
            return False
        ask = self.asks[rid] = _Ask(p, sid, seq, ref)
        shared = self.hub.shared_history
        if shared is not None:
            # What the rooms are sent after the other node let go (see catch_up).
            ask.kept = shared.tap(rooms)
        ask.timer = asyncio.get_running_loop().call_later(
            HANDOVER_TIMEOUT_S, self.answered, rid, "unknown", None
        )
        # What the connection sends meanwhile waits for the answer, in order.
        p._backlog = []
        return True

    def answered(self, rid: int, reason: str, state: dict[str, Any] | None) -> None:
        """The other node's answer (``state`` when it gave the session up), or the timeout."""
        ask = self.asks.pop(rid, None)
        if ask is None:
            if state is not None:
                self._adopt_detached(state)
            return
        if ask.timer is not None:
            ask.timer.cancel()
        shared = self.hub.shared_history
        if shared is not None:
            shared.untap(ask.kept)
        p = ask.p
        if state is None or p.closing:
            if state is not None:
                self._adopt_detached(state)
            self._failed(p, reason, ask.ref)
            return
        s = self.adopt(p, state, ask)
        self.catch_up(s, state, ask.kept)
        self.taken += 1
        backlog, p._backlog = p._backlog, None
        p.outlet.release(p)  # a hold p took on the connection while it waited
        s._backlog = backlog
        s._resume()

    def _failed(self, p: Any, reason: str, ref: Any) -> None:
        error = self.manager._failed(p, reason)
        backlog, p._backlog = p._backlog, None
        if p.closing:
            return
        p.deliver(encode_error(error, ref))
        p._backlog = backlog
        p._resume()

    def fail_all(self) -> None:
        """The bus lost its link: no answer will come."""
        for rid in list(self.asks):
            self.answered(rid, "unknown", None)

    # ----------------------------------------------------------- taking
    def _make(self, template: Any, state: dict[str, Any]) -> Any:
        """The session of ``state``, made anew on this node (not yet on a connection)."""
        hub = self.hub
        factory = hub.factories["json"]
        s = factory(hub, template.outlet, state["id"], template.address, template.port)
        # Its user's guard, as on the node it came from: the rules apply here, and it
        # counts against max_sessions here (the giving node stopped counting it).
        hub.permissions.install(s, state.get("user"))
        s.resume_token = state["token"]
        frames = [f.encode() for f in state["frames"]]
        s.seq = state["seq"]
        s.seq_width = len(str(s.seq)) if s.seq else 1
        s.ring = deque(frames)
        s.ring_bytes = sum(len(f) for f in frames)
        s.marks = deque()
        s.mark_at = time.monotonic()
        if frames:
            s.marks.append((s.mark_at, s.seq - len(frames) + 1))
        s.fresh = False
        hub.register(s)
        hub.json_sessions[s.id] = s
        for name in state["rooms"]:
            hub.rooms.join(s, name)
        assert hub.bus is not None
        hub.bus.adopted(s.id, state["node"], sorted(s.rooms))
        return s

    def adopt(self, p: Any, state: dict[str, Any], ask: _Ask) -> Any:
        """Make the session of ``state`` on ``p``'s connection, and replay to it."""
        hub = self.hub
        s = self._make(p, state)
        self.manager._plug_fresh(s, p)
        frames = list(s.ring)
        hub.event(
            "resume",
            f"{p.id} resumed {s.id} from node {state['node']} ({len(frames)} replayed)",
        )
        self.manager.results["resumed"] += 1
        resumed = {"type": "resumed", "id": s.id, "seq": s.seq, "replayed": len(frames)}
        if ask.ref is not None:
            resumed["ref"] = ask.ref
        s._out = [encode(resumed), *frames]
        s.flush()
        return s

    def catch_up(self, s: Any, state: dict[str, Any], kept: dict[str, list[bytes]]) -> None:
        """Deliver what the session's rooms were sent after the other node let it go
        and before it lived here: this node was subscribed to them before it asked,
        and the other node said the last offset of each it had delivered."""
        fan_out = self.hub.pacer.fan_out
        last = state.get("offsets") or {}
        for name, frames in kept.items():
            after = last.get(name)
            if after is None or name not in s.rooms:
                continue
            for f in frames:
                try:
                    later = offset_of(f) > after
                except ValueError:  # from a node that keeps no history
                    later = False
                if later:
                    fan_out((s,), f)

    def _adopt_detached(self, state: dict[str, Any]) -> None:
        """A state that came too late for its resume: kept detached here, not lost."""
        hub = self.hub
        if hub.json_sessions.get(state["id"]) is not None:
            return
        s = self._make(_Nowhere(), state)
        if not self.manager.detach(s, CloseReason.CONNECTION_ERROR):
            hub.end_session(s, CloseReason.CONNECTION_ERROR)

    # ----------------------------------------------------------- giving
    def give_up(
        self, sid: str, token: str, seq: int, user: str | None, node: str
    ) -> tuple[str, dict[str, Any] | None]:
        """Another node's ask for ``sid``: the failure reason, or ``resumed`` and the
        session's state (the session no longer lives here then)."""
        manager = self.manager
        s: Any = self.hub.json_sessions.get(sid)
        reason = manager.check(s, sid, token, seq, user)
        if reason != "resumed":
            manager.results[reason] += 1
            if reason == "bad_token":
                self.hub.event("resume", f"node {node}: resume of {sid} failed: bad_token")
            return reason, None
        ring = s.ring
        frames = list(ring)[len(ring) - (s.seq - seq) :] if s.seq > seq else []
        rooms = self.hub.rooms
        state = {
            # The last offset of each room delivered here (see catch_up).
            "offsets": {name: rooms.rooms[name].offset for name in s.rooms if name in rooms.rooms},
            "id": s.id,
            "user": s.user,
            "token": s.resume_token,
            "seq": s.seq,
            "rooms": sorted(s.rooms),
            "frames": [f.decode() for f in frames],
            "node": self.hub.node,
        }
        manager.release(s, node)
        self.given += 1
        return "resumed", state
