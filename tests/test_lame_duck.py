"""Lame duck (PROTOCOL.md section 11.3): gradual closes over the grace period, ``reconnect``
in ``server_shutdown``, and ``ctl drain --final --wait`` against a real server process."""

from __future__ import annotations

import asyncio
import contextlib
import re
import signal
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import orjson
import pytest
from helpers import JsonClient

from verb_console.hub.shutdown import close_offset
from verb_console.runtime import Runtime
from verb_console.settings import Settings

pytestmark = [
    pytest.mark.timeout(60),
    pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals and Unix sockets"),
]

LISTENING = re.compile(rb"listening on 127\.0\.0\.1:(\d+) \(json\)")


@contextlib.asynccontextmanager
async def running(tmp_path: Path, grace: float) -> AsyncIterator[Runtime]:
    runtime = Runtime(
        Settings(
            host="127.0.0.1",
            port=0,
            protocol="json",
            grace_period=grace,
            upload_dir=str(tmp_path / "uploads"),
            admin_socket=str(tmp_path / "admin.sock"),
        )
    )
    await runtime.start()
    try:
        yield runtime
    finally:
        runtime.hub.force_shutdown()
        await asyncio.wait_for(runtime.hub.wait_stopped(), 10)


async def closed_at(client: JsonClient, started: float) -> float:
    """Seconds after ``started`` at which ``client`` got ``closing`` ``shutdown``."""
    notice = await client.recv(5)
    assert notice["type"] == "server_shutdown"
    assert await client.recv(10) == {"type": "closing", "reason": "shutdown"}
    at = time.monotonic() - started
    await client.expect_eof()
    return at


def test_the_schedule_closes_the_kth_of_n_at_10_percent_plus_90_percent_of_k_over_n() -> None:
    assert close_offset(1, 10, 30.0) == pytest.approx(5.7)
    assert close_offset(10, 10, 30.0) == pytest.approx(30.0)
    assert close_offset(1, 1, 30.0) == pytest.approx(30.0)
    assert close_offset(5, 10, 20.0) == pytest.approx(2.0 + 9.0)


async def test_sessions_are_closed_one_by_one_in_accept_order_spread_over_the_grace_period(
    tmp_path: Path,
) -> None:
    grace = 1.5
    async with running(tmp_path, grace) as runtime:
        clients = [await JsonClient.connect(runtime.port) for _ in range(5)]
        try:
            started = time.monotonic()
            runtime.hub.begin_shutdown()
            times = await asyncio.gather(*(closed_at(c, started) for c in clients))
            # In accept order, one after the other, not all at once at the end.
            assert times == sorted(times), times
            # The first at 28% of the grace period (0.42 s), the last at its end:
            # a loaded machine makes each later, never earlier.
            assert times[0] >= 0.2, times
            assert times[-1] - times[0] >= 0.6, times
            assert times[-1] < grace + 3, times
            await asyncio.wait_for(runtime.hub.wait_stopped(), 5)
        finally:
            for c in clients:
                await c.close()


async def test_sessions_that_leave_on_their_own_are_not_closed_and_their_slots_pass_unused(
    tmp_path: Path,
) -> None:
    grace = 2.0
    async with running(tmp_path, grace) as runtime:
        clients = [await JsonClient.connect(runtime.port) for _ in range(4)]
        try:
            started = time.monotonic()
            runtime.hub.begin_shutdown()
            for c in clients:
                assert (await c.recv(5))["reconnect"] is True
            assert runtime.hub.overview().drain_left == 4
            # The first two go at once; the others keep their slots (3/4 and 4/4).
            await clients[0].close()
            await clients[1].close()
            for _ in range(100):
                if runtime.hub.overview().drain_left == 2:
                    break
                await asyncio.sleep(0.01)
            assert runtime.hub.overview().drain_left == 2
            assert runtime.hub.overview().state == "draining"
            third, fourth = await asyncio.gather(
                *(closed_at_after_notice(c, started) for c in clients[2:])
            )
            # Slot 3 of 4 is at 1.55 s: the freed slots did not move it forward.
            assert third >= 1.0, (third, fourth)
            assert fourth >= third
            # None left: the process ends at once, not at some later tick.
            left_at = time.monotonic()
            await asyncio.wait_for(runtime.hub.wait_stopped(), 5)
            assert time.monotonic() - left_at < 3
            assert runtime.hub.overview().drain_left == 0
        finally:
            for c in clients:
                await c.close()


async def closed_at_after_notice(client: JsonClient, started: float) -> float:
    assert await client.recv(10) == {"type": "closing", "reason": "shutdown"}
    at = time.monotonic() - started
    await client.expect_eof()
    return at


