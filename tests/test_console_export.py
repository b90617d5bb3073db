"""``e`` and ``E`` on every pane: data for scripts, not the screen's text (issue 24, item 2)."""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path
from typing import Any

import pytest
from console_fake import FixedHubView, FrozenClock

from verb_console.console import VerbConsoleApp
from verb_console.console.export import SERVER_COLUMNS
from verb_console.console.keys import PANE_NAMES

# What a display string looks like: a unit after a number, a duration, a thousands comma.
DISPLAY = re.compile(
    r"^\d[\d.,]*\s?(B|KiB|MiB|GiB|k|M|/s)$|^\d+[dhm]\d+[hms]$|^\d+s$|^\d{1,3}(,\d{3})+$"
)


async def test_every_pane_exports_numbers_as_numbers_under_identifier_names(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    clock = FrozenClock()
    app = VerbConsoleApp(FixedHubView(clock), clock=clock)
    async with app.run_test(size=(80, 24)) as pilot:
        for n, name in enumerate(PANE_NAMES, 1):
            await pilot.press(str(n), "e", "E")
            await pilot.pause()
            [json_path] = tmp_path.glob(f"verb-console-{name}-*.json")
            [csv_path] = tmp_path.glob(f"verb-console-{name}-*.csv")
            doc = json.loads(json_path.read_text())
            assert doc["pane"] == name and doc["server"]["host"]
            for field in doc["fields"]:
                assert field.isidentifier() and field == field.lower(), (name, field)
            for row in doc["rows"]:
                for field, value in row.items():
                    assert not (isinstance(value, str) and DISPLAY.match(value)), (name, field)
            with csv_path.open() as f:
                header, *rows = list(csv.reader(f))
            assert header == [*doc["fields"], *SERVER_COLUMNS]
            assert len(rows) == len(doc["rows"])
            for row in rows:
                for cell in row:
                    assert not DISPLAY.match(cell), (name, cell)


async def test_an_export_s_fields_are_ctl_json_s_for_the_same_server(
    start_server, connect, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An attached console's export and a real ``ctl --json`` process, on one server:
    the export's rows carry ctl's fields under ctl's names with ctl's values (the
    durations it adds in seconds beside them), and name the server ctl reaches."""
    import asyncio
    import os
    import subprocess
    import sys

    from helpers import eventually

    from verb_console.admin.remote_view import RemoteHubView
    from verb_console.console.attach import build_app

    monkeypatch.chdir(tmp_path)
    path = tmp_path / "admin.sock"
    runtime = await start_server(admin_socket=str(path))
    client = await connect(runtime)
    await client.request({"type": "join_room", "room": "ops"})

    def ctl(*args: str) -> Any:
        done = subprocess.run(
            [sys.executable, "-m", "verb_console", "ctl", "--admin-socket", str(path), *args],
            capture_output=True,
            text=True,
            timeout=30,
            stdin=subprocess.DEVNULL,
        )
        assert done.returncode == 0, done
        return json.loads(done.stdout)

    sessions, rooms, status = await asyncio.gather(
        asyncio.to_thread(ctl, "sessions", "--json"),
        asyncio.to_thread(ctl, "rooms", "--json"),
        asyncio.to_thread(ctl, "status", "--json"),
    )
    view = RemoteHubView(path, interval=0.05)
    app = build_app(view, refresh=20, read_only=False)
    try:
        async with app.run_test(size=(80, 24)) as pilot:
            await eventually(lambda: view.server_pid is not None and view.sessions(), 10)
            await pilot.press("1", "E")
            await pilot.press("3")
            await eventually(lambda: bool(app.main.pane("rooms").table.rows), 10)
            await pilot.press("E")
            await pilot.pause()
    finally:
        view.stop()
    [live] = [json.loads(p.read_text()) for p in tmp_path.glob("verb-console-connections-*")]
    [listed] = [json.loads(p.read_text()) for p in tmp_path.glob("verb-console-rooms-*")]
    assert live["server"]["pid"] == status["pid"] == os.getpid()
    assert live["server"]["listeners"] == status["listeners"]
    for export, wanted in ((live, sessions["sessions"]), (listed, rooms["rooms"])):
        assert len(export["rows"]) == len(wanted) == 1
        row, ctl_row = export["rows"][0], wanted[0]
        assert set(ctl_row) <= set(export["fields"]), set(ctl_row) - set(export["fields"])
        assert set(export["fields"]) - set(ctl_row) <= {
            "uptime_seconds",
            "idle_seconds",
            "age_seconds",
        }
        # Numbers as numbers, equal to ctl's where they cannot have moved.
        for field in ("id", "port", "connected_at", "name", "created_at", "protocol", "address"):
            if field in ctl_row:
                assert row[field] == ctl_row[field], field
