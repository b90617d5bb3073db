"""The loop turn's budget of message work, shared fairly by every connection.

One event loop serves every client, so every client waits for each turn of it.
A read's own work was bounded, but not a turn's: 200 connections readable at
once, each reading a burst of broadcasts to 200 others, made one turn 100,000
deliveries long, and a fresh client's ping waited seconds. So the work of a
turn (messages read, replies and deliveries: the hub's ``msgs_in`` plus
``msgs_out``, which the hot path counts anyway) is bounded as a whole:

- A turn may do :attr:`Pacer.budget` units of work, and one connection's step
  at most :attr:`Pacer.share` of them. A session that has more to do keeps the
  rest of what it read as a backlog (holding its reading,
  ``transport.pause_reading``, once that is over :data:`HOLD_BACKLOG`
  messages) and waits on the run queue; each later turn serves the queue in
  FIFO order (round-robin), so however many connections are busy, a turn stays
  short and a newcomer's read is taken within a pass of the queue.
- A fan-out that does not fit in its step is split: what fits is delivered now,
  the rest waits on a FIFO of fan-outs that later turns continue in bounded
  pieces. Fan-outs stay in the order they were made (a room's messages reach
  every member in the same order), and a session whose fan-out waits does
  nothing more until it is delivered (its next private message cannot pass
  it). Nothing is dropped: the senders wait, as their reading is held.

The queue's steps go first in a turn, up to half the budget while fan-outs
wait: a step is cheap (a ping, or a broadcast that joins the FIFO), so a
newcomer is served at once, and the fan-outs still get half of every turn.
A read that did not wait on the queue may go one share past the budget, so a
newcomer's ping is answered in the very turn it is read.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable, Collection
from itertools import islice
from typing import Any, Protocol

from .fanout import Recipient, fan_out
from .snapshot import Stats

#: Units of message work (messages read, replies, deliveries) one loop turn may do.
TURN_BUDGET = 1024
#: Units one connection's step may do before the others get theirs.
TURN_SHARE = 64
#: Messages a session waiting its turn may hold read but not handled before its
#: reading pauses: a short wait costs no pause and resume (two syscalls a
#: time), and a client cannot pile up a long backlog.
HOLD_BACKLOG = 256
# Recipients waiting in the fan-out FIFO (8 bytes each) past which the FIFO is
# delivered at once: memory stays bounded when a turn cannot (a cluster node's
# broadcasts from Redis are not paced by a session's reading, and 100,000
# sessions broadcasting to 100,000 would queue 800 KB each).
MAX_WAITING_RECIPIENTS = 4_000_000


Fan = Callable[[Collection[Any], bytes, Stats, object], None]
"""How a frame reaches many recipients: :func:`~.fanout.fan_out`, or with session
resume on, the delivery that stamps each recipient's ``seq`` (see .seq)."""


class Stepper(Protocol):
    """A session that can wait on the run queue: :meth:`take_turn` does one step
    of its backlog (and queues itself again if more is left)."""

    @property
    def closing(self) -> bool: ...

    def take_turn(self) -> None: ...


class _FanOut:
    """A fan-out not delivered to every recipient yet."""

    __slots__ = ("at", "exclude", "fan", "frame", "origin", "recipients")

    def __init__(
        self,
        recipients: list[Recipient],
        frame: bytes,
        exclude: object,
        origin: Stepper | None,
        fan: Fan,
    ) -> None:
        self.recipients = recipients
        self.at = 0
        self.frame = frame
        self.exclude = exclude
        self.origin = origin
        self.fan = fan


