"""How a :class:`~verb_console.client.mux.MuxClient` made with ``reconnect=True``
comes back after a loss: the connection dialled again as its
:class:`~.backoff.Backoff` says, and each json stream brought back on a new
stream (:class:`~.mux_json.ResumingJsonStream`), on the same connection when
only the stream was lost.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

import anyio
import anyio.abc

from ..protocols import mux as m
from ._io import Outbox
from .backoff import Backoff
from .core import DELIBERATE_REASONS
from .errors import MuxClosed, ReconnectFailed, ServerError
from .mux_json import ResumingJsonStream
from .mux_stream import MuxStream
from .views import JsonStream

__all__ = ["Reconnecting"]

log = logging.getLogger("verb_console.client")


class Reconnecting:
    """The reconnection half of :class:`~verb_console.client.mux.MuxClient`."""

    reconnect: bool
    backoff: Backoff
    send_buffer: int
    timeout: float | None
    reconnects: int
    backoff_history: list[float]
    max_frame: int
    stream: anyio.abc.SocketStream
    streams: dict[int, MuxStream]
    close_reason: str | None
    closing_reason: str | None
    _redial: Callable[[], Awaitable[anyio.abc.SocketStream]] | None
    _resuming: set[ResumingJsonStream]
    _waiting: list[ResumingJsonStream]
    _live: bool
    _tg: anyio.abc.TaskGroup | None
    _gave_up: ReconnectFailed | None
    _decoder: m.MuxDecoder
    _outbox: Outbox
    _next_id: int
    _crossed: set[int]
    _local_id: str
    auth: dict[str, Any] | None

    @staticmethod
    def _address(stream: anyio.abc.SocketStream) -> str:
        raise NotImplementedError

    def _again(self) -> bool:
        """Whether to make the connection again: reconnecting is on, and the
        loss was not deliberate, or a json stream was asked to come back (a
        ``server_shutdown`` with ``"reconnect": true``)."""
        if not self.reconnect:
            return False
        views = [v for v in self._resuming if not v.closed]
        if any(v.server_shutdown and v.shutdown_reconnect is True for v in views):
            return True
        return self.closing_reason not in DELIBERATE_REASONS

    async def _dial_again(self) -> anyio.abc.SocketStream | None:
        """Dial after the backoff's delays; None when every attempt failed."""
        assert self._redial is not None
        attempts = self.backoff.max_attempts
        last: BaseException | None = None
        for attempt in range(attempts):
            delay = self.backoff.delay(attempt)
            self.backoff_history.append(delay)
            log.info("mux: reconnecting in %.2fs (attempt %d of %d)", delay, attempt + 1, attempts)
            await anyio.sleep(delay)
            try:
                return await self._redial()
            except OSError as exc:  # TimeoutError and ConnectionRefusedError among them
                last = exc
        self._gave_up = ReconnectFailed(attempts, last)
        return None

    def _use(self, stream: anyio.abc.SocketStream) -> None:
        """A new connection: fresh framing, stream ids from 1 again."""
        self.stream = stream
        self._decoder = m.MuxDecoder(self.max_frame)
        self._outbox = Outbox(stream)
        self._next_id = 1
        self._crossed.clear()
        self.closing_reason = None
        self._local_id = self._address(stream)
        self._live = True
        self.reconnects += 1
        if self.auth is not None:
            # Authenticated first, as the lost connection was: its streams come
            # back as sessions of its user (PROTOCOL.md 8 and 11.1).
            self._outbox.write(m.encode_control(self.auth))

    def _json_view(self, stream: MuxStream, max_frame: int | None, **options: Any) -> JsonStream:
        if not self.reconnect:
            if options:
                raise TypeError("json() takes options only on a client made with reconnect=True")
            return JsonStream(stream, max_frame)
        options.setdefault("send_buffer", self.send_buffer)
        self._resuming = {v for v in self._resuming if not v.closed}
        view = ResumingJsonStream(stream, max_frame, self, **options)
        if not view.closed:
            self._resuming.add(view)
        return view

    def _revive(self, view: ResumingJsonStream) -> None:
        """``view``'s stream was lost: bring it back on this connection if it is up
        (after the backoff's delay), else on the next one."""
        if view.closed:
            return
        if self.close_reason is not None:
            view.give_up(MuxClosed(f"connection closed ({self.close_reason})"))
            return
        tg = self._tg
        if tg is None or not self._live or view.server_shutdown:
            # The server is going away: come back on the next connection.
            if view not in self._waiting:
                self._waiting.append(view)
            return
        tg.start_soon(self._bring_back, view, self.backoff.delay(view.attempts))

    async def _bring_back(self, view: ResumingJsonStream, delay: float) -> None:
        back: bool | None = False
        try:
            if delay:
                await anyio.sleep(delay)
            back = await view._reattach(self.timeout)
        except ServerError as exc:  # the server refuses the stream: no point trying again
            back = None
            view.give_up(ConnectionError(f"could not open a stream again: {exc}"))
            self._resuming.discard(view)
        finally:
            # Failed, or cancelled with its connection: try again (on the next
            # connection if this one is gone), up to the backoff's attempts.
            if back is False and not view.closed:
                view.attempts += 1
                if view.attempts >= max(1, self.backoff.max_attempts):
                    view.give_up(ReconnectFailed(view.attempts, None))
                    self._resuming.discard(view)
                else:
                    self._revive(view)

    def _drop_stream(self, stream: MuxStream) -> None:
        """Let go of a stream a json view gave up on (a bad frame, no welcome)."""
        if self.streams.get(stream.stream_id) is stream and self._tg is not None and self._live:
            self._tg.start_soon(stream.close, self.timeout)
        else:
            stream._end("client")
