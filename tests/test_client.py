"""``verb_console.client.JsonClient`` against a real server on 127.0.0.1."""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

from verb_console.client import ClientClosed, JsonClient, ReconnectFailed, ServerError
from verb_console.runtime import Runtime

pytestmark = pytest.mark.timeout(30)

FAST = {"base_delay": 0.05, "jitter": 0.0, "connect_timeout": 2.0}


@pytest.fixture
async def runtime(start_server: Callable[..., Awaitable[Runtime]], tmp_path: Path) -> Runtime:
    # Reconnecting tests open many connections from one address: no per-IP throttle.
    return await start_server(max_per_ip=0, upload_dir=str(tmp_path / "uploads"))


@pytest.fixture
async def client_for(runtime: Runtime) -> AsyncIterator[Callable[..., Awaitable[JsonClient]]]:
    clients: list[JsonClient] = []

    async def make(**kwargs: Any) -> JsonClient:
        options = {**FAST, **kwargs}
        client = JsonClient("127.0.0.1", runtime.port, **options)
        await client.connect()
        clients.append(client)
        return client

    yield make
    for client in clients:
        with contextlib.suppress(Exception):
            await client.close()


async def until(predicate: Callable[[], bool], timeout: float = 3.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.01)


def members(runtime: Runtime, room: str) -> set[str]:
    found = runtime.hub.rooms.get(room)
    return set(found.members) if found is not None else set()


# --------------------------------------------------------------- connecting


async def test_connect_returns_the_welcome_and_the_id_is_the_server_s_session_id(
    runtime: Runtime,
) -> None:
    async with JsonClient("127.0.0.1", runtime.port) as client:
        assert client.welcome["type"] == "welcome"
        assert client.welcome["server"] == "verb-console"
        assert client.id in runtime.hub.sessions
        assert client.connected
    assert client.closed
    await until(lambda: client.id not in runtime.hub.sessions)


async def test_a_refused_first_connect_raises_without_retrying(runtime: Runtime) -> None:
    port = runtime.port
    runtime.hub.force_shutdown()
    await runtime.hub.wait_stopped()
    client = JsonClient("127.0.0.1", port, **FAST)
    with pytest.raises(ConnectionRefusedError):
        await client.connect()
    assert client.backoff_history == []


# --------------------------------------------------------------- requests


async def test_many_concurrent_requests_each_get_the_reply_carrying_their_own_ref(
    client_for: Callable[..., Awaitable[JsonClient]],
) -> None:
    client = await client_for()
    rooms = [f"room-{i}" for i in range(20)]
    pings = [client.ping() for _ in range(200)]
    joins = [client.join_room(room) for room in rooms]
    replies = await asyncio.gather(*pings, *joins)
    pongs, joined = replies[:200], replies[200:]
    assert all(reply["type"] == "pong" for reply in pongs)
    assert len({reply["ref"] for reply in replies}) == len(replies)
    assert [reply["room"] for reply in joined] == rooms
    assert client.rooms == set(rooms)
    with pytest.raises(TimeoutError):
        await client.receive(timeout=0.05)  # matched replies never reach the inbox


async def test_an_error_reply_raises_server_error_with_its_code(
    client_for: Callable[..., Awaitable[JsonClient]],
) -> None:
    client = await client_for()
    with pytest.raises(ServerError) as leave:
        await client.leave_room("nowhere")
    assert leave.value.code == "not_in_room"
    assert leave.value.reply["type"] == "error"
    with pytest.raises(ServerError) as bad:
        await client.join_room("")
    assert bad.value.code == "bad_room"
    with pytest.raises(ServerError) as unknown:
        await client.request({"type": "teleport"})
    assert unknown.value.code == "unknown_type"
    assert unknown.value.message == "Unknown message type: teleport"
    assert (await client.ping())["type"] == "pong"  # the connection stays usable


async def test_confirmed_sends_raise_the_errors_the_server_reports_for_them(
    client_for: Callable[..., Awaitable[JsonClient]],
) -> None:
    client = await client_for()
    with pytest.raises(ServerError) as private:
        await client.private("127.0.0.1:1", "hello")
    assert private.value.code == "unknown_target"
    with pytest.raises(ServerError) as room:
        await client.room_message("not-joined", "hello")
    assert room.value.code == "not_in_room"
    await client.room_message("not-joined", "unconfirmed", confirm=False)
    error = await client.receive(timeout=2)  # an unconfirmed send's error is just a message
    assert error["type"] == "error"
    assert error["code"] == "not_in_room"


