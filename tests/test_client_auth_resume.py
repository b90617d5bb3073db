"""A client on a server that requires authentication comes back authenticated.

PROTOCOL.md 11.1: a client that comes back reads its welcome, authenticates if
required, then resumes. The client library remembers the ``auth`` that
authenticated it and sends it first on every reconnection: the resume then
goes through, or (it failed) the rooms are rejoined as that user. A token the
server no longer accepts ends the client instead of a loop of refusals, and a
wrong one fails the connect.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
from pathlib import Path
from typing import Any

import pytest

from verb_console.client import Backoff, JsonClient, MuxClient, Recovery, ServerError
from verb_console.runtime import Runtime

pytestmark = pytest.mark.timeout(30)

FAST = {"base_delay": 0.05, "jitter": 0.0, "connect_timeout": 2.0}


def _line(name: str, token: str) -> str:
    return f"{name}:{hashlib.sha256(token.encode()).hexdigest()}\n"


async def until(predicate: Any, timeout: float = 10.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        assert asyncio.get_running_loop().time() < deadline, "condition not met in time"
        await asyncio.sleep(0.01)


@pytest.fixture
def tokens(tmp_path: Path) -> Path:
    path = tmp_path / "tokens"
    path.write_text(_line("alice", "tok-alice") + _line("bob", "tok-bob"))
    return path


async def _client(server: Runtime, made: list[JsonClient], token: str, **kw: Any) -> JsonClient:
    c = JsonClient("127.0.0.1", server.port, token=token, **{**FAST, **kw})
    welcome = await c.connect()
    assert welcome.get("auth") == "required"
    assert isinstance(c.first_reply, dict) and c.first_reply["user"] == token[4:]
    made.append(c)
    return c


@pytest.mark.parametrize("window", [10.0, 0.0], ids=["resumed", "rejoined"])
async def test_a_reconnection_authenticates_again_then_resumes_or_rejoins(
    start_server, tokens: Path, window: float
) -> None:
    server = await start_server(auth_file=str(tokens), resume_window=window, max_per_ip=0)
    made: list[JsonClient] = []
    try:
        recoveries: list[Recovery] = []
        a = await _client(server, made, "tok-alice", on_recovery=recoveries.append)
        b = await _client(server, made, "tok-bob")
        await a.join_room("r")
        await b.join_room("r")
        assert (await a.receive(2))["type"] == "user_joined"
        sid = a.id
        server.hub.sessions[sid].outlet.destroy()  # the connection breaks, not by choice
        await until(lambda: recoveries)
        if window:
            assert recoveries[0].resumed and a.id == sid
        else:
            assert not recoveries[0].resumed and recoveries[0].rooms == {"r": True}
        # Back as alice, in its room: b's message reaches it, and what it sends
        # comes from alice.
        await b.room_message("r", "hello")
        got = await a.receive(2)
        while got["type"] != "room_message":
            got = await a.receive(2)
        assert got["data"] == "hello"
        users = {s.user for s in server.hub.sessions.values()}
        assert users == {"alice", "bob"}
        await a.private(b.id, "hi")
        got = await b.receive(2)
        while got["type"] != "private":
            got = await b.receive(2)
        assert got["data"] == "hi"
    finally:
        for c in made:
            with contextlib.suppress(Exception):
                await c.close()


async def test_a_token_refused_on_reconnection_ends_the_client(start_server, tokens: Path) -> None:
    server = await start_server(auth_file=str(tokens), resume_window=10.0, max_per_ip=0)
    made: list[JsonClient] = []
    try:
        gone: list[str] = []
        a = await _client(
            server, made, "tok-alice", base_delay=0.5, max_attempts=50, on_disconnect=gone.append
        )
        assert a.auth == {"type": "auth", "token": "tok-alice"}
        # The connection breaks; while the client waits to come back, alice's
        # token leaves the auth file.
        server.hub.sessions[a.id].outlet.destroy()
        await until(lambda: gone)
        tokens.write_text(_line("bob", "tok-bob"))
        await server.reload_async()
        # It comes back, is refused, and stops rather than trying 50 times.
        await asyncio.wait_for(a.wait_closed(), 10)
        assert a.closing_reason == "auth_failed"
        assert a.reconnects == 0
    finally:
        for c in made:
            with contextlib.suppress(Exception):
                await c.close()


async def test_a_wrong_token_fails_the_connect_with_the_server_s_error(
    start_server, tokens: Path
) -> None:
    server = await start_server(auth_file=str(tokens), max_per_ip=0)
    c = JsonClient("127.0.0.1", server.port, token="wrong", **FAST)
    with pytest.raises(ServerError) as caught:
        await c.connect()
    assert caught.value.code == "auth_failed"
    await c.close()


async def test_a_mux_connection_authenticates_again_and_its_json_stream_resumes(
    start_server, tokens: Path
) -> None:
    server = await start_server(
        protocol="auto", auth_file=str(tokens), resume_window=10.0, max_per_ip=0
    )
    client = await MuxClient.connect(
        "127.0.0.1",
        server.port,
        reconnect=True,
        timeout=3,
        backoff=Backoff(base_delay=0.05, jitter=0.0),
        token="tok-alice",
    )
    b = JsonClient("127.0.0.1", server.port, token="tok-bob", reconnect=False, **FAST)
    try:
        await b.connect()
        recoveries: list[Recovery] = []
        a = (await client.open_stream("json")).json(on_recovery=recoveries.append)
        assert (await a.receive(5))["type"] == "welcome"
        await a.join_room("r")
        await b.join_room("r")
        assert (await a.receive(2))["type"] == "user_joined"
        sid = a.id
        server.hub.connections[client.local_id].outlet.destroy()
        await b.private(sid, "while away")
        await until(lambda: recoveries)
        assert recoveries[0].resumed and a.id == sid
        assert (await a.receive(2))["data"] == "while away"
        assert server.hub.sessions[sid].user == "alice"
        # A wrong token fails the connect with the server's error.
        with pytest.raises(ServerError) as caught:
            await MuxClient.connect("127.0.0.1", server.port, timeout=3, token="wrong")
        assert caught.value.code == "auth_failed"
    finally:
        await b.close()
        await client.close()
