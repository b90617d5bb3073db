"""A plain TCP byte pipe, read through the same views as a mux stream.

For the ``echo`` and ``binary`` protocols on their own listeners (or an ``auto``
one)::

    async with await TcpPipe.connect("127.0.0.1", 8080) as pipe:
        frames = pipe.binary()
        ack = await frames.heartbeat()
"""

from __future__ import annotations

from types import TracebackType

import anyio
import anyio.abc

from ._io import Background, Mailbox, Outbox, spawn
from .errors import ClientClosed
from .tcp import READ_SIZE, dial
from .views import BinaryStream, ChunkPipe, LineStream

__all__ = ["TcpPipe"]


class TcpPipe(ChunkPipe):
    """One TCP connection as a byte pipe: :meth:`write`, :meth:`read`, and the views."""

    def __init__(self, stream: anyio.abc.SocketStream) -> None:
        self.stream = stream
        #: Why reading ended (``"eof"``, ``"client"`` or an error text); None while open.
        self.close_reason: str | None = None
        self._chunks: Mailbox[bytes] = Mailbox()
        self._outbox = Outbox(stream)
        self._runner: Background = spawn(self._run)

    @classmethod
    async def connect(
        cls,
        host: str = "127.0.0.1",
        port: int = 8080,
        *,
        timeout: float | None = 10.0,
        local_host: str | None = None,
    ) -> TcpPipe:
        """Open the connection; nothing is sent until the first write."""
        return cls(await dial(host, port, timeout, local_host))

    @property
    def closed(self) -> bool:
        return self.close_reason is not None

    def write(self, data: bytes) -> None:
        """Queue ``data``; raises :class:`ClientClosed` once the connection is closed."""
        if self.close_reason is not None or self._outbox.closed:
            raise ClientClosed(f"connection closed ({self.close_reason})")
        self._outbox.write(data)

    async def drain(self) -> None:
        await self._outbox.drain()

    def _ended_error(self) -> ClientClosed:
        return ClientClosed(f"connection closed ({self.close_reason})")

    def binary(self) -> BinaryStream:
        """Binary frames (PROTOCOL.md section 3) over this connection."""
        return BinaryStream(self)

    def lines(self) -> LineStream:
        """Text lines (the ``echo`` protocol, section 5) over this connection."""
        return LineStream(self)

    async def _run(self) -> None:
        reason = "client"
        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(self._outbox.run)
                try:
                    while True:
                        data = await self.stream.receive(READ_SIZE)
                        self._chunks.put(data, len(data))
                except (anyio.EndOfStream, anyio.ClosedResourceError):
                    reason = "eof"
                except (OSError, anyio.BrokenResourceError) as exc:
                    reason = f"{type(exc).__name__}: {exc}"
                tg.cancel_scope.cancel()
        finally:
            self.close_reason = reason
            self._outbox.close()
            self._chunks.end()
            with anyio.CancelScope(shield=True):
                await anyio.aclose_forcefully(self.stream)

    async def close(self) -> None:
        """Close the connection (what was written goes out first, for at most a second)."""
        if not self._outbox.closed:
            with anyio.move_on_after(1.0):
                await self._outbox.drain()
        self._runner.cancel()
        await self._runner.wait()

    async def __aenter__(self) -> TcpPipe:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()
