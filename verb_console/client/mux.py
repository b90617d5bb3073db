"""The client of the ``mux`` protocol (PROTOCOL.md section 4), on anyio.

One TCP connection carries many streams, each running a ``json``, ``binary`` or
``echo`` session as if it had its own connection::

    client = await MuxClient.connect("127.0.0.1", 8080)
    chat = (await client.open_stream("json")).json()
    welcome = await chat.receive()          # {"type": "welcome", "id": "<conn>#1", ...}
    await chat.ping()                       # matched by ref, as JsonClient.ping
    lines = (await client.open_stream("echo")).lines()
    await lines.readline()                  # "Welcome to TCP server!"
    await lines.send_line("hi")
    await lines.readline()                  # "Echo: hi"
    await client.ping()                     # control stream ping
    await client.close()

The client opens odd stream ids (1, 3, 5...), as the protocol asks of clients.
:meth:`MuxClient.open_stream` waits for ``stream_created`` and raises
:class:`~verb_console.client.errors.ServerError` (``MuxError``) on an ``error``
reply; :meth:`MuxStream.close` sends ``stream_close`` and waits for
``stream_closed``. A stream the server ends (``stream_close`` from the server) or
a lost connection ends reading: the stream's :meth:`MuxStream.read` returns
``b""`` once its data is used up, and :attr:`MuxStream.close_reason` says why.

Control messages nobody waits for (errors about data on a stream that is not
open, a ``closing`` notice, replies to :meth:`MuxClient.send_control`) are kept
in order for :meth:`MuxClient.control_message`.
"""

from __future__ import annotations

import itertools
import logging
import ssl
from collections.abc import Awaitable, Callable
from types import TracebackType
from typing import Any

import anyio
import anyio.abc
import orjson

from ..address import host_port
from ..protocols import mux as m
from ..protocols.errors import ProtocolError
from ._io import Background, Mailbox, Outbox, spawn
from .backoff import Backoff
from .core import Reply
from .errors import MuxClosed, ReconnectFailed, ServerError
from .mux_json import ResumingJsonStream
from .mux_reconnect import Reconnecting
from .mux_stream import DEFAULT_TIMEOUT, MuxStream
from .resuming import SEND_BUFFER
from .tcp import READ_SIZE, dial

__all__ = ["DEFAULT_MAX_PAYLOAD", "DEFAULT_TIMEOUT", "MuxClient", "MuxStream"]

# The largest payload the client puts in one data frame; bigger writes are split.
DEFAULT_MAX_PAYLOAD = m.DEFAULT_MAX_PAYLOAD

Message = dict[str, Any]

log = logging.getLogger("verb_console.client")


