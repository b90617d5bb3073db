"""``verb-console ctl`` from a shell, against a real headless server (issue 10, item 4)."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from helpers import JsonClient

pytestmark = [
    pytest.mark.skipif(sys.platform != "linux", reason="Unix sockets with SO_PEERCRED"),
    pytest.mark.timeout(90),
]


HEADLESS = [sys.executable, "-m", "verb_console", "--headless", "--port", "0", "--protocol", "json"]


class Headless:
    def __init__(self, env: dict[str, str], *args: str) -> None:
        self.env = env
        self.proc = subprocess.Popen(
            [*HEADLESS, *args],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            env=env,
        )
        assert self.proc.stderr is not None
        self.lines: list[bytes] = []
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            line = self.proc.stderr.readline()
            if not line:
                break
            self.lines.append(line)
            found = re.search(rb"listening on 127\.0\.0\.1:(\d+)", line)
            if found:
                self.port = int(found.group(1))
                rest = iter(self.proc.stderr.readline, b"")
                threading.Thread(target=self.lines.extend, args=(rest,), daemon=True).start()
                return
        self.proc.kill()
        raise AssertionError(f"no listening line: {self.lines!r}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


def ctl(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "verb_console", "ctl", *args],
        capture_output=True,
        text=True,
        timeout=20,
        env=env,
        stdin=subprocess.DEVNULL,
    )


def failed_with_one_line(result: subprocess.CompletedProcess[str], *words: str) -> None:
    assert result.returncode == 1, result
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    for word in words:
        assert word in lines[0], lines[0]


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    run = tmp_path / "run"
    run.mkdir()
    return dict(os.environ, XDG_RUNTIME_DIR=str(run))


async def test_every_command_in_text_and_json_on_the_only_running_server(env, tmp_path) -> None:
    server = await asyncio.to_thread(Headless, env, "--upload-dir", str(tmp_path / "up"))
    try:
        a = await JsonClient.connect(server.port)
        b = await JsonClient.connect(server.port, source_ip="127.0.0.2")
        c = await JsonClient.connect(server.port, source_ip="127.0.0.2")
        await a.request({"type": "join_room", "room": "ops"})

        status = await asyncio.to_thread(ctl, env, "status")
        assert status.returncode == 0, status
        assert "state: running" in status.stdout and "sessions: 3" in status.stdout
        doc = json.loads((await asyncio.to_thread(ctl, env, "--json", "status")).stdout)
        assert doc["state"] == "running" and doc["sessions"] == 3
        assert doc["pid"] == server.proc.pid

        text = (await asyncio.to_thread(ctl, env, "sessions")).stdout
        for client in (a, b, c):
            assert client.id in text
        assert "3 of 3 matching, 3 live" in text
        found = json.loads(
            (await asyncio.to_thread(ctl, env, "--json", "sessions", "--filter", "ops")).stdout
        )
        assert [s["id"] for s in found["sessions"]] == [a.id]
        assert found["sessions"][0]["rooms"] == ["ops"]

        rooms = await asyncio.to_thread(ctl, env, "--port", str(server.port), "rooms")
        assert re.search(r"^ops\s+1\s+", rooms.stdout, re.M), rooms.stdout

        sent = await asyncio.to_thread(ctl, env, "broadcast", "maintenance at noon")
        assert sent.stdout.strip() == "broadcast to every session: 3 sessions"
        for client in (a, b, c):
            assert (await client.recv())["data"] == "maintenance at noon"

        closed = await asyncio.to_thread(ctl, env, "--json", "close", a.id)
        assert json.loads(closed.stdout) == {"closed": True}
        assert await a.recv() == {"type": "closing", "reason": "operator"}
        failed_with_one_line(await asyncio.to_thread(ctl, env, "close", a.id), a.id)

        by_ip = await asyncio.to_thread(ctl, env, "close-ip", "127.0.0.2")
        assert by_ip.stdout.strip() == "closed 2 sessions of 127.0.0.2"
        assert (await b.recv())["reason"] == "operator"

        assert (await asyncio.to_thread(ctl, env, "reload")).stdout.strip() == "reloaded"
        drained = await asyncio.to_thread(ctl, env, "drain")
        assert drained.stdout.strip() in ("state: draining", "state: stopped")
        assert await asyncio.to_thread(server.proc.wait, 20) == 0
        failed_with_one_line(await asyncio.to_thread(ctl, env, "status"), "no running server")
    finally:
        server.stop()


async def test_unreachable_or_ambiguous_servers_exit_1_with_one_line(env, tmp_path) -> None:
    failed_with_one_line(await asyncio.to_thread(ctl, env, "status"), "no running server")
    attach = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "verb_console", "attach"],
        capture_output=True,
        text=True,
        timeout=20,
        env=env,
        stdin=subprocess.DEVNULL,
    )
    failed_with_one_line(attach, "no running server")
    failed_with_one_line(
        await asyncio.to_thread(ctl, env, "--admin-socket", str(tmp_path / "x.sock"), "status"),
        "cannot reach",
        "x.sock",
    )
    failed_with_one_line(await asyncio.to_thread(ctl, env, "--port", "1", "status"), "1.sock")
    one = await asyncio.to_thread(Headless, env, "--upload-dir", str(tmp_path / "u1"))
    two = await asyncio.to_thread(Headless, env, "--upload-dir", str(tmp_path / "u2"))
    try:
        failed_with_one_line(
            await asyncio.to_thread(ctl, env, "status"), "2 servers", str(one.port), "--port"
        )
        picked = await asyncio.to_thread(ctl, env, "--json", "--port", str(two.port), "status")
        assert json.loads(picked.stdout)["pid"] == two.proc.pid
        # A server killed outright leaves its socket: ctl sees it as not running,
        # and a new server on that port replaces it.
        one.proc.send_signal(signal.SIGKILL)
        one.proc.wait(10)
        mine = await asyncio.to_thread(ctl, env, "--json", "status")
        assert json.loads(mine.stdout)["pid"] == two.proc.pid
    finally:
        one.stop()
        two.stop()
    bad = await asyncio.to_thread(ctl, env, "frobnicate")
    assert bad.returncode == 2 and len(bad.stderr.strip().splitlines()) == 1


async def test_ctl_sessions_shows_the_user_and_ctl_reload_rereads_the_auth_file(
    env, tmp_path
) -> None:
    import hashlib

    tokens = tmp_path / "tokens"
    tokens.write_text(f"alice:{hashlib.sha256(b'one').hexdigest()}\n")
    args = ("--upload-dir", str(tmp_path / "up"), "--auth-file", str(tokens))
    server = await asyncio.to_thread(Headless, env, *args)
    try:
        a = await JsonClient.connect(server.port)
        assert (await a.request({"type": "auth", "token": "one"}))["user"] == "alice"
        doc = json.loads((await asyncio.to_thread(ctl, env, "--json", "sessions")).stdout)
        assert [s["user"] for s in doc["sessions"]] == ["alice"]
        text = (await asyncio.to_thread(ctl, env, "sessions")).stdout
        assert "USER" in text.splitlines()[0] and "alice" in text
        tokens.write_text(f"bob:{hashlib.sha256(b'two').hexdigest()}\n")
        done = await asyncio.to_thread(ctl, env, "reload")
        assert done.returncode == 0, done
        b = await JsonClient.connect(server.port)
        assert (await b.request({"type": "auth", "token": "two"}))["user"] == "bob"
        # alice's token is gone, and so is her session (PROTOCOL.md 12.2).
        assert await a.recv() == {"type": "closing", "reason": "auth_revoked"}
        await a.expect_eof()
        tokens.write_text("broken\n")
        failed = await asyncio.to_thread(ctl, env, "reload")
        assert failed.returncode == 1 and "kept the previous auth file" in failed.stderr
        await a.close()
        await b.close()
    finally:
        server.stop()


async def test_ctl_history_prints_the_server_s_rates_at_the_step_asked_for(env, tmp_path) -> None:
    server = await asyncio.to_thread(Headless, env, "--upload-dir", str(tmp_path / "up"))
    try:
        client = await JsonClient.connect(server.port)
        deadline = time.monotonic() + 3.5
        while time.monotonic() < deadline:
            await client.request({"type": "ping"})
        doc = json.loads(
            (await asyncio.to_thread(ctl, env, "--json", "history", "--step", "1")).stdout
        )
        assert doc["step"] == 1 and doc["fields"][0] == "msgs_in"
        assert max(s[0] for s in doc["samples"]) > 10  # pings a second, from the server's ring
        text = (await asyncio.to_thread(ctl, env, "history", "--step", "1", "--last", "2")).stdout
        lines = text.strip().splitlines()
        names = ["AGO", "MSG IN/S", "MSG OUT/S", "BYTES IN/S", "BYTES OUT/S"]
        assert re.fullmatch(r"\s+".join(map(re.escape, names)), lines[0]), lines[0]
        assert len(lines) == 3 and lines[-1].startswith("-1s")
        young = await asyncio.to_thread(ctl, env, "history")
        assert young.stdout.strip() == "no 60 s samples yet"
        bad = await asyncio.to_thread(ctl, env, "history", "--step", "5")
        assert bad.returncode == 2
    finally:
        server.stop()


async def test_ctl_sessions_pages_on_after_a_session_in_the_order_asked_for(env) -> None:
    server = await asyncio.to_thread(Headless, env)
    try:
        clients = [await JsonClient.connect(server.port) for _ in range(5)]
        for n, client in enumerate(clients):
            for _ in range(n):
                await client.request({"type": "ping"})
        # Most messages first: the clients in reverse, each page after the last one's end.
        want = [c.id for c in reversed(clients)]

        async def page(*args: str) -> list[str]:
            result = await asyncio.to_thread(ctl, env, "--json", "sessions", *args)
            assert result.returncode == 0, result
            return [s["id"] for s in json.loads(result.stdout)["sessions"]]

        first = await page("--sort", "msgs_in", "--reverse", "--limit", "2")
        assert first == want[:2]
        second = await page("--sort", "msgs_in", "--reverse", "--limit", "2", "--after", first[-1])
        assert second == want[2:4]
        assert await page("--sort", "msgs_in", "--reverse", "--after", second[-1]) == want[4:]
        gone = await asyncio.to_thread(ctl, env, "sessions", "--after", "10.9.9.9:1")
        failed_with_one_line(gone, "no live session")
    finally:
        await asyncio.to_thread(server.stop)