async def test_a_request_the_server_never_answers_times_out(
    client_for: Callable[..., Awaitable[JsonClient]],
) -> None:
    client = await client_for()
    with pytest.raises(TimeoutError):
        # A broadcast has no reply on success.
        await client.request({"type": "broadcast", "data": 1}, timeout=0.1)
    assert client._pending == {}


# --------------------------------------------------------------- messages


async def test_messages_yields_broadcasts_privates_and_room_traffic_in_order(
    runtime: Runtime, client_for: Callable[..., Awaitable[JsonClient]]
) -> None:
    alice = await client_for()
    bob = await client_for()
    await bob.join_room("lobby")
    await alice.join_room("lobby")
    await alice.broadcast({"text": "to all"})
    await alice.private(bob.id, "just you")
    await alice.room_message("lobby", "to the room")
    await alice.leave_room("lobby")

    got: list[dict[str, Any]] = []
    async for message in bob.messages():
        got.append(message)
        if len(got) == 5:
            break
    assert [m["type"] for m in got] == [
        "user_joined",
        "broadcast",
        "private",
        "room_message",
        "user_left",
    ]
    assert all(m.get("connectionId", m.get("from")) == alice.id for m in got)
    assert got[1]["data"] == {"text": "to all"}
    assert got[2]["data"] == "just you"
    assert got[3]["data"] == "to the room"
    assert members(runtime, "lobby") == {bob.id}


async def test_messages_ends_quietly_after_close_and_receive_then_raises(
    client_for: Callable[..., Awaitable[JsonClient]],
) -> None:
    client = await client_for()
    await client.close()
    assert [m async for m in client.messages()] == []
    with pytest.raises(ClientClosed):
        await client.receive(timeout=1)
    with pytest.raises(ClientClosed):
        await client.ping()


async def test_close_fails_pending_requests_with_connection_error(
    client_for: Callable[..., Awaitable[JsonClient]],
) -> None:
    client = await client_for()
    waiting = asyncio.ensure_future(client.request({"type": "broadcast", "data": 0}, timeout=5))
    await asyncio.sleep(0.05)
    await client.close()
    with pytest.raises(ConnectionError):
        await waiting


# --------------------------------------------------------------- recovery


async def test_a_dropped_connection_reconnects_with_backoff_and_rejoins_its_rooms(
    runtime: Runtime, client_for: Callable[..., Awaitable[JsonClient]]
) -> None:
    reconnected: list[dict[str, Any]] = []
    disconnected: list[str] = []
    client = await client_for(on_reconnect=reconnected.append, on_disconnect=disconnected.append)
    other = await client_for()
    await client.join_room("a")
    await client.join_room("b")
    await other.join_room("a")
    old_id = client.id

    started = time.monotonic()
    runtime.hub.connections[old_id].outlet.destroy()  # the server side drops the transport
    await until(lambda: not client.connected)
    await client.wait_connected(timeout=5)
    elapsed = time.monotonic() - started

    assert disconnected == ["connection_lost"]
    assert client.id != old_id
    assert reconnected == [client.welcome]
    assert client.reconnects == 1
    assert client.backoff_history == [0.05]
    assert elapsed >= 0.05
    assert members(runtime, "a") == {client.id, other.id}
    assert members(runtime, "b") == {client.id}
    assert client.rooms == {"a", "b"}
    # The other member saw the old session leave and the new one join.
    seen = [await other.receive(timeout=2) for _ in range(2)]
    assert [(m["type"], m["connectionId"]) for m in seen] == [
        ("user_left", old_id),
        ("user_joined", client.id),
    ]
    assert (await client.ping())["type"] == "pong"


async def test_a_drop_fails_pending_requests_with_connection_error(
    runtime: Runtime, client_for: Callable[..., Awaitable[JsonClient]]
) -> None:
    client = await client_for()
    waiting = asyncio.ensure_future(client.request({"type": "broadcast", "data": 0}, timeout=5))
    await asyncio.sleep(0.05)
    runtime.hub.connections[client.id].outlet.destroy()
    with pytest.raises(ConnectionError):
        await waiting
    await client.wait_connected(timeout=5)


