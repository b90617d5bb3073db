"""A json stream of a reconnecting :class:`~verb_console.client.mux.MuxClient`.

:class:`ResumingJsonStream` is what ``stream.json()`` gives on a client made
with ``reconnect=True``. It behaves as :class:`~verb_console.client.tcp.JsonClient`
does across a break (PROTOCOL.md section 11), one stream at a time: when its
stream is lost (with the connection, or ended by the server for a reason that
is not deliberate) it opens a new ``json`` stream, on the same connection if
that is still up or on the client's next one, resumes its session (token and
last ``seq``) and, when that fails, rejoins its rooms with ``since``. It says
what came back through the same properties and callbacks as ``JsonClient``
(:attr:`~.resuming.Resuming.last_recovery`, ``on_recovery``...), and holds
what the application sends meanwhile, up to its send buffer.

A deliberate end does not come back: the application's own ``close``, the
server's ``closing`` with reason ``operator``, ``shutdown`` or
``protocol_error``, unless the server announced ``server_shutdown`` with
``"reconnect": true`` (a restart: it comes back once the client has
reconnected).

Its data is handed to it as it arrives (no raw :meth:`MuxStream.read` mixed
in): its messages wait in its own inbox, as ``JsonClient``'s do.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import anyio

from .core import DELIBERATE_REASONS, JsonCore, Message
from .errors import MuxClosed, ReconnectFailed, ServerError
from .resuming import Resuming
from .views import JsonStream

if TYPE_CHECKING:
    from .mux_stream import MuxStream

__all__ = ["OPTIONS", "ResumingJsonStream"]

#: What ``stream.json()`` takes on a reconnecting client.
OPTIONS = frozenset({"on_disconnect", "on_reconnect", "on_give_up", "on_recovery", "send_buffer"})


class ResumingJsonStream(JsonStream, Resuming):
    """A json view that comes back on a new stream when its stream is lost; see the module docs."""

    stream: MuxStream

    def __init__(
        self,
        stream: MuxStream,
        max_frame: int | None,
        client: Any,
        **options: Any,
    ) -> None:
        super().__init__(stream, max_frame)
        for name, value in options.items():
            if name not in OPTIONS:
                raise TypeError(f"json() got an unexpected option {name!r}")
            setattr(self, name, value)
        # The MuxClient: it opens the new streams and reconnects (untyped: it imports this).
        self.client = client
        self.metadata: Message = dict(stream.metadata)
        #: Reconnection attempts since the stream was last back.
        self.attempts = 0
        self._adopted = False
        self._attach(stream)
        self._set_connected(not stream.closed)
        if stream.closed:
            self.stream_ended(stream, stream.close_reason or "connection")

    # ----------------------------------------------------------- the stream
    def _attach(self, stream: MuxStream, feed: bool = True) -> None:
        self.stream = stream
        stream._views[JsonStream] = self
        stream._sink = self
        if feed:
            self._feed_buffered()

    def _feed_buffered(self) -> None:
        """Take what the stream received before it was handed to this view."""
        stream = self.stream
        for chunk in stream._chunks.take_all():
            self.stream_data(stream, chunk)

    def stream_data(self, stream: MuxStream, data: bytes) -> None:
        if stream is not self.stream or self._finished:
            return
        error = self._feed(data)
        if error is not None:
            # Nothing past a bad frame can be trusted: this stream is done.
            stream._sink = None
            self.client._drop_stream(stream)
            self.stream_ended(stream, f"bad frame from the server: {error}")

    def stream_ended(self, stream: MuxStream, reason: str) -> None:
        """The stream ended (``reason``: ``client``, ``server``, ``connection``)."""
        if stream is not self.stream or self._finished:
            return
        self._set_connected(False)
        why = f"stream {stream.stream_id} ended ({reason})"
        if reason == "client":
            self._connection_ended(why)
            self._finish(None)
            return
        self._come_back = self.server_shutdown and self.shutdown_reconnect is True
        code = self._connection_ended(why)
        self.disconnect_reason = code
        self._call(self.on_disconnect, code)
        if code in DELIBERATE_REASONS and not self._come_back:
            self._finish(None)
            return
        if not self._adopted and self._welcome is not None:
            self._adopt(self._welcome)
            self._adopted = True
        self.client._revive(self)

    # ----------------------------------------------------------- coming back
    async def _reattach(self, timeout: float | None) -> bool | None:
        """Open a new stream, resume or rejoin. True once back; False when this
        attempt failed (the caller tries again); None when the new stream ended
        meanwhile (its end has asked for the next attempt). Raises ServerError
        when the server refuses the new stream."""
        client = self.client
        if self._finished:  # closed by the application meanwhile
            return None
        try:
            stream = await client.open_stream("json", dict(self.metadata), timeout=timeout)
        except (MuxClosed, TimeoutError):
            return False
        resume_seq = self.last_seq
        self._new_connection()
        self.last_seq = 0
        self._attach(stream, feed=False)
        first = self._resume_message(resume_seq)
        recovery = None
        try:
            with anyio.fail_after(timeout):
                welcome = await self._handshake(first, self._feed_buffered)
            recovery = await self._recover(welcome, first is not None)
        except (TimeoutError, ConnectionError, ServerError):
            pass
        if self._finished:
            await stream.close()
            return None
        if self.stream is not stream or stream.closed:
            return None
        if recovery is None:
            stream._sink = None
            client._drop_stream(stream)
            return False
        self._adopted = True
        self.attempts = 0
        self.reconnects += 1
        self.last_recovery = recovery
        self._set_connected(True)
        for data in self._take_held():
            stream.write(data)
        self._call(self.on_reconnect, self.welcome)
        self._call(self.on_recovery, recovery)
        return True

    def _back(self) -> bool:
        return not self.stream.closed and not self._finished

    def give_up(self, error: ConnectionError | None) -> None:
        """The client stopped trying (``error``: a ReconnectFailed), or closed."""
        if self._finished:
            return
        self._connection_ended("the client stopped reconnecting")
        if isinstance(error, ReconnectFailed):
            self._call(self.on_give_up, error)
        self._finish(error)

    # ----------------------------------------------------------- the core's transport
    async def _wait(self, ready: Callable[[], object], timeout: float | None) -> None:
        await JsonCore._wait(self, ready, timeout)

    def _write(self, data: bytes) -> None:
        if self._finished:
            raise self._end_error()
        if self._connected and not self.stream.closed:
            self.stream.write(data)
            return
        # Coming back: held, and sent once the session is back.
        self._hold(data)

    def _write_now(self, data: bytes) -> None:
        self.stream.write(data)

    async def _drain(self) -> None:
        if self._connected and not self.stream.closed:
            with contextlib.suppress(MuxClosed):  # lost meanwhile: its end says so
                await self.stream.drain()

    async def close(self) -> None:
        """Close the stream for good (no coming back)."""
        if not self.stream.closed:
            await self.stream.close()
        self.give_up(None)
