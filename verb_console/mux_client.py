"""An asyncio client for the ``mux`` protocol (PROTOCOL.md section 4).

One TCP connection carries many streams, each running a ``json``, ``binary`` or
``echo`` session as if it had its own connection::

    client = await MuxClient.connect("127.0.0.1", 8080)
    chat = (await client.open_stream("json")).json()
    welcome = await chat.receive()          # {"type": "welcome", "id": "<conn>#1", ...}
    lines = (await client.open_stream("echo")).lines()
    await lines.readline()                  # "Welcome to TCP server!"
    await lines.send_line("hi")
    await lines.readline()                  # "Echo: hi"
    await client.ping()                     # control stream ping
    await client.close()

The client opens odd stream ids (1, 3, 5...), as the protocol asks of clients.
:meth:`MuxClient.open_stream` waits for ``stream_created`` and raises
:class:`MuxError` on an ``error`` reply; :meth:`MuxStream.close` sends
``stream_close`` and waits for ``stream_closed``. A stream the server ends
(``stream_close`` from the server) or a lost connection ends reading: the
stream's :meth:`MuxStream.read` returns ``b""`` once its data is used up, and
:attr:`MuxStream.close_reason` says why.

Control messages nobody waits for (errors about data on a stream that is not
open, a ``closing`` notice, replies to :meth:`MuxClient.send_control`) are kept
in order for :meth:`MuxClient.control_message`.

Like the seed's ``TCPStreamMultiplexer``, the framing is symmetric; this class is
its client side over asyncio streams.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections import deque
from collections.abc import AsyncIterator
from types import TracebackType
from typing import Any

import orjson

from .protocols import binary as b
from .protocols import json as j
from .protocols import mux as m
from .protocols.errors import ProtocolError, ServerError

__all__ = [
    "BinaryStream",
    "JsonStream",
    "LineStream",
    "MuxClient",
    "MuxClosed",
    "MuxError",
    "MuxStream",
]

READ_SIZE = 256 * 1024
# The largest payload the client puts in one data frame; bigger writes are split.
DEFAULT_MAX_PAYLOAD = m.DEFAULT_MAX_PAYLOAD
DEFAULT_TIMEOUT = 10.0

Message = dict[str, Any]


#: The server answered with a control ``error`` (or a stream session's ``error``):
#: the clients' one error class, whose ``stream_id`` is the reply's ``streamId``.
MuxError = ServerError


class MuxClosed(ConnectionError):
    """The stream or the connection is closed."""


class MuxStream:
    """One stream of a :class:`MuxClient`: a byte pipe to one server-side session.

    Received data frames are kept in order; :meth:`read` (or ``async for chunk in
    stream``) hands them out. Writes are framed and sent at once; :meth:`drain`
    waits for the socket's buffer to empty. For the stream's own protocol, use
    the views: :meth:`json`, :meth:`binary` or :meth:`lines`.
    """

    def __init__(self, client: MuxClient, stream_id: int, kind: str, metadata: Message) -> None:
        self.client = client
        self.stream_id = stream_id
        self.kind = kind
        self.metadata = metadata
        #: Why reading ended: ``"client"`` (:meth:`close`), ``"server"`` (the server
        #: sent ``stream_close``) or ``"connection"`` (the TCP connection ended); None while open.
        self.close_reason: str | None = None
        self.bytes_in = 0
        self.bytes_out = 0
        self.frames_in = 0
        self.frames_out = 0
        self._chunks: deque[bytes] = deque()
        self._waiter: asyncio.Future[None] | None = None
        self._ended = asyncio.get_running_loop().create_future()

    def __repr__(self) -> str:
        state = "open" if self.close_reason is None else f"closed by {self.close_reason}"
        return f"<MuxStream {self.stream_id} {self.kind} {state}>"

    @property
    def closed(self) -> bool:
        """True once the stream has ended for reading (its data may still be unread)."""
        return self.close_reason is not None

    @property
    def buffered(self) -> int:
        """Bytes received and not read yet."""
        return sum(map(len, self._chunks))

    # --------------------------------------------------------------- writing
    def write(self, data: bytes) -> None:
        """Send ``data`` on this stream, split into frames of at most the client's max payload.

        Raises :class:`MuxClosed` when the stream or the connection is closed.
        """
        if self.close_reason is not None:
            raise MuxClosed(f"stream {self.stream_id} is closed ({self.close_reason})")
        frames = m.encode_chunked(self.stream_id, bytes(data), self.client.max_payload)
        self.bytes_out += len(data)
        self.frames_out += len(frames)
        self.client._write(frames)

    async def drain(self) -> None:
        """Wait until the connection's write buffer is below its high-water mark."""
        await self.client.drain()

    async def send(self, data: bytes) -> None:
        """:meth:`write` then :meth:`drain`."""
        self.write(data)
        await self.drain()

    # --------------------------------------------------------------- reading
    async def read(self, timeout: float | None = None) -> bytes:
        """The next data chunk received, or ``b""`` once the stream has ended and all is read.

        Raises :class:`TimeoutError` when nothing arrives within ``timeout`` seconds.
        """
        while not self._chunks:
            if self.close_reason is not None:
                return b""
            waiter = self._waiter = asyncio.get_running_loop().create_future()
            try:
                await asyncio.wait_for(waiter, timeout)
            finally:
                self._waiter = None
        return self._chunks.popleft()

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[bytes]:
        while True:
            chunk = await self.read()
            if not chunk:
                return
            yield chunk

    async def wait_closed(self) -> str:
        """Wait until the stream ends; returns :attr:`close_reason`."""
        await asyncio.shield(self._ended)
        assert self.close_reason is not None
        return self.close_reason

    # --------------------------------------------------------------- closing
    async def close(self, timeout: float | None = DEFAULT_TIMEOUT) -> None:
        """Send ``stream_close`` and wait for ``stream_closed``.

        Does nothing on a stream that has already ended (the server closed it, or
        the connection is gone).
        """
        if self.close_reason is not None:
            return
        await self.client._close_stream(self, timeout)

    # --------------------------------------------------------------- client side
    def _data(self, payload: bytes) -> None:
        self.bytes_in += len(payload)
        self.frames_in += 1
        if payload:
            self._chunks.append(payload)
            self._wake()

    def _end(self, reason: str) -> None:
        if self.close_reason is not None:
            return
        self.close_reason = reason
        if not self._ended.done():
            self._ended.set_result(None)
        self._wake()

    def _ended_error(self) -> MuxClosed:
        return MuxClosed(f"stream {self.stream_id} ended ({self.close_reason})")

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    # --------------------------------------------------------------- views
    def json(self, max_frame: int = j.DEFAULT_MAX_FRAME) -> JsonStream:
        """A view speaking the ``json`` protocol (section 2) on this stream."""
        return JsonStream(self, max_frame)

    def binary(self, max_frame: int = b.DEFAULT_MAX_FRAME) -> BinaryStream:
        """A view speaking the ``binary`` protocol (section 3) on this stream."""
        return BinaryStream(self, max_frame)

    def lines(self) -> LineStream:
        """A view speaking the ``echo`` protocol (section 5, text lines) on this stream."""
        return LineStream(self)


