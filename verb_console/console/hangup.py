"""Noticing that the operator's terminal has gone away, and letting go of it.

When an SSH connection drops, the console gets SIGHUP, or its stdin reaches
end-of-file. Textual's input thread treats an end-of-file stdin as "readable"
forever and spins, and its writer thread dies on the first failed write, so the
console stops using the terminal altogether and lets the server drain.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import select
import signal
import sys
from collections.abc import Callable
from typing import Any

try:
    import fcntl
    import termios
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]
    termios = None  # type: ignore[assignment]


def install_sighup(callback: Callable[[], None]) -> Callable[[], None]:
    """Call ``callback`` on SIGHUP; return a function that removes the handler.

    Platforms without SIGHUP or loop signal handlers get a no-op.
    """
    try:
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGHUP, callback)
    except (AttributeError, NotImplementedError, RuntimeError, ValueError):
        return lambda: None

    def remove() -> None:
        with contextlib.suppress(Exception):
            loop.remove_signal_handler(signal.SIGHUP)

    return remove


def stdin_at_eof(fd: int) -> bool:
    """True when ``fd`` is readable yet holds no bytes: end-of-file or hang-up.

    Nothing is read, so the input thread still gets every real keystroke. A
    keystroke consumed between the two checks can look like end-of-file for an
    instant, so callers should require several positive checks in a row.
    """
    if fcntl is None or termios is None:
        return False
    try:
        readable, _, _ = select.select([fd], [], [], 0)
        if not readable:
            return False
        buf = bytearray(4)
        fcntl.ioctl(fd, termios.FIONREAD, buf)
        return int.from_bytes(buf, sys.byteorder) == 0
    except (OSError, ValueError):
        return True


def release_terminal(driver: Any) -> None:
    """Stop the input thread and send further terminal output to /dev/null."""
    # The Linux driver's input loop checks this event between reads.
    exit_event = getattr(driver, "exit_event", None)
    if exit_event is not None:
        exit_event.set()
    # Our own writer (console/terminal_writer.py) just stops writing.
    dropping = getattr(driver, "dropping", None)
    if dropping is not None:
        dropping.discard()
    # Textual's writer thread dies on the first write that fails with EIO, and
    # its bounded queue then blocks the event loop; a fresh writer that talks
    # to /dev/null keeps the loop (and so the draining server) running.
    if getattr(driver, "_writer_thread", None) is not None:
        with contextlib.suppress(Exception):
            from textual.drivers._writer_thread import WriterThread

            fresh = WriterThread(open(os.devnull, "w"))  # noqa: SIM115 - lives with the app
            fresh.start()
            driver._writer_thread = fresh
    # Textual draws on stderr; stdout may be the same terminal.
    for stream in (sys.__stdout__, sys.__stderr__):
        if stream is None:
            continue
        with contextlib.suppress(OSError, ValueError):
            if not stream.isatty():
                continue
            fd = stream.fileno()
            null = os.open(os.devnull, os.O_WRONLY)
            try:
                os.dup2(null, fd)
            finally:
                os.close(null)
