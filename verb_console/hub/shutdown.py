"""The graceful shutdown of a hub (PROTOCOL.md section 6 and section 11.3, lame duck).

:class:`Shutdown` owns the whole of it: the state the hub is in, the grace
period's deadline, the listeners to stop, the hooks to run, and the schedule of
closes. The hub builds one and tells it when a connection ends; it reads the
hub only through :class:`ShutdownHost`.

Lame duck: with n connections live when the drain starts, the k-th (in the
order they were accepted) is sent ``closing`` ``shutdown`` and closed at
10% + 90% x k/n of the grace period, so clients come back spread over the
grace period instead of all at once. Those that leave on their own are not
closed again: their slots pass unused. Closing is done a bounded batch per
loop turn, so that ten thousand sessions never make one turn long.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

from ..settings import Settings
from ..units import plural
from .session import CLOSE_FLUSH_S, CloseReason
from .session_pass import NoticePass
from .snapshot import HubState

if TYPE_CHECKING:
    from .session import Session

CLOSE_BATCH = 32
"""Most sessions closed (or told of the shutdown) in one turn of the loop."""
FIRST_CLOSE_AT = 0.1
"""The share of the grace period that passes before the first gradual close."""


class ShutdownHost(Protocol):
    """What the shutdown reads of its hub."""

    settings: Settings
    connections: dict[str, Session]  # one per TCP connection, in accept order
    sessions: dict[str, Session]  # mux streams included

    def event(self, kind: str, text: str) -> None: ...


def close_offset(k: int, n: int, grace: float) -> float:
    """Seconds after the drain starts at which the k-th of n (from 1) is closed."""
    return grace * (FIRST_CLOSE_AT + (1.0 - FIRST_CLOSE_AT) * k / n)


class Shutdown:
    """Draining, lame-duck closes, forcing and the end of a hub's life."""

    def __init__(self, host: ShutdownHost) -> None:
        self.host = host
        self.state = HubState.RUNNING
        #: When the grace period ends (wall clock), while draining.
        self.deadline: float | None = None
        #: True for a permanent stop: ``server_shutdown`` says ``"reconnect":false``.
        self.final = False
        #: Each listener's "stop accepting", called when the drain begins.
        self.stop_accepting: list[Callable[[], None]] = []
        #: Called when the drain begins (a coroutine result runs as a task).
        self.on_drain: list[Callable[[], Any]] = []
        #: Called (awaited) at the very end, e.g. to abort open uploads.
        self.on_shutdown: list[Callable[[], Any]] = []
        # The connections live when the drain began, in close order, and those of
        # them not closed yet (by the schedule or on their own).
        self._order: list[Session] = []
        self._pending: set[Session] = set()
        self._next = 0  # index in _order of the next slot
        self._started = 0.0  # monotonic start of the drain
        self._timer: asyncio.Handle | None = None
        self._forced = False
        self._force = asyncio.Event()
        self._drained = asyncio.Event()
        self._stopped = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._hook_tasks: set[asyncio.Task[Any]] = set()

    @property
    def left(self) -> int:
        """Sessions (connections) the drain has still to close: 0 when not draining."""
        return len(self._pending)

    # ----------------------------------------------------------- begin and force
    def begin(self, *, final: bool = False) -> None:
        """Stop accepting, tell every session, and close them gradually over the grace period.

        ``final`` (``ctl drain --final``) marks a permanent stop: clients are told
        not to reconnect. A drain already under way is left as it is.
        """
        if self.state is not HubState.RUNNING:
            return
        host = self.host
        self.state = HubState.DRAINING
        self.final = final
        grace = host.settings.grace_period
        self.deadline = time.time() + grace
        self._started = time.monotonic()
        for stop_accepting in self.stop_accepting:
            stop_accepting()
        self._order = list(host.connections.values())
        self._pending = {s for s in self._order if not s.closing}
        kind = "final shutdown" if final else "graceful shutdown"
        host.event("server", f"{kind}: {plural(len(self._order), 'session')}, {grace:g}s grace")
        notice = {
            "type": "server_shutdown",
            "message": "Server is shutting down",
            "gracePeriod": int(grace * 1000),
            "reconnect": not final,
        }
        loop = asyncio.get_running_loop()

        # A slice per turn: there may be a hundred thousand sessions to tell.
        NoticePass(host, notice, "drain notice").start()
        for hook in self.on_drain:
            result = hook()
            if asyncio.iscoroutine(result):
                self._hook_tasks.add(task := loop.create_task(result))
                task.add_done_callback(self._hook_tasks.discard)
        if not host.connections:
            self._drained.set()
        self._task = loop.create_task(self._drain(grace))
        self._schedule()

    def force(self) -> None:
        """Close every session now (a second signal, or the operator's choice while draining)."""
        if self.state is HubState.RUNNING:
            self.begin()
        if self.state is not HubState.DRAINING or self._forced:
            return
        self._forced = True
        remaining = len(self.host.connections)
        self.host.event("server", f"closing {plural(remaining, 'remaining session')}")
        # Every connection, not only the scheduled ones: all of them go now.
        self._order = list(self.host.connections.values())
        self._pending = set(self._order)
        self._next = 0
        self._force.set()
        self._schedule()

    def connection_gone(self, session: Session) -> None:
        """A connection ended (closed by the drain or on its own); the hub calls this."""
        self._pending.discard(session)
        if self.state is HubState.DRAINING and not self.host.connections:
            self._drained.set()

    async def wait_stopped(self) -> None:
        await self._stopped.wait()

    # ----------------------------------------------------------- the schedule
    def _due(self, k: int) -> float:
        """Monotonic time at which slot ``k`` (from 0) is due."""
        if self._forced:
            return 0.0
        grace = self.host.settings.grace_period
        return self._started + close_offset(k + 1, len(self._order), grace)

    def _schedule(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._next >= len(self._order) or self.state is not HubState.DRAINING:
            return
        loop = asyncio.get_running_loop()
        due = self._due(self._next)
        if due <= time.monotonic():
            self._timer = loop.call_soon(self._close_due)
        else:
            self._timer = loop.call_at(loop.time() + due - time.monotonic(), self._close_due)

    def _close_due(self) -> None:
        """Close the sessions whose slots have come, at most a batch in this turn."""
        self._timer = None
        now = time.monotonic()
        order, pending = self._order, self._pending
        closed = 0
        while self._next < len(order) and closed < CLOSE_BATCH and self._due(self._next) <= now:
            session = order[self._next]
            self._next += 1
            if session in pending:
                pending.discard(session)
                if not session.closing:
                    session.close(CloseReason.SHUTDOWN)
                    closed += 1
        self._schedule()

    async def _drain(self, grace: float) -> None:
        # The schedule's last slot is at the grace period's end; the margin lets
        # the last closes flush (each gets CLOSE_FLUSH_S) before the hooks run.
        waits = [
            asyncio.ensure_future(self._drained.wait()),
            asyncio.ensure_future(self._force.wait()),
        ]
        try:
            timeout = grace + CLOSE_FLUSH_S + 1.0
            await asyncio.wait(waits, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for w in waits:
                w.cancel()
        if self._force.is_set() and not self._drained.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._drained.wait(), CLOSE_FLUSH_S + 1.0)
        if self.host.connections:
            # Sessions that would not flush: cut now.
            for session in list(self.host.connections.values()):
                session.close(CloseReason.SHUTDOWN, flush=False)
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._pending.clear()
        for hook in self.on_shutdown:
            result = hook()
            if asyncio.iscoroutine(result):
                await result
        self.state = HubState.STOPPED
        self.host.event("server", "shutdown complete")
        self._stopped.set()