class JsonStream:
    """``<length>\\n<body>`` JSON messages over a :class:`MuxStream`."""

    def __init__(self, stream: MuxStream, max_frame: int = j.DEFAULT_MAX_FRAME) -> None:
        self.stream = stream
        self._decoder = j.JsonDecoder(max_frame)
        self._pending: deque[Message] = deque()

    async def send(self, message: Message) -> None:
        """Frame and send one message."""
        self.stream.write(j.encode(message))
        await self.stream.drain()

    async def receive(self, timeout: float | None = DEFAULT_TIMEOUT) -> Message:
        """The next message from the stream's session.

        Raises :class:`MuxClosed` when the stream ends first, :class:`TimeoutError`
        after ``timeout`` seconds, and :class:`~verb_console.protocols.ProtocolError`
        when the server's framing is broken.
        """
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        while not self._pending:
            left = None if deadline is None else max(0.0, deadline - loop.time())
            chunk = await self.stream.read(left)
            if not chunk:
                raise self.stream._ended_error()
            for body in self._decoder.receive(chunk):
                if isinstance(body, ProtocolError):
                    raise body
                self._pending.append(orjson.loads(body))
        return self._pending.popleft()

    async def request(self, message: Message, timeout: float | None = DEFAULT_TIMEOUT) -> Message:
        """Send ``message`` and return the next message received."""
        await self.send(message)
        return await self.receive(timeout)

    async def ping(self, timeout: float | None = DEFAULT_TIMEOUT) -> Message:
        """A json ``ping`` on this stream; returns the ``pong``."""
        return await self.request({"type": "ping"}, timeout)

    def __aiter__(self) -> AsyncIterator[Message]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[Message]:
        while True:
            try:
                yield await self.receive(None)
            except MuxClosed:
                return


