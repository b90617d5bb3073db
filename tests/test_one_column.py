"""A new Connections column is one field of SessionInfo, one query field and one column.

The first test makes exactly those three edits in a copy of the package and
runs the copy in a child process: a real server sorts and filters by the new
field's value, its admin socket carries it, and an attached console shows the
column and asks the server to sort by it. The second checks, in process, that
every column of the Connections pane sorts on the server by the field it names.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from console_fake import FixedHubView, FrozenClock

import verb_console
from verb_console.console.app import VerbConsoleApp
from verb_console.console.panes.connections import ConnectionsPane
from verb_console.hub.snapshot import SessionInfo

pytestmark = pytest.mark.timeout(120)

# The three edits: one field of the record, one field of the query, one column.
# (Sessions have the attribute already: the live view reads it by its name.)
NEW_FIELD = "    closing: bool = False  # the session is being closed\n"
NEW_QUERY = '    SessionField("closing", "closing", count("closing")),\n'
NEW_COLUMN = (
    '    live("CLOSING", 7, "closing", lambda s, _: "yes" if s.closing else "no", priority=1),\n'
)

# Run in the child, against the edited copy: a server with three json
# sessions, asked over its admin socket and shown by an attached console.
CHILD = r"""
import asyncio, json, sys

sys.meta_path[:] = [f for f in sys.meta_path if not type(f).__module__.startswith("__editable__")]
sys.path.insert(0, sys.argv[1])
import verb_console

assert verb_console.__file__.startswith(sys.argv[1]), verb_console.__file__

from verb_console.admin.client import AdminClient
from verb_console.admin.protocol import page_from_wire
from verb_console.admin.remote_view import RemoteHubView
from verb_console.console.attach import build_app
from verb_console.console.panes.connections import ConnectionsPane
from verb_console.runtime import Runtime
from verb_console.settings import Settings


async def main(sock, uploads):
    settings = Settings(
        host="127.0.0.1", port=0, protocol="json", admin_socket=sock, upload_dir=uploads
    )
    runtime = Runtime(settings)
    await runtime.start()
    conns = [await asyncio.open_connection("127.0.0.1", runtime.port) for _ in range(3)]
    while len(runtime.hub.sessions) < 3:
        await asyncio.sleep(0.01)
    out = {}
    async with await AdminClient.connect(runtime.admin.path) as admin:
        raw = await admin.request("sessions", sort="closing", filter="closing<1", limit=10)
        out["fields"] = raw["fields"]
        out["matched_no"] = raw["matched"]
        out["closing"] = [s.closing for s in page_from_wire(raw).rows]
        raw = await admin.request("sessions", filter="closing>=1")
        out["matched_yes"] = raw["matched"]
        # Sorted with no filter: the server sorts the sessions themselves.
        raw = await admin.request("sessions", sort="closing", reverse=True, limit=10)
        out["sorted"] = raw["matched"]
    view = RemoteHubView(runtime.admin.path, interval=0.05)
    app = build_app(view, refresh=20, read_only=False)
    async with app.run_test(size=(200, 30)) as pilot:
        table = app.screen.query_one(ConnectionsPane).live_table
        while len(table.rows) < 3:
            await pilot.pause(0.05)
        out["header"] = table.render_line(0).text
        out["row"] = table.render_line(1).text
        out["row_field"] = table.rows[0].closing
        table.sort_by(len(table.columns) - 1, False)
        await pilot.pause(0.2)
        out["query"] = view._query.sort
    view.stop()
    for _reader, writer in conns:
        writer.close()
    runtime.hub.force_shutdown()
    await runtime.hub.wait_stopped()
    print(json.dumps(out))


asyncio.run(main(sys.argv[2], sys.argv[3]))
"""


def _insert(path: Path, anchor: str, end: str, text: str) -> None:
    """Put ``text`` on its own lines just before the first ``end`` after ``anchor``."""
    source = path.read_text()
    at = source.index(end, source.index(anchor))
    path.write_text(source[:at] + "\n" + text.rstrip("\n") + source[at:])


@pytest.mark.skipif(sys.platform != "linux", reason="Unix sockets with SO_PEERCRED")
def test_one_field_and_one_column_reach_the_server_the_wire_and_an_attached_console(
    tmp_path: Path,
) -> None:
    assert "closing" not in SessionInfo._fields  # the field is new
    copy = tmp_path / "src"
    shutil.copytree(
        Path(verb_console.__file__).parent,
        copy / "verb_console",
        ignore=shutil.ignore_patterns("__pycache__"),
    )
    _insert(
        copy / "verb_console/hub/snapshot.py", "class SessionInfo(NamedTuple):", "\n\n\n", NEW_FIELD
    )
    _insert(copy / "verb_console/hub/session_fields.py", "FIELDS: tuple", "\n)\n", NEW_QUERY)
    _insert(
        copy / "verb_console/console/panes/session_columns.py", "LIVE_COLUMNS:", "\n)\n", NEW_COLUMN
    )
    script = tmp_path / "child.py"
    script.write_text(CHILD)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    done = subprocess.run(
        [sys.executable, str(script), str(copy), str(tmp_path / "a.sock"), str(tmp_path / "up")],
        capture_output=True,
        text=True,
        timeout=100,
        env=env,
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    out = json.loads(done.stdout.strip().splitlines()[-1])
    # The server sorts and filters by the new column, and its rows carry the field.
    assert out["fields"][-1] == "closing"
    assert out["matched_no"] == 3 and out["matched_yes"] == 0 and out["sorted"] == 3
    assert out["closing"] == [False, False, False]
    # The attached console reads it back, shows the column and sorts by it on the server.
    assert out["row_field"] is False
    assert out["header"].rstrip().endswith("CLOSING")
    assert out["row"].rstrip().endswith("no")
    assert out["query"] == "closing"


async def test_each_column_sorts_on_the_server_by_the_field_it_names() -> None:
    clock = FrozenClock()
    view = FixedHubView(clock, sessions=50)
    app = VerbConsoleApp(view, clock=clock)
    async with app.run_test(size=(240, 30)) as pilot:
        pane = app.main.pane("connections")
        assert isinstance(pane, ConnectionsPane)
        table = pane.live_table
        for index, column in enumerate(table.columns):
            table.sort_by(index, False)
            pane.refresh_view(clock())
            await pilot.pause()
            page = view.session_page(column.field, column.descending, "", 0, 1000)
            # The table shows the server's order, which is the field's own.
            assert [s.id for s in table.rows] == [s.id for s in page.rows], column.label
