"""A terminal that stops reading never holds up the server (issue 10, item 1).

The console runs on a real pseudo-terminal that the test stops reading, as a
stalled SSH link or a sleeping laptop does: the tty's buffer fills and every
write to it blocks. Pings on the server still come back at once, and once the
terminal is read again, the console draws whole frames again.
"""

from __future__ import annotations

import signal
import sys

import pytest
from ptyconsole import PtyConsole, free_port, p99, ping_for, wait_listening

pytestmark = [
    pytest.mark.skipif(sys.platform == "win32", reason="POSIX terminals only"),
    pytest.mark.timeout(120),
]

STALL_S = 20.0  # 60 s in bench/terminal_stall.py; the tty fills within a few seconds


async def test_a_terminal_nobody_reads_for_20_s_leaves_every_ping_answered_fast(tmp_path) -> None:
    port = free_port()
    console = PtyConsole(["--demo", "--port", str(port), "--grace-period", "3"], cwd=str(tmp_path))
    try:
        await wait_listening(port, console.proc)
        console.wait_for("Connections")
        console.reading.clear()
        trips = await ping_for(port, STALL_S)
        assert len(trips) >= STALL_S / 0.2 * 0.8
        assert p99(trips) < 0.100, sorted(trips)[-5:]
        assert console.proc.poll() is None
        # Read again: the console catches up with whole frames.
        mark = console.received()
        console.reading.set()
        console.wait_for("Connections", since=mark, timeout=10)
        console.proc.send_signal(signal.SIGTERM)
        assert console.proc.wait(20) == 0
    finally:
        console.stop()
