"""The small concurrency pieces the clients share, on anyio (asyncio or trio).

- :func:`spawn` runs a client's background work (its reader, its writer, its
  reconnection) in a task of its own, so that ``await client.connect()`` and
  ``await client.close()`` may be called from different tasks, as asyncio code
  does. The work itself runs inside an anyio task group and cancel scope.
- :class:`Mailbox` is an unbounded, ordered inbox that can be ended: the one
  place a client waits for "the next item, until a deadline".
- :class:`Outbox` buffers writes so they can be queued without ``await`` and go
  out in order, one ``send`` at a time, on any anyio byte stream.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any, Generic, TypeVar

import anyio
import anyio.abc
import anyio.lowlevel

__all__ = ["Background", "Mailbox", "Outbox", "pull", "spawn"]

log = logging.getLogger("verb_console.client")

T = TypeVar("T")

_tasks: set[asyncio.Task[None]] = set()


class Background:
    """A handle on work started by :func:`spawn`: cancel it, wait for its end."""

    def __init__(self) -> None:
        self.scope = anyio.CancelScope()
        self.done = anyio.Event()

    def cancel(self) -> None:
        self.scope.cancel()

    @property
    def finished(self) -> bool:
        return self.done.is_set()

    async def wait(self) -> None:
        await self.done.wait()


def spawn(fn: Callable[[], Awaitable[Any]]) -> Background:
    """Run ``fn()`` in a task of its own on the running event loop (asyncio or trio).

    Errors are logged, never raised into the loop; cancelling the handle cancels ``fn``.
    """
    handle = Background()

    async def run() -> None:
        try:
            with handle.scope:
                await fn()
        except Exception:
            log.exception("client background task failed")
        finally:
            handle.done.set()

    native = anyio.lowlevel.current_token().native_token
    if isinstance(native, asyncio.AbstractEventLoop):
        task = native.create_task(run())
        _tasks.add(task)
        task.add_done_callback(_tasks.discard)
    else:  # trio: a task of the run itself, needing no nursery of the caller's
        import trio

        trio.lowlevel.spawn_system_task(run)
    return handle


class Mailbox(Generic[T]):
    """Items in arrival order, for one or more readers; :meth:`end` ends it for good.

    :attr:`size` sums the sizes given to :meth:`put` of the items not read yet.
    """

    def __init__(self) -> None:
        self._items: deque[tuple[T, int]] = deque()
        self._event: anyio.Event | None = None
        self.size = 0
        self.ended = False

    def __len__(self) -> int:
        return len(self._items)

    def put(self, item: T, size: int = 0) -> None:
        self._items.append((item, size))
        self.size += size
        self._wake()

    def end(self) -> None:
        self.ended = True
        self._wake()

    def poke(self) -> None:
        """Wake every :meth:`until` so it checks its condition again."""
        self._wake()

    def _wake(self) -> None:
        if self._event is not None:
            self._event.set()
            self._event = None

    def get_nowait(self) -> T:
        item, size = self._items.popleft()
        self.size -= size
        return item

    def take_all(self) -> list[T]:
        items = [item for item, _ in self._items]
        self._items.clear()
        self.size = 0
        return items

    async def until(self, ready: Callable[[], object], timeout: float | None = None) -> None:
        """Wait until ``ready()`` is true, checking it whenever the mailbox changes or is poked.

        This is the clients' one read-until-deadline loop. Raises ``TimeoutError``
        after ``timeout`` seconds (None: no limit).
        """
        with anyio.fail_after(timeout):
            while not ready():
                if self._event is None:
                    self._event = anyio.Event()
                await self._event.wait()

    def _has_news(self) -> bool:
        return bool(self._items) or self.ended

    async def wait(self, timeout: float | None) -> bool:
        """Wait until an item is there (True) or the mailbox has ended with none left (False)."""
        await self.until(self._has_news, timeout)
        return bool(self._items)

    async def get(self, timeout: float | None = None) -> T | None:
        """The next item; None once the mailbox has ended and is empty."""
        if not await self.wait(timeout):
            return None
        return self.get_nowait()


class Outbox:
    """Writes queued without ``await``, sent in order by one writer task.

    :meth:`run` is the writer (run it in the connection's task group); :meth:`drain`
    waits until what was queued has been handed to the stream.
    """

    def __init__(self, stream: anyio.abc.ByteSendStream) -> None:
        self.stream = stream
        self._buf: list[bytes] = []
        self._queued = 0
        self._ready = anyio.Event()
        self._flushed = anyio.Event()
        self._flushed.set()
        self.error: BaseException | None = None
        self.closed = False

    @property
    def pending(self) -> int:
        """Bytes queued and not yet handed to the stream."""
        return self._queued

    def write(self, data: bytes) -> None:
        if self.closed:
            raise ConnectionError("the connection is closed")
        if not data:
            return
        self._buf.append(data)
        self._queued += len(data)
        if self._flushed.is_set():
            self._flushed = anyio.Event()
        self._ready.set()

    async def drain(self) -> None:
        await self._flushed.wait()
        if self.error is not None:
            raise ConnectionError(f"sending failed: {self.error}") from self.error

    async def run(self) -> None:
        """Send what is queued until the outbox is closed or sending fails."""
        try:
            while True:
                await self._ready.wait()
                if self.closed:
                    return
                self._ready = anyio.Event()
                while self._buf:
                    chunk = self._buf[0] if len(self._buf) == 1 else b"".join(self._buf)
                    self._buf.clear()
                    await self.stream.send(chunk)
                    self._queued -= len(chunk)
                self._flushed.set()
        except (OSError, anyio.BrokenResourceError, anyio.ClosedResourceError) as exc:
            self.error = exc
        finally:
            self.close()

    def close(self) -> None:
        self.closed = True
        self._buf.clear()
        self._queued = 0
        self._flushed.set()
        self._ready.set()


async def pull(
    chunks: Mailbox[bytes],
    ready: Callable[[], object],
    feed: Callable[[bytes], None],
    timeout: float | None,
) -> bool:
    """Take chunks from ``chunks`` and ``feed`` them until ``ready()``; False if they end first.

    Several tasks may pull from one mailbox at once: a chunk is fed the moment it
    is taken, so chunks are fed in order, and each feed wakes the other pullers to
    check their own condition. Raises ``TimeoutError`` after ``timeout`` seconds.
    """

    def news() -> bool:
        return bool(ready()) or chunks._has_news()

    with anyio.fail_after(timeout):
        while not ready():
            await chunks.until(news)
            if ready():
                break
            if not chunks:
                return False  # ended
            feed(chunks.get_nowait())
            chunks.poke()
    return True
