"""The graceful shutdown of a hub: stop accepting, tell every session, wait for them to leave."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ..settings import Settings
from ..units import plural
from .session import CLOSE_FLUSH_S, CloseReason
from .snapshot import HubState

if TYPE_CHECKING:
    from .session import Session


class GracefulShutdown:
    """Draining, forcing and the end of a hub's life; a part of :class:`~.hub.Hub`."""

    settings: Settings
    state: HubState
    drain_deadline: float | None
    sessions: dict[str, Session]
    connections: dict[str, Session]
    on_drain: list[Callable[[], Any]]
    on_shutdown: list[Callable[[], Any]]
    _stop_accepting: list[Callable[[], None]]
    _hook_tasks: set[asyncio.Task[Any]]
    _drain_task: asyncio.Task[None] | None
    _drained: asyncio.Event
    _force: asyncio.Event
    _stopped: asyncio.Event
    _ticker: asyncio.TimerHandle | None

    def event(self, kind: str, text: str) -> None:  # pragma: no cover - the hub's
        raise NotImplementedError

    def begin_shutdown(self) -> None:
        """Graceful shutdown: stop accepting, tell every session, wait for them to leave."""
        if self.state is not HubState.RUNNING:
            return
        self.state = HubState.DRAINING
        grace = self.settings.grace_period
        self.drain_deadline = time.time() + grace
        for stop_accepting in self._stop_accepting:
            stop_accepting()
        self.event(
            "server",
            f"graceful shutdown: {plural(len(self.connections), 'session')}, {grace:g}s grace",
        )
        notice = {
            "type": "server_shutdown",
            "message": "Server is shutting down",
            "gracePeriod": int(grace * 1000),
        }
        for session in list(self.sessions.values()):
            if session.accepts_notices and not session.closing:
                session.notify(notice)
        loop = asyncio.get_running_loop()
        for hook in self.on_drain:
            result = hook()
            if asyncio.iscoroutine(result):
                self._hook_tasks.add(task := loop.create_task(result))
                task.add_done_callback(self._hook_tasks.discard)
        self._drain_task = loop.create_task(self._drain(grace))

    def force_shutdown(self) -> None:
        """Close every session now (a second signal, or the operator's choice during the drain)."""
        if self.state is HubState.RUNNING:
            self.begin_shutdown()
        self._force.set()

    async def _drain(self, grace: float) -> None:
        if self.connections:
            waits = [
                asyncio.ensure_future(self._drained.wait()),
                asyncio.ensure_future(self._force.wait()),
            ]
            try:
                await asyncio.wait(waits, timeout=grace, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for w in waits:
                    w.cancel()
        if self.connections:
            self.event("server", f"closing {plural(len(self.connections), 'remaining session')}")
            for session in list(self.connections.values()):
                session.close(CloseReason.SHUTDOWN)
            # Each gets CLOSE_FLUSH_S to flush; the last to go sets the event.
            if self.connections:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._drained.wait(), CLOSE_FLUSH_S + 1.0)
        for hook in self.on_shutdown:
            result = hook()
            if asyncio.iscoroutine(result):
                await result
        self.state = HubState.STOPPED
        if self._ticker is not None:
            self._ticker.cancel()
        self.event("server", "shutdown complete")
        self._stopped.set()

    async def wait_stopped(self) -> None:
        await self._stopped.wait()
