"""The console's terminal writer never blocks its caller (issue 10, item 1)."""

from __future__ import annotations

import os
import select
import sys
import threading
import time

import pytest

from verb_console.console.terminal_writer import DroppingWriter

pytestmark = [
    pytest.mark.skipif(sys.platform == "win32", reason="POSIX pipes"),
    pytest.mark.timeout(30),
]


def test_writes_to_a_terminal_that_stopped_reading_return_at_once_and_are_dropped() -> None:
    read_fd, write_fd = os.pipe()
    drained = threading.Event()
    out = os.fdopen(write_fd, "w")
    writer = DroppingWriter(out, drained.set, max_backlog=200_000)
    writer.start()
    try:
        frame = "x" * 10_000
        started = time.monotonic()
        for _ in range(1000):  # 10 MB into a pipe of 64 KiB that nobody reads
            writer.write(frame)
        assert time.monotonic() - started < 1.0
        assert writer.dropped > 900
        assert not drained.is_set()
        # Reading again empties the backlog; the owner is told once it is all out.
        got = 0
        deadline = time.monotonic() + 10
        while not drained.is_set() and time.monotonic() < deadline:
            # Never block in read: the last bytes may be out before the writer says so.
            if select.select([read_fd], [], [], 0.05)[0]:
                got += len(os.read(read_fd, 1 << 20))
        assert drained.is_set()
        assert writer.backlog == 0
        # The writer says so once its last write returned: what that write put
        # in the pipe is still there to read.
        while select.select([read_fd], [], [], 0)[0]:
            got += len(os.read(read_fd, 1 << 20))
        assert 190_000 <= got <= 210_000 + 10_000
    finally:
        writer.stop()
        out.close()
        os.close(read_fd)


def test_a_terminal_that_keeps_up_gets_every_write_in_order() -> None:
    read_fd, write_fd = os.pipe()
    out = os.fdopen(write_fd, "w")
    writer = DroppingWriter(out)
    writer.start()
    chunks: list[bytes] = []
    reader = threading.Thread(
        target=lambda: chunks.extend(iter(lambda: os.read(read_fd, 65536), b""))
    )
    reader.start()
    for n in range(2000):
        writer.write(f"{n},")
    writer.stop()
    out.close()
    reader.join(5)
    os.close(read_fd)
    assert writer.dropped == 0
    assert b"".join(chunks).decode() == "".join(f"{n}," for n in range(2000))


def test_stopping_while_the_terminal_is_stalled_does_not_hang() -> None:
    read_fd, write_fd = os.pipe()
    out = os.fdopen(write_fd, "w")
    writer = DroppingWriter(out)
    writer.start()
    for _ in range(100):
        writer.write("y" * 10_000)
    started = time.monotonic()
    writer.stop()
    assert time.monotonic() - started < 2.0
    os.close(read_fd)
