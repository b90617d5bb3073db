"""The clients on anyio: each backend (asyncio, trio) against a real ``verb-console --headless``.

The server runs as its own process, so the client's event loop may be trio's. Its
default listener is ``auto`` (which sends nothing before the client's first
bytes); the client speaks first, so it works there and on a pinned ``json`` one.
"""

from __future__ import annotations

import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import anyio
import pytest

from verb_console.client import (
    Backoff,
    ClientClosed,
    JsonClient,
    MuxClient,
    MuxClosed,
    ServerError,
    TcpPipe,
)
from verb_console.protocols import binary as b

pytestmark = pytest.mark.timeout(60)

LISTENING = re.compile(r"listening on 127\.0\.0\.1:(\d+) \((\w+)\)")
BACKENDS = ["asyncio", "trio"]

Headless = Callable[..., int]


@pytest.fixture
def headless(tmp_path: Path) -> Iterator[Headless]:
    """Start ``verb-console --headless --port 0 ARGS``; returns its port. Stopped after."""
    procs: list[subprocess.Popen[bytes]] = []

    def start(*args: str, protocol: str | None = None) -> int:
        log = tmp_path / f"server-{len(procs)}.log"
        extra = ["--protocol", protocol] if protocol else []
        with log.open("wb") as out:
            proc = subprocess.Popen(
                [sys.executable, "-m", "verb_console", "--headless", "--port", "0", *extra, *args],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=tmp_path,
            )
        procs.append(proc)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            match = LISTENING.search(log.read_text(errors="replace"))
            if match:
                assert match.group(2) == (protocol or "auto")
                return int(match.group(1))
            if proc.poll() is not None:
                break
            time.sleep(0.05)
        raise AssertionError(f"no listening line: {log.read_text(errors='replace')!r}")

    yield start
    for proc in procs:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)


def run(backend: str, fn: Callable[[], object]) -> None:
    anyio.run(fn, backend=backend)  # type: ignore[arg-type]


# --------------------------------------------------------------- json client


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("protocol", [None, "json"], ids=["auto", "json"])
def test_the_json_client_speaks_first_and_works_on_auto_and_pinned_json_listeners(
    headless: Headless, backend: str, protocol: str | None
) -> None:
    port = headless(protocol=protocol)

    async def main() -> None:
        async with (
            JsonClient("127.0.0.1", port, reconnect=False) as alice,
            JsonClient("127.0.0.1", port, reconnect=False) as bob,
        ):
            assert alice.welcome["type"] == "welcome"
            assert alice.welcome["server"] == "verb-console"
            assert alice.id != bob.id and alice.connected
            assert alice._pending == {}  # the first ping's pong was taken by the handshake
            assert (await alice.ping())["type"] == "pong"
            assert (await bob.join_room("den"))["members"] == [bob.id]
            joined = await alice.join_room("den")
            assert joined["members"] == sorted([alice.id, bob.id])
            await alice.room_message("den", {"text": "hi"})
            got = await bob.receive(timeout=5)
            assert (got["type"], got["connectionId"]) == ("user_joined", alice.id)
            got = await bob.receive(timeout=5)
            assert (got["type"], got["from"], got["data"]) == (
                "room_message",
                alice.id,
                {"text": "hi"},
            )
            with pytest.raises(ServerError) as refused:
                await alice.leave_room("nowhere")
            assert refused.value.code == "not_in_room"
            assert alice.rooms == {"den"}
        assert alice.closed and bob.closed

    run(backend, main)


@pytest.mark.parametrize("backend", BACKENDS)
def test_request_returns_the_reply_with_its_ref_never_a_broadcast_that_came_first(
    headless: Headless, backend: str
) -> None:
    port = headless()

    async def main() -> None:
        async with (
            JsonClient("127.0.0.1", port, reconnect=False) as quiet,
            JsonClient("127.0.0.1", port, reconnect=False) as loud,
            await MuxClient.connect("127.0.0.1", port) as mux,
        ):
            stream = (await mux.open_stream("json")).json()
            assert (await stream.receive())["type"] == "welcome"
            for n in range(50):
                await loud.broadcast(n, confirm=False)
            await loud.ping()  # every broadcast has been delivered by now
            # The broadcasts arrived before the pongs, on both transports.
            for client in (quiet, stream):
                pong = await client.ping()
                assert pong["type"] == "pong"
                got = [(await client.receive(5))["data"] for _ in range(50)]
                assert got == list(range(50))
                with pytest.raises(TimeoutError):
                    await client.receive(0.1)

    run(backend, main)


