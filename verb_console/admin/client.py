"""The admin socket's client, on anyio streams (so it runs under asyncio and trio alike)."""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import anyio
import anyio.abc
import orjson

from ..protocols.json import JsonDecoder, encode
from .paths import AdminSocketError
from .protocol import VERSION

MAX_REPLY = 64 * 1024 * 1024


class AdminError(Exception):
    """The server answered a request with an error, or refused the connection."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


class AdminClient:
    """One connection to a server's admin socket; ``await request(op, **args)``.

    Requests are answered in order; one at a time per client (a lock keeps it so).
    """

    def __init__(self, stream: anyio.abc.ByteStream, hello: dict[str, Any], path: Path) -> None:
        self._stream = stream
        self._decoder = JsonDecoder(MAX_REPLY)
        self._pending: list[bytearray] = []
        self._ids = itertools.count(1)
        self._lock = anyio.Lock()
        self.hello = hello
        self.path = path

    @classmethod
    async def connect(
        cls, path: Path | str, *, read_only: bool = False, timeout: float = 5.0
    ) -> AdminClient:
        """Connect and read the server's hello; raise :class:`AdminSocketError` if unreachable."""
        path = Path(path)
        try:
            with anyio.fail_after(timeout):
                stream = await anyio.connect_unix(str(path))
        except (OSError, TimeoutError) as exc:
            reason = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
            raise AdminSocketError(f"cannot reach admin socket {path}: {reason}") from None
        client = cls(stream, {}, path)
        try:
            with anyio.fail_after(timeout):
                hello = await client._receive()
            if hello.get("type") == "refused":
                error = hello.get("error") or {}
                raise AdminError(error.get("code", "refused"), error.get("message", "refused"))
            if hello.get("type") != "hello" or hello.get("v") != VERSION:
                raise AdminError("bad_version", f"{path} does not speak admin protocol {VERSION}")
            client.hello = hello
            if read_only:
                await client.request("hello", read_only=True)
        except BaseException:
            await stream.aclose()
            raise
        return client

    async def _receive(self) -> dict[str, Any]:
        while not self._pending:
            try:
                data = await self._stream.receive()
            except (anyio.EndOfStream, anyio.BrokenResourceError, OSError):
                raise AdminSocketError(f"admin socket {self.path}: the server went away") from None
            self._pending.extend(self._decoder.feed(data))
            if self._decoder.error is not None and not self._pending:
                raise AdminError("bad_frame", str(self._decoder.error))
        message: dict[str, Any] = orjson.loads(self._pending.pop(0))
        return message

    async def request(self, op: str, **args: Any) -> Any:
        """Send one request and return its result; an error reply raises :class:`AdminError`."""
        async with self._lock:
            request_id = next(self._ids)
            frame = encode({"v": VERSION, "id": request_id, "op": op, "args": args})
            try:
                await self._stream.send(frame)
            except (anyio.BrokenResourceError, anyio.ClosedResourceError, OSError):
                raise AdminSocketError(f"admin socket {self.path}: the server went away") from None
            reply = await self._receive()
        if reply.get("ok"):
            return reply.get("result")
        error = reply.get("error") or {}
        raise AdminError(str(error.get("code", "error")), str(error.get("message", "error")))

    async def aclose(self) -> None:
        await self._stream.aclose()

    async def __aenter__(self) -> AdminClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()
