"""Small clients for tests that talk to a real server over 127.0.0.1.

The json client parses frames on its own (``<length>\\n<body>``) rather than with
the server's codec, so a bug in the codec cannot hide itself in both ends.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

DEFAULT_TIMEOUT = 2.0

# Ports of the test servers that speak TLS, and the client context for each
# (filled by conftest's start_server): every client here speaks TLS to them.
TLS_PORTS: dict[int, Any] = {}


def tls_for(port: int) -> dict[str, Any]:
    """``open_connection`` arguments for a test server: TLS when it speaks TLS."""
    ctx = TLS_PORTS.get(port)
    return {"ssl": ctx, "server_hostname": "localhost"} if ctx is not None else {}


def wire_fixtures(wires: tuple[str, ...] = ("plain", "tls", "tls-uvloop")) -> tuple[Any, Any]:
    """A module's ``wire`` and ``event_loop_policy`` fixtures: every test of the module
    runs in plaintext, over TLS, and over TLS on uvloop (PROTOCOL.md s9)."""
    import pytest

    @pytest.fixture(params=wires, name="wire")
    def wire(request: Any) -> str:
        return str(request.param)

    @pytest.fixture(name="event_loop_policy")
    def event_loop_policy(wire: str) -> Any:
        if wire.endswith("uvloop"):
            import uvloop

            return uvloop.EventLoopPolicy()
        return asyncio.DefaultEventLoopPolicy()

    return wire, event_loop_policy


def frame(message: Any) -> bytes:
    """Encode one json frame: ``<byte length>\\n<body>``."""
    body = json.dumps(message, separators=(",", ":")).encode()
    return b"%d\n%s" % (len(body), body)


def raw_frame(body: bytes) -> bytes:
    """Frame an arbitrary body (which need not be valid JSON)."""
    return b"%d\n%s" % (len(body), body)


def make_socket(source_ip: str | None = None, rcvbuf: int | None = None) -> socket.socket:
    """A non-blocking TCP socket, optionally bound to ``source_ip`` (any 127.x address works)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if rcvbuf is not None:
        # Set before connecting so the advertised window stays small.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    if source_ip is not None:
        sock.bind((source_ip, 0))
    sock.setblocking(False)
    return sock


async def open_raw(
    port: int, host: str = "127.0.0.1", *, source_ip: str | None = None, rcvbuf: int | None = None
) -> socket.socket:
    """A connected non-blocking socket (use ``loop.sock_*`` with it)."""
    sock = make_socket(source_ip, rcvbuf)
    try:
        await asyncio.wait_for(asyncio.get_running_loop().sock_connect(sock, (host, port)), 2)
    except BaseException:
        sock.close()
        raise
    return sock


async def closed_without_bytes(
    reader: asyncio.StreamReader, timeout: float = DEFAULT_TIMEOUT
) -> bool:
    """True when the peer closed (FIN or RST) without sending a single byte."""
    try:
        data = await asyncio.wait_for(reader.read(1), timeout)
    except (ConnectionResetError, BrokenPipeError):
        return True
    return data == b""


async def eventually(
    check: Callable[[], bool], timeout: float = DEFAULT_TIMEOUT, interval: float = 0.01
) -> None:
    """Wait until ``check()`` is true; fail the test if it never becomes true."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s: {check}")
        await asyncio.sleep(interval)


class JsonClient:
    """A json protocol client over asyncio streams."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.welcome: dict[str, Any] = {}
        self.bytes_received = 0
        self.frames_received = 0
        self.bytes_sent = 0
        host, port = writer.get_extra_info("sockname")[:2]
        self.local_id = f"{host}:{port}"

    @classmethod
    async def connect(
        cls,
        port: int,
        host: str = "127.0.0.1",
        *,
        welcome: bool = True,
        source_ip: str | None = None,
        rcvbuf: int | None = None,
    ) -> JsonClient:
        """Connect; with ``welcome`` (the default) read and keep the welcome message."""
        sock = await open_raw(port, host, source_ip=source_ip, rcvbuf=rcvbuf)
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection(sock=sock, limit=4 * 1024 * 1024, **tls_for(port)), 5
        )
        client = cls(reader, writer)
        if welcome:
            client.welcome = await client.recv()
            assert client.welcome["type"] == "welcome", client.welcome
        return client

    @property
    def id(self) -> str:
        """The session id the server gave this client."""
        return str(self.welcome["id"])

    async def send_raw(self, data: bytes) -> None:
        self.writer.write(data)
        self.bytes_sent += len(data)
        await self.writer.drain()

    async def send(self, message: Any) -> None:
        await self.send_raw(frame(message))

    async def recv(self, timeout: float = DEFAULT_TIMEOUT) -> dict[str, Any]:
        """The next message; fails on timeout or if the server closes first."""
        return await asyncio.wait_for(self._read_frame(), timeout)

    async def _read_frame(self) -> dict[str, Any]:
        header = await self.reader.readuntil(b"\n")
        assert header[:-1].isdigit(), f"bad header from the server: {header!r}"
        body = await self.reader.readexactly(int(header[:-1]))
        self.bytes_received += len(header) + len(body)
        self.frames_received += 1
        message = json.loads(body)
        assert isinstance(message, dict) and isinstance(message.get("type"), str), message
        return message

    async def request(self, message: Any, timeout: float = DEFAULT_TIMEOUT) -> dict[str, Any]:
        """Send ``message`` and return the next message received."""
        await self.send(message)
        return await self.recv(timeout)

    async def expect_nothing(self, wait: float = 0.2) -> None:
        """Assert that no byte arrives within ``wait`` seconds (and the link stays open)."""
        try:
            data = await asyncio.wait_for(self.reader.read(1), wait)
        except TimeoutError:
            return
        raise AssertionError(f"expected nothing, got {data!r}")

    async def expect_eof(self, timeout: float = DEFAULT_TIMEOUT) -> None:
        """Assert that the server closes the connection with no further bytes."""
        try:
            data = await asyncio.wait_for(self.reader.read(1), timeout)
        except ConnectionResetError:
            return
        assert data == b"", f"expected the connection to close, got {data!r}"

    async def close(self) -> None:
        if not self.writer.is_closing():
            self.writer.close()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.writer.wait_closed(), 1)


ClientFactory = Callable[..., Awaitable[JsonClient]]


class FrameSplitter:
    """Cuts a byte stream from the server into json frame bodies, fed in any pieces."""

    def __init__(self) -> None:
        self._buf = bytearray()

    def feed(self, data: bytes) -> list[bytes]:
        buf = self._buf
        buf += data
        out: list[bytes] = []
        off = 0
        while True:
            nl = buf.find(b"\n", off)
            if nl < 0:
                break
            size = int(buf[off:nl])
            if nl + 1 + size > len(buf):
                break
            out.append(bytes(buf[nl + 1 : nl + 1 + size]))
            off = nl + 1 + size
        del buf[:off]
        return out


def _status_bytes(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no {field} in /proc/{pid}/status")


def rss(pid: int) -> int:
    """A process's resident memory now, in bytes (VmRSS)."""
    return _status_bytes(pid, "VmRSS")


def peak_rss(pid: int) -> int:
    """A process's highest resident memory so far, in bytes (VmHWM)."""
    return _status_bytes(pid, "VmHWM")