class BinaryStream:
    """8-byte header binary frames over a :class:`MuxStream`."""

    def __init__(self, stream: MuxStream, max_frame: int = b.DEFAULT_MAX_FRAME) -> None:
        self.stream = stream
        self._decoder = b.BinaryDecoder(max_frame)
        self._pending: deque[b.BinaryFrame] = deque()

    async def send(self, type: int, payload: bytes = b"", flags: int = 0) -> None:
        """Frame and send one binary frame."""
        self.stream.write(b.encode_frame(type, payload, flags))
        await self.stream.drain()

    async def receive(self, timeout: float | None = DEFAULT_TIMEOUT) -> b.BinaryFrame:
        """The next frame from the stream's session (see :meth:`JsonStream.receive`)."""
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        while not self._pending:
            left = None if deadline is None else max(0.0, deadline - loop.time())
            chunk = await self.stream.read(left)
            if not chunk:
                raise self.stream._ended_error()
            for frame in self._decoder.receive(chunk):
                if isinstance(frame, ProtocolError):
                    raise frame
                self._pending.append(frame)
        return self._pending.popleft()

    async def heartbeat(self, timeout: float | None = DEFAULT_TIMEOUT) -> b.BinaryFrame:
        """Send a HEARTBEAT and return the next frame (a HEARTBEAT_ACK with payload ``pong``)."""
        await self.send(b.HEARTBEAT)
        return await self.receive(timeout)

    async def echo(
        self, payload: bytes, flags: int = 0, timeout: float | None = DEFAULT_TIMEOUT
    ) -> b.BinaryFrame:
        """Send a DATA frame and return the next frame (its echo)."""
        await self.send(b.DATA, payload, flags)
        return await self.receive(timeout)


class LineStream:
    """Text lines (the ``echo`` protocol) over a :class:`MuxStream`."""

    def __init__(self, stream: MuxStream) -> None:
        self.stream = stream
        self._buf = bytearray()

    async def send_line(self, text: str) -> None:
        """Send ``text`` followed by ``\\n``."""
        self.stream.write(text.encode() + b"\n")
        await self.stream.drain()

    async def readline(self, timeout: float | None = DEFAULT_TIMEOUT) -> str:
        """The next line received, without its ``\\n``.

        Raises :class:`MuxClosed` when the stream ends before a whole line arrives.
        """
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        while True:
            nl = self._buf.find(b"\n")
            if nl >= 0:
                line = bytes(self._buf[:nl])
                del self._buf[: nl + 1]
                return line.decode()
            left = None if deadline is None else max(0.0, deadline - loop.time())
            chunk = await self.stream.read(left)
            if not chunk:
                raise self.stream._ended_error()
            self._buf += chunk


