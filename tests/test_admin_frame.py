"""The admin socket's ``frame`` op: one request a tick, answered with what changed."""

from __future__ import annotations

import asyncio
import sys
import time
from pathlib import Path

import pytest
from helpers import eventually

from verb_console.admin.client import AdminClient
from verb_console.admin.remote_view import RemoteHubView
from verb_console.hub.session_fields import FIELDS, page_of
from verb_console.protocols.json import encode

pytestmark = [
    pytest.mark.skipif(sys.platform != "linux", reason="Unix sockets with SO_PEERCRED"),
    pytest.mark.timeout(60),
]

QUERY = {"sort": "id", "reverse": False, "filter": "", "offset": 0, "limit": 200}


async def test_a_frame_carries_only_the_rows_order_and_overview_that_changed(
    server, connect
) -> None:
    clients = [await connect(server) for _ in range(3)]
    ids = sorted(c.id for c in clients)
    async with await AdminClient.connect(server.admin.path) as admin:
        first = await admin.request("frame", **QUERY, have=0)
        page = first["page"]
        assert page["ids"] == ids
        assert sorted(r[0] for r in page["rows"]) == ids
        assert page["fields"][0] == "id"
        assert first["overview"]["sessions"] == 3
        assert first["overview"]["cluster"] is None
        assert [e["seq"] for e in first["log"]] == [e.seq for e in server.hub.log_since(0)]

        # Nothing changed: no rows, no order, no overview; only the clock.
        quiet = await admin.request(
            "frame", **QUERY, have=first["seq"], log_seq=first["log"][-1]["seq"]
        )
        assert quiet["page"]["rows"] == []
        assert "ids" not in quiet["page"] and "overview" not in quiet
        assert quiet["now"] >= first["overview"]["now"]
        assert quiet["log"] == []
        assert len(encode({"v": 1, "id": 9, "ok": True, "result": quiet})) < 200

        # One session talks: only its row comes again.
        await clients[1].request({"type": "ping"})
        talked = await admin.request("frame", **QUERY, have=quiet["seq"])
        assert [r[0] for r in talked["page"]["rows"]] == [clients[1].id]
        assert talked["page"]["rows"][0][6] == 1  # msgs_in
        assert "ids" not in talked["page"]

        # One comes and one goes: the new order, and the newcomer's row only.
        newcomer = await connect(server)
        await clients[0].close()
        await eventually(lambda: clients[0].id not in server.hub.sessions, timeout=5)
        moved = await admin.request("frame", **QUERY, have=talked["seq"])
        assert moved["page"]["ids"] == sorted([clients[1].id, clients[2].id, newcomer.id])
        assert [r[0] for r in moved["page"]["rows"]] == [newcomer.id]
        assert moved["overview"]["sessions"] == 3

        # A client that holds something else (or nothing) gets the whole frame.
        whole = await admin.request("frame", **QUERY, have=moved["seq"] + 5)
        assert len(whole["page"]["rows"]) == 3 and "overview" in whole


async def test_the_remote_view_rebuilds_the_server_s_window_from_frames(
    start_server, tmp_path: Path
) -> None:
    path = tmp_path / "admin.sock"
    runtime = await start_server(admin_socket=str(path), max_per_ip=0)
    conns = [await asyncio.open_connection("127.0.0.1", runtime.port) for _ in range(30)]
    await eventually(lambda: len(runtime.hub.sessions) == 30, timeout=10)
    view = RemoteHubView(path, interval=0.02)
    task = asyncio.create_task(view.run())

    def same_as_server() -> bool:
        want = runtime.admin.view.session_page("msgs_in", True, "", 0, 200)
        return view.sessions() == list(want.rows)

    try:
        view.session_page("msgs_in", True, "", 0, 200)
        await eventually(same_as_server, timeout=5)
        # Sessions talk (their rows and the order change), go, and come.
        for n, (_reader, writer) in enumerate(conns[:10]):
            writer.write(encode({"type": "ping"}) * (n + 1))
        for _reader, writer in conns[20:25]:
            writer.close()
        conns = conns[:20] + conns[25:]
        conns += [await asyncio.open_connection("127.0.0.1", runtime.port) for _ in range(4)]
        await eventually(lambda: len(runtime.hub.sessions) == 29, timeout=10)
        await eventually(same_as_server, timeout=5)
        assert view.sessions()[0].msgs_in == 10
        held = view.session_page("msgs_in", True, "", 0, 200)
        assert (held.total, held.matched) == (29, 29)
        # A filter and a window further down come through frames too (a new
        # filter starts at the top, so the window moves once it is in).
        view.session_page("id", True, "127.0.0.1", 0, 200)
        await eventually(lambda: view.sessions()[0].id == max(runtime.hub.sessions), 5)
        view.session_page("id", True, "127.0.0.1", 5, 200)
        page = runtime.admin.view.session_page("id", True, "127.0.0.1", 5, 200)
        await eventually(lambda: view.sessions() == list(page.rows), timeout=5)
        held = view.session_page("id", True, "127.0.0.1", 5, 200)
        assert (held.offset, len(held.rows)) == (5, 24)
    finally:
        view.stop()
        await asyncio.wait_for(task, 5)
        for _reader, writer in conns:
            writer.close()


async def test_the_server_s_kept_orders_page_as_a_fresh_sort_of_every_session(
    start_server, tmp_path: Path
) -> None:
    # An auto listener hands every connection over to a new session once its
    # protocol is known, which the kept orders must notice as a change too.
    runtime = await start_server(admin_socket=str(tmp_path / "a.sock"), protocol="auto")
    view = runtime.admin.view
    hub = runtime.hub
    conns = []

    def check_every_order() -> None:
        records = [s.view for s in hub.sessions.values()]
        for sort in dict.fromkeys(f.name for f in FIELDS):  # every field a query sorts by
            for reverse in (False, True):
                for text in ("", "127", "proto:json", "ops"):
                    for offset, limit in ((0, 200), (3, 4)):
                        got = view.session_page(sort, reverse, text, offset, limit)
                        want = page_of(records, sort, reverse, text, offset, limit, time.time())
                        assert got == want, (sort, reverse, text, offset)

    for round_ in range(3):
        for _ in range(4):
            reader, writer = await asyncio.open_connection("127.0.0.1", runtime.port)
            writer.write(encode({"type": "join_room", "room": f"ops{round_ % 2}"}))
            conns.append((reader, writer))
        await eventually(
            lambda: sum(s.protocol == "json" for s in hub.sessions.values()) == len(conns), 5
        )
        await eventually(lambda: all(s.rooms for s in hub.sessions.values()), 5)
        check_every_order()
        conns[round_][1].write(encode({"type": "ping"}) * 3)
        conns[-1][1].close()
        conns.pop()
        await eventually(lambda: len(hub.sessions) == len(conns), 5)
        check_every_order()
    for _reader, writer in conns:
        writer.close()
