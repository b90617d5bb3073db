"""The server outlives its terminal (issue 10, item 2), tried on real terminals and processes.

A hosted console's terminal is hung up by closing the pty's master, as a dropped
SSH login does (the console's session gets SIGHUP and its tty reads end). With
the default ``--on-hangup keep`` the server goes on serving with no loss; with
``drain`` it shuts down gracefully as before. ``--headless`` takes SIGHUP as a
reload and never exits on it.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from helpers import JsonClient, eventually
from ptyconsole import PtyConsole, free_port, ping_for, wait_listening

pytestmark = [
    pytest.mark.skipif(sys.platform == "win32", reason="POSIX terminals only"),
    pytest.mark.timeout(90),
]


async def test_a_hung_up_console_keeps_serving_every_ping_and_logs_to_the_log_file(
    tmp_path: Path,
) -> None:
    port = free_port()
    log_file = tmp_path / "server.log"
    console = PtyConsole(
        ["--port", str(port), "--protocol", "json", "--log-file", str(log_file)],
        cwd=str(tmp_path),
    )
    try:
        await wait_listening(port, console.proc)
        console.wait_for("Connections")
        pinging = asyncio.create_task(ping_for(port, 4.0))
        await asyncio.sleep(1.0)
        console.hang_up()
        trips = await pinging
        # Every ping of the 4 s came back: none lost around the hang-up.
        assert len(trips) >= 17
        assert max(trips) < 1.0
        assert console.proc.poll() is None
        # A new client is still welcome after the hang-up.
        client = await JsonClient.connect(port)
        assert (await client.request({"type": "ping"}))["type"] == "pong"
        await eventually(lambda: "terminal gone" in log_file.read_text(), timeout=5)
        # A later SIGHUP reloads and the server stays.
        console.proc.send_signal(signal.SIGHUP)
        await eventually(lambda: "SIGHUP: reload done" in log_file.read_text(), timeout=5)
        assert (await client.request({"type": "ping"}))["type"] == "pong"
        console.proc.send_signal(signal.SIGTERM)
        assert (await client.recv(5))["type"] == "server_shutdown"
        await client.close()
        assert await asyncio.to_thread(console.proc.wait, 20) == 0
        assert "starting graceful shutdown" in log_file.read_text()
    finally:
        console.stop()


async def test_on_hangup_drain_shuts_the_server_down_gracefully_as_before(tmp_path: Path) -> None:
    port = free_port()
    console = PtyConsole(
        ["--port", str(port), "--protocol", "json", "--on-hangup", "drain"], cwd=str(tmp_path)
    )
    try:
        await wait_listening(port, console.proc)
        console.wait_for("Connections")
        client = await JsonClient.connect(port)
        console.hang_up()
        message = await client.recv(5)
        assert message["type"] == "server_shutdown"
        await client.close()
        assert await asyncio.to_thread(console.proc.wait, 20) == 0
    finally:
        console.stop()


HEADLESS = [sys.executable, "-m", "verb_console", "--headless", "--port", "0", "--protocol", "json"]


def _spawn_headless(directory: Path) -> tuple[subprocess.Popen[bytes], int, list[bytes]]:
    proc = subprocess.Popen(
        [*HEADLESS, "--upload-dir", str(directory)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    assert proc.stderr is not None
    lines: list[bytes] = []
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        line = proc.stderr.readline()
        if not line:
            break
        lines.append(line)
        found = re.search(rb"listening on 127\.0\.0\.1:(\d+)", line)
        if found:
            rest = iter(proc.stderr.readline, b"")
            threading.Thread(target=lines.extend, args=(rest,), daemon=True).start()
            return proc, int(found.group(1)), lines
    proc.kill()
    raise AssertionError(f"server did not start: {lines!r}")


async def test_headless_takes_sighup_as_a_reload_and_an_upload_goes_on_untouched(
    tmp_path: Path,
) -> None:
    up = tmp_path / "up"
    proc, port, lines = await asyncio.to_thread(_spawn_headless, up)
    try:
        client = await JsonClient.connect(port)
        data = os.urandom(3 * 65536)
        start = {"type": "file_start", "transferId": "h", "filename": "hup.bin"}
        start["fileSize"] = len(data)  # type: ignore[assignment]
        assert (await client.request(start))["status"] == "ready"

        def chunk(i: int) -> dict[str, object]:
            piece = base64.b64encode(data[i * 65536 : (i + 1) * 65536]).decode()
            return {"type": "file_chunk", "transferId": "h", "chunkIndex": i, "data": piece}

        ack = await client.request(chunk(0))
        assert ack["type"] == "file_chunk_ack"
        assert (await client.recv())["type"] == "file_progress"
        for _ in range(2):
            proc.send_signal(signal.SIGHUP)
            await eventually(
                lambda: sum(b"SIGHUP: reload done" in line for line in lines) >= 1, timeout=5
            )
        await asyncio.sleep(0.2)
        assert proc.poll() is None
        # The client is told nothing: the next thing it hears answers its next message.
        for i in (1, 2):
            assert (await client.request(chunk(i)))["type"] == "file_chunk_ack"
        done = await client.request({"type": "file_end", "transferId": "h"}, timeout=10)
        assert done["type"] == "file_complete"
        assert done["sha256"] == hashlib.sha256(data).hexdigest()
        assert sorted(os.listdir(up)) == ["hup.bin"]  # no temporary file left
        assert (await client.request({"type": "ping"}))["type"] == "pong"
        await client.close()
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.to_thread(proc.wait, 20) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert sum(b"SIGHUP: reload done" in line for line in lines) == 2
