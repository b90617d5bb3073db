"""A pass over every live session, a bounded slice per turn of the event loop.

A ban's pass (closing what it covers, PROTOCOL.md 12.3) and a reload's
(revoking what the new auth file and policy take away, 12.2) visit each live
session once. With ten thousand sessions neither fits in one turn, so
:class:`SessionPass` visits them in slices:

- a slice stops after :data:`SLICE_S` of work, or after :attr:`SessionPass.limit`
  sessions acted on (closed, taken out of a room), whichever comes first;
- what a close costs is mostly paid later, when each closed connection's
  ``connection_lost`` runs: those callbacks are queued in the turn of the close
  and run in the next. So a slice that acted on something waits a turn before
  the next slice (the closes' aftermath gets that turn to itself), measures
  how long the aftermath took, and sizes :attr:`SessionPass.limit` so that the
  aftermath of the next slice stays within :data:`SLICE_S` too;
- each slice is timed on the hub's turn clock under the pass's label, so a
  slow turn shows what it was doing.

Streams are visited before connections: a mux connection's streams each get
their own ``closing`` before the connection ends them all.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from .session import Session

__all__ = ["FIRST_LIMIT", "SLICE_S", "NoticePass", "SessionPass"]

#: Seconds of work one slice (and the aftermath of its closes) may take.
SLICE_S = 0.004
#: Sessions the first slice may act on, before the aftermath has been measured.
FIRST_LIMIT = 64
#: Sessions looked at between two reads of the clock.
CHECK_EVERY = 16


class SessionPass:
    """Visits every session live at its start, once, in bounded slices; subclasses
    say what a visit does (:meth:`visit`) and what happens at the end (:meth:`finished`)."""

    #: The turn clock's name for this pass's slices.
    label = "session pass"

    def __init__(self, hub: Any) -> None:
        self.hub = hub
        sessions = list(hub.sessions.values())
        # Each slot is emptied once visited: a closed session is then freed by
        # its own aftermath, not all at once when the pass drops its list (at
        # 10,000 sessions that was one turn of 30 ms).
        self._todo: list[Session | None] = [s for s in sessions if s.parent is not None]
        self._todo += [s for s in sessions if s.parent is None]
        self._at = 0
        #: Sessions a slice may act on; tuned from the measured aftermath.
        self.limit = FIRST_LIMIT
        #: Slices run so far (each in a turn of its own).
        self.turns = 0
        #: The longest slice, and the longest aftermath of a slice's closes (seconds).
        self.longest = 0.0
        self.longest_aftermath = 0.0
        self.done = asyncio.Event()

    def visit(self, session: Session) -> bool:
        """Apply the pass to ``session``; True when it acted on it (a close, a
        room left): work whose aftermath runs in the next turn."""
        raise NotImplementedError

    def finished(self) -> None:
        """Every session has been visited."""

    def chunk(self) -> int:
        """Sessions one slice may look at, at most (0: as many as its time allows)."""
        return 0

    def start(self) -> None:
        """Run the first slice now (in the caller's turn), the rest in later turns."""
        self._slice()

    def _slice(self) -> None:
        self.turns += 1
        started = time.perf_counter()
        deadline = started + SLICE_S
        todo, visit, limit = self._todo, self.visit, self.limit
        at, end, acted = self._at, len(self._todo), 0
        chunk = self.chunk()
        stop = min(end, at + chunk) if chunk else end
        while at < stop:
            session = todo[at]
            todo[at] = None
            at += 1
            if session is not None and not session.closing and visit(session):
                acted += 1
                if acted >= limit:
                    break
            if at % CHECK_EVERY == 0 and time.perf_counter() > deadline:
                break
        self._at = at
        ended = time.perf_counter()
        took = ended - started
        self.longest = max(self.longest, took)
        clock = getattr(self.hub, "turns", None)
        if clock is not None:
            clock.worked(self.label, took)
        if at >= end:
            self._todo = []
            self.done.set()
            self.finished()
            return
        loop = asyncio.get_running_loop()
        if acted:
            # The closes' connection_lost callbacks run in the next turn: this
            # hop runs after them there, and the next slice in the turn after.
            loop.call_soon(self._after, acted, ended)
        else:
            loop.call_soon(self._slice)

    def _after(self, acted: int, since: float) -> None:
        aftermath = time.perf_counter() - since
        self.longest_aftermath = max(self.longest_aftermath, aftermath)
        clock = getattr(self.hub, "turns", None)
        if clock is not None:
            clock.worked(self.label + " (closes)", aftermath)
        each = aftermath / acted
        if each > 0:
            self.limit = max(1, min(4 * FIRST_LIMIT, int(SLICE_S / each)))
        asyncio.get_running_loop().call_soon(self._slice)


class NoticePass(SessionPass):
    """A server notice (an operator's broadcast, a drain's ``server_shutdown``) to
    every session that takes them: at 100,000 sessions encoding one for each is a
    quarter of a second, so it too goes a slice per turn."""

    def __init__(self, hub: Any, message: dict[str, Any], label: str) -> None:
        super().__init__(hub)
        self.message = message
        self.label = label

    def visit(self, session: Session) -> bool:
        if session.accepts_notices:
            session.notify(self.message)
        return False  # nothing closed: no aftermath to wait for
