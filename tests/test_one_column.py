"""A new Connections column is one field of SessionInfo and one SessionField, nothing else.

The first test makes exactly those two edits in a copy of the package and runs
the copy in a child process: a real server, its admin socket and an attached
console must all know the new column with no other change. The second adds a
column to the field list in-process and checks that the console's table and
the server's sorting and filtering both take it from there.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import sys
from operator import attrgetter
from pathlib import Path

import pytest
from helpers import eventually
from textual.app import App, ComposeResult

import verb_console
from verb_console.console.panes.connections import LIVE_COLUMNS, live_columns
from verb_console.console.panes.table import LiveTable
from verb_console.hub.session_fields import LIVE_FIELDS, SessionField, search_text
from verb_console.hub.snapshot import SessionInfo
from verb_console.hub.view import LiveHubView, page_of

pytestmark = pytest.mark.timeout(120)

# The two edits: one field of the record, one column declaration.
NEW_FIELD = "    closing: bool = False  # the session is being closed\n"
NEW_COLUMN = (
    '    SessionField("CLOSING", 7, lambda s, _: "yes" if s.closing else "no", "closing",'
    " priority=1),\n"
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
        raw = await admin.request("sessions", sort="closing", filter="closing:no", limit=10)
        out["fields"] = raw["fields"]
        out["matched_no"] = raw["matched"]
        out["closing"] = [s.closing for s in page_from_wire(raw).rows]
        raw = await admin.request("sessions", filter="closing=yes")
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
    _insert(copy / "verb_console/hub/session_fields.py", "LIVE_FIELDS = (", "\n)\n", NEW_COLUMN)
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


class _Table(App[None]):
    def __init__(self, table: LiveTable) -> None:
        super().__init__()
        self.table = table

    def compose(self) -> ComposeResult:
        yield self.table


async def test_a_field_added_to_the_list_is_a_table_column_a_sort_key_and_a_filter_term(
    start_server,
) -> None:
    port_field = SessionField("PORT", 6, lambda s, _: str(s.port), "port", "right", 1)
    fields = (*LIVE_FIELDS, port_field)
    runtime = await start_server()
    conns = [await asyncio.open_connection("127.0.0.1", runtime.port) for _ in range(4)]
    try:
        await eventually(lambda: len(runtime.hub.sessions) == 4, timeout=5)
        views = LiveHubView(runtime.hub).sessions()
        ports = sorted(s.port for s in views)
        # Not a column yet: the server refuses the sort and the term matches nothing.
        with pytest.raises(ValueError, match="unknown sort key"):
            page_of(views, sort="port")
        assert page_of(views, filter="port>0").matched == 0
        # One more field: sorted and filtered on the server by it.
        page = page_of(views, sort="port", reverse=True, filter="port>0", fields=fields)
        assert [s.port for s in page.rows] == ports[::-1]
        page = page_of(views, filter=f"port>={ports[2]}", fields=fields)
        assert sorted(s.port for s in page.rows) == ports[2:]
        # And in the console's table, laid out and sorted as the field says.
        columns = live_columns(fields)
        layout = attrgetter("label", "width", "align", "priority", "flex", "descending")
        assert [layout(c) for c in columns[:-1]] == [layout(c) for c in LIVE_COLUMNS]
        column = columns[-1]
        assert (column.label, column.width, column.align, column.priority) == (
            "PORT",
            6,
            "right",
            1,
        )
        table = LiveTable(columns, key=attrgetter("id"), search=search_text)
        async with _Table(table).run_test(size=(200, 12)) as pilot:
            table.sort_by(len(columns) - 1, False)
            table.set_items(views, 0.0)
            await pilot.pause()
            assert table.render_line(0).text.rstrip().endswith("PORT")
            assert [s.port for s in table.rows] == ports
            assert table.render_line(1).text.rstrip().endswith(str(ports[0]))
    finally:
        for _reader, writer in conns:
            writer.close()
