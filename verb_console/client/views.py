"""Views of a mux stream in the stream's own protocol: json, binary, echo lines.

A view reads the stream's data when asked (``receive``, ``request``,
``readline``) and hands out whole messages, frames or lines; raw
:meth:`MuxStream.read` calls may be mixed with it, each taking the next chunk.
:class:`JsonStream` is the json client core
(:class:`~verb_console.client.core.JsonCore`) over the stream, so its
:meth:`~JsonStream.request` matches the reply by ``ref`` and raises
:class:`~verb_console.client.errors.ServerError` for an error reply, as
:class:`~verb_console.client.tcp.JsonClient`'s does. The stream's ``welcome``
is an ordinary message here (the first :meth:`~JsonStream.receive`), as the
stream's session greets the moment the stream is created.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Generic, Protocol, TypeVar

from ..protocols import binary as b
from ..protocols import json as j
from ..protocols.errors import ProtocolError
from ._io import Mailbox, pull
from .core import DEFAULT, DELIBERATE_REASONS, JsonCore
from .errors import MuxClosed

__all__ = ["BinaryStream", "ChunkPipe", "JsonStream", "LineStream", "Pipe"]

DEFAULT_TIMEOUT = 10.0

T = TypeVar("T")


class Pipe(Protocol):
    """What a view reads from and writes to: a mux stream, or a plain TCP pipe."""

    _chunks: Mailbox[bytes]

    def write(self, data: bytes) -> None: ...

    async def send(self, data: bytes) -> None: ...

    def _ended_error(self) -> ConnectionError: ...


class ChunkPipe:
    """What a mux stream and a TCP pipe share: :meth:`send` and :meth:`read`."""

    _chunks: Mailbox[bytes]

    def write(self, data: bytes) -> None:  # pragma: no cover - every pipe has its own
        raise NotImplementedError

    async def drain(self) -> None:  # pragma: no cover - every pipe has its own
        raise NotImplementedError

    async def send(self, data: bytes) -> None:
        """:meth:`write` then :meth:`drain`."""
        self.write(data)
        await self.drain()

    async def read(self, timeout: float | None = None) -> bytes:
        """The next chunk received, or ``b""`` once the pipe has ended and all is read.

        Raises :class:`TimeoutError` when nothing arrives within ``timeout`` seconds.
        """
        return await self._chunks.get(timeout) or b""


class _Connection(Protocol):
    @property
    def local_id(self) -> str: ...


class StreamPipe(Pipe, Protocol):
    """What a json view needs of a mux stream (``mux.MuxStream``) beyond a pipe."""

    @property
    def client(self) -> _Connection: ...

    @property
    def stream_id(self) -> int: ...

    @property
    def close_reason(self) -> str | None: ...

    async def drain(self) -> None: ...

    async def close(self) -> None: ...


class JsonStream(JsonCore):
    """``<length>\\n<body>`` JSON messages over a :class:`MuxStream`."""

    closed_error = MuxClosed
    request_timeout = DEFAULT_TIMEOUT
    receive_timeout = DEFAULT_TIMEOUT

    def __init__(self, stream: StreamPipe, max_frame: int | None = None) -> None:
        super().__init__(j.DEFAULT_MAX_FRAME if max_frame is None else max_frame)
        self.stream = stream

    def __repr__(self) -> str:
        return f"<JsonStream on {self.stream!r}>"

    @property
    def id(self) -> str:
        """The stream session's id: its welcome's, else ``<connection id>#<stream id>``."""
        if self._welcome is not None:
            return str(self._welcome["id"])
        return f"{self.stream.client.local_id}#{self.stream.stream_id}"

    def _write(self, data: bytes) -> None:
        self.stream.write(data)

    async def _drain(self) -> None:
        await self.stream.drain()

    async def _wait(self, ready: Callable[[], object], timeout: float | None) -> None:
        if self._finished:
            return
        if not await pull(self.stream._chunks, ready, self._take, timeout) and not ready():
            self._stream_ended()

    def _take(self, data: bytes) -> None:
        error = self._feed(data)
        if error is not None and not self._finished:
            self._connection_ended(f"bad frame from the server: {error}")
            self._finish(MuxClosed(f"bad frame from the server: {error}"))

    def _stream_ended(self) -> None:
        reason = self.stream.close_reason
        self._connection_ended(f"stream {self.stream.stream_id} ended ({reason})")
        deliberate = reason == "client" or self.closing_reason in DELIBERATE_REASONS
        self._finish(None if deliberate else self.stream._ended_error())

    async def close(self) -> None:
        """Close the stream (see :meth:`MuxStream.close`)."""
        await self.stream.close()


