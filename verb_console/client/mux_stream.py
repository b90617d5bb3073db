"""One stream of a :class:`~verb_console.client.mux.MuxClient`: a byte pipe to one
server-side session, read raw or through a view in the stream's protocol."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol, TypeVar

import anyio

from ..protocols import mux as m
from ._io import Mailbox
from .errors import MuxClosed
from .views import BinaryStream, ChunkPipe, JsonStream, LineStream

__all__ = ["DEFAULT_TIMEOUT", "MuxStream"]

DEFAULT_TIMEOUT = 10.0

Message = dict[str, Any]
V = TypeVar("V")


class Sink(Protocol):
    """A view fed as data arrives, rather than reading when asked."""

    def stream_data(self, stream: MuxStream, data: bytes) -> None: ...

    def stream_ended(self, stream: MuxStream, reason: str) -> None: ...


class MuxConnection(Protocol):
    """What a stream asks of its client (``mux.MuxClient``)."""

    max_payload: int

    @property
    def local_id(self) -> str: ...

    def _write(self, frames: list[bytes]) -> None: ...

    async def drain(self) -> None: ...

    async def _close_stream(self, stream: MuxStream, timeout: float | None) -> None: ...

    def _json_view(
        self, stream: MuxStream, max_frame: int | None, **options: Any
    ) -> JsonStream: ...


class MuxStream(ChunkPipe):
    """One stream of a :class:`MuxClient`: a byte pipe to one server-side session.

    Received data frames are kept in order; :meth:`read` (or ``async for chunk in
    stream``) hands them out. Writes are framed and queued at once; :meth:`drain`
    waits until they are handed to the socket. For the stream's own protocol, use
    one view: :meth:`json`, :meth:`binary` or :meth:`lines` (the view then reads
    the stream's data, including what arrived before it was made).
    """

    def __init__(self, client: MuxConnection, stream_id: int, kind: str, metadata: Message) -> None:
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
        self._chunks: Mailbox[bytes] = Mailbox()
        self._views: dict[type, object] = {}
        # A reconnecting json view takes the data as it arrives (see mux_json).
        self._sink: Sink | None = None
        self._ended = anyio.Event()

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
        return self._chunks.size

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
        """Wait until what was written is handed to the socket."""
        await self.client.drain()

    # --------------------------------------------------------------- reading (read: ChunkPipe)
    def __aiter__(self) -> MuxStream:
        return self

    async def __anext__(self) -> bytes:
        chunk = await self.read()
        if not chunk:
            raise StopAsyncIteration
        return chunk

    async def wait_closed(self) -> str:
        """Wait until the stream ends; returns :attr:`close_reason`."""
        await self._ended.wait()
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
            sink = self._sink
            if sink is not None:
                sink.stream_data(self, payload)
            else:
                self._chunks.put(payload, len(payload))

    def _end(self, reason: str) -> None:
        if self.close_reason is not None:
            return
        self.close_reason = reason
        self._ended.set()
        self._chunks.end()
        if self._sink is not None:
            self._sink.stream_ended(self, reason)

    def _ended_error(self) -> MuxClosed:
        return MuxClosed(f"stream {self.stream_id} ended ({self.close_reason})")

    # --------------------------------------------------------------- views
    def _view(self, kind: type[V], make: Callable[[], V]) -> V:
        view = self._views.get(kind)
        if not isinstance(view, kind):
            view = self._views[kind] = make()
        return view

    def json(self, max_frame: int | None = None, **options: Any) -> JsonStream:
        """The view speaking the ``json`` protocol (section 2) on this stream.

        On a client made with ``reconnect=True`` it is a
        :class:`~verb_console.client.mux_json.ResumingJsonStream`, which comes
        back on a new stream when this one is lost; ``options`` are its
        callbacks (``on_disconnect``, ``on_reconnect``, ``on_give_up``,
        ``on_recovery``) and ``send_buffer``.
        """
        return self._view(JsonStream, lambda: self.client._json_view(self, max_frame, **options))

    def binary(self, max_frame: int | None = None) -> BinaryStream:
        """The view speaking the ``binary`` protocol (section 3) on this stream."""
        return self._view(BinaryStream, lambda: BinaryStream(self, max_frame))

    def lines(self) -> LineStream:
        """The view speaking the ``echo`` protocol (section 5, text lines) on this stream."""
        return self._view(LineStream, lambda: LineStream(self))
