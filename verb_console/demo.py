"""``--demo``: real simulated clients on loopback so every console pane is alive.

The clients are ordinary TCP clients of the running server: json chatters in
rooms, an echo client, a binary client, a mux connection with three streams, and
uploaders (one of which gives up half way). They connect from several loopback
addresses (127.0.0.2, 127.0.0.3, ...) so the throttle pane has more than one row.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import logging
import os
import random
from collections.abc import Awaitable, Callable
from typing import Any

import orjson

from .protocols import binary as b
from .protocols import mux as m
from .protocols.json import JsonDecoder, encode

log = logging.getLogger("verb_console.demo")

ROOMS = ("lobby", "ops", "random")
WORDS = ("deploy", "ok", "latency", "spike", "queue", "drained", "retry", "cache", "warm", "ack")


def _line(rng: random.Random) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(rng.randint(2, 6)))


class Demo:
    """Runs the simulated clients until :meth:`stop`."""

    def __init__(self, host: str, port: int, *, seed: int | None = None, clients: int = 8) -> None:
        self.host = host
        self.port = port
        self.clients = clients
        self.rng = random.Random(seed)
        self._tasks: list[asyncio.Task[None]] = []
        self._stopping = False
        self._ids: list[str] = []
        self._addr = 1

    def _source(self) -> str:
        # Spread clients over a few loopback addresses (Linux routes all of 127/8 to lo).
        self._addr = self._addr % 5 + 2
        return f"127.0.0.{self._addr}"

    async def _open(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        host = self.host if self.host not in ("0.0.0.0", "::", "") else "127.0.0.1"
        if host.startswith("127."):
            with contextlib.suppress(OSError):
                return await asyncio.open_connection(
                    host, self.port, local_addr=(self._source(), 0)
                )
        return await asyncio.open_connection(host, self.port)

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
                except (OSError, asyncio.IncompleteReadError, ConnectionError):
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
        reader, writer = await self._open()
        dec = JsonDecoder()
        reading = asyncio.get_running_loop().create_task(self._drain_json(reader, dec))
        try:
            writer.write(encode({"type": "ping", "ref": "hello"}))
            rooms = rng.sample(ROOMS, rng.randint(1, 2))
            for room in rooms:
                writer.write(encode({"type": "join_room", "room": room}))
            # Live for a while, then leave (so closed sessions appear too).
            for _ in range(rng.randint(20, 200)):
                await asyncio.sleep(rng.uniform(0.05, 0.6))
                roll = rng.random()
                if roll < 0.5:
                    msg = {"type": "room_message", "room": rng.choice(rooms), "data": _line(rng)}
                elif roll < 0.6:
                    msg = {"type": "broadcast", "data": _line(rng)}
                elif roll < 0.7 and self._ids:
                    msg = {"type": "private", "target": rng.choice(self._ids), "data": _line(rng)}
                else:
                    msg = {"type": "ping", "ref": rng.randint(1, 1 << 30)}
                writer.write(encode(msg))
                await writer.drain()
        finally:
            reading.cancel()
            writer.close()

    async def _drain_json(self, reader: asyncio.StreamReader, dec: JsonDecoder) -> None:
        while data := await reader.read(65536):
            for body in dec.feed(data):
                msg = orjson.loads(body)
                if msg.get("type") == "welcome":
                    self._ids.append(msg["id"])
                    del self._ids[:-50]

    # --- echo and binary --------------------------------------------------
    async def _echo(self) -> None:
        reader, writer = await self._open()
        try:
            for _ in range(self.rng.randint(30, 120)):
                writer.write((_line(self.rng) + "\n").encode())
                await reader.readline()
                await asyncio.sleep(self.rng.uniform(0.2, 1.0))
        finally:
            writer.close()

    async def _binary(self) -> None:
        reader, writer = await self._open()
        dec = b.BinaryDecoder()
        try:
            for i in range(self.rng.randint(30, 120)):
                if i % 3 == 0:
                    writer.write(b.encode_frame(b.HEARTBEAT))
                else:
                    writer.write(b.encode_frame(b.DATA, os.urandom(self.rng.randint(16, 4096))))
                dec.feed(await reader.read(65536))
                await asyncio.sleep(self.rng.uniform(0.2, 1.0))
        finally:
            writer.close()

    # --- mux --------------------------------------------------------------
    async def _mux(self) -> None:
        reader, writer = await self._open()
        reading = asyncio.get_running_loop().create_task(self._discard(reader))
        try:
            for sid, kind in ((1, "json"), (3, "echo"), (5, "binary")):
                writer.write(
                    m.encode_control({"type": "stream_create", "streamId": sid, "streamType": kind})
                )
            writer.write(m.encode_frame(1, encode({"type": "join_room", "room": "ops"})))
            for _ in range(self.rng.randint(30, 150)):
                await asyncio.sleep(self.rng.uniform(0.1, 0.8))
                roll = self.rng.random()
                if roll < 0.4:
                    msg = {"type": "room_message", "room": "ops", "data": _line(self.rng)}
                    writer.write(m.encode_frame(1, encode(msg)))
                elif roll < 0.7:
                    writer.write(m.encode_frame(3, (_line(self.rng) + "\n").encode()))
                elif roll < 0.9:
                    writer.write(m.encode_frame(5, b.encode_frame(b.HEARTBEAT)))
                else:
                    writer.write(m.encode_control({"type": "ping"}))
        finally:
            reading.cancel()
            writer.close()

    async def _discard(self, reader: asyncio.StreamReader) -> None:
        while await reader.read(65536):
            pass

    # --- uploads ----------------------------------------------------------
    async def _uploader(self) -> None:
        rng = self.rng
        reader, writer = await self._open()
        reading = asyncio.get_running_loop().create_task(self._discard(reader))
        try:
            n = 0
            while not self._stopping:
                n += 1
                size = rng.randint(1, 6) * 1024 * 1024
                chunk = 64 * 1024
                data = os.urandom(size)
                tid = f"demo-{os.getpid()}-{n}"
                name = f"demo-{n:04d}-{rng.randint(0, 1 << 20):06x}.bin"
                writer.write(
                    encode(
                        {
                            "type": "file_start",
                            "transferId": tid,
                            "filename": name,
                            "fileSize": size,
                            "chunkSize": chunk,
                            "sha256": hashlib.sha256(data).hexdigest(),
                        }
                    )
                )
                give_up = rng.random() < 0.2
                for i, off in enumerate(range(0, size, chunk)):
                    if give_up and off > size // 2:
                        writer.write(encode({"type": "file_abort", "transferId": tid}))
                        break
                    piece = base64.b64encode(data[off : off + chunk]).decode()
                    writer.write(
                        encode(
                            {
                                "type": "file_chunk",
                                "transferId": tid,
                                "chunkIndex": i,
                                "data": piece,
                            }
                        )
                    )
                    await writer.drain()
                    await asyncio.sleep(0.03)
                else:
                    writer.write(encode({"type": "file_end", "transferId": tid}))
                await asyncio.sleep(rng.uniform(2.0, 6.0))
        finally:
            reading.cancel()
            writer.close()
