"""Operator actions on a running hub (PROTOCOL.md section 6) and the console's HubView."""

from __future__ import annotations

import time

import pytest
from helpers import eventually

from verb_console import __version__
from verb_console.hub import LiveHubView
from verb_console.hub.snapshot import (
    ClosedSessionInfo,
    LogEvent,
    Overview,
    RoomInfo,
    SessionInfo,
    ThrottleInfo,
)

pytestmark = pytest.mark.timeout(30)


def assert_recent_timestamp(value: object) -> None:
    assert type(value) is int
    assert abs(value - time.time() * 1000) < 5000


async def test_an_operator_broadcast_reaches_every_json_session_from_server(
    server, connect
) -> None:
    clients = [await connect(server) for _ in range(3)]
    assert server.hub.operator_broadcast("maintenance at noon") == 3
    for client in clients:
        message = await client.recv()
        assert set(message) == {"type", "from", "data", "timestamp"}
        assert message["type"] == "broadcast"
        assert message["from"] == "server"
        assert message["data"] == "maintenance at noon"
        assert_recent_timestamp(message["timestamp"])


async def test_an_operator_broadcast_to_a_room_reaches_only_its_members(server, connect) -> None:
    a = await connect(server)
    b = await connect(server)
    outsider = await connect(server)
    await a.request({"type": "join_room", "room": "ops"})
    await b.request({"type": "join_room", "room": "ops"})
    await a.recv()  # user_joined
    assert server.hub.operator_broadcast("hi room", room="ops") == 2
    for client in (a, b):
        message = await client.recv()
        assert set(message) == {"type", "room", "from", "data", "timestamp", "offset"}
        assert message["offset"] == 1
        assert message["type"] == "room_message"
        assert message["room"] == "ops"
        assert message["from"] == "server"
        assert message["data"] == "hi room"
        assert_recent_timestamp(message["timestamp"])
    await outsider.expect_nothing(0.1)
    assert {r.name: r.messages for r in server.hub.rooms_info()}["ops"] == 1


async def test_an_operator_broadcast_to_an_unknown_room_reaches_nobody(server, connect) -> None:
    client = await connect(server)
    assert server.hub.operator_broadcast("lost", room="nowhere") == 0
    await client.expect_nothing(0.1)
    assert server.hub.rooms.get("nowhere") is None


async def test_operator_close_sends_closing_operator_then_closes_exactly_that_session(
    server, connect
) -> None:
    target = await connect(server)
    bystander = await connect(server)
    target_id = target.id
    assert server.hub.operator_close(target_id) is True
    assert await target.recv() == {"type": "closing", "reason": "operator"}
    await target.expect_eof()
    await eventually(lambda: target_id not in server.hub.sessions)
    assert [c.reason for c in server.hub.closed_log if c.id == target_id] == ["operator"]
    assert (await bystander.request({"type": "ping"}))["type"] == "pong"
    assert list(server.hub.sessions) == [bystander.id]


async def test_operator_close_of_an_unknown_or_closing_session_returns_false(
    server, connect
) -> None:
    client = await connect(server)
    assert server.hub.operator_close("10.0.0.1:1") is False
    assert server.hub.operator_close(client.id) is True
    assert server.hub.operator_close(client.id) is False
    assert await client.recv() == {"type": "closing", "reason": "operator"}


async def test_operator_close_of_a_room_member_tells_the_room(server, connect) -> None:
    stayer = await connect(server)
    target = await connect(server)
    await stayer.request({"type": "join_room", "room": "r"})
    await target.request({"type": "join_room", "room": "r"})
    await stayer.recv()  # user_joined
    server.hub.operator_close(target.id)
    note = await stayer.recv()
    assert (note["type"], note["connectionId"], note["room"]) == ("user_left", target.id, "r")


async def test_operator_close_ip_closes_every_session_of_that_address_only(server, connect) -> None:
    victims = [await connect(server, source_ip="127.0.0.2") for _ in range(2)]
    survivor = await connect(server, source_ip="127.0.0.1")
    assert server.hub.operator_close_ip("127.0.0.2") == 2
    for victim in victims:
        assert await victim.recv() == {"type": "closing", "reason": "operator"}
        await victim.expect_eof()
    await eventually(lambda: list(server.hub.connections) == [survivor.id])
    assert (await survivor.request({"type": "ping"}))["type"] == "pong"
    assert server.hub.operator_close_ip("127.0.0.9") == 0


async def test_a_read_only_view_refuses_every_action_that_changes_the_server(
    server, connect
) -> None:
    client = await connect(server)
    view = LiveHubView(server.hub, read_only=True)
    with pytest.raises(PermissionError):
        view.operator_broadcast("nope")
    with pytest.raises(PermissionError):
        view.operator_broadcast("nope", room="r")
    with pytest.raises(PermissionError):
        view.operator_close(client.id)
    with pytest.raises(PermissionError):
        view.operator_close_ip("127.0.0.1")
    with pytest.raises(PermissionError):
        view.force_shutdown()
    await client.expect_nothing(0.1)
    assert server.hub.state == "running"
    assert list(server.hub.sessions) == [client.id]
    assert view.overview().read_only is True


async def test_a_writable_view_passes_actions_to_the_hub(server, connect) -> None:
    a = await connect(server)
    b = await connect(server)
    view = LiveHubView(server.hub)
    assert view.operator_broadcast("x") == 2
    assert (await a.recv())["data"] == "x"
    assert (await b.recv())["data"] == "x"
    assert view.operator_close(a.id) is True
    assert await a.recv() == {"type": "closing", "reason": "operator"}
    assert view.operator_close_ip("127.0.0.1") == 1
    assert await b.recv() == {"type": "closing", "reason": "operator"}
    assert view.overview().read_only is False


