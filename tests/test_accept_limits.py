"""Accept at the descriptor limit: one line in the log, and the server recovers."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import time

import pytest

LISTENING = re.compile(r"listening on 127\.0\.0\.1:(\d+) \((\w+)\)")


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
def test_accept_at_the_descriptor_limit_is_logged_once_and_the_server_recovers(
    tmp_path, loop: str
) -> None:
    cmd = (
        f"ulimit -n 64; exec {sys.executable} -m verb_console --headless --port 0"
        f" --protocol json --max-per-ip 0 --upload-dir {tmp_path / 'up'}"
        f" --admin-socket {tmp_path / 'admin.sock'}"
    )
    # The asyncio loop reports a failed accept to its exception handler; under
    # uvloop, libuv drops the waiting connections itself and says nothing, so the
    # server notes the accept that takes the last descriptor.
    env = {**os.environ, "VERB_CONSOLE_LOOP": loop}
    proc = subprocess.Popen(
        ["sh", "-c", cmd], stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True, env=env
    )
    assert proc.stderr is not None
    try:
        port = 0
        lines: list[str] = []
        deadline = time.monotonic() + 20
        while not port and time.monotonic() < deadline:
            line = proc.stderr.readline()
            lines.append(line)
            m = LISTENING.search(line)
            if m:
                port = int(m.group(1))
        assert port, lines
        socks = []
        for _ in range(100):
            s = socket.create_connection(("127.0.0.1", port), timeout=5)
            socks.append(s)
        time.sleep(1.5)
        for s in socks:
            s.close()
        # With descriptors free again, a new client is served.
        deadline = time.monotonic() + 10
        welcome = b""
        while not welcome and time.monotonic() < deadline:
            c = socket.create_connection(("127.0.0.1", port), timeout=5)
            c.settimeout(3)
            try:
                welcome = c.recv(4096)
            except TimeoutError:
                welcome = b""
            c.close()
        assert b'"welcome"' in welcome
    finally:
        proc.terminate()
        out = proc.communicate(timeout=20)[1]
    text = "".join(lines) + out
    hits = [ln for ln in text.splitlines() if "accept on 127.0.0.1:" in ln]
    assert hits, text[-3000:]
    assert "EMFILE" in hits[0]
    # Rate-limited: not one line per refused accept.
    assert len(hits) <= 2