class MuxClient:
    """A ``mux`` connection: control stream 0 and the streams this client opened.

    Create one with :meth:`connect`. Figures: :attr:`frames_in`, :attr:`bytes_in`
    and :attr:`max_payload_in` (the largest payload the server put in one frame).
    """

    def __init__(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        *,
        max_payload: int = DEFAULT_MAX_PAYLOAD,
        max_frame: int = 16 * 1024 * 1024,
    ) -> None:
        self.reader = reader
        self.writer = writer
        self.max_payload = max_payload
        self.streams: dict[int, MuxStream] = {}
        #: Why the connection ended (``"client"``, ``"eof"`` or an error text); None while open.
        self.close_reason: str | None = None
        #: The ``reason`` of a control ``closing`` notice, if the server sent one.
        self.closing_reason: str | None = None
        self.frames_in = 0
        self.bytes_in = 0
        self.max_payload_in = 0
        self._decoder = m.MuxDecoder(max_frame)
        self._next_id = 1
        self._refs = itertools.count(1)
        self._opening: dict[int, asyncio.Future[None]] = {}
        self._closing: dict[int, asyncio.Future[None]] = {}
        # Streams the server closed while our stream_close was on its way: the
        # server answers that one with unknown_stream, which is no news.
        self._crossed: set[int] = set()
        self._pings: dict[Any, asyncio.Future[Message]] = {}
        self._control: deque[Message] = deque()
        self._control_waiter: asyncio.Future[None] | None = None
        self._reader_task = asyncio.get_running_loop().create_task(self._read_loop())

    @classmethod
    async def connect(
        cls,
        host: str = "127.0.0.1",
        port: int = 8080,
        *,
        timeout: float | None = DEFAULT_TIMEOUT,
        max_payload: int = DEFAULT_MAX_PAYLOAD,
    ) -> MuxClient:
        """Open the TCP connection. Nothing is sent until a stream is opened or a ping is sent."""
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection(host, port, limit=READ_SIZE), timeout
        )
        return cls(reader, writer, max_payload=max_payload)

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
        """True once the TCP connection has ended."""
        return self.close_reason is not None

    @property
    def local_id(self) -> str:
        """``<ip>:<port>`` of this end: the server's connection id for this client."""
        host, port = self.writer.get_extra_info("sockname")[:2]
        return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"

    # ------------------------------------------------------------------ control
    def send_control(self, message: Message) -> None:
        """Send one control message as is (replies come from :meth:`control_message`)."""
        self._write([m.encode_control(message)])

    async def control_message(self, timeout: float | None = DEFAULT_TIMEOUT) -> Message:
        """The next control message that no call of this client was waiting for.

        Raises :class:`MuxClosed` when the connection has ended and none is left.
        """
        while not self._control:
            if self.close_reason is not None:
                raise MuxClosed(f"connection closed ({self.close_reason})")
            waiter = self._control_waiter = asyncio.get_running_loop().create_future()
            try:
                await asyncio.wait_for(waiter, timeout)
            finally:
                self._control_waiter = None
        return self._control.popleft()

    async def ping(self, timeout: float | None = DEFAULT_TIMEOUT) -> Message:
        """Ping on the control stream; returns the ``pong`` (with this call's ``ref``)."""
        ref = next(self._refs)
        fut: asyncio.Future[Message] = asyncio.get_running_loop().create_future()
        self._pings[ref] = fut
        try:
            self.send_control({"type": "ping", "ref": ref})
            return await asyncio.wait_for(fut, timeout)
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

        Waits for ``stream_created``; raises :class:`MuxError` with the server's
        code (``unknown_stream_type``, ``too_many_streams``...) on an error reply.
        """
        self._check_open()
        sid = self._next_id
        self._next_id += 2
        meta = metadata if metadata is not None else {}
        stream = MuxStream(self, sid, kind, meta)
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._opening[sid] = fut
        # Registered now: data can follow stream_created in the same read.
        self.streams[sid] = stream
        try:
            self.send_control(
                {"type": "stream_create", "streamId": sid, "streamType": kind, "metadata": meta}
            )
            await asyncio.wait_for(fut, timeout)
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
        fut = self._closing.get(sid)
        if fut is None:
            fut = self._closing[sid] = asyncio.get_running_loop().create_future()
            self.send_control({"type": "stream_close", "streamId": sid})
        try:
            await asyncio.wait_for(asyncio.shield(fut), timeout)
        finally:
            if fut.done():
                self._closing.pop(sid, None)

    # ------------------------------------------------------------------ output
    def _check_open(self) -> None:
        if self.close_reason is not None:
            raise MuxClosed(f"connection closed ({self.close_reason})")

    def _write(self, frames: list[bytes]) -> None:
        self._check_open()
        if frames:
            self.writer.write(frames[0] if len(frames) == 1 else b"".join(frames))

    async def drain(self) -> None:
        """Wait until the socket's write buffer is below its high-water mark."""
        self._check_open()
        await self.writer.drain()

    # ------------------------------------------------------------------ input
    async def _read_loop(self) -> None:
        reason = "eof"
        try:
            while True:
                data = await self.reader.read(READ_SIZE)
                if not data:
                    break
                self.bytes_in += len(data)
                for frame in self._decoder.receive(data):
                    if isinstance(frame, ProtocolError):
                        reason = f"protocol error: {frame.message}"
                        return
                    self._dispatch(frame.stream_id, frame.payload)
        except asyncio.CancelledError:
            reason = "client"
        except (ConnectionError, OSError) as exc:
            reason = f"{type(exc).__name__}: {exc}"
        finally:
            self._lost(reason)

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
            fut = self._opening.pop(sid)
            if not fut.done():
                fut.set_result(None)
            return
        if kind == "pong" and msg.get("ref") in self._pings:
            fut_p = self._pings.pop(msg["ref"])
            if not fut_p.done():
                fut_p.set_result(msg)
            return
        if kind == "stream_close" and sid in self.streams:
            stream = self.streams.pop(sid)
            stream._end("server")
            if sid in self._closing:
                # A close of ours crossing the server's: the server ended it either way.
                self._crossed.add(sid)
                self._resolve_close(sid)
            return
        if kind == "stream_closed" and sid in self._closing:
            stream_c = self.streams.pop(sid, None)
            if stream_c is not None:
                stream_c._end("client")
            self._resolve_close(sid)
            return
        if kind == "error" and sid is not None:
            if sid in self._crossed and msg.get("code") == "unknown_stream":
                self._crossed.discard(sid)
                return
            if sid in self._opening:
                fut = self._opening.pop(sid)
                if not fut.done():
                    fut.set_exception(ServerError.from_reply(msg))
                return
            if sid in self._closing and msg.get("code") == "unknown_stream":
                stream_e = self.streams.pop(sid, None)
                if stream_e is not None:
                    stream_e._end("server")
                self._resolve_close(sid)
                return
        if kind == "closing":
            self.closing_reason = msg.get("reason")
        self._control.append(msg)
        waiter = self._control_waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _resolve_close(self, sid: int) -> None:
        fut = self._closing.get(sid)
        if fut is not None and not fut.done():
            fut.set_result(None)

    def _lost(self, reason: str) -> None:
        if self.close_reason is not None:
            return
        self.close_reason = reason
        for stream in list(self.streams.values()):
            stream._end("connection")
        self.streams.clear()
        error = MuxClosed(f"connection closed ({reason})")
        for futs in (self._opening, self._pings):
            for fut in futs.values():
                if not fut.done():
                    fut.set_exception(error)
        # Closes that were waiting are done: the stream is gone with the connection.
        for fut in self._closing.values():
            if not fut.done():
                fut.set_result(None)
        self._opening.clear()
        self._closing.clear()
        self._pings.clear()
        waiter = self._control_waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)
        if not self.writer.is_closing():
            self.writer.close()

    async def wait_closed(self) -> None:
        """Wait until the connection has ended (the server closed it, or :meth:`close`)."""
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.shield(self._reader_task)

    async def close(self) -> None:
        """Close the TCP connection: every stream ends (reason ``"connection"``)."""
        if self.close_reason is None:
            self._reader_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader_task
        if not self.writer.is_closing():
            self.writer.close()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.writer.wait_closed(), 1)