class MuxClient(Reconnecting):
    """A ``mux`` connection: control stream 0 and the streams this client opened.

    Create one with :meth:`connect`. Figures: :attr:`frames_in`, :attr:`bytes_in`
    and :attr:`max_payload_in` (the largest payload the server put in one frame).
    """

    def __init__(
        self,
        stream: anyio.abc.SocketStream,
        *,
        max_payload: int = DEFAULT_MAX_PAYLOAD,
        max_frame: int = 16 * 1024 * 1024,
        reconnect: bool = False,
        backoff: Backoff | None = None,
        send_buffer: int = SEND_BUFFER,
        redial: Callable[[], Awaitable[anyio.abc.SocketStream]] | None = None,
        timeout: float | None = DEFAULT_TIMEOUT,
    ) -> None:
        self.stream = stream
        self.max_payload = max_payload
        self.max_frame = max_frame
        #: Whether a lost connection is made again, and each json stream brought back.
        self.reconnect = reconnect and redial is not None
        self.backoff = backoff if backoff is not None else Backoff()
        #: Bytes each json stream holds while it comes back (its default).
        self.send_buffer = send_buffer
        self.timeout = timeout
        self._redial = redial
        #: Connections made again after a loss, and the delays slept before each attempt.
        self.reconnects = 0
        self.backoff_history: list[float] = []
        # The json views that come back, and those waiting for the next connection.
        self._resuming: set[ResumingJsonStream] = set()
        self._waiting: list[ResumingJsonStream] = []
        self._live = True
        self._tg: anyio.abc.TaskGroup | None = None
        self._gave_up: ReconnectFailed | None = None
        self.streams: dict[int, MuxStream] = {}
        #: Why the connection ended (``"client"``, ``"eof"`` or an error text); None while open.
        self.close_reason: str | None = None
        #: The ``reason`` of a control ``closing`` notice, if the server sent one.
        self.closing_reason: str | None = None
        self.frames_in = 0
        self.bytes_in = 0
        self.max_payload_in = 0
        self._decoder = m.MuxDecoder(max_frame)
        self._outbox = Outbox(stream)
        self._next_id = 1
        self._refs = itertools.count(1)
        self._opening: dict[int, Reply] = {}
        self._closing: dict[int, Reply] = {}
        # Streams the server closed while our stream_close was on its way: the
        # server answers that one with unknown_stream, which is no news.
        self._crossed: set[int] = set()
        self._pings: dict[Any, Reply] = {}
        #: The control ``auth`` sent on this connection, sent again on a new one.
        self.auth: Message | None = None
        self._control: Mailbox[Message] = Mailbox()
        self._local_id = self._address(stream)
        self._runner: Background = spawn(self._run)

    @staticmethod
    def _address(stream: anyio.abc.SocketStream) -> str:
        address = stream.extra(anyio.abc.SocketAttribute.local_address)
        assert isinstance(address, tuple)
        return host_port(address[0], address[1])

    @classmethod
    async def connect(
        cls,
        host: str = "127.0.0.1",
        port: int = 8080,
        *,
        timeout: float | None = DEFAULT_TIMEOUT,
        max_payload: int = DEFAULT_MAX_PAYLOAD,
        local_host: str | None = None,
        ssl_context: ssl.SSLContext | None = None,
        tls_hostname: str | None = None,
        reconnect: bool = False,
        backoff: Backoff | None = None,
        send_buffer: int = SEND_BUFFER,
        token: str | None = None,
    ) -> MuxClient:
        """Open the TCP connection (TLS with ``ssl_context``). Nothing is sent until a
        stream is opened or a ping is sent.

        With ``reconnect``, a connection lost unexpectedly is made again as
        ``backoff`` says (as :class:`~verb_console.client.tcp.JsonClient` does),
        and each json stream comes back on a new stream: it resumes its session,
        or rejoins its rooms with ``since`` (see :mod:`.mux_json`). Other streams
        end with the connection.

        With ``token``, the connection authenticates first (PROTOCOL.md section
        8), and again on each connection made again: a wrong token raises
        :class:`ServerError` ``auth_failed`` here.
        """

        def again() -> Awaitable[anyio.abc.SocketStream]:
            return dial(host, port, timeout, local_host, ssl_context, tls_hostname)

        stream = await again()
        client = cls(
            stream,
            max_payload=max_payload,
            reconnect=reconnect,
            backoff=backoff,
            send_buffer=send_buffer,
            redial=again,
            timeout=timeout,
        )
        if token is not None:
            client.send_control({"type": "auth", "token": token})
            try:
                reply = await client.control_message(timeout)
            except BaseException:
                await client.close()
                raise
            if reply.get("type") != "authenticated":
                await client.close()
                raise ServerError.from_reply(reply)
        return client

    async def __aenter__(self) -> MuxClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    @property
    def closed(self) -> bool:
        """True once the TCP connection has ended (for good, when reconnecting)."""
        return self.close_reason is not None

    @property
    def connected(self) -> bool:
        """True while a connection is up (False while reconnecting, and once closed)."""
        return self._live and self.close_reason is None

    @property
    def local_id(self) -> str:
        """``<ip>:<port>`` of this end: the server's connection id for this client."""
        return self._local_id

    # ------------------------------------------------------------------ control
    def send_control(self, message: Message) -> None:
        """Send one control message as is (replies come from :meth:`control_message`).

        An ``auth`` (PROTOCOL.md section 8) is kept, and sent first again on each
        connection made again, so that its streams resume as its user.
        """
        if message.get("type") == "auth":
            self.auth = dict(message)
        self._write([m.encode_control(message)])

    async def control_message(self, timeout: float | None = DEFAULT_TIMEOUT) -> Message:
        """The next control message that no call of this client was waiting for.

        Raises :class:`MuxClosed` when the connection has ended and none is left.
        """
        message = await self._control.get(timeout)
        if message is None:
            raise MuxClosed(f"connection closed ({self.close_reason})")
        return message

    async def ping(self, timeout: float | None = DEFAULT_TIMEOUT) -> Message:
        """Ping on the control stream; returns the ``pong`` (with this call's ``ref``)."""
        ref = next(self._refs)
        reply = self._pings[ref] = Reply()
        try:
            self.send_control({"type": "ping", "ref": ref})
            with anyio.fail_after(timeout):
                pong: Message = await reply.wait()
                return pong
        finally:
            self._pings.pop(ref, None)

    async def open_stream(
        self,
        kind: str,
        metadata: Message | None = None,
        *,
        timeout: float | None = DEFAULT_TIMEOUT,
    ) -> MuxStream:
        """Open a stream running a session of ``kind`` (``json``, ``binary`` or ``echo``).

        Waits for ``stream_created``; raises :class:`ServerError` (``MuxError``) with the
        server's code (``unknown_stream_type``, ``too_many_streams``...) on an error reply.
        """
        self._check_open()
        sid = self._next_id
        self._next_id += 2
        meta = metadata if metadata is not None else {}
        stream = MuxStream(self, sid, kind, meta)
        reply = self._opening[sid] = Reply()
        # Registered now: data can follow stream_created in the same read.
        self.streams[sid] = stream
        try:
            self.send_control(
                {"type": "stream_create", "streamId": sid, "streamType": kind, "metadata": meta}
            )
            with anyio.fail_after(timeout):
                await reply.wait()
        except BaseException:
            if self.streams.get(sid) is stream:
                del self.streams[sid]
            stream._end("client")
            raise
        finally:
            self._opening.pop(sid, None)
        return stream

    async def _close_stream(self, stream: MuxStream, timeout: float | None) -> None:
        sid = stream.stream_id
        reply = self._closing.get(sid)
        if reply is None:
            reply = self._closing[sid] = Reply()
            self.send_control({"type": "stream_close", "streamId": sid})
        try:
            with anyio.fail_after(timeout):
                await reply.wait()
        finally:
            if reply.done:
                self._closing.pop(sid, None)

    # ------------------------------------------------------------------ output
    def _check_open(self) -> None:
        if self.close_reason is not None:
            raise MuxClosed(f"connection closed ({self.close_reason})")
        if not self._live:
            raise MuxClosed("connection lost; reconnecting")

    def _write(self, frames: list[bytes]) -> None:
        self._check_open()
        for frame in frames:
            self._outbox.write(frame)

    async def drain(self) -> None:
        """Wait until what was written is handed to the socket."""
        self._check_open()
        await self._outbox.drain()

    # ------------------------------------------------------------------ input
    async def _run(self) -> None:
        reason = "client"
        try:
            while True:
                reason = "client"
                reason = await self._serve()
                if not self._again():
                    break
                self._drop_connection(reason)
                stream = await self._dial_again()
                if stream is None:
                    break
                self._use(stream)
        finally:
            self._lost(reason)

    async def _serve(self) -> str:
        """Serve the present connection until it ends; returns why."""
        reason = "client"
        try:
            async with anyio.create_task_group() as tg:
                self._tg = tg
                tg.start_soon(self._outbox.run)
                waiting, self._waiting = self._waiting, []
                for view in waiting:
                    tg.start_soon(self._bring_back, view, 0.0)
                reason = await self._read()
                # Gone: what is cancelled now comes back on the next connection.
                self._live = False
                tg.cancel_scope.cancel()
        finally:
            self._live = False
            self._tg = None
            with anyio.CancelScope(shield=True):
                await anyio.aclose_forcefully(self.stream)
        return reason

    async def _read(self) -> str:
        try:
            while True:
                data = await self.stream.receive(READ_SIZE)
                self.bytes_in += len(data)
                for frame in self._decoder.receive(data):
                    if isinstance(frame, ProtocolError):
                        return f"protocol error: {frame.message}"
                    self._dispatch(frame.stream_id, frame.payload)
        except (anyio.EndOfStream, anyio.ClosedResourceError):
            return "eof"
        except (OSError, anyio.BrokenResourceError) as exc:
            return f"{type(exc).__name__}: {exc}"

    def _dispatch(self, sid: int, payload: bytes) -> None:
        self.frames_in += 1
        if len(payload) > self.max_payload_in:
            self.max_payload_in = len(payload)
        if sid != m.CONTROL_STREAM:
            stream = self.streams.get(sid)
            if stream is not None:
                stream._data(payload)
            return
        try:
            msg = orjson.loads(payload)
        except orjson.JSONDecodeError:
            msg = {"type": "invalid", "payload": payload}
        if not isinstance(msg, dict):
            msg = {"type": "invalid", "payload": payload}
        self._on_control(msg)

    def _on_control(self, msg: Message) -> None:
        kind = msg.get("type")
        sid = msg.get("streamId")
        if kind == "stream_created" and sid in self._opening:
            self._opening.pop(sid).set(None)
            return
        if kind == "pong" and msg.get("ref") in self._pings:
            self._pings.pop(msg["ref"]).set(msg)
            return
        if kind == "stream_close" and sid in self.streams:
            self.streams.pop(sid)._end("server")
            if sid in self._closing:
                # A close of ours crossing the server's: the server ended it either way.
                self._crossed.add(sid)
                self._resolve_close(sid)
            return
        if kind == "stream_closed" and sid in self._closing:
            closed = self.streams.pop(sid, None)
            if closed is not None:
                closed._end("client")
            self._resolve_close(sid)
            return
        if kind == "error" and sid is not None:
            if sid in self._crossed and msg.get("code") == "unknown_stream":
                self._crossed.discard(sid)
                return
            if sid in self._opening:
                self._opening.pop(sid).fail(ServerError.from_reply(msg))
                return
            if sid in self._closing and msg.get("code") == "unknown_stream":
                gone = self.streams.pop(sid, None)
                if gone is not None:
                    gone._end("server")
                self._resolve_close(sid)
                return
        if kind == "closing":
            self.closing_reason = msg.get("reason")
        self._control.put(msg)

    def _resolve_close(self, sid: int) -> None:
        reply = self._closing.get(sid)
        if reply is not None:
            reply.set(None)

    def _lost(self, reason: str) -> None:
        """The connection ended for good."""
        if self.close_reason is not None:
            return
        self.close_reason = reason
        self._drop_connection(reason)
        self._control.end()
        # Json streams still waiting to come back: the client has stopped.
        error: ConnectionError | None = self._gave_up
        if error is None and reason != "client":
            error = MuxClosed(f"connection closed ({reason})")
        for view in list(self._resuming):
            view.give_up(error)
        self._resuming.clear()
        self._waiting.clear()

    def _drop_connection(self, reason: str) -> None:
        """The present connection is gone: its streams end (json views that come
        back wait for the next one), and what waited on it fails."""
        self._live = False
        self._outbox.close()
        for stream in list(self.streams.values()):
            stream._end("connection")
        self.streams.clear()
        error = MuxClosed(f"connection closed ({reason})")
        for replies in (self._opening, self._pings):
            for reply in replies.values():
                reply.fail(error)
        # Closes that were waiting are done: the stream is gone with the connection.
        for reply in self._closing.values():
            reply.set(None)
        self._opening.clear()
        self._closing.clear()
        self._pings.clear()

    async def wait_closed(self) -> None:
        """Wait until the connection has ended (the server closed it, or :meth:`close`)."""
        await self._runner.wait()

    async def close(self) -> None:
        """Close the TCP connection: every stream ends (reason ``"connection"``).

        What was written is sent first (for at most a second).
        """
        if not self._outbox.closed:
            with anyio.move_on_after(1.0):
                await self._outbox.drain()
        self._runner.cancel()
        await self._runner.wait()