class _Decoded(Generic[T]):
    """A view handing out what its decoder makes of the stream's bytes, in order."""

    def __init__(self, stream: Pipe) -> None:
        self.stream = stream
        self._items: Mailbox[T] = Mailbox()
        self._error: ProtocolError | None = None

    def _take(self, data: bytes) -> None:
        raise NotImplementedError

    async def _next(self, timeout: float | None) -> T:
        if timeout is not None and timeout < 0:
            timeout = DEFAULT_TIMEOUT
        items = self._items
        if not items and self._error is None:
            await pull(self.stream._chunks, items.__len__, self._take, timeout)
        if items:
            return items.get_nowait()
        if self._error is not None:
            raise self._error
        raise self.stream._ended_error()


class BinaryStream(_Decoded[b.BinaryFrame]):
    """8-byte header binary frames over a :class:`MuxStream` (or a :class:`TcpPipe`)."""

    def __init__(self, stream: Pipe, max_frame: int | None = None) -> None:
        super().__init__(stream)
        self._decoder = b.BinaryDecoder(b.DEFAULT_MAX_FRAME if max_frame is None else max_frame)

    def _take(self, data: bytes) -> None:
        for frame in self._decoder.receive(data):
            if isinstance(frame, ProtocolError):
                self._error = frame
                break
            self._items.put(frame)

    async def send(self, type: int, payload: bytes = b"", flags: int = 0) -> None:
        """Frame and send one binary frame."""
        await self.stream.send(b.encode_frame(type, payload, flags))

    async def receive(self, timeout: float | None = DEFAULT) -> b.BinaryFrame:
        """The next frame from the stream's session.

        Raises :class:`MuxClosed` when the stream ends first, :class:`TimeoutError`
        after ``timeout`` seconds (10 unless told), and
        :class:`~verb_console.protocols.ProtocolError` when the server's framing is broken.
        """
        return await self._next(timeout)

    async def heartbeat(self, timeout: float | None = DEFAULT) -> b.BinaryFrame:
        """Send a HEARTBEAT and return the next frame (a HEARTBEAT_ACK with payload ``pong``)."""
        await self.send(b.HEARTBEAT)
        return await self.receive(timeout)

    async def echo(
        self, payload: bytes, flags: int = 0, timeout: float | None = DEFAULT
    ) -> b.BinaryFrame:
        """Send a DATA frame and return the next frame (its echo)."""
        await self.send(b.DATA, payload, flags)
        return await self.receive(timeout)


class LineStream(_Decoded[str]):
    """Text lines (the ``echo`` protocol) over a :class:`MuxStream` (or a :class:`TcpPipe`)."""

    def __init__(self, stream: Pipe) -> None:
        super().__init__(stream)
        self._buf = bytearray()

    def _take(self, data: bytes) -> None:
        buf = self._buf
        start = len(buf)
        buf += data
        while (nl := buf.find(b"\n", start)) >= 0:
            line = bytes(buf[:nl])
            del buf[: nl + 1]
            start = 0
            self._items.put(line.decode())

    async def send_line(self, text: str) -> None:
        """Send ``text`` followed by ``\\n``."""
        await self.stream.send(text.encode() + b"\n")

    async def readline(self, timeout: float | None = DEFAULT) -> str:
        """The next line received, without its ``\\n``.

        Raises :class:`MuxClosed` when the stream ends before a whole line arrives.
        """
        return await self._next(timeout)
