"""A console run as an operator runs it: ``verb-console`` on a real pseudo-terminal.

The test holds the master side. A reader thread takes the console's output only
while :attr:`PtyConsole.reading` is set, so a test can stop reading and let the
terminal fill up, as a stalled SSH link does. Closing the master hangs the
terminal up (the console's session gets SIGHUP, as after a dropped login).
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import math
import os
import signal
import struct
import subprocess
import sys
import termios
import threading
import time
from collections.abc import Sequence
from typing import Any


def _controlling_tty() -> None:
    # In the child, after setsid(): make the pty (already fd 0) its controlling
    # terminal, so closing the master sends it SIGHUP like a real login.
    fcntl.ioctl(0, termios.TIOCSCTTY, 0)


class PtyConsole:
    """``python -m verb_console ARGS`` with its stdin, stdout and stderr on a new pty."""

    def __init__(
        self,
        args: Sequence[str],
        cols: int = 200,
        rows: int = 60,
        env: dict[str, str] | None = None,
        cwd: str | None = None,
        inherit_env: bool = True,
    ) -> None:
        self.master, slave = os.openpty()
        fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))
        # inherit_env=False: ``env`` exactly, as ``env -i`` gives it (no locale or
        # TERM from the test's own environment).
        full_env: dict[str, str] = {}
        if inherit_env:
            full_env.update(os.environ, TERM="xterm-256color", COLORTERM="truecolor")
            # The pty's size is the terminal's: pytest-xdist's workers have
            # COLUMNS=80 and LINES=24 set, which Textual would take over it.
            full_env.pop("COLUMNS", None)
            full_env.pop("LINES", None)
        full_env.update(env or {})
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "verb_console", *args],
            stdin=slave,
            stdout=slave,
            stderr=slave,
            env=full_env,
            cwd=cwd,
            start_new_session=True,
            preexec_fn=_controlling_tty,
        )
        os.close(slave)
        self.output = bytearray()
        self.reading = threading.Event()
        self.reading.set()
        self._closed = False
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        while not self._closed:
            if not self.reading.wait(0.05):
                continue
            try:
                data = os.read(self.master, 65536)
            except OSError:
                return
            if not data:
                return
            with self._lock:
                self.output += data

    def received(self) -> int:
        with self._lock:
            return len(self.output)

    def bytes_since(self, offset: int) -> bytes:
        with self._lock:
            return bytes(self.output[offset:])

    def text_since(self, offset: int) -> str:
        with self._lock:
            return self.output[offset:].decode("utf-8", "replace")

    def wait_for(self, needle: str, since: int = 0, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while needle not in self.text_since(since):
            if time.monotonic() > deadline:
                tail = self.text_since(max(since, self.received() - 2000))
                raise AssertionError(f"{needle!r} never shown; last output: {tail!r}")
            if self.proc.poll() is not None:
                raise AssertionError(f"the console exited ({self.proc.returncode})")
            time.sleep(0.05)

    async def shows(self, needle: str, since: int = 0, timeout: float = 20.0) -> None:
        """:meth:`wait_for` without holding up the caller's event loop."""
        await asyncio.to_thread(self.wait_for, needle, since, timeout)

    def type(self, keys: str | bytes) -> None:
        os.write(self.master, keys.encode() if isinstance(keys, str) else keys)

    def hang_up(self) -> None:
        """Close the master side: the terminal is gone, as after a dropped SSH login."""
        self._closed = True
        self.reading.set()
        with contextlib.suppress(OSError):
            os.close(self.master)

    def stop(self) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)
        if not self._closed:
            self.hang_up()

    def end(self, grace: float = 2.0) -> None:
        """End the console and anything it started, for certain, and reap it.

        A hang-up does not do it (the console keeps serving after SIGHUP by
        design), so: SIGTERM to its process group, ``grace`` seconds to go, then
        SIGKILL to the group whatever is left.
        """
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(grace)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)
        if not self._closed:
            self.hang_up()


async def ping_for(port: int, seconds: float, every: float = 0.2, at_least: int = 0) -> list[float]:
    """Ping a json session every ``every`` seconds, for ``seconds`` and at least
    ``at_least`` times; the round trips in seconds.

    The client speaks first, so this works on ``auto`` listeners too. A ping not
    answered within 5 s fails the caller.
    """
    from helpers import frame

    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    splitter_buf = bytearray()

    async def next_message() -> dict[str, Any]:
        import json

        nonlocal splitter_buf
        while True:
            nl = splitter_buf.find(b"\n")
            if nl >= 0:
                size = int(splitter_buf[:nl])
                if len(splitter_buf) >= nl + 1 + size:
                    body = bytes(splitter_buf[nl + 1 : nl + 1 + size])
                    del splitter_buf[: nl + 1 + size]
                    message: dict[str, Any] = json.loads(body)
                    return message
            data = await reader.read(65536)
            if not data:
                raise AssertionError("the server closed the pinging session")
            splitter_buf += data

    trips: list[float] = []
    try:
        end = time.monotonic() + seconds
        while time.monotonic() < end or len(trips) < at_least:
            sent = time.monotonic()
            writer.write(frame({"type": "ping"}))
            while True:
                message = await asyncio.wait_for(next_message(), 5)
                if message["type"] == "pong":
                    break
            trips.append(time.monotonic() - sent)
            await asyncio.sleep(max(0.0, every - (time.monotonic() - sent)))
    finally:
        writer.close()
    return trips


def p99(values: list[float]) -> float:
    """The 99th percentile, nearest-rank: of 100 values, the 99th smallest."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(len(ordered) * 0.99) - 1)]


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def wait_listening(port: int, proc: subprocess.Popen[Any], timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            if time.monotonic() > deadline or proc.poll() is not None:
                raise AssertionError(f"nothing listens on {port}") from None
            await asyncio.sleep(0.1)
        else:
            writer.close()
            return
