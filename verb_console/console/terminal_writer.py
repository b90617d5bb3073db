"""A terminal writer that never makes the event loop wait for the terminal.

Textual hands its output to a writer thread through a queue of 30 writes; once
the terminal stops reading (a stalled SSH link, a stopped terminal emulator),
the thread blocks in ``write`` on the tty, the queue fills, and the next frame
blocks the event loop and every client with it. This writer takes the place of
Textual's: ``write`` only appends to a buffer. While the terminal lags by more
than :data:`MAX_BACKLOG` characters, new output is dropped instead of queued,
and once the thread has written everything out, the console is asked for one
full frame so the screen is whole again.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections import deque
from collections.abc import Callable
from typing import IO

# Characters written but not yet taken by the terminal before frames are dropped:
# a few full frames at 200x60, so a terminal that keeps up never loses one.
MAX_BACKLOG = 256 * 1024
# How long closing the console waits for a terminal that no longer reads.
STOP_TIMEOUT = 0.5


class DroppingWriter(threading.Thread):
    """Drop-in for Textual's ``WriterThread``: same methods, but ``write`` never blocks."""

    def __init__(
        self,
        file: IO[str],
        on_drained: Callable[[], None] | None = None,
        max_backlog: int = MAX_BACKLOG,
    ) -> None:
        super().__init__(daemon=True, name="verb-console-output")
        self._file = file
        self._pending: deque[str] = deque()
        self._backlog = 0
        self._cond = threading.Condition()
        self._stopping = False
        self.max_backlog = max_backlog
        self.on_drained = on_drained
        self.dropped = 0  # writes dropped since start
        self._lost = False  # output was dropped: the screen needs one full frame

    @property
    def backlog(self) -> int:
        """Characters accepted but not yet written to the terminal."""
        return self._backlog

    def write(self, text: str) -> None:
        """Queue ``text`` for the terminal, or drop it while the terminal lags."""
        with self._cond:
            if self._stopping:
                return
            if self._backlog >= self.max_backlog:
                self.dropped += 1
                self._lost = True
                return
            self._pending.append(text)
            self._backlog += len(text)
            self._cond.notify()

    def isatty(self) -> bool:
        return True

    def fileno(self) -> int:
        return self._file.fileno()

    def flush(self) -> None:
        """A no-op: the thread flushes whenever it has written everything queued."""

    def run(self) -> None:
        cond = self._cond
        pending = self._pending
        while True:
            with cond:
                while not pending and not self._stopping:
                    cond.wait()
                if not pending:
                    break
                text = pending.popleft()
            try:
                self._file.write(text)
                if not pending:
                    self._file.flush()
            except (OSError, ValueError):
                # The terminal has gone (EIO after a hang-up): nothing more can be shown.
                with cond:
                    self._stopping = True
                    pending.clear()
                    self._backlog = 0
                break
            drained = False
            with cond:
                self._backlog -= len(text)
                if not pending and self._lost:
                    self._lost = False
                    drained = True
            if drained and self.on_drained is not None:
                with contextlib.suppress(Exception):
                    self.on_drained()

    def discard(self) -> None:
        """Drop everything queued and all later output: the terminal has gone."""
        with self._cond:
            self._stopping = True
            self._pending.clear()
            self._backlog = 0
            self._cond.notify()

    def stop(self) -> None:
        """Write what is queued and end the thread, waiting only briefly for a stalled terminal."""
        with self._cond:
            self._stopping = True
            self._cond.notify()
        self.join(STOP_TIMEOUT)


def driver_class(app: object) -> type | None:
    """A subclass of Textual's Linux driver that writes through a :class:`DroppingWriter`.

    ``None`` where Textual picks another driver (Windows, a web driver).
    """
    try:
        from textual.drivers.linux_driver import LinuxDriver
    except ImportError:  # pragma: no cover - Windows
        return None

    class DroppingLinuxDriver(LinuxDriver):
        """Textual's Linux driver, except that the loop never waits on the terminal."""

        dropping: DroppingWriter | None = None

        def start_application_mode(self) -> None:
            loop = asyncio.get_running_loop()

            def drained() -> None:
                # Called on the writer thread: the repaint itself runs on the loop.
                with contextlib.suppress(RuntimeError):
                    loop.call_soon_threadsafe(repaint_all, self._app)

            self.dropping = DroppingWriter(self._file, drained)  # type: ignore[arg-type]
            self.dropping.start()
            super().start_application_mode()

        def write(self, data: str) -> None:
            if self.dropping is not None:
                self.dropping.write(data)
            else:  # pragma: no cover - before application mode
                super().write(data)

        def close(self) -> None:
            super().close()
            if self.dropping is not None:
                self.dropping.stop()

    return DroppingLinuxDriver


def repaint_all(app: object) -> None:
    """Draw the whole screen on the next refresh, not only what changed."""
    with contextlib.suppress(Exception):
        screen = app.screen  # type: ignore[attr-defined]
        screen._compositor._dirty_regions.add(screen.size.region)
        screen.refresh()
