"""What an operator sees of resume and room history (issue 22): detached sessions with
the time they have left and what is kept for them, rooms' epoch, offset and history,
in the Connections and Rooms panes, ``ctl sessions`` and ``ctl rooms``, and metrics."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from helpers import eventually
from prometheus_client.parser import text_string_to_metric_families

from verb_console.admin.metrics import HubCollector, exposition
from verb_console.console.app import VerbConsoleApp
from verb_console.console.panes.connections import ConnectionsPane, session_rows
from verb_console.console.panes.rooms import RoomsPane
from verb_console.hub.view import LiveHubView
from verb_console.runtime import Runtime
from verb_console.units import fmt_bytes, to_number

pytestmark = [
    pytest.mark.skipif(sys.platform != "linux", reason="Unix sockets with SO_PEERCRED"),
    pytest.mark.timeout(60),
]


def ctl(sock: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "verb_console", "ctl", "--admin-socket", str(sock), *args],
        capture_output=True,
        text=True,
        timeout=20,
        env=dict(os.environ),
        stdin=subprocess.DEVNULL,
    )


def metrics(runtime: Runtime) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = exposition(HubCollector(runtime.hub).collect()).decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for f in text_string_to_metric_families(text)
        for s in f.samples
    }


async def detached_pair(
    start_server: Any, connect: Any, tmp_path: Path
) -> tuple[Runtime, Any, Any]:
    """A server with resume and history on; ``a`` detached from room r, where ``b``
    sent three messages since (kept for ``a``)."""
    runtime = await start_server(
        resume_window=30, history_size=10, admin_socket=str(tmp_path / "a.sock")
    )
    a = await connect(runtime)
    b = await connect(runtime)
    await a.request({"type": "join_room", "room": "r"})
    await b.request({"type": "join_room", "room": "r"})
    await a.recv()  # user_joined
    await a.close()
    resume = runtime.hub.resume
    assert resume is not None
    await eventually(lambda: a.id in resume.detached)
    for i in range(3):
        await b.send({"type": "room_message", "room": "r", "data": f"m{i}"})
    await eventually(lambda: LiveHubView(runtime.hub).room("r").offset == 3)  # type: ignore[union-attr]
    return runtime, a, b


async def test_a_detached_session_shows_its_state_time_left_and_what_is_kept_everywhere(
    start_server: Any, connect: Any, tmp_path: Path
) -> None:
    runtime, a, b = await detached_pair(start_server, connect, tmp_path)
    view = LiveHubView(runtime.hub)
    info = view.session(a.id)
    assert info is not None and info.state == "detached"
    assert info.detached_until is not None and 25 < info.detached_until - time.time() <= 30
    # Kept: the three room messages, and the user_joined it had read just before.
    assert info.kept_msgs == 4 and info.kept > 0
    # The filter finds it by its state, from the kept order (it was marked on detach).
    assert [s.id for s in view.session_page("id", False, "state:live").rows] == [b.id]
    view.session_page("id", False, "state:detached")  # the order is kept from here on
    assert [s.id for s in view.session_page("id", False, "state:detached").rows] == [a.id]
    # Its details say so, with what is kept.
    rows = dict(session_rows(info, time.time()))
    assert rows["State"].startswith("detached, ") and rows["State"].endswith(" left to resume")
    assert rows["Kept for it"] == f"{fmt_bytes(info.kept)} in 4 messages"
    # ctl sessions: text and --json.
    text = await asyncio.to_thread(ctl, runtime.admin.path, "sessions")
    assert text.returncode == 0, text.stderr
    line = next(x for x in text.stdout.splitlines() if x.startswith(a.id))
    assert "detached" in line and "/4" in line.split()[-1]
    assert text.stdout.splitlines()[0].split()[-3:] == ["STATE", "LEFT", "KEPT"]
    doc = json.loads(
        (await asyncio.to_thread(ctl, runtime.admin.path, "--json", "sessions")).stdout
    )
    row = next(s for s in doc["sessions"] if s["id"] == a.id)
    assert (row["state"], row["kept_msgs"]) == ("detached", 4)
    assert row["detached_until"] == pytest.approx(info.detached_until)
    # The hosted console's Connections pane, wide enough for every column.
    app = VerbConsoleApp(view)
    async with app.run_test(size=(240, 20)) as pilot:
        pane = app.main.pane("connections")
        assert isinstance(pane, ConnectionsPane)
        table = pane.live_table
        await eventually(lambda: len(table.rows) == 2, 5)
        await pilot.pause()
        line = next(
            table.render_line(y).text
            for y in range(1, 3)
            if table.render_line(y).text.startswith(a.id)
        )
        after = line.split("detached")[1].split()
        assert 0 < (to_number(after[0]) or 0) <= 30, line  # the window's time left
        assert " ".join(after[1:]) == f"{fmt_bytes(info.kept)}/4", line  # bytes/messages
        app.exit()
    # Metrics: one detached session; then it resumes.
    m = metrics(runtime)
    assert m[("verb_sessions_detached", ())] == 1
    assert m[("verb_resumes_total", (("result", "resumed"),))] == 0
    c = await connect(runtime)
    reply = await c.request({"type": "resume", "id": a.id, "token": a.welcome["resume"], "seq": 1})
    assert reply["type"] == "resumed" and reply["replayed"] == 3
    m = metrics(runtime)
    assert m[("verb_sessions_detached", ())] == 0
    assert m[("verb_resumes_total", (("result", "resumed"),))] == 1
    assert view.session(a.id).state == "live"  # type: ignore[union-attr]
    assert [s.id for s in view.session_page("id", False, "state:detached").rows] == []


async def test_rooms_show_epoch_offset_and_history_and_recoveries_are_counted(
    start_server: Any, connect: Any, tmp_path: Path
) -> None:
    runtime, _a, _b = await detached_pair(start_server, connect, tmp_path)
    view = LiveHubView(runtime.hub)
    room = view.room("r")
    assert room is not None and room.epoch and (room.offset, room.history) == (3, 3)
    assert room.history_bytes > 0 and view.room_page().rows[0].epoch == room.epoch
    text = await asyncio.to_thread(ctl, runtime.admin.path, "rooms")
    assert text.returncode == 0, text.stderr
    head, line = text.stdout.splitlines()[:2]
    assert head.split() == [
        "ROOM",
        "MEMBERS",
        "MESSAGES",
        "EPOCH",
        "OFFSET",
        "HISTORY",
        "HIST",
        "SIZE",
    ]
    assert line.split()[:6] == ["r", "2", "3", room.epoch, "3", "3"]
    doc = json.loads((await asyncio.to_thread(ctl, runtime.admin.path, "--json", "rooms")).stdout)
    assert doc["rooms"][0]["epoch"] == room.epoch and doc["rooms"][0]["history_bytes"] > 0
    # The Rooms pane, wide enough for the history columns.
    app = VerbConsoleApp(view)
    async with app.run_test(size=(160, 20)) as pilot:
        await pilot.press("3")
        pane = app.main.pane("rooms")
        assert isinstance(pane, RoomsPane)
        table = pane.table
        await eventually(lambda: len(table.rows) == 1, 5)
        await pilot.pause()
        assert table.render_line(0).text.split()[4:] == [
            "EPOCH",
            "OFFSET",
            "HISTORY",
            "HIST",
            "SIZE",
        ]
        assert table.render_line(1).text.split()[4:7] == [room.epoch, "3", "3"]
        app.exit()
    # A join with since: recovered (a fresh client), then a stale epoch: not recovered.
    c = await connect(runtime)
    joined = await c.request(
        {"type": "join_room", "room": "r", "since": {"epoch": room.epoch, "offset": 1}}
    )
    assert joined["recovered"] is True
    d = await connect(runtime)
    joined = await d.request(
        {"type": "join_room", "room": "r", "since": {"epoch": "stale", "offset": 1}}
    )
    assert joined["recovered"] is False
    m = metrics(runtime)
    assert m[("verb_room_recoveries_total", (("result", "recovered"),))] == 1
    assert m[("verb_room_recoveries_total", (("result", "not_recovered"),))] == 1
    assert m[("verb_room_history_bytes", ())] == room.history_bytes


async def test_a_detached_session_whose_window_ends_is_closed_as_detached_timeout_in_the_log(
    start_server: Any, connect: Any
) -> None:
    runtime = await start_server(resume_window=0.3)
    a = await connect(runtime)
    await a.close()
    view = LiveHubView(runtime.hub)
    await eventually(lambda: view.session(a.id) is None, 5)
    texts = [e.text for e in view.log_since(0)]
    assert any(t.startswith(f"{a.id} detached") for t in texts), texts
    assert f"{a.id} closed: detached_timeout" in texts
    assert view.closed_sessions()[-1].reason == "detached_timeout"
    assert metrics(runtime)[("verb_sessions_closed_total", (("reason", "detached_timeout"),))] == 1