class Pacer:
    """One hub's share of every loop turn: the run queue and the fan-out FIFO.

    A session's step is bracketed by :meth:`begin` (the work count at which it
    must stop) and :meth:`done`; a step inside another (a mux stream's, inside
    its connection's) shares the outer one's end.
    """

    __slots__ = (
        "_blocked",
        "_depth",
        "_fanouts",
        "_open",
        "_queue",
        "_queued",
        "_serving",
        "_waiting",
        "budget",
        "clock",
        "fan",
        "share",
        "stats",
        "step_end",
        "turn_end",
    )

    def __init__(self, stats: Stats, budget: int = TURN_BUDGET, share: int = TURN_SHARE) -> None:
        self.stats = stats
        self.budget = max(1, budget)
        self.share = max(1, min(share, self.budget))
        self.step_end = 0  # work count at which the running step stops (-1: at once)
        self.turn_end = 0  # work count at which this turn's budget is spent
        self._open = False  # a turn is being counted: its _turn callback is pending
        self._depth = 0  # steps running, one inside another
        self._serving = False  # the run queue is being served (not a fresh read)
        self._queue: deque[Stepper] = deque()
        self._queued: set[Stepper] = set()
        self._blocked: set[Stepper] = set()  # waiting for their own fan-out
        self._fanouts: deque[_FanOut] = deque()
        self._waiting = 0  # recipients the fan-outs in the FIFO have left
        # Told how long each turn's queue work took (the hub's TurnClock), if set.
        self.clock: Any = None
        # How deliveries are made (session resume sets the one that stamps seq).
        self.fan: Fan = fan_out

    # ----------------------------------------------------------- steps
    @property
    def work(self) -> int:
        """Units of message work since the server started."""
        s = self.stats
        return s.msgs_in + s.msgs_out

    def begin(self) -> int:
        """Start a step; returns the work count at which it must stop (at or
        below :attr:`work`: the turn's budget is spent, the step waits)."""
        depth = self._depth
        self._depth = depth + 1
        if depth:
            return self.step_end
        s = self.stats
        work = s.msgs_in + s.msgs_out
        if not self._open:
            self._open_turn(work)
        end = work + self.share
        # A read that did not wait on the queue may use one share past the
        # turn's budget: a newcomer's ping is answered in the turn it is read.
        cap = self.turn_end if self._serving else self.turn_end + self.share
        if end > cap:
            end = cap
        self.step_end = end
        return end

    def done(self) -> None:
        """End the step :meth:`begin` started."""
        self._depth -= 1

    def _open_turn(self, work: int) -> None:
        self._open = True
        self.turn_end = work + self.budget
        asyncio.get_running_loop().call_soon(self._turn)

    def defer(self, session: Stepper) -> None:
        """Put ``session`` (its reading held, its backlog kept) on the run queue,
        unless it is already there or waits for its own fan-out."""
        if session in self._queued or session in self._blocked:
            return
        self._queued.add(session)
        self._queue.append(session)
        if not self._open:
            self._open_turn(self.work)

    def blocked(self, session: Stepper) -> bool:
        """Whether ``session`` waits for a fan-out of its own to be delivered."""
        return session in self._blocked

    def forget(self, session: Stepper) -> None:
        """``session`` ended: it waits for nothing (its fan-outs are still delivered)."""
        self._blocked.discard(session)

    @property
    def waiting(self) -> tuple[int, int]:
        """Sessions on the run queue, and recipients the waiting fan-outs have left."""
        return len(self._queue), self._waiting

    # ----------------------------------------------------------- fan-out
    def fan_out(
        self,
        recipients: Collection[Recipient],
        frame: bytes,
        exclude: object = None,
        origin: Stepper | None = None,
    ) -> None:
        """Send ``frame`` to ``recipients`` but ``exclude``, as
        :func:`~.fanout.fan_out` does, within the running step's share: what
        does not fit (or all of it, while earlier fan-outs wait) joins the
        FIFO, the step ends, and ``origin`` waits until it is delivered."""
        self._fan_out(recipients, frame, exclude, origin, self.fan)

    def reply(self, session: Stepper, frame: bytes) -> None:
        """A reply to ``session`` alone that must come after the fan-outs still
        waiting (a ``joined`` after the ``user_joined`` of the members it lists):
        a fan-out of one, never stamped with a ``seq``."""
        self._fan_out((session,), frame, None, session, fan_out)  # type: ignore[arg-type]

    def hold(self, origin: Stepper) -> None:
        """``origin`` does nothing more until :meth:`release`: what it sent waits
        on something outside the server (a cluster's room message comes back from
        Redis with its offset), and its next message must not pass it."""
        self.step_end = -1
        self._blocked.add(origin)

    def release(
        self,
        origin: Stepper | None,
        recipients: Collection[Recipient],
        frame: bytes,
        exclude: object = None,
        fan: Fan | None = None,
    ) -> None:
        """Fan out what :meth:`hold` waited for, now, and let ``origin`` go on once
        it is delivered (it waits behind the fan-outs before it, as any does)."""
        if origin is not None:
            self._blocked.discard(origin)
        self._fan_out(recipients, frame, exclude, origin, fan if fan is not None else self.fan)
        if origin is not None and origin not in self._blocked and not origin.closing:
            self.defer(origin)

    def _fan_out(
        self,
        recipients: Collection[Recipient],
        frame: bytes,
        exclude: object,
        origin: Stepper | None,
        fan: Fan,
    ) -> None:
        s = self.stats
        fanouts = self._fanouts
        if not fanouts:
            if not self._depth:
                # Not in a session's step (a cluster node's message, a close):
                # this fan-out is a step of its own.
                self.begin()
                self._depth -= 1
            room = self.step_end - (s.msgs_in + s.msgs_out)
            if len(recipients) <= room:
                fan(recipients, frame, s, exclude)
                return
            it = iter(recipients)
            if room > 0:
                fan(list(islice(it, room)), frame, s, exclude)
            rest = list(it)
        elif self._waiting > MAX_WAITING_RECIPIENTS:
            self._flush()
            fan(recipients, frame, s, exclude)
            return
        else:
            rest = list(recipients)
        if not rest:
            return
        fanouts.append(_FanOut(rest, frame, exclude, origin, fan))
        self._waiting += len(rest)
        self.step_end = -1
        if origin is not None:
            self._blocked.add(origin)
        if not self._open:
            self._open_turn(s.msgs_in + s.msgs_out)

    def _fan_step(self, room: int) -> None:
        """Deliver up to ``room`` recipients of the oldest waiting fan-out."""
        f = self._fanouts[0]
        start = f.at
        end = min(len(f.recipients), start + max(1, room))
        f.fan(f.recipients[start:end], f.frame, self.stats, f.exclude)
        f.at = end
        self._waiting -= end - start
        if end >= len(f.recipients):
            self._fanouts.popleft()
            origin = f.origin
            if origin is not None and origin in self._blocked:
                self._blocked.discard(origin)
                if not origin.closing:
                    self.defer(origin)

    def _flush(self) -> None:
        """Deliver every waiting fan-out now (memory's safety valve)."""
        while self._fanouts:
            self._fan_step(len(self._fanouts[0].recipients))

    # ----------------------------------------------------------- turns
    def _turn(self) -> None:
        """A new turn of the loop: serve the run queue and the fan-outs in it."""
        self._open = False
        if not self._queue and not self._fanouts:
            return
        started = time.perf_counter()
        fanned = bool(self._fanouts)
        self._serving = True
        try:
            self._serve()
        finally:
            self._serving = False
        if self.clock is not None:
            what = "fan-out step" if fanned else "run-queue step"
            self.clock.worked(what, time.perf_counter() - started)

    def _serve(self) -> None:
        self._open_turn(self.work)
        end = self.turn_end
        queue = self._queue
        fanouts = self._fanouts
        # Steps first, once each, up to half the turn while fan-outs wait.
        half = end - self.budget // 2 if fanouts else end
        for _ in range(len(queue)):
            if self.work >= half:
                break
            self._step(queue.popleft())
        while fanouts and (work := self.work) < end:
            self._fan_step(end - work)
        # What is left of the turn goes to the queue again, round-robin.
        idle = 0
        while queue and self.work < end and idle <= len(queue):
            before = self.work
            self._step(queue.popleft())
            idle = 0 if self.work > before else idle + 1

    def _step(self, session: Stepper) -> None:
        self._queued.discard(session)
        if not session.closing:
            session.take_turn()
