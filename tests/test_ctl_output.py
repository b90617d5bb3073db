"""``ctl``'s two outputs: ``--json`` anywhere on the line with raw numbers, text in human units.

Real ``verb-console ctl`` processes against a real headless server (issue 24, items 2, 3, 9).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import sys
from typing import Any

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

        ran: set[str] = set()

        async def both(*args: str) -> Any:
            ran.add(args[0])
            after, before = await asyncio.gather(
                asyncio.to_thread(ctl, env, *args, "--json"),
                asyncio.to_thread(ctl, env, "--json", *args),
            )
            assert after.returncode == 0, after
            assert before.returncode == 0, before
            doc = json.loads(after.stdout)
            other = json.loads(before.stdout)
            assert type(doc) is type(other)
            if isinstance(doc, dict):
                assert set(doc) == set(other)
            return doc

        async def once(*args: str, json_at: int = -1) -> Any:
            """A command that changes something, run once: ``--json`` at ``json_at``."""
            ran.add(args[0])
            line = list(args)
            line.insert(len(line) + 1 + json_at if json_at < 0 else json_at, "--json")
            done = await asyncio.to_thread(ctl, env, *line)
            assert done.returncode == 0, done
            return json.loads(done.stdout)

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
        assert (await once("broadcast", "hi", "--room", "ops", json_at=2)) == {"sent": 1}
        assert (await once("broadcast", "hi", json_at=0)) == {"sent": 2}
        assert (await both("reload")) == {"errors": []}
        # Bans: raw Unix seconds in JSON, the same documents either way round.
        ban = await once("ban", "198.51.100.0/24", "--for", "2h")
        assert isinstance(ban["created"], int) and ban["expires"] - ban["created"] == 7200
        forever = await once("ban", "user:mallory", json_at=0)
        assert forever["target"] == "user:mallory" and forever["expires"] is None
        listed = await both("bans")
        assert {b["target"] for b in listed} == {"198.51.100.0/24", "user:mallory"}
        assert (await once("unban", "user:mallory", json_at=0))["target"] == "user:mallory"
        assert (await once("unban", "198.51.100.0/24"))["expires"] == ban["expires"]
        assert (await once("close-ip", "127.0.0.2")) == {"closed": 1}
        assert (await once("close", a.id, json_at=0)) == {"closed": True}
        assert (await once("drain"))["state"] in ("draining", "stopped")
        await asyncio.to_thread(server.proc.wait, 20)
        # Every command of ctl was run with --json after its name and before it.
        from verb_console.admin.ctl import build_parser

        commands = next(
            a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction)
        )
        assert ran == set(commands.choices), set(commands.choices) ^ ran
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
        # A ban's time left in the two largest units, as every duration ctl prints.
        banned = (await asyncio.to_thread(ctl, env, "ban", "198.51.100.0/24", "--for", "2h")).stdout
        assert banned.strip() == "banned 198.51.100.0/24 (2h)"
        bans = (await asyncio.to_thread(ctl, env, "bans")).stdout
        row = next(line for line in bans.splitlines() if line.startswith("198.51.100.0/24"))
        assert re.search(r" (1h59m|2h00m)$", row), row
        by_ip = (await asyncio.to_thread(ctl, env, "close-ip", "127.0.0.1")).stdout
        assert by_ip.strip() == "closed 1 session of 127.0.0.1"
    finally:
        server.stop()
