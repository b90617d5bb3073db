"""Each json stream of a reconnecting MuxClient resumes and recovers as JsonClient does
(PROTOCOL.md section 11), against real servers: connections cut, streams dropped,
servers drained and restarted (a server killed and restarted, on asyncio and trio:
test_client_backends)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from verb_console.client import (
    Backoff,
    JsonClient,
    MuxClient,
    MuxClosed,
    ReconnectFailed,
    Recovery,
    SendBufferFull,
)
from verb_console.client.mux_json import ResumingJsonStream
from verb_console.hub.session import CloseReason
from verb_console.runtime import Runtime

pytestmark = pytest.mark.timeout(30)


def fast(**kw: Any) -> Backoff:
    return Backoff(**{"base_delay": 0.05, "jitter": 0.0, **kw})


async def until(predicate: Any, timeout: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.01)


@pytest.fixture
async def server(start_server: Any, tmp_path: Path) -> Runtime:
    return await start_server(
        protocol="auto", resume_window=10, max_per_ip=0, upload_dir=str(tmp_path / "up")
    )


@pytest.fixture
async def muxes() -> AsyncIterator[list[MuxClient]]:
    made: list[MuxClient] = []
    yield made
    for c in made:
        with contextlib.suppress(Exception):
            await c.close()


async def mux(port: int, made: list[MuxClient], **kw: Any) -> MuxClient:
    kw.setdefault("backoff", fast())
    client = await MuxClient.connect("127.0.0.1", port, reconnect=True, timeout=3, **kw)
    made.append(client)
    return client


async def json_stream(client: MuxClient, **kw: Any) -> ResumingJsonStream:
    view = (await client.open_stream("json")).json(**kw)
    assert isinstance(view, ResumingJsonStream)
    welcome = await view.receive(5)
    assert welcome["type"] == "welcome"
    return view


async def test_a_cut_connection_comes_back_and_each_json_stream_resumes_losing_nothing(
    server: Runtime, muxes: list[MuxClient]
) -> None:
    recoveries: list[Recovery] = []
    events: list[Any] = []
    client = await mux(server.port, muxes)
    a = await json_stream(
        client,
        on_recovery=recoveries.append,
        on_disconnect=events.append,
        on_reconnect=lambda w: events.append(w["type"]),
    )
    a2 = await json_stream(client)
    echo = await client.open_stream("echo")
    b = JsonClient("127.0.0.1", server.port, reconnect=False)
    await b.connect()
    sid, sid2 = a.id, a2.id
    await a.join_room("r")
    await b.join_room("r")
    assert (await a.receive(2))["type"] == "user_joined"
    old_connection = client.local_id
    # The server's side of the mux connection breaks, as a reset would.
    server.hub.connections[old_connection].outlet.destroy()
    for i in range(5):
        await b.room_message("r", i)
        await b.private(sid, f"p{i}")
        await b.private(sid2, f"q{i}")
    await until(lambda: a.reconnects == 1 and a2.reconnects == 1)
    assert client.reconnects == 1 and client.connected and client.local_id != old_connection
    assert recoveries == [a.last_recovery] and recoveries[0].resumed
    assert events == ["connection_lost", "welcome"]
    assert a.id == sid and a2.id == sid2 and a.connected
    got = [await a.receive(2) for _ in range(10)]
    assert [m["data"] for m in got if m["type"] == "room_message"] == list(range(5))
    assert [m["data"] for m in got if m["type"] == "private"] == [f"p{i}" for i in range(5)]
    assert [m["seq"] for m in got] == list(range(2, 12))
    assert [(await a2.receive(2))["data"] for _ in range(5)] == [f"q{i}" for i in range(5)]
    # The echo stream does not come back: it ended with the connection.
    assert echo.close_reason == "connection"
    # The session goes on where it was, on the new connection's stream.
    await b.room_message("r", "after")
    m = await a.receive(2)
    assert (m["data"], m["seq"]) == ("after", 12)
    assert (await client.ping())["type"] == "pong"
    await b.close()


async def test_sends_while_coming_back_are_held_bounded_and_sent_once_back(
    server: Runtime, muxes: list[MuxClient]
) -> None:
    client = await mux(server.port, muxes, backoff=fast(base_delay=0.3))
    a = await json_stream(client, send_buffer=1000)
    b = JsonClient("127.0.0.1", server.port, reconnect=False)
    await b.connect()
    await b.join_room("r")
    await a.join_room("r")
    await b.receive(2)
    server.hub.connections[client.local_id].outlet.destroy()
    await until(lambda: not a.connected)
    await a.room_message("r", "held", confirm=False)
    with pytest.raises(SendBufferFull, match="send buffer is full"):
        await a.room_message("r", "x" * 2000, confirm=False)
    m = await b.receive(5)
    assert m["data"] == "held"
    assert a.connected and a.reconnects == 1
    await b.close()


async def test_a_stream_the_server_drops_comes_back_on_the_same_connection(
    start_server: Any, muxes: list[MuxClient], tmp_path: Path
) -> None:
    # Resume off: the stream comes back as a new session and rejoins with since.
    server = await start_server(protocol="mux", max_per_ip=0, upload_dir=str(tmp_path / "up"))
    recoveries: list[Recovery] = []
    client = await mux(server.port, muxes)
    a = await json_stream(client, on_recovery=recoveries.append)
    other = await json_stream(client)
    await a.join_room("r")
    await other.join_room("r")
    await a.receive(2)
    await other.room_message("r", "seen")
    assert (await a.receive(2))["data"] == "seen"
    old = a.id
    # Only a's stream breaks: a slow consumer is cut without a notice.
    stream_session = server.hub.sessions[old]
    stream_session.close(CloseReason.SLOW_CONSUMER, notify=False)
    for i in range(3):
        await other.room_message("r", i)
    await until(lambda: recoveries)
    rec = recoveries[0]
    assert not rec.resumed and rec.hole and rec.rooms == {"r": True}
    assert a.id != old and a.stream.stream_id == 5  # a new stream on the same connection
    assert client.reconnects == 0
    got = [await a.receive(2) for _ in range(3)]
    assert [m["data"] for m in got] == [0, 1, 2]


async def test_an_operator_close_of_the_stream_is_deliberate_and_ends_it(
    server: Runtime, muxes: list[MuxClient]
) -> None:
    client = await mux(server.port, muxes)
    a = await json_stream(client)
    server.hub.operator_close(a.id)
    assert await a.receive(2) == {"type": "closing", "reason": "operator"}
    with pytest.raises(MuxClosed):
        await a.receive(2)
    assert a.closed and a.error is None and a.reconnects == 0
    assert (await client.ping())["type"] == "pong"


async def test_a_final_drain_stops_and_a_restart_drain_comes_back(
    start_server: Any, muxes: list[MuxClient], tmp_path: Path
) -> None:
    settings = {"protocol": "mux", "grace_period": 0.3, "upload_dir": str(tmp_path / "up")}
    first = await start_server(**settings)
    client = await mux(first.port, muxes)
    a = await json_stream(client)
    first.hub.begin_shutdown(final=True)
    notice = await a.receive(2)
    assert (notice["type"], notice["reconnect"]) == ("server_shutdown", False)
    assert await a.receive(2) == {"type": "closing", "reason": "shutdown"}
    await asyncio.wait_for(client.wait_closed(), 5)
    assert client.closed and client.reconnects == 0
    assert a.closed and a.error is None

    second = await start_server(**settings)
    port = second.port
    client = await mux(port, muxes, backoff=fast(max_attempts=60, max_delay=0.1))
    a = await json_stream(client)
    await a.join_room("lobby")
    second.hub.begin_shutdown()  # a restart: reconnect true
    notice = await a.receive(2)
    assert (notice["type"], notice["reconnect"]) == ("server_shutdown", True)
    await asyncio.wait_for(second.hub.wait_stopped(), 5)
    assert second.server is not None
    await second.server.wait_closed()
    third = await start_server(**{**settings, "port": port})
    await a.wait_connected(10)
    assert a.reconnects == 1 and client.reconnects == 1
    assert a.last_recovery is not None and not a.last_recovery.resumed
    assert a.last_recovery.rooms == {"lobby": False}  # a new server: a new epoch
    assert a.id in third.hub.sessions
    assert (await a.ping())["type"] == "pong"


async def test_a_client_that_cannot_reconnect_gives_up_and_says_so(
    start_server: Any, muxes: list[MuxClient], tmp_path: Path
) -> None:
    server = await start_server(protocol="mux", upload_dir=str(tmp_path / "up"))
    client = await mux(server.port, muxes, backoff=fast(max_attempts=2))
    gave_up: list[ReconnectFailed] = []
    a = await json_stream(client, on_give_up=gave_up.append)
    server.hub.force_shutdown()  # closing shutdown after server_shutdown reconnect: true
    await asyncio.wait_for(client.wait_closed(), 10)
    assert isinstance(a.error, ReconnectFailed) and gave_up == [a.error]
    assert len(client.backoff_history) == 2
    # What came before is read, then the error.
    kinds = []
    with pytest.raises(ReconnectFailed):
        while True:
            kinds.append((await a.receive(1))["type"])
    assert kinds == ["server_shutdown", "closing"]


async def test_a_json_stream_closed_while_coming_back_stays_closed(
    server: Runtime, muxes: list[MuxClient]
) -> None:
    client = await mux(server.port, muxes, backoff=fast(base_delay=0.2))
    a = await json_stream(client)
    server.hub.connections[client.local_id].outlet.destroy()
    await until(lambda: not a.connected)
    await a.close()
    assert a.closed and a.error is None
    await until(lambda: client.reconnects == 1)
    await asyncio.sleep(0.2)
    # The connection is back, and nothing was reopened for the closed stream.
    assert client.streams == {} and a.reconnects == 0
    assert (await client.ping())["type"] == "pong"