async def test_a_forced_shutdown_during_the_schedule_closes_the_rest_at_once(
    tmp_path: Path,
) -> None:
    async with running(tmp_path, 30.0) as runtime:
        clients = [await JsonClient.connect(runtime.port) for _ in range(3)]
        try:
            runtime.hub.begin_shutdown()
            for c in clients:
                assert (await c.recv(5))["type"] == "server_shutdown"
            started = time.monotonic()
            runtime.hub.force_shutdown()
            for c in clients:
                assert await c.recv(5) == {"type": "closing", "reason": "shutdown"}
                await c.expect_eof()
            await asyncio.wait_for(runtime.hub.wait_stopped(), 5)
            assert time.monotonic() - started < 5
        finally:
            for c in clients:
                await c.close()


async def test_a_final_drain_tells_clients_not_to_reconnect(tmp_path: Path) -> None:
    async with running(tmp_path, 1.0) as runtime:
        client = await JsonClient.connect(runtime.port)
        try:
            runtime.hub.begin_shutdown(final=True)
            assert await client.recv(5) == {
                "type": "server_shutdown",
                "message": "Server is shutting down",
                "gracePeriod": 1000,
                "reconnect": False,
            }
            assert runtime.hub.overview().drain_final is True
        finally:
            await client.close()


# ----------------------------------------------------------- real processes


async def start_server(tmp_path: Path, grace: float) -> tuple[asyncio.subprocess.Process, int]:
    log = tmp_path / "server.log"
    with log.open("wb") as stderr:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "verb_console",
            "--headless",
            "--port",
            "0",
            "--protocol",
            "json",
            "--grace-period",
            str(grace),
            "--upload-dir",
            str(tmp_path / "uploads"),
            "--admin-socket",
            str(tmp_path / "admin.sock"),
            cwd=tmp_path,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=stderr,
        )
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        match = LISTENING.search(log.read_bytes())
        if match:
            return proc, int(match.group(1))
        if proc.returncode is not None:
            break
        await asyncio.sleep(0.02)
    raise AssertionError(f"the server is not listening: {log.read_bytes()!r}")


async def ctl(tmp_path: Path, *args: str) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "verb_console",
        "ctl",
        "--admin-socket",
        str(tmp_path / "admin.sock"),
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )


async def test_ctl_drain_final_wait_prints_the_drain_and_exits_0_once_the_server_is_gone(
    tmp_path: Path,
) -> None:
    server, port = await start_server(tmp_path, grace=1.5)
    clients = [await JsonClient.connect(port) for _ in range(2)]
    try:
        # --json after the command, as ARCHITECTURE.md documents it.
        waiter = await ctl(tmp_path, "drain", "--final", "--wait", "--json")
        for c in clients:
            notice = await c.recv(10)
            assert (notice["type"], notice["reconnect"]) == ("server_shutdown", False)
        out, err = await asyncio.wait_for(waiter.communicate(), 20)
        assert waiter.returncode == 0, err
        # ctl returned only once the server process had exited.
        assert server.returncode is not None or await asyncio.wait_for(server.wait(), 1) == 0
        assert server.returncode == 0
        lines = [orjson.loads(line) for line in out.splitlines()]
        progress, last = lines[:-1], lines[-1]
        assert last["state"] == "stopped"
        assert progress[0]["sessions_left"] == 2
        assert progress[0]["seconds_left"] <= 1.5
        left = [p["sessions_left"] for p in progress]
        assert left == sorted(left, reverse=True), left
        assert 1 in left or 0 in left, left  # it saw the lame duck close the first
        for c in clients:
            assert await c.recv(5) == {"type": "closing", "reason": "shutdown"}
            await c.expect_eof()
    finally:
        for c in clients:
            await c.close()
        if server.returncode is None:
            server.kill()
            await server.wait()


async def test_ctl_drain_wait_in_text_ends_as_soon_as_the_last_session_leaves(
    tmp_path: Path,
) -> None:
    server, port = await start_server(tmp_path, grace=5)
    client = await JsonClient.connect(port)
    try:
        waiter = await ctl(tmp_path, "drain", "--wait")
        notice = await client.recv(10)
        assert (notice["type"], notice["reconnect"]) == ("server_shutdown", True)
        await asyncio.sleep(0.3)
        await client.close()  # the last session leaves: the server exits at once
        out, err = await asyncio.wait_for(waiter.communicate(), 20)
        assert waiter.returncode == 0, err
        assert server.returncode is not None or await asyncio.wait_for(server.wait(), 1) == 0
        text = out.decode()
        assert re.search(r"^draining: 1 left, [45] s left$", text, re.M), text
        assert text.rstrip().endswith(f"stopped (pid {server.pid} has exited)"), text
    finally:
        await client.close()
        if server.returncode is None:
            server.send_signal(signal.SIGKILL)
            await server.wait()
