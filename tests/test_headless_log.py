"""``--headless`` logs each connect and close at ``--log-level debug``, as text or as JSON.

A real headless server process; its stderr read as an operator's log shipper would
(issue 24: ``--log-format json``, one object a line, the fields of ``ctl``).
"""

from __future__ import annotations

import asyncio
import json
import sys
import time

import pytest
from helpers import JsonClient
from test_ctl import Headless, env  # noqa: F401 - env is a fixture

pytestmark = [
    pytest.mark.skipif(sys.platform != "linux", reason="Unix sockets with SO_PEERCRED"),
    pytest.mark.timeout(60),
]


async def wait_for_line(server: Headless, want: bytes, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not any(want in line for line in server.lines):
        assert time.monotonic() < deadline, server.lines
        await asyncio.sleep(0.05)


async def test_json_log_lines_carry_the_event_and_its_fields(env, tmp_path) -> None:  # noqa: F811
    args = ("--upload-dir", str(tmp_path / "up"), "--log-level", "debug", "--log-format", "json")
    server = await asyncio.to_thread(Headless, env, *args)
    try:
        client = await JsonClient.connect(server.port)
        await client.request({"type": "ping"})
        sid = client.id
        await client.close()
        await wait_for_line(server, b'"kind":"close"')
    finally:
        server.stop()
    docs = [json.loads(line) for line in server.lines]  # every line is one object
    assert all({"time", "level", "logger", "msg"} <= set(d) for d in docs)
    assert any("listening on 127.0.0.1:" in d["msg"] and d["level"] == "info" for d in docs)
    connect = next(d for d in docs if d.get("kind") == "connect")
    assert connect["id"] == sid and connect["address"] == "127.0.0.1"
    assert connect["level"] == "debug" and isinstance(connect["port"], int)
    close = next(d for d in docs if d.get("kind") == "close")
    assert close["id"] == sid and close["reason"] == "client_closed"
    assert isinstance(close["bytes_in"], int) and close["bytes_in"] > 0
    assert close["msgs_in"] == 1 and isinstance(close["closed_at"], float)
    assert close["time"].endswith("Z")


async def test_text_log_at_debug_has_a_line_per_connect_and_close(env, tmp_path) -> None:  # noqa: F811
    args = ("--upload-dir", str(tmp_path / "up"), "--log-level", "debug")
    server = await asyncio.to_thread(Headless, env, *args)
    try:
        client = await JsonClient.connect(server.port)
        sid = client.id
        await client.close()
        await wait_for_line(server, f"{sid} closed: client_closed".encode())
        assert any(f"DEBUG verb_console.hub: {sid} connected".encode() in x for x in server.lines)
    finally:
        server.stop()