async def test_an_idle_timeout_close_reconnects(
    start_server: Callable[..., Awaitable[Runtime]], tmp_path: Path
) -> None:
    runtime = await start_server(max_per_ip=0, idle_timeout=0.5, upload_dir=str(tmp_path))
    disconnected: list[str] = []
    async with JsonClient(
        "127.0.0.1", runtime.port, on_disconnect=disconnected.append, **FAST
    ) as client:
        first = client.id
        closing = await client.receive(timeout=3)
        assert closing == {"type": "closing", "reason": "idle_timeout"}
        await until(lambda: client.reconnects >= 1)
        assert disconnected[0] == "idle_timeout"
        assert client.id != first
        assert first not in runtime.hub.sessions


async def test_an_operator_close_does_not_reconnect(
    runtime: Runtime, client_for: Callable[..., Awaitable[JsonClient]]
) -> None:
    disconnected: list[str] = []
    client = await client_for(on_disconnect=disconnected.append)
    await client.join_room("a")
    assert runtime.hub.operator_close(client.id)
    got = [m async for m in client.messages()]  # ends quietly
    assert got == [{"type": "closing", "reason": "operator"}]
    assert client.closed
    assert client.error is None
    assert client.disconnect_reason == "operator"
    assert disconnected == ["operator"]
    assert client.backoff_history == []
    await asyncio.sleep(0.2)
    assert runtime.hub.sessions == {}


async def test_a_final_server_shutdown_does_not_reconnect(
    runtime: Runtime, client_for: Callable[..., Awaitable[JsonClient]]
) -> None:
    # A final drain (ctl drain --final) tells clients not to come back (PROTOCOL.md 11.3).
    client = await client_for()
    runtime.hub.begin_shutdown(final=True)
    runtime.hub.force_shutdown()
    await asyncio.wait_for(client.wait_closed(), 5)
    assert client.disconnect_reason == "shutdown"
    assert client.error is None
    assert client.backoff_history == []
    got = [m["type"] for m in [m async for m in client.messages()]]
    assert got == ["server_shutdown", "closing"]


async def test_reconnection_gives_up_after_max_attempts_when_the_server_is_gone(
    runtime: Runtime, client_for: Callable[..., Awaitable[JsonClient]]
) -> None:
    gave_up: list[ReconnectFailed] = []
    client = await client_for(max_attempts=3, on_give_up=gave_up.append)
    runtime.server.close()  # listener and every connection gone, no closing sent
    started = time.monotonic()
    with pytest.raises(ReconnectFailed) as failed:
        async for _ in client.messages():
            pass
    elapsed = time.monotonic() - started
    assert failed.value.attempts == 3
    assert isinstance(failed.value.last_error, ConnectionRefusedError)
    assert client.backoff_history == [0.05, 0.1, 0.2]
    assert elapsed >= 0.35
    assert gave_up == [failed.value]
    assert client.error is failed.value
    assert client.closed
    with pytest.raises(ReconnectFailed):
        await client.wait_connected(timeout=1)


async def test_without_reconnect_a_drop_closes_the_client_with_an_error(
    runtime: Runtime, client_for: Callable[..., Awaitable[JsonClient]]
) -> None:
    client = await client_for(reconnect=False)
    runtime.hub.connections[client.id].outlet.destroy()
    await asyncio.wait_for(client.wait_closed(), 3)
    assert isinstance(client.error, ConnectionError)
    assert client.backoff_history == []
    with pytest.raises(ConnectionError):
        await client.receive(timeout=1)


async def test_close_during_the_backoff_stops_reconnecting_at_once(
    runtime: Runtime, client_for: Callable[..., Awaitable[JsonClient]]
) -> None:
    client = await client_for(base_delay=10.0)
    runtime.hub.connections[client.id].outlet.destroy()
    await until(lambda: client.backoff_history != [])
    started = time.monotonic()
    await client.close()
    assert time.monotonic() - started < 1.0
    assert client.closed
    assert client.error is None
    await asyncio.sleep(0.1)
    assert runtime.hub.sessions == {}


def test_backoff_doubles_from_the_base_delay_within_the_jitter_and_the_cap() -> None:
    exact = JsonClient(base_delay=1.0, jitter=0.0, max_delay=30.0)
    assert [exact.backoff_delay(n) for n in range(7)] == [1, 2, 4, 8, 16, 30, 30]
    jittery = JsonClient(base_delay=1.0, jitter=0.2, rng=random.Random(7))
    for n in range(5):
        delay = jittery.backoff_delay(n)
        assert 0.8 * 2**n <= delay <= 1.2 * 2**n
    defaults = JsonClient()
    assert (defaults.max_attempts, defaults.base_delay) == (5, 1.0)
