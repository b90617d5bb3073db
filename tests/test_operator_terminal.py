"""Issue 10 tried as an operator would, on real terminals (ptys) and real processes.

A hosted console is hung up as a dropped SSH login hangs it up (its pty's master
closed: SIGHUP and end-of-file); its clients keep pinging with no loss. A new
``verb-console attach`` gets the console back: a session is closed and a
broadcast is sent from it, it detaches with ``q``, and ``ctl drain`` stops the
server. Then a server is restarted under an attached console.
"""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers import JsonClient
from ptyconsole import PtyConsole, free_port, ping_for, wait_listening

pytestmark = [
    pytest.mark.skipif(sys.platform != "linux", reason="ptys and SO_PEERCRED"),
    pytest.mark.timeout(120),
]


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    run = tmp_path / "run"
    run.mkdir()
    return {"XDG_RUNTIME_DIR": str(run)}


def ctl(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "verb_console", "ctl", *args],
        capture_output=True,
        text=True,
        timeout=20,
        env=dict(os.environ, **env),
        stdin=subprocess.DEVNULL,
    )


async def test_hang_up_attach_close_broadcast_detach_then_ctl_drain(env, tmp_path) -> None:
    port = free_port()
    host = PtyConsole(
        ["--port", str(port), "--protocol", "json", "--max-per-ip", "0"], env=env, cwd=str(tmp_path)
    )
    attached: PtyConsole | None = None
    try:
        await wait_listening(port, host.proc)
        await host.shows("Connections")
        pinging = asyncio.create_task(ping_for(port, 12.0))
        target = await JsonClient.connect(port)
        bystander = await JsonClient.connect(port)
        await asyncio.sleep(0.5)
        host.hang_up()
        await asyncio.sleep(1.0)
        assert host.proc.poll() is None

        attached = PtyConsole(["attach"], cols=160, rows=40, env=env, cwd=str(tmp_path))
        await attached.shows("RUNNING")
        await attached.shows(target.id)
        # Close the target: filter down to it, then x, y.
        mark = attached.received()
        attached.type("/")
        await asyncio.sleep(0.5)
        attached.type(str(target.id.rsplit(":", 1)[1]))
        await asyncio.sleep(0.3)
        attached.type("\r")
        await attached.shows("1 of", since=mark)
        await asyncio.sleep(0.6)  # the filtered window comes from the server
        mark = attached.received()
        attached.type("x")
        await attached.shows(f"Close session {target.id}?", since=mark)
        attached.type("y")
        assert await target.recv(5) == {"type": "closing", "reason": "operator"}
        # Broadcast to everyone left.
        mark = attached.received()
        attached.type("b")
        await asyncio.sleep(0.5)
        attached.type("from the attached console")
        await asyncio.sleep(0.2)
        attached.type("\r")
        message = await bystander.recv(5)
        assert message["type"] == "broadcast" and message["data"] == "from the attached console"
        # q detaches; the server goes on.
        attached.type("q")
        assert await asyncio.to_thread(attached.proc.wait, 10) == 0
        assert (await bystander.request({"type": "ping"}))["type"] == "pong"

        trips = await pinging
        assert len(trips) >= 50  # 12 s at 200 ms: no ping lost or stuck
        assert max(trips) < 1.0

        drained = await asyncio.to_thread(ctl, env, "drain")
        assert drained.returncode == 0, drained
        assert (await bystander.recv(5))["type"] == "server_shutdown"
        await bystander.close()
        assert await asyncio.to_thread(host.proc.wait, 40) == 0
    finally:
        host.stop()
        if attached is not None:
            attached.stop()


HEADLESS = [sys.executable, "-m", "verb_console", "--headless", "--protocol", "json"]


def start_headless(port: int, sock: Path, cwd: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [*HEADLESS, "--port", str(port), "--admin-socket", str(sock)],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        cwd=cwd,
    )


async def test_an_attached_console_says_disconnected_and_reattaches_after_a_restart(
    tmp_path,
) -> None:
    port = free_port()
    sock = tmp_path / "admin.sock"
    server = start_headless(port, sock, tmp_path)
    attached = PtyConsole(
        ["attach", "--admin-socket", str(sock)], cols=160, rows=40, cwd=str(tmp_path)
    )
    try:
        await wait_listening(port, server)
        client = await JsonClient.connect(port)
        await attached.shows(client.id)
        await client.close()
        server.kill()
        server.wait(10)
        mark = attached.received()
        # The header says the link is down (and retrying) instead of the server's state.
        await attached.shows("LINK DOWN", since=mark, timeout=10)
        assert attached.proc.poll() is None
        server = start_headless(port, sock, tmp_path)
        await wait_listening(port, server)
        restarted = time.monotonic()  # the console's part: from the server listening
        again = await JsonClient.connect(port)
        mark = attached.received()
        await attached.shows(again.id, since=mark, timeout=10)
        took = time.monotonic() - restarted
        assert took < 5.0, took
        text = attached.text_since(mark)
        assert re.search("RUNNING", text)
        await again.close()
        attached.type("q")
        assert await asyncio.to_thread(attached.proc.wait, 10) == 0
    finally:
        attached.stop()
        if server.poll() is None:
            server.kill()
            server.wait(10)
