"""RSS comes back by itself after connections holding large partial frames leave.

glibc keeps a freed block's pages when it sits below a live one; after a round
of partial ~1 MiB frames the heap stayed full of holes (a ``--headless`` server
at 37 MiB after the clients left, from 29 MiB). The server's heap trimmer
(verb_console/memory.py) must hand them back within a few seconds, with
nothing done from outside.
"""

from __future__ import annotations

import asyncio
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers import eventually, rss

from verb_console.memory import HeapTrimmer, resident_bytes

MiB = 1024 * 1024
LISTENING = re.compile(rb"listening on 127\.0\.0\.1:(\d+) \(json\)")

ARGS = ("--protocol", "json", "--max-per-ip", "0")

pytestmark = pytest.mark.skipif(not HeapTrimmer().available, reason="glibc malloc only")


def session(port: int) -> socket.socket:
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    s.sendall(b'15\n{"type":"ping"}')
    got = b""
    while got.count(b"\n") < 2:  # welcome and pong
        got += s.recv(65536)
    return s


def partial_frames(port: int, count: int, pid: int) -> tuple[socket.socket, int]:
    """``count`` sessions grow partial 1 MiB frames side by side, then leave; a new
    session stays open after them (its memory is above theirs in the heap). Returns
    that session and the server's RSS while the frames were held."""
    conns = [session(port) for _ in range(count)]
    for c in conns:
        c.sendall(b"1000000\n")
    for _ in range(7):
        for c in conns:
            c.sendall(b"x" * (128 * 1024))
    time.sleep(0.5)
    pin = session(port)
    held = rss(pid)
    for c in conns:
        c.close()
    return pin, held


def test_rss_comes_back_after_partial_frames_are_dropped(tmp_path: Path) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "verb_console", "--headless", "--port", "0", *ARGS],
        cwd=tmp_path,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    pins = []
    try:
        assert proc.stderr is not None
        line = b""
        while (m := LISTENING.search(line)) is None:
            line = proc.stderr.readline()
            assert line, "the server exited"
        port = int(m.group(1))
        # The first large block freed raises glibc's mmap threshold.
        pins.append(partial_frames(port, 1, proc.pid)[0])
        time.sleep(1.0)
        base = rss(proc.pid)
        peak = 0
        for _ in range(3):
            pin, held = partial_frames(port, 64, proc.pid)
            pins.append(pin)
            peak = max(peak, held)
        figures = []
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            time.sleep(0.5)
            figures.append(rss(proc.pid))
            if figures[-1] <= base * 1.10:
                break
        print(f"base {base / MiB:.1f} MiB, after", [round(f / MiB, 1) for f in figures])
        assert peak > base + 32 * MiB  # the rounds did hold their frames while they lasted
        assert figures[-1] <= base * 1.10, [f // MiB for f in figures]
    finally:
        for p in pins:
            p.close()
        proc.terminate()
        proc.wait(10)


def test_a_steady_heap_is_not_trimmed_over_and_over() -> None:
    # A trim keeps the loop 40 ms or more on a large fragmented heap: on a heap
    # that gives nothing back, the trims must thin out, not run at every look.
    keep = [bytearray(20_000) for _ in range(2000)]  # 40 MB live, steady
    trimmer = HeapTrimmer(interval=0.01, max_interval=60.0)
    trimmer.check()  # the first look only sees RSS
    looks = 0
    ends = time.monotonic() + 0.6
    while time.monotonic() < ends:
        trimmer.check()
        looks += 1
        time.sleep(0.001)
    # What lay free goes back in the first trim or two; then the waits double
    # (0.02, 0.04 ... s), so a few trims in all, against hundreds of looks.
    assert looks >= 100
    assert 1 <= trimmer.trims <= 8
    # Memory that grows and is freed makes a trim due again at once.
    grown = [bytearray(20_000) for _ in range(2000)]
    trimmer.check()
    del grown[::2]
    trims = trimmer.trims
    trimmer.check()
    assert trimmer.trims == trims + 1
    assert len(keep) == 2000


async def test_the_loop_keeps_turning_while_a_large_fragmented_heap_is_trimmed() -> None:
    # About 150 MB in 32 KiB blocks, seven of every eight freed: thousands of
    # free chunks, one madvise each, tens of milliseconds of trimming or more.
    blocks = [bytearray(32 * 1024) for _ in range(4800)]
    for b in blocks:
        b[::4096] = b"x" * len(b[::4096])  # touched: resident
    keep = blocks[::8]
    del blocks
    trimmer = HeapTrimmer(interval=0.001, max_interval=60.0)
    # As if RSS had stopped growing long ago: the first look trims.
    trimmer._after = 0
    trimmer._seen = resident_bytes()
    loop = asyncio.get_running_loop()
    turns_during = 0
    worst = 0.0
    ticking = True

    def tick(last: float) -> None:
        # A loop hook: runs once a turn, small objects only (pymalloc, no arena lock).
        nonlocal turns_during, worst
        now = time.perf_counter()
        worst = max(worst, now - last)
        if trimmer.trimming:
            turns_during += 1
        if ticking:
            loop.call_soon(tick, now)

    before = resident_bytes()
    trimmer.start()
    # One trim only: the next look comes a minute after it (with looks every
    # millisecond, a second, quick trim could follow before this test looked).
    trimmer.interval = 60.0
    loop.call_soon(tick, time.perf_counter())
    await eventually(lambda: trimmer.trims >= 1, timeout=10)
    ticking = False
    trimmer.stop()
    # The trim happened, gave memory back, and the loop turned all along.
    assert trimmer.released > 32 * MiB
    assert resident_bytes() < before
    # Inline, one turn would hold the whole trim; the loop turned all through it.
    assert trimmer.trims == 1
    assert turns_during >= 3, (turns_during, worst, trimmer.last_took)
    assert len(keep) == 600


def test_a_trim_is_due_again_once_most_connections_have_gone() -> None:
    # RSS does not fall when memory is freed: after a trim at the peak, clients
    # leaving looks like "nothing new" to RSS alone. The count of open
    # connections says they went.
    live = 40
    trimmer = HeapTrimmer(interval=0.0, max_interval=60.0, live=lambda: live)
    trimmer.check()  # the first look only sees RSS
    keep = [bytearray(20_000) for _ in range(500)]
    trimmer.check()  # grown: a look, no trim
    while not trimmer.check():  # RSS steady: the trim at the peak
        pass
    trims = trimmer.trims
    for _ in range(20):  # steady, nothing new: no more trims
        trimmer.check()
    assert trimmer.trims <= trims + 1
    trims = trimmer.trims
    live = 30  # a few leave: still nothing worth a trim
    assert not any(trimmer.check() for _ in range(5))
    live = 2  # most have gone
    assert trimmer.check()
    assert trimmer.trims == trims + 1
    assert not trimmer.check()  # and once is enough
    assert len(keep) == 500
