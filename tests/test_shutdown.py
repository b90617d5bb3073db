"""Graceful shutdown (PROTOCOL.md section 6) of the headless server, driven by real signals."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import signal
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest
from helpers import JsonClient, open_raw

from verb_console.runtime import Runtime
from verb_console.settings import Settings

pytestmark = [
    pytest.mark.timeout(60),
    pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals"),
]

LISTENING = re.compile(rb"listening on 127\.0\.0\.1:(\d+) \(json\)")


class ServerProcess:
    """``verb-console --headless`` in a child process, with its port read from its log."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.port = 0
        self.log: list[bytes] = []
        self._reader: asyncio.Task[None] | None = None

    @classmethod
    async def start(cls, workdir: Path, grace: float) -> ServerProcess:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "verb_console",
            "--headless",
            "--port",
            "0",
            "--protocol",
            "json",
            "--grace-period",
            str(grace),
            "--upload-dir",
            str(workdir / "uploads"),
            cwd=workdir,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
        )
        server = cls(proc)
        await asyncio.wait_for(server._wait_listening(), 15)
        server._reader = asyncio.ensure_future(server._drain_log())
        return server

    async def _wait_listening(self) -> None:
        assert self.proc.stderr is not None
        while True:
            line = await self.proc.stderr.readline()
            if not line:
                raise AssertionError(f"the server exited before listening: {self.log!r}")
            self.log.append(line)
            match = LISTENING.search(line)
            if match:
                self.port = int(match.group(1))
                return

    async def _drain_log(self) -> None:
        assert self.proc.stderr is not None
        while line := await self.proc.stderr.readline():
            self.log.append(line)

    def signal(self, sig: signal.Signals) -> None:
        self.proc.send_signal(sig)

    async def exit_status(self, timeout: float) -> int:
        """The exit status; fails if the process is still running after ``timeout`` s."""
        try:
            return await asyncio.wait_for(self.proc.wait(), timeout)
        except TimeoutError:
            raise AssertionError(
                f"the server did not exit within {timeout}s; log: {b''.join(self.log)!r}"
            ) from None

    async def stop(self) -> None:
        if self.proc.returncode is None:
            self.proc.kill()
            await self.proc.wait()
        if self._reader is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._reader, 2)


@pytest.fixture
async def spawn(tmp_path: Path) -> AsyncIterator[Callable[..., Awaitable[ServerProcess]]]:
    servers: list[ServerProcess] = []
    clients: list[JsonClient] = []

    async def start(grace: float = 2) -> ServerProcess:
        server = await ServerProcess.start(tmp_path, grace)
        servers.append(server)
        return server

    start.clients = clients  # type: ignore[attr-defined]
    yield start
    for server in servers:
        await server.stop()


async def connect_all(port: int, n: int) -> list[JsonClient]:
    return [await JsonClient.connect(port) for _ in range(n)]


async def expect_shutdown_notice(client: JsonClient, grace_ms: int) -> None:
    assert await client.recv(3) == {
        "type": "server_shutdown",
        "message": "Server is shutting down",
        "gracePeriod": grace_ms,
        "reconnect": True,
    }


async def expect_refused(port: int) -> None:
    with pytest.raises(ConnectionRefusedError):
        sock = await open_raw(port)
        sock.close()


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
async def test_a_signal_drains_the_server_and_it_exits_0_when_the_last_client_leaves(
    spawn, sig: signal.Signals
) -> None:
    server = await spawn(grace=2)
    a, b = await connect_all(server.port, 2)
    try:
        server.signal(sig)
        for client in (a, b):
            await expect_shutdown_notice(client, 2000)
        await expect_refused(server.port)
        # Sessions go on working during the drain.
        pong = await a.request({"type": "ping", "ref": "drain"})
        assert (pong["type"], pong["ref"]) == ("pong", "drain")
        await a.send({"type": "private", "target": b.id, "data": "still here"})
        assert (await b.recv())["data"] == "still here"
        await a.close()
        assert (await b.request({"type": "ping"}))["type"] == "pong"
    finally:
        await a.close()
        await b.close()
    left_at = time.monotonic()
    assert await server.exit_status(1.5) == 0
    assert time.monotonic() - left_at < 1.0
    assert not any(b"Traceback" in line for line in server.log)


async def test_a_signal_with_no_client_connected_exits_0_at_once(spawn) -> None:
    server = await spawn(grace=10)
    started = time.monotonic()
    server.signal(signal.SIGTERM)
    assert await server.exit_status(3) == 0
    assert time.monotonic() - started < 2


async def test_a_client_that_stays_gets_closing_shutdown_after_the_grace_period(spawn) -> None:
    server = await spawn(grace=1)
    client = (await connect_all(server.port, 1))[0]
    try:
        started = time.monotonic()
        server.signal(signal.SIGTERM)
        await expect_shutdown_notice(client, 1000)
        assert await client.recv(4) == {"type": "closing", "reason": "shutdown"}
        waited = time.monotonic() - started
        assert 0.8 <= waited < 3
        await client.expect_eof()
    finally:
        await client.close()
    assert await server.exit_status(3) == 0


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
async def test_a_second_signal_during_the_drain_closes_everything_at_once(
    spawn, sig: signal.Signals
) -> None:
    server = await spawn(grace=20)
    clients = await connect_all(server.port, 2)
    try:
        server.signal(sig)
        for client in clients:
            await expect_shutdown_notice(client, 20000)
        started = time.monotonic()
        server.signal(sig)
        for client in clients:
            assert await client.recv(3) == {"type": "closing", "reason": "shutdown"}
            await client.expect_eof()
        assert await server.exit_status(3) == 0
        assert time.monotonic() - started < 3
    finally:
        for client in clients:
            await client.close()


async def test_the_signal_handlers_are_installed_before_the_listening_line_is_logged() -> None:
    seen: dict[str, object] = {}

    class Spy(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if "listening on" in record.getMessage():
                seen["SIGTERM"] = signal.getsignal(signal.SIGTERM)
                seen["SIGINT"] = signal.getsignal(signal.SIGINT)

    before = {
        "SIGTERM": signal.getsignal(signal.SIGTERM),
        "SIGINT": signal.getsignal(signal.SIGINT),
    }
    logger = logging.getLogger("verb_console")
    spy = Spy(logging.DEBUG)
    old_level = logger.level
    logger.setLevel(logging.DEBUG)
    logger.addHandler(spy)
    runtime = Runtime(Settings(host="127.0.0.1", port=0, protocol="json", grace_period=1))
    running = asyncio.ensure_future(runtime.run())
    loop = asyncio.get_running_loop()
    try:
        for _ in range(200):
            if seen:
                break
            await asyncio.sleep(0.01)
        assert seen, "the listening line was never logged"
        assert seen["SIGTERM"] != before["SIGTERM"]
        assert seen["SIGINT"] != before["SIGINT"]
    finally:
        logger.removeHandler(spy)
        logger.setLevel(old_level)
        runtime.hub.force_shutdown()
        assert await asyncio.wait_for(running, 5) == 0
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
        signal.signal(signal.SIGTERM, before["SIGTERM"])  # type: ignore[arg-type]
        signal.signal(signal.SIGINT, before["SIGINT"])  # type: ignore[arg-type]
