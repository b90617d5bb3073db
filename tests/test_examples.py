"""The examples, each run as a real process against real sockets on 127.0.0.1."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest

from verb_console.client import JsonClient, ServerError
from verb_console.runtime import Runtime

pytestmark = pytest.mark.timeout(30)

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
ENV = {**os.environ, "PYTHONUNBUFFERED": "1"}
LISTENING = re.compile(r"listening on 127\.0\.0\.1:(\d+)")
TIMEOUT = 5.0

Spawn = Callable[..., Awaitable[asyncio.subprocess.Process]]


@pytest.fixture
async def spawn() -> AsyncIterator[Spawn]:
    """Start ``examples/NAME`` with arguments; every process still running is stopped after."""
    procs: list[asyncio.subprocess.Process] = []

    async def start(name: str, *args: str, stdin: int | None = None) -> asyncio.subprocess.Process:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            str(EXAMPLES / name),
            *args,
            stdin=stdin if stdin is not None else asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=ENV,
        )
        procs.append(proc)
        return proc

    yield start
    for proc in procs:
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()


async def read_until(proc: asyncio.subprocess.Process, pattern: str) -> tuple[list[str], str]:
    """Read stdout lines until one matches ``pattern``; returns the lines before and the match."""
    assert proc.stdout is not None
    seen: list[str] = []
    async with asyncio.timeout(TIMEOUT):
        while True:
            raw = await proc.stdout.readline()
            if not raw:
                raise AssertionError(f"no line matching {pattern!r}; got {seen}")
            line = raw.decode().rstrip("\n")
            if re.search(pattern, line):
                return seen, line
            seen.append(line)


async def listening_port(proc: asyncio.subprocess.Process) -> int:
    _, line = await read_until(proc, LISTENING.pattern)
    match = LISTENING.search(line)
    assert match is not None
    return int(match.group(1))


@pytest.fixture
async def chat_server(start_server: Callable[..., Awaitable[Runtime]], tmp_path: Path) -> Runtime:
    return await start_server(max_per_ip=0, upload_dir=str(tmp_path / "uploads"))


@pytest.mark.parametrize("name", ["echo_server.py", "message_server.py", "chat.py"])
def test_every_example_prints_its_usage_with_help(name: str) -> None:
    result = subprocess.run(
        [sys.executable, str(EXAMPLES / name), "--help"],
        capture_output=True,
        text=True,
        timeout=20,
        env=ENV,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("usage:")
    assert "--port" in result.stdout


# --------------------------------------------------------------- echo_server.py


async def test_the_echo_server_welcomes_a_client_and_echoes_what_it_sends(spawn: Spawn) -> None:
    server = await spawn("echo_server.py", "--port", "0")
    port = await listening_port(server)
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    async with asyncio.timeout(TIMEOUT):
        assert await reader.readline() == b"Welcome to TCP server!\n"
        writer.write(b"hello there\n")
        assert await reader.readline() == b"Echo: hello there\n"
    _, connected = await read_until(server, "Client connected")
    assert connected.startswith("Client connected: 127.0.0.1:")
    writer.close()
    await read_until(server, "^Client disconnected$")
    server.send_signal(signal.SIGTERM)
    assert await asyncio.wait_for(server.wait(), TIMEOUT) == 0


async def test_a_second_echo_server_may_share_the_port_as_exclusive_is_false(spawn: Spawn) -> None:
    first = await spawn("echo_server.py", "--port", "0")
    port = await listening_port(first)
    # SO_REUSEPORT lets a second listener share the port (the seed's exclusive: false).
    second = await spawn("echo_server.py", "--port", str(port))
    assert await listening_port(second) == port


# --------------------------------------------------------------- message_server.py


async def test_the_message_server_answers_pings_and_relays_broadcasts_and_privates(
    spawn: Spawn,
) -> None:
    server = await spawn("message_server.py", "--port", "0")
    port = await listening_port(server)
    async with (
        JsonClient("127.0.0.1", port, reconnect=False) as alice,
        JsonClient("127.0.0.1", port, reconnect=False) as bob,
    ):
        assert alice.welcome["id"] == alice.id and alice.id != bob.id
        pong = await alice.ping()
        assert pong["type"] == "pong" and isinstance(pong["timestamp"], int)

        await alice.broadcast({"text": "hi all"})
        got = await bob.receive(timeout=TIMEOUT)
        assert (got["type"], got["from"], got["data"]) == (
            "broadcast",
            alice.id,
            {"text": "hi all"},
        )

        await bob.private(alice.id, "psst")
        got = await alice.receive(timeout=TIMEOUT)
        assert (got["type"], got["from"], got["data"]) == ("private", bob.id, "psst")

        assert (await alice.join_room("den"))["members"] == [alice.id]
        assert sorted((await bob.join_room("den"))["members"]) == sorted([alice.id, bob.id])

        with pytest.raises(ServerError) as unknown:
            await alice.request({"type": "dance"})
        assert unknown.value.code == "unknown_type"
        assert unknown.value.message == "Unknown message type: dance"
    await read_until(server, "disconnected")
    server.send_signal(signal.SIGTERM)
    assert await asyncio.wait_for(server.wait(), TIMEOUT) == 0


# --------------------------------------------------------------- chat.py


async def test_a_line_sent_by_one_chat_client_is_printed_by_another_in_the_room(
    spawn: Spawn, chat_server: Runtime
) -> None:
    port = str(chat_server.port)
    bob = await spawn(
        "chat.py", "--port", port, "--room", "r", "--name", "bob", stdin=subprocess.PIPE
    )
    _, joined = await read_until(bob, "^joined #r as ")
    assert joined.startswith("joined #r as bob (nobody else here")

    alice = await spawn(
        "chat.py", "--port", port, "--room", "r", "--name", "alice", "--send", "hello", "--once"
    )
    assert await asyncio.wait_for(alice.wait(), TIMEOUT) == 0
    assert alice.stdout is not None
    alice_out = (await alice.stdout.read()).decode()
    assert "joined #r as alice (1 other here" in alice_out

    before, line = await read_until(bob, r"^\[r\] ")
    assert line == "[r] alice: hello"
    assert "* alice joined #r" in before

    assert bob.stdin is not None
    bob.stdin.close()  # end of input: the client leaves
    assert await asyncio.wait_for(bob.wait(), TIMEOUT) == 0
    assert chat_server.hub.rooms.get("r") is None


async def test_a_chat_client_fed_by_a_pipe_sends_every_line_then_exits(
    spawn: Spawn, chat_server: Runtime
) -> None:
    async with JsonClient("127.0.0.1", chat_server.port) as watcher:
        await watcher.join_room("pipes")
        sender = await spawn(
            "chat.py", "--port", str(chat_server.port), "--room", "pipes", stdin=subprocess.PIPE
        )
        assert sender.stdin is not None
        sender.stdin.write(b"one\n\ntwo\n/all everyone\n")
        sender.stdin.close()
        assert await asyncio.wait_for(sender.wait(), TIMEOUT) == 0
        got = [await watcher.receive(timeout=TIMEOUT) for _ in range(5)]
    # The newcomer asks who is here first (the watcher is no chat client: it never answers).
    kinds = ["user_joined", "room_message", "room_message", "room_message", "broadcast"]
    assert [m["type"] for m in got] == kinds
    assert got[1]["data"]["who"] is True
    assert [m["data"]["text"] for m in got[2:]] == ["one", "two", "everyone"]


async def test_a_chat_client_reconnects_and_keeps_receiving_after_a_drop(
    spawn: Spawn, chat_server: Runtime
) -> None:
    port = str(chat_server.port)
    bob = await spawn(
        "chat.py",
        *("--port", port, "--room", "r", "--name", "bob", "--base-delay", "0.05"),
        stdin=subprocess.PIPE,
    )
    await read_until(bob, "^joined #r as ")
    old_id = next(iter(chat_server.hub.rooms.get("r").members))
    chat_server.hub.connections[old_id].outlet.destroy()
    _, line = await read_until(bob, r"^\* reconnected as ")
    new_id = line.rsplit(" ", 1)[1]
    assert new_id != old_id
    room = chat_server.hub.rooms.get("r")
    assert room is not None and set(room.members) == {new_id}

    async with JsonClient("127.0.0.1", chat_server.port) as alice:
        await alice.join_room("r")
        await alice.room_message("r", {"name": "alice", "text": "still there?"})
    _, line = await read_until(bob, r"^\[r\] ")
    assert line == "[r] alice: still there?"


async def test_a_chat_client_that_cannot_connect_says_so_and_exits_with_status_1(
    spawn: Spawn, chat_server: Runtime
) -> None:
    port = chat_server.port
    chat_server.hub.force_shutdown()
    await chat_server.hub.wait_stopped()
    chat = await spawn("chat.py", "--port", str(port), "--once")
    assert await asyncio.wait_for(chat.wait(), TIMEOUT) == 1
    assert chat.stderr is not None
    assert f"cannot connect to 127.0.0.1:{port}" in (await chat.stderr.read()).decode()


async def test_chat_clients_address_each_other_by_name_and_keep_commands_local(
    spawn: Spawn, chat_server: Runtime
) -> None:
    port = str(chat_server.port)
    alice = await spawn(
        "chat.py", "--port", port, "--room", "r", "--name", "alice", stdin=subprocess.PIPE
    )
    await read_until(alice, "^joined #r as alice")
    bob = await spawn(
        "chat.py", "--port", port, "--room", "r", "--name", "bob", stdin=subprocess.PIPE
    )
    await read_until(bob, "^joined #r as bob")
    # Each learns the other's name: alice sees bob join by name, bob hears alice is here.
    await read_until(alice, r"^\* bob joined #r$")
    await read_until(bob, r"^\* alice is here$")
    async with JsonClient("127.0.0.1", chat_server.port) as watcher:
        await watcher.join_room("r")
        await read_until(alice, r"joined #r$")  # the watcher, by id: it never says a name
        assert bob.stdin is not None
        bob.stdin.write(b"/help\n/msg ALICE psst\n/msg carol hi\n/frobnicate\n")
        await bob.stdin.drain()
        _, line = await read_until(alice, r"^\(private\) ")
        assert line == "(private) bob: psst"
        _, line = await read_until(bob, "^! nobody is called carol")
        _, line = await read_until(bob, "^! unknown command /frobnicate")
        # /help, /msg and the unknown command reached nobody in the room; only the
        # re-asked "who" (looking for carol) did.
        seen = []
        with contextlib.suppress(TimeoutError):
            while True:
                seen.append(await watcher.receive(timeout=0.3))
        texts = [m.get("data") for m in seen if m["type"] == "room_message"]
        assert all(isinstance(d, dict) and "text" not in d for d in texts), seen
    assert bob.stdin is not None and alice.stdin is not None
    bob.stdin.close()
    await read_until(alice, r"^\* bob left #r$")
    alice.stdin.close()
    assert await asyncio.wait_for(bob.wait(), TIMEOUT) == 0
    assert await asyncio.wait_for(alice.wait(), TIMEOUT) == 0