async def test_the_view_reports_overview_sessions_rooms_and_throttle(server, connect) -> None:
    view = LiveHubView(server.hub)
    a = await connect(server)
    b = await connect(server)
    await a.request({"type": "join_room", "room": "zeta"})
    await a.request({"type": "join_room", "room": "alpha"})
    await b.request({"type": "join_room", "room": "alpha"})
    await a.recv()  # user_joined
    await b.send({"type": "room_message", "room": "alpha", "data": 1})
    await a.recv()
    await a.request({"type": "ping"})

    overview = view.overview()
    assert isinstance(overview, Overview)
    assert overview.state == "running"
    assert overview.sessions == 2
    assert overview.peak_sessions == 2
    assert overview.listeners == (f"127.0.0.1:{server.port} (json)",)
    assert overview.version == __version__
    assert overview.totals.accepted == 2
    assert overview.drain_deadline is None
    assert overview.started_at <= overview.now

    sessions = {s.id: s for s in view.sessions()}
    assert set(sessions) == {a.id, b.id}
    info = sessions[a.id]
    # A live view with the record's fields; snapshot() freezes it.
    snap = info.snapshot()
    assert isinstance(snap, SessionInfo)
    assert (snap.id, snap.rooms, snap.msgs_in, snap.bytes_in, snap.bytes_out) == (
        info.id,
        info.rooms,
        info.msgs_in,
        info.bytes_in,
        info.bytes_out,
    )
    assert info.protocol == "json"
    assert (info.address, info.port) == ("127.0.0.1", int(a.id.rsplit(":", 1)[1]))
    assert info.rooms == ("alpha", "zeta")
    assert info.msgs_in == 3
    assert info.bytes_in == a.bytes_sent
    assert info.bytes_out == a.bytes_received
    assert info.parent is None
    assert info.connected_at <= info.last_activity <= time.time() + 1

    rooms = {r.name: r for r in view.rooms()}
    assert set(rooms) == {"alpha", "zeta"}
    assert isinstance(rooms["alpha"], RoomInfo)
    assert rooms["alpha"].members == tuple(sorted([a.id, b.id]))
    assert rooms["alpha"].messages == 1
    assert rooms["zeta"].members == (a.id,)
    assert rooms["zeta"].messages == 0

    throttle = view.throttle_state()
    assert len(throttle) == 1
    entry = throttle[0]
    assert isinstance(entry, ThrottleInfo)
    assert (entry.key, entry.live, entry.in_window, entry.rejected) == ("127.0.0.1", 2, 2, 0)
    assert entry.blocked is False
    assert entry.window_started < entry.window_ends

    assert view.mux_connections() == []
    assert view.transfers() == []


async def test_the_view_reports_closed_sessions_with_their_figures(server, connect) -> None:
    view = LiveHubView(server.hub)
    client = await connect(server)
    client_id = client.id
    await client.request({"type": "ping"})
    sent, received = client.bytes_sent, client.bytes_received
    await client.close()
    await eventually(lambda: len(view.closed_sessions()) == 1)
    closed = view.closed_sessions()[0]
    assert isinstance(closed, ClosedSessionInfo)
    assert closed.id == client_id
    assert closed.protocol == "json"
    assert closed.reason == "client_closed"
    assert closed.msgs_in == 1
    assert closed.bytes_in == sent
    assert closed.bytes_out == received
    assert closed.connected_at <= closed.closed_at
    assert view.overview().sessions == 0
    assert view.sessions() == []


async def test_log_since_returns_only_newer_events_in_order(server, connect) -> None:
    view = LiveHubView(server.hub)
    first = view.log_since(0)
    assert first and all(isinstance(e, LogEvent) for e in first)
    assert any("listening on" in e.text for e in first)
    last = first[-1].seq
    assert view.log_since(last) == []
    client = await connect(server)
    view.operator_broadcast("hello")
    await client.recv()
    newer = view.log_since(last)
    assert [e.seq for e in newer] == sorted(e.seq for e in newer)
    assert all(e.seq > last for e in newer)
    kinds = [e.kind for e in newer]
    assert "connect" in kinds and "operator" in kinds
    assert any(client.id in e.text for e in newer if e.kind == "connect")
    assert view.log_since(newer[-1].seq) == []


async def test_begin_shutdown_from_the_hub_tells_sessions_and_force_shutdown_closes_them(
    start_server, connect
) -> None:
    runtime = await start_server(grace_period=5)
    client = await connect(runtime)
    client_id = client.id
    runtime.hub.begin_shutdown()
    notice = await client.recv()
    assert notice == {
        "type": "server_shutdown",
        "message": "Server is shutting down",
        "gracePeriod": 5000,
    }
    assert runtime.hub.overview().state == "draining"
    assert runtime.hub.overview().drain_deadline is not None
    assert (await client.request({"type": "ping"}))["type"] == "pong"
    runtime.hub.force_shutdown()
    assert await client.recv() == {"type": "closing", "reason": "shutdown"}
    await client.expect_eof()
    await runtime.hub.wait_stopped()
    assert runtime.hub.state == "stopped"
    assert [c.reason for c in runtime.hub.closed_log if c.id == client_id] == ["shutdown"]