@pytest.mark.parametrize("backend", BACKENDS)
def test_concurrent_requests_on_each_backend_each_get_their_own_reply(
    headless: Headless, backend: str
) -> None:
    port = headless()

    async def main() -> None:
        async with JsonClient("127.0.0.1", port, reconnect=False) as client:
            replies: list[dict[str, object]] = []

            async def ping() -> None:
                replies.append(await client.ping())

            async with anyio.create_task_group() as tg:
                for _ in range(100):
                    tg.start_soon(ping)
            assert [r["type"] for r in replies] == ["pong"] * 100
            assert len({r["ref"] for r in replies}) == 100

    run(backend, main)


# --------------------------------------------------------------- mux and plain pipes


@pytest.mark.parametrize("backend", BACKENDS)
def test_the_mux_client_and_tcp_pipes_work_on_each_backend(
    headless: Headless, backend: str
) -> None:
    port = headless()

    async def main() -> None:
        async with await MuxClient.connect("127.0.0.1", port) as mux:
            assert (await mux.ping())["type"] == "pong"
            chat = (await mux.open_stream("json")).json()
            welcome = await chat.receive()
            assert welcome["id"] == chat.id == f"{mux.local_id}#1"
            assert (await chat.request({"type": "ping", "ref": "mine"}))["ref"] == "mine"
            lines = (await mux.open_stream("echo")).lines()
            assert await lines.readline() == "Welcome to TCP server!"
            await lines.send_line("over mux")
            assert await lines.readline() == "Echo: over mux"
            frames = (await mux.open_stream("binary")).binary()
            assert await frames.heartbeat() == (b.HEARTBEAT_ACK, 0, b"pong")
            await lines.stream.close()
            with pytest.raises(MuxClosed):
                await lines.readline(1)
        assert mux.closed

        async with await TcpPipe.connect("127.0.0.1", port) as pipe:
            frames = pipe.binary()
            assert await frames.echo(b"plain", flags=3) == (b.DATA, 3, b"plain")
        async with await TcpPipe.connect("127.0.0.1", port) as pipe:
            lines = pipe.lines()
            await lines.send_line("plain")
            assert await lines.readline() == "Welcome to TCP server!"
            assert await lines.readline() == "Echo: plain"

    run(backend, main)


# --------------------------------------------------------------- connect errors say why


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("backend", BACKENDS)
def test_connect_errors_say_why(backend: str) -> None:
    async def main() -> None:
        # Nobody listens: refused, with the errno's text.
        with pytest.raises(ConnectionRefusedError) as refused:
            await JsonClient("127.0.0.1", closed_port()).connect()
        assert (str(refused.value) and "refused" in str(refused.value).lower()) or "111" in str(
            refused.value
        )

        # A listener that accepts and never answers: no welcome in time.
        silent = socket.socket()
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        try:
            client = JsonClient("127.0.0.1", silent.getsockname()[1], connect_timeout=0.3)
            with pytest.raises(TimeoutError) as timed_out:
                await client.connect()
            assert str(timed_out.value) == "no welcome from the server within 0.3s"
            assert not client.closed and client._pending == {}
        finally:
            silent.close()

        # A listener that hangs up at once: said so.
        async def hang_up(stream: anyio.abc.SocketStream) -> None:
            await stream.aclose()

        listener = await anyio.create_tcp_listener(local_host="127.0.0.1")
        async with listener, anyio.create_task_group() as tg:
            tg.start_soon(listener.serve, hang_up)
            hung_port = listener.extra(anyio.abc.SocketAttribute.local_port)
            with pytest.raises(ConnectionError) as hung_up:
                await JsonClient("127.0.0.1", hung_port).connect()
            assert str(hung_up.value) == "the server closed the connection before its welcome"
            tg.cancel_scope.cancel()

    run(backend, main)


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_server_that_refuses_the_connection_is_named_in_the_error(
    headless: Headless, backend: str
) -> None:
    port = headless("--max-connections", "1")

    async def main() -> None:
        async with JsonClient("127.0.0.1", port, reconnect=False) as first:
            assert first.connected
            with pytest.raises(ConnectionError) as refused:
                await JsonClient("127.0.0.1", port, reconnect=False).connect()
            # The server hangs up on a connection over its limit: the error says so.
            assert str(refused.value) == "the server closed the connection before its welcome"
        with pytest.raises(ClientClosed):
            await first.ping()

    run(backend, main)


