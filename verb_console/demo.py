"""``--demo``: real simulated clients on loopback so every console pane is alive.

The clients are the project's own (:mod:`verb_console.client`): json chatters in
rooms (:class:`JsonClient`), an echo and a binary client (:class:`TcpPipe`), a mux
connection with three streams (:class:`MuxClient`), and uploaders (one of which
gives up half way). They connect from several loopback addresses (127.0.0.2,
127.0.0.3, ...) so the throttle pane has more than one row.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import logging
import os
import random
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

from .client import JsonClient, JsonStream, MuxClient, ServerError, TcpPipe

log = logging.getLogger("verb_console.demo")

T = TypeVar("T")

ROOMS = ("lobby", "ops", "random")
WORDS = ("deploy", "ok", "latency", "spike", "queue", "drained", "retry", "cache", "warm", "ack")


def _line(rng: random.Random) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(rng.randint(2, 6)))


async def _discard(messages: AsyncIterator[Any]) -> None:
    """Read and drop what a client receives, so nothing piles up unread."""
    with contextlib.suppress(ConnectionError):
        async for _ in messages:
            pass


class Demo:
    """Runs the simulated clients until :meth:`stop`."""

    def __init__(self, host: str, port: int, *, seed: int | None = None, clients: int = 8) -> None:
        self.host = host if host not in ("0.0.0.0", "::", "") else "127.0.0.1"
        self.port = port
        self.clients = clients
        self.rng = random.Random(seed)
        self._tasks: list[asyncio.Task[None]] = []
        self._stopping = False
        self._ids: list[str] = []
        self._addr = 1
        # Spread clients over a few loopback addresses (Linux routes all of 127/8 to lo).
        self._spread = self.host.startswith("127.")

    async def _connect(self, make: Callable[[str | None], Awaitable[T]]) -> T:
        """``make(local_host)`` from the next loopback address, or the default one."""
        if self._spread:
            self._addr = self._addr % 5 + 2
            try:
                return await make(f"127.0.0.{self._addr}")
            except OSError:
                self._spread = False  # not routable here: the default source from now on
        return await make(None)

    async def _json(self) -> JsonClient:
        async def make(local_host: str | None) -> JsonClient:
            client = JsonClient(self.host, self.port, reconnect=False, local_host=local_host)
            await client.connect()
            return client

        return await self._connect(make)

    def start(self) -> None:
        spawn = self._spawn
        for i in range(self.clients):
            spawn(self._chatter, i)
        spawn(self._echo)
        spawn(self._binary)
        spawn(self._mux)
        spawn(self._uploader)

    def _spawn(self, fn: Callable[..., Awaitable[None]], *args: Any) -> None:
        async def forever() -> None:
            while not self._stopping:
                try:
                    await fn(*args)
                except (OSError, ServerError):  # refused, cut, timed out: try again later
                    pass
                except asyncio.CancelledError:
                    raise
                except Exception:
                    log.exception("demo client failed")
                await asyncio.sleep(self.rng.uniform(1.0, 4.0))

        self._tasks.append(asyncio.get_running_loop().create_task(forever()))

    async def stop(self) -> None:
        self._stopping = True
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._tasks.clear()

    # --- json chatter -----------------------------------------------------
    async def _chatter(self, index: int) -> None:
        rng = self.rng
        client = await self._json()
        reading = asyncio.ensure_future(_discard(client.messages()))
        try:
            self._ids.append(client.id)
            del self._ids[:-50]
            rooms = rng.sample(ROOMS, rng.randint(1, 2))
            for room in rooms:
                await client.join_room(room)
            # Live for a while, then leave (so closed sessions appear too).
            for _ in range(rng.randint(20, 200)):
                await asyncio.sleep(rng.uniform(0.05, 0.6))
                roll = rng.random()
                if roll < 0.5:
                    await client.room_message(rng.choice(rooms), _line(rng), confirm=False)
                elif roll < 0.6:
                    await client.broadcast(_line(rng), confirm=False)
                elif roll < 0.7 and self._ids:
                    await client.private(rng.choice(self._ids), _line(rng), confirm=False)
                else:
                    await client.ping()
        finally:
            await client.close()
            await reading

    # --- echo and binary --------------------------------------------------
    async def _pipe(self) -> TcpPipe:
        return await self._connect(
            lambda local_host: TcpPipe.connect(self.host, self.port, local_host=local_host)
        )

    async def _echo(self) -> None:
        async with await self._pipe() as pipe:
            lines = pipe.lines()
            for _ in range(self.rng.randint(30, 120)):
                await lines.send_line(_line(self.rng))
                await lines.readline()  # the greeting first, then each echo in turn
                await asyncio.sleep(self.rng.uniform(0.2, 1.0))

    async def _binary(self) -> None:
        async with await self._pipe() as pipe:
            frames = pipe.binary()
            for i in range(self.rng.randint(30, 120)):
                if i % 3 == 0:
                    await frames.heartbeat()
                else:
                    await frames.echo(os.urandom(self.rng.randint(16, 4096)))
                await asyncio.sleep(self.rng.uniform(0.2, 1.0))

    # --- mux --------------------------------------------------------------
    async def _mux(self) -> None:
        rng = self.rng
        mux = await self._connect(
            lambda local_host: MuxClient.connect(self.host, self.port, local_host=local_host)
        )
        async with mux as client:
            chat: JsonStream = (await client.open_stream("json")).json()
            lines = (await client.open_stream("echo")).lines()
            frames = (await client.open_stream("binary")).binary()
            await chat.join_room("ops")
            reading = asyncio.ensure_future(_discard(chat.messages()))
            try:
                for _ in range(rng.randint(30, 150)):
                    await asyncio.sleep(rng.uniform(0.1, 0.8))
                    roll = rng.random()
                    if roll < 0.4:
                        await chat.room_message("ops", _line(rng), confirm=False)
                    elif roll < 0.7:
                        await lines.send_line(_line(rng))
                        await lines.readline()
                    elif roll < 0.9:
                        await frames.heartbeat()
                    else:
                        await client.ping()
            finally:
                reading.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await reading

    # --- uploads ----------------------------------------------------------
    async def _uploader(self) -> None:
        rng = self.rng
        client = await self._json()
        reading = asyncio.ensure_future(_discard(client.messages()))
        try:
            n = 0
            while not self._stopping:
                n += 1
                size = rng.randint(1, 6) * 1024 * 1024
                chunk = 64 * 1024
                data = os.urandom(size)
                tid = f"demo-{os.getpid()}-{n}"
                name = f"demo-{n:04d}-{rng.randint(0, 1 << 20):06x}.bin"
                await client.request(
                    {
                        "type": "file_start",
                        "transferId": tid,
                        "filename": name,
                        "fileSize": size,
                        "chunkSize": chunk,
                        "sha256": hashlib.sha256(data).hexdigest(),
                    }
                )
                give_up = rng.random() < 0.2
                for i, off in enumerate(range(0, size, chunk)):
                    if give_up and off > size // 2:
                        await client.request({"type": "file_abort", "transferId": tid})
                        break
                    piece = base64.b64encode(data[off : off + chunk]).decode()
                    await client.send(
                        {"type": "file_chunk", "transferId": tid, "chunkIndex": i, "data": piece}
                    )
                    await asyncio.sleep(0.03)
                else:
                    await client.request({"type": "file_end", "transferId": tid}, timeout=30)
                await asyncio.sleep(rng.uniform(2.0, 6.0))
        finally:
            await client.close()
            await reading
