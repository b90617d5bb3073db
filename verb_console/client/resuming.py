"""What a json client that reconnects does once it is back (PROTOCOL.md section 11).

:class:`JsonClient` (over TCP) and each reconnecting json stream of a
:class:`~verb_console.client.mux.MuxClient` share it: the session to resume
(its id and token), the resume's outcome or the rooms rejoined with ``since``
(a :class:`~.recovery.Recovery`), the messages held while reconnecting (bounded:
past :attr:`Resuming.send_buffer` bytes a send raises
:class:`~.errors.SendBufferFull`), the ``connected`` state, and the callbacks.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Callable
from typing import Any

import anyio

from ._io import spawn
from .core import DEFAULT, JsonCore, Message
from .errors import ReconnectFailed, SendBufferFull, ServerError
from .recovery import Recovery

__all__ = ["SEND_BUFFER", "Resuming"]

log = logging.getLogger("verb_console.client")

#: Bytes a client holds by default while it reconnects.
SEND_BUFFER = 1024 * 1024


class Resuming(JsonCore):
    """The reconnection state and recovery of a json client; see the module docs.

    Subclasses provide :meth:`_back` (whether the new connection still lives once
    the rooms are rejoined) and call :meth:`_recover` after each reconnection.
    """

    def __init__(
        self,
        max_frame: int,
        *,
        on_disconnect: Callable[[str], Any] | None = None,
        on_reconnect: Callable[[Message], Any] | None = None,
        on_give_up: Callable[[ReconnectFailed], Any] | None = None,
        on_recovery: Callable[[Recovery], Any] | None = None,
        send_buffer: int = SEND_BUFFER,
    ) -> None:
        super().__init__(max_frame)
        self.on_disconnect = on_disconnect
        self.on_reconnect = on_reconnect
        self.on_give_up = on_give_up
        self.on_recovery = on_recovery
        self.send_buffer = send_buffer
        #: What the last reconnection got back (None before the first).
        self.last_recovery: Recovery | None = None
        #: Successful reconnections so far.
        self.reconnects = 0
        #: Why the last connection ended (a ``closing`` reason or ``"connection_lost"``).
        self.disconnect_reason: str | None = None
        # The session to resume: its id and token (None: the server has resume off).
        self._session: tuple[str, str] | None = None
        # Messages the application sent while reconnecting, and their bytes.
        self._held: list[bytes] = []
        self._held_bytes = 0
        # The server asked to be come back to (server_shutdown, reconnect: true).
        self._come_back = False
        self._connected = False
        self._changed: anyio.Event | None = None

    # ----------------------------------------------------------- state
    @property
    def connected(self) -> bool:
        """True while a connection is up (and, after a reconnection, rooms are rejoined)."""
        return self._connected

    def _set_connected(self, connected: bool) -> None:
        self._connected = connected
        self._notify()

    def _notify(self) -> None:
        if self._changed is not None:
            self._changed.set()
            self._changed = None

    async def wait_connected(self, timeout: float | None = None) -> None:
        """Wait until connected (after a reconnection: rooms rejoined).

        Raises the client's error (or its closed error) if it closes first, and
        ``TimeoutError`` after ``timeout`` seconds.
        """
        with anyio.fail_after(timeout):
            while not self._connected:
                if self._finished:
                    raise self._end_error()
                if self._changed is None:
                    self._changed = anyio.Event()
                await self._changed.wait()

    def _finish(self, error: ConnectionError | None) -> None:
        if self._finished:
            return
        super()._finish(error)
        self._connected = False
        self._notify()

    # ----------------------------------------------------------- holding
    def _hold(self, data: bytes) -> None:
        """Keep ``data`` until the session is back; raises SendBufferFull past the buffer."""
        if self._held_bytes + len(data) > self.send_buffer:
            raise SendBufferFull(self.send_buffer)
        self._held.append(data)
        self._held_bytes += len(data)

    def _take_held(self) -> list[bytes]:
        held, self._held, self._held_bytes = self._held, [], 0
        return held

    # ----------------------------------------------------------- recovery
    def _back(self) -> bool:
        """Whether the new connection is still up (the rooms' rejoining may lose it)."""
        raise NotImplementedError

    def _resume_message(self, seq: int) -> Message | None:
        """The ``resume`` a new connection starts with, if there is a session to resume."""
        if self._session is None:
            return None
        sid, token = self._session
        return {"type": "resume", "id": sid, "token": token, "seq": seq}

    def _adopt(self, welcome: Message) -> None:
        """A new session: the one to resume from now on (if the server offers resume)."""
        token = welcome.get("resume")
        self._session = (str(welcome["id"]), token) if isinstance(token, str) else None

    async def _recover(self, welcome: Message, tried: bool) -> Recovery | None:
        """After a reconnection: the resume's outcome, or the rooms rejoined with
        ``since``; None if the new connection was lost meanwhile."""
        reply = self.first_reply
        if tried and isinstance(reply, dict) and reply.get("type") == "resumed":
            # The connection is the old session: its id, and its token from now on.
            assert self._session is not None
            self._welcome = {**welcome, "id": self._session[0], "resume": self._session[1]}
            return Recovery(resumed=True, replayed=int(reply.get("replayed", 0)))
        failed = None
        if isinstance(reply, ServerError):
            failed = str(reply.extra.get("reason") or reply.code)
        self._adopt(welcome)
        rooms = await self._rejoin()
        if rooms is None:
            return None
        return Recovery(resumed=False, resume_failed=failed, rooms=rooms)

    async def _rejoin(self) -> dict[str, bool] | None:
        """Join the rooms again, each with ``since`` its last message when known;
        returns whether each was recovered, or None if the connection was lost."""
        recovered: dict[str, bool] = {}
        for room in sorted(self.rooms):
            message: Message = {"type": "join_room", "room": room}
            since = self.positions.get(room)
            if since is not None:
                message["since"] = {"epoch": since[0], "offset": since[1]}
            try:
                joined = await self._request(message, DEFAULT, self._write_now)
            except ServerError as exc:
                log.warning("could not rejoin room %r: %s", room, exc)
                self.rooms.discard(room)
                self.positions.pop(room, None)
                continue
            except (ConnectionError, TimeoutError):
                return None
            recovered[room] = joined.get("recovered") is True
        return recovered if self._back() else None

    def _call(self, callback: Callable[..., Any] | None, *args: Any) -> None:
        """Run an application callback (a function or a coroutine function); its
        errors are logged, never raised into the client."""
        if callback is None:
            return
        try:
            result = callback(*args)
        except Exception:
            log.exception("client callback %r failed", callback)
            return
        if inspect.isawaitable(result):

            async def finish() -> None:
                await result

            spawn(finish)
