"""Keys typed right after ``/`` go to the filter, in any burst (issue 10, item 6).

On a real pty the whole burst ``/sy`` arrives in one read. Before the fix the
filter opened empty and ``s`` ``y`` reached the main screen: a graceful shutdown.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import pytest
from ptyconsole import PtyConsole, free_port, wait_listening

pytestmark = [
    pytest.mark.skipif(sys.platform != "linux", reason="ptys"),
    pytest.mark.timeout(90),
]


@pytest.mark.parametrize("burst", ["/sy", "/cy", "/xyq"])
async def test_a_burst_after_slash_is_typed_into_the_filter(burst: str, tmp_path: Path) -> None:
    run = tmp_path / "run"
    run.mkdir()
    env = {"XDG_RUNTIME_DIR": str(run)}
    port = free_port()
    console = PtyConsole(["--port", str(port), "--protocol", "json"], env=env, cwd=str(tmp_path))
    try:
        await wait_listening(port, console.proc)
        await console.shows("Connections")
        await asyncio.sleep(0.5)
        mark = console.received()
        console.type(burst)  # one write: one read on the console's side
        await console.shows(f"filter “{burst[1:]}”", since=mark, timeout=10)
        await asyncio.sleep(1.0)
        status = subprocess.run(
            [sys.executable, "-m", "verb_console", "ctl", "--port", str(port), "status"],
            capture_output=True,
            text=True,
            timeout=20,
            env=dict(os.environ, **env),
        )
        assert "state: running" in status.stdout, status
        shown = console.text_since(mark)
        assert "Shut down gracefully?" not in shown
        assert "recently closed" not in shown
        assert console.proc.poll() is None
    finally:
        console.stop()
