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
    pytest.mark.timeout(150),
]

STALL_S = 5.0  # 60 s in bench/terminal_stall.py; the tty (about 15 KiB) fills within a second
CONTROL_S = 5.0  # as long, so a spike of a loaded machine is as likely in both
EVERY_S = 0.05
# 100 pings a run, however late the loop's sleeps: p99 (nearest rank) passes over
# one spike only from 100 values on (of 99, it is the largest).
PINGS = round(STALL_S / EVERY_S)


async def test_a_terminal_nobody_reads_for_5_s_leaves_every_ping_answered_fast(tmp_path) -> None:
    port = free_port()
    console = PtyConsole(["--demo", "--port", str(port), "--grace-period", "3"], cwd=str(tmp_path))
    try:
        await wait_listening(port, console.proc)
        console.wait_for("Connections")
        # Control: the same pings while the terminal is read, on this machine now.
        control = await ping_for(port, CONTROL_S, EVERY_S, PINGS)
        console.reading.clear()
        trips = await ping_for(port, STALL_S, EVERY_S, PINGS)
        # Every ping answered (before the fix the loop blocked on the full tty
        # for as long as it stayed unread, and pings waited past 5 s).
        assert len(trips) >= STALL_S / EVERY_S * 0.8
        assert max(trips) < 1.0, sorted(trips)[-5:]
        # p99 under 100 ms; on a machine so loaded that even the read terminal's
        # pings are slower, the unread terminal must at least add nothing to them.
        allowed = max(0.100, 1.5 * p99(control) + 0.020)
        assert p99(trips) < allowed, (sorted(trips)[-5:], sorted(control)[-3:])
        assert console.proc.poll() is None
        # Read again: the console catches up with whole frames.
        mark = console.received()
        console.reading.set()
        console.wait_for("Connections", since=mark, timeout=10)
        console.proc.send_signal(signal.SIGTERM)
        assert console.proc.wait(20) == 0
    finally:
        console.stop()
