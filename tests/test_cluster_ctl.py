"""``verb-console ctl status`` on a cluster node: its name, its Redis link, the nodes it
knows, cross-node messages and drops (real node processes on a real redis-server)."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from cluster_harness import NodeProcess, RedisServer, wait_for
from helpers import JsonClient

pytestmark = pytest.mark.timeout(90)


async def ctl(*args: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "verb_console", "ctl", *args]
    return await asyncio.to_thread(
        subprocess.run, command, capture_output=True, text=True, timeout=20
    )


async def test_ctl_status_shows_the_cluster_in_text_and_json(
    redis_server: RedisServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    run = tmp_path / "run"
    run.mkdir(mode=0o700)
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(run))
    a = await NodeProcess.start(tmp_path, redis_server.url, "alpha")
    b = await NodeProcess.start(tmp_path, redis_server.url, "beta")
    try:
        on_a = await JsonClient.connect(a.port)
        on_b = await JsonClient.connect(b.port)
        await on_a.request({"type": "join_room", "room": "r"})

        async def b_is_known() -> bool:
            doc = json.loads((await ctl("--port", str(a.port), "--json", "status")).stdout)
            return any(n["name"] == "beta" for n in doc["cluster"]["nodes"])

        await wait_for(b_is_known, 10, 0.2)
        await on_b.request({"type": "join_room", "room": "r"})
        await on_b.send({"type": "room_message", "room": "r", "data": "across"})
        while (await on_a.recv())["type"] != "room_message":
            pass

        result = await ctl("--port", str(a.port), "--json", "status")
        assert result.returncode == 0, result.stderr
        cluster = json.loads(result.stdout)["cluster"]
        assert cluster["node"] == "alpha"
        assert cluster["link"] == "up"
        assert sorted(n["name"] for n in cluster["nodes"]) == ["alpha", "beta"]
        assert cluster["received"] >= 1
        assert cluster["dropped"] == 0

        text = await ctl("--port", str(a.port), "status")
        assert text.returncode == 0, text.stderr
        assert "cluster node: alpha  redis link: up" in text.stdout
        assert "known nodes: 2 (alpha; others: beta)" in text.stdout
        assert "cross-node messages: " in text.stdout
        assert "dropped: 0" in text.stdout
        await on_a.close()
        await on_b.close()
    finally:
        await a.stop()
        await b.stop()


async def test_ctl_status_of_a_single_server_has_no_cluster(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    run = tmp_path / "run"
    run.mkdir(mode=0o700)
    env = dict(os.environ, XDG_RUNTIME_DIR=str(run))
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "verb_console",
        "--headless",
        "--port",
        "0",
        env=env,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        assert proc.stderr is not None
        while b"listening on" not in await asyncio.wait_for(proc.stderr.readline(), 15):
            pass
        monkeypatch.setenv("XDG_RUNTIME_DIR", str(run))
        doc = json.loads((await ctl("--json", "status")).stdout)
        assert doc["cluster"] is None
        text = await ctl("status")
        assert "cluster" not in text.stdout and "state: running" in text.stdout
    finally:
        proc.kill()
        await proc.wait()
