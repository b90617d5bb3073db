"""Several consoles attached to one server at once (issue 10, item 4), as operators run them.

A headless server and two ``verb-console attach`` processes on real ptys, one of
them ``--read-only``: both list the sessions, what one does the other's log
shows, and the read-only one refuses every action (and its server would too).
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers import JsonClient, eventually
from ptyconsole import PtyConsole, free_port, wait_listening

from verb_console.admin.remote_view import DISCONNECTED, RemoteHubView

HEADLESS = [sys.executable, "-m", "verb_console", "--headless", "--protocol", "json"]

pytestmark = [
    pytest.mark.skipif(sys.platform != "linux", reason="ptys and SO_PEERCRED"),
    pytest.mark.timeout(120),
]


def start_headless(port: int, sock: Path, cwd: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [*HEADLESS, "--port", str(port), "--admin-socket", str(sock), "--max-per-ip", "0"],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        cwd=cwd,
    )


async def test_two_attached_consoles_see_the_sessions_and_each_other_s_actions(
    tmp_path: Path,
) -> None:
    port = free_port()
    sock = tmp_path / "admin.sock"
    server = start_headless(port, sock, tmp_path)
    target_args = ["attach", "--admin-socket", str(sock)]
    operator = PtyConsole(target_args, cols=160, rows=40, cwd=str(tmp_path))
    viewer = PtyConsole([*target_args, "--read-only"], cols=160, rows=40, cwd=str(tmp_path))
    try:
        await wait_listening(port, server)
        target = await JsonClient.connect(port)
        bystander = await JsonClient.connect(port)
        for console in (operator, viewer):
            await console.shows(target.id)
            await console.shows(bystander.id)

        # The read-only console refuses actions, and nothing reaches a client.
        for key, what in (("b", "broadcast is disabled"), ("x", "closing sessions is disabled")):
            # On a loaded machine a key typed while the attached console is still
            # settling its first frames can go unseen: the key is typed again (at most
            # three times); the refusal must show, and nothing may reach a client.
            for attempt in range(3):
                mark = viewer.received()
                viewer.type(key)
                try:
                    await viewer.shows(what, since=mark, timeout=8.0)
                    break
                except AssertionError:
                    if attempt == 2:
                        raise
            await asyncio.sleep(0.3)
        await bystander.expect_nothing(0.3)
        await target.expect_nothing(0.1)

        # The other one closes a session and broadcasts.
        operator.type("/")
        await asyncio.sleep(0.5)
        operator.type(str(target.id.rsplit(":", 1)[1]))
        await asyncio.sleep(0.3)
        operator.type("\r")
        await asyncio.sleep(0.8)  # the filtered window comes from the server
        mark = operator.received()
        operator.type("x")
        await operator.shows(f"Close session {target.id}?", since=mark)
        operator.type("y")
        assert await target.recv(5) == {"type": "closing", "reason": "operator"}
        operator.type("\x1b")  # clear the filter
        await asyncio.sleep(0.3)
        operator.type("b")
        await asyncio.sleep(0.5)
        operator.type("seen by both")
        await asyncio.sleep(0.2)
        operator.type("\r")
        message = await bystander.recv(5)
        assert message["type"] == "broadcast" and message["data"] == "seen by both"

        # The read-only console's log shows both actions, from the server's event log.
        mark = viewer.received()
        viewer.type("6")
        await viewer.shows("closed session", since=mark)
        await viewer.shows("seen by both", since=mark)

        for console in (operator, viewer):
            console.type("q")
            assert await asyncio.to_thread(console.proc.wait, 10) == 0
        assert (await bystander.request({"type": "ping"}))["type"] == "pong"
        await bystander.close()
    finally:
        operator.stop()
        viewer.stop()
        if server.poll() is None:
            server.terminate()
            server.wait(20)


async def test_an_attached_view_is_back_within_2_s_of_a_restarted_server_listening(
    tmp_path: Path,
) -> None:
    port = free_port()
    sock = tmp_path / "admin.sock"
    server = start_headless(port, sock, tmp_path)
    view = RemoteHubView(sock, interval=0.25)
    task = asyncio.create_task(view.run())
    try:
        await wait_listening(port, server)
        await eventually(lambda: view.connected and view.overview().state == "running", 10)
        first_pid = view.server_pid
        server.kill()
        server.wait(10)
        await eventually(lambda: view.overview().state == DISCONNECTED, timeout=10)
        server = start_headless(port, sock, tmp_path)
        await wait_listening(port, server)
        listening = time.monotonic()
        client = await JsonClient.connect(port)
        await eventually(lambda: [s.id for s in view.sessions()] == [client.id], timeout=10)
        took = time.monotonic() - listening
        assert view.attaches == 2 and view.server_pid != first_pid
        assert took < 2.0, took
        await client.close()
    finally:
        view.stop()
        await asyncio.wait_for(task, 5)
        if server.poll() is None:
            server.terminate()
            server.wait(20)
