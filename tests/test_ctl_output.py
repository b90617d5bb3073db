"""``ctl``'s two outputs: ``--json`` anywhere on the line with raw numbers, text in human units.

Real ``verb-console ctl`` processes against a real headless server (issue 24, items 2, 3, 9).
"""

from __future__ import annotations

import asyncio
import json
import re
import sys

import pytest
from helpers import JsonClient
from test_ctl import Headless, ctl, env  # noqa: F401 - env is a fixture

pytestmark = [
    pytest.mark.skipif(sys.platform != "linux", reason="Unix sockets with SO_PEERCRED"),
    pytest.mark.timeout(90),
]


async def test_json_after_the_command_works_for_every_command(env, tmp_path) -> None:  # noqa: F811
    server = await asyncio.to_thread(Headless, env, "--upload-dir", str(tmp_path / "up"))
    try:
        a = await JsonClient.connect(server.port)
        b = await JsonClient.connect(server.port, source_ip="127.0.0.2")
        await a.request({"type": "join_room", "room": "ops"})
        await a.send({"type": "room_message", "room": "ops", "data": "x" * 3000})
        await a.request({"type": "ping"})

        async def both(*args: str) -> dict:
            after = await asyncio.to_thread(ctl, env, *args, "--json")
            assert after.returncode == 0, after
            before = await asyncio.to_thread(ctl, env, "--json", *args)
            assert before.returncode == 0, before
            doc = json.loads(after.stdout)
            assert set(doc) == set(json.loads(before.stdout))
            return doc

        status = await both("status")
        assert status["sessions"] == 2 and status["pid"] == server.proc.pid
        # Raw numbers: bytes as integers, times as Unix seconds.
        assert isinstance(status["totals"]["bytes_in"], int)
        assert status["totals"]["bytes_in"] > 3000
        sessions = await both("sessions", "--sort", "bytes_in", "--reverse")
        first = sessions["sessions"][0]
        assert first["id"] == a.id and isinstance(first["bytes_in"], int)
        assert first["bytes_in"] > 3000 and isinstance(first["connected_at"], float)
        assert (await both("rooms"))["rooms"][0]["name"] == "ops"
        history = await both("history", "--step", "1")
        assert history["step"] == 1
        sent = json.loads(
            (await asyncio.to_thread(ctl, env, "broadcast", "hi", "--json", "--room", "ops")).stdout
        )
        assert sent == {"sent": 1}
        assert (await both("reload")) == {"errors": []}
        closed = await asyncio.to_thread(ctl, env, "close-ip", "127.0.0.2", "--json")
        assert json.loads(closed.stdout) == {"closed": 1}
        closed = await asyncio.to_thread(ctl, env, "close", a.id, "--json")
        assert json.loads(closed.stdout) == {"closed": True}
        drained = await asyncio.to_thread(ctl, env, "drain", "--json")
        assert json.loads(drained.stdout)["state"] in ("draining", "stopped")
        await asyncio.to_thread(server.proc.wait, 20)
        await b.close()
        await a.close()
    finally:
        server.stop()


async def test_text_output_says_units_and_singular_nouns(env, tmp_path) -> None:  # noqa: F811
    server = await asyncio.to_thread(Headless, env, "--upload-dir", str(tmp_path / "up"))
    try:
        a = await JsonClient.connect(server.port)
        await a.request({"type": "join_room", "room": "ops"})
        await a.send({"type": "room_message", "room": "ops", "data": "x" * 3000})
        await a.request({"type": "ping"})
        status = (await asyncio.to_thread(ctl, env, "status")).stdout
        # Bytes in binary units, never a bare count.
        assert re.search(r"bytes: \d+\.\d KiB in, \d+(\.\d)? (B|KiB) out", status), status
        sessions = (await asyncio.to_thread(ctl, env, "sessions")).stdout
        row = next(line for line in sessions.splitlines() if line.startswith(a.id))
        assert re.search(r"\d\.\d KiB", row) and " 0 B " in row, row
        sent = (await asyncio.to_thread(ctl, env, "broadcast", "hello")).stdout
        assert sent.strip() == "broadcast to every session: 1 session"
        # The first 1 s sample comes a second after the server started.
        for _ in range(50):
            history = (await asyncio.to_thread(ctl, env, "history", "--step", "1")).stdout
            if "no 1 s samples yet" not in history:
                break
            await asyncio.sleep(0.2)
        assert "/s" in history.splitlines()[-1] and "B/s" in history.splitlines()[-1], history
        by_ip = (await asyncio.to_thread(ctl, env, "close-ip", "127.0.0.1")).stdout
        assert by_ip.strip() == "closed 1 session of 127.0.0.1"
    finally:
        server.stop()