# --------------------------------------------------------------- chat.py on the default listener

CHAT = Path(__file__).resolve().parent.parent / "examples" / "chat.py"


def test_chat_works_on_the_default_auto_listener(headless: Headless) -> None:
    port = headless()
    bob = subprocess.Popen(
        [sys.executable, str(CHAT), "--port", str(port), "--room", "r", "--name", "bob"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={"PYTHONUNBUFFERED": "1", "PATH": "/usr/bin:/bin"},
    )
    try:
        assert bob.stdout is not None and bob.stdin is not None
        assert bob.stdout.readline().startswith("joined #r as bob")
        alice = subprocess.run(
            [
                sys.executable,
                str(CHAT),
                "--port",
                str(port),
                "--room",
                "r",
                "--name",
                "alice",
                "--send",
                "hello",
                "--once",
            ],
            capture_output=True,
            text=True,
            timeout=20,
        )
        assert alice.returncode == 0, alice.stderr
        assert "(1 other here;" in alice.stdout
        lines = [bob.stdout.readline().rstrip("\n") for _ in range(2)]
        assert lines[0] == "* alice joined #r"
        assert lines[1] == "[r] alice: hello"
        bob.stdin.close()
        assert bob.wait(10) == 0
    finally:
        if bob.poll() is None:
            bob.kill()
            bob.wait(5)


def test_chat_says_why_it_cannot_connect() -> None:
    port = closed_port()
    chat = subprocess.run(
        [sys.executable, str(CHAT), "--port", str(port), "--once"],
        capture_output=True,
        text=True,
        timeout=20,
    )
    assert chat.returncode == 1
    prefix = f"chat: cannot connect to 127.0.0.1:{port}: "
    assert chat.stderr.startswith(prefix)
    reason = chat.stderr[len(prefix) :].strip()
    assert reason == "[Errno 111] Connection refused", chat.stderr


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_reconnecting_mux_clients_json_stream_comes_back_after_a_server_restart(
    tmp_path: Path, backend: str
) -> None:
    port = closed_port()
    log = tmp_path / "server.log"
    server = [sys.executable, "-m", "verb_console", "--headless"]

    def start() -> subprocess.Popen[bytes]:
        with log.open("ab") as out:
            proc = subprocess.Popen(
                [*server, "--port", str(port), "--protocol", "mux", "--resume-window", "30"],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=tmp_path,
            )
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if log.read_text(errors="replace").count("listening on") > len(procs):
                return proc
            time.sleep(0.05)
        raise AssertionError(f"no listening line: {log.read_text(errors='replace')!r}")

    procs: list[subprocess.Popen[bytes]] = []
    procs.append(start())

    async def main() -> None:
        backoff = Backoff(max_attempts=200, base_delay=0.05, max_delay=0.1, jitter=0.0)
        mux = await MuxClient.connect("127.0.0.1", port, reconnect=True, backoff=backoff)
        try:
            chat = (await mux.open_stream("json")).json()
            other = (await mux.open_stream("json")).json()
            assert (await chat.receive(5))["type"] == "welcome"
            assert (await other.receive(5))["type"] == "welcome"
            await chat.join_room("den")
            await other.join_room("den")
            procs[0].kill()
            procs[0].wait(10)
            procs.append(start())
            with anyio.fail_after(20):
                while chat.reconnects == 0:
                    await anyio.sleep(0.02)
            recovery = chat.last_recovery
            assert recovery is not None and not recovery.resumed
            assert recovery.resume_failed == "unknown" and recovery.rooms == {"den": False}
            assert mux.reconnects == 1 and chat.connected
            # The chat goes on: both streams are back in the room on the new server.
            await other.wait_connected(20)
            await other.room_message("den", "after")
            with anyio.fail_after(5):
                while (m := await chat.receive(5))["type"] != "room_message":
                    pass
            assert m["data"] == "after"
        finally:
            await mux.close()

    try:
        run(backend, main)
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait(5)
