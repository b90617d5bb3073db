"""Every key of the console, pressed against a real server with real client sockets.

The app is built exactly as ``verb-console`` builds it (:func:`build_app`): its
startup starts the server in the app's own loop. Clients of every protocol
connect over 127.0.0.1 and the tests check what reaches them on the wire, next
to what the console shows.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import re
import struct
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import pytest
from helpers import JsonClient, eventually

from verb_console.client import JsonStream, MuxClient
from verb_console.console import VerbConsoleApp
from verb_console.console.dialogs import BroadcastDialog, ConfirmDialog, DetailScreen
from verb_console.console.panes.connections import ConnectionsPane
from verb_console.console.panes.table import LiveTable
from verb_console.console.run import build_app
from verb_console.protocols import binary as b
from verb_console.runtime import Runtime
from verb_console.settings import Settings

SIZE = (120, 40)
WAIT = 3.0
HEADER = struct.Struct(">HIH")


# ----- clients ----------------------------------------------------------------


class BinaryPeer:
    """A raw ``binary`` protocol client."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        host, port = writer.get_extra_info("sockname")[:2]
        self.id = f"{host}:{port}"

    @classmethod
    async def connect(cls, port: int) -> BinaryPeer:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        peer = cls(reader, writer)
        # On an ``auto`` listener the first frame picks the protocol.
        writer.write(b.encode_frame(b.HEARTBEAT))
        kind, payload = await peer.recv()
        assert (kind, payload) == (b.HEARTBEAT_ACK, b"pong")
        return peer

    async def recv(self, timeout: float = 2.0) -> tuple[int, bytes]:
        head = await asyncio.wait_for(self.reader.readexactly(HEADER.size), timeout)
        kind, length, _flags = HEADER.unpack(head)
        payload = await asyncio.wait_for(self.reader.readexactly(length), timeout)
        return kind, payload

    async def recv_notice(self) -> dict[str, Any]:
        kind, payload = await self.recv()
        assert kind == b.NOTICE, f"expected a NOTICE frame, got type {kind:#06x}"
        notice: dict[str, Any] = orjson.loads(payload)
        return notice


class EchoPeer:
    """A raw ``echo`` protocol client (text lines)."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        host, port = writer.get_extra_info("sockname")[:2]
        self.id = f"{host}:{port}"

    @classmethod
    async def connect(cls, port: int) -> EchoPeer:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        peer = cls(reader, writer)
        writer.write(b"hello\n")
        assert await peer.line() == b"Welcome to TCP server!\n"
        assert await peer.line() == b"Echo: hello\n"
        return peer

    async def line(self, timeout: float = 2.0) -> bytes:
        return await asyncio.wait_for(self.reader.readline(), timeout)


async def expect_nothing(reader: asyncio.StreamReader, wait: float = 0.3) -> None:
    """No byte arrives within ``wait`` seconds and the connection stays open."""
    with contextlib.suppress(TimeoutError):
        data = await asyncio.wait_for(reader.read(1), wait)
        raise AssertionError(f"expected nothing, got {data!r}")


async def expect_eof(reader: asyncio.StreamReader, timeout: float = 2.0) -> None:
    """The server closes the connection and sends nothing more."""
    try:
        data = await asyncio.wait_for(reader.read(1), timeout)
    except ConnectionResetError:
        return
    assert data == b"", f"expected the connection to close, got {data!r}"


async def close_writer(writer: asyncio.StreamWriter) -> None:
    if not writer.is_closing():
        writer.close()
    with contextlib.suppress(Exception):
        await asyncio.wait_for(writer.wait_closed(), 1)


# ----- the console under test ---------------------------------------------------


@dataclass
class Live:
    """A running console with one client of each kind connected and shown."""

    app: VerbConsoleApp
    runtime: Runtime
    pilot: Any
    json: JsonClient
    binary: BinaryPeer
    echo: EchoPeer
    mux: MuxClient
    stream: JsonStream
    stream_id: str
    extra: list[JsonClient] = field(default_factory=list)

    @property
    def port(self) -> int:
        return self.runtime.port

    @property
    def ids(self) -> dict[str, str]:
        """Session id of each client, by kind (the mux connection is a session too)."""
        return {
            "json": self.json.id,
            "binary": self.binary.id,
            "echo": self.echo.id,
            "mux": self.mux.local_id,
            "stream": self.stream_id,
        }

    @property
    def connections(self) -> ConnectionsPane:
        pane = self.app.main.pane("connections")
        assert isinstance(pane, ConnectionsPane)
        return pane

    @property
    def table(self) -> LiveTable:
        return self.connections.live_table

    def shown_ids(self) -> list[str]:
        return [s.id for s in self.table.rows]

    async def connect_json(self) -> JsonClient:
        client = await JsonClient.connect(self.port, welcome=False)
        self.extra.append(client)
        await client.send({"type": "ping"})
        client.welcome = await client.recv()
        assert client.welcome["type"] == "welcome"
        assert (await client.recv())["type"] == "pong"
        return client

    async def select(self, session_id: str) -> None:
        """Move the cursor to ``session_id``'s row with the arrow keys."""
        await self.pilot.press("home")
        index = self.shown_ids().index(session_id)
        await self.pilot.press(*["down"] * index)
        assert self.connections.selected_session_id() == session_id

    async def until_stopped(self, timeout: float = WAIT) -> float:
        """Wait until the app has exited; returns the seconds waited."""
        start = time.monotonic()
        await eventually(lambda: self.app.return_code is not None, timeout)
        return time.monotonic() - start


@contextlib.asynccontextmanager
async def live_console(tmp_path: Path, **settings: Any) -> AsyncIterator[Live]:
    values: dict[str, Any] = {
        "port": 0,
        "protocol": "auto",
        "upload_dir": str(tmp_path / "uploads"),
        "grace_period": 10.0,
        "max_per_ip": 0,
    }
    values.update(settings)
    app, runtime = build_app(Settings(**values))
    async with app.run_test(size=SIZE) as pilot:
        await eventually(lambda: runtime.server is not None, WAIT)
        port = runtime.port
        opened: list[Any] = []
        try:
            json_client = await JsonClient.connect(port, welcome=False)
            opened.append(json_client)
            await json_client.send({"type": "ping"})
            json_client.welcome = await json_client.recv()
            assert (await json_client.recv())["type"] == "pong"
            binary = await BinaryPeer.connect(port)
            opened.append(binary)
            echo = await EchoPeer.connect(port)
            opened.append(echo)
            mux = await MuxClient.connect("127.0.0.1", port)
            opened.append(mux)
            stream = (await mux.open_stream("json")).json()
            welcome = await stream.receive()
            live = Live(
                app, runtime, pilot, json_client, binary, echo, mux, stream, str(welcome["id"])
            )
            await eventually(lambda: set(live.ids.values()) <= set(live.shown_ids()), WAIT)
            yield live
            opened.extend(live.extra)
        finally:
            for client in opened:
                if isinstance(client, JsonClient | MuxClient):
                    await client.close()
                else:
                    await close_writer(client.writer)
            if runtime.hub.state != "stopped":
                runtime.hub.force_shutdown()
            await asyncio.wait_for(runtime.hub.wait_stopped(), 10)
            if runtime.server is not None:
                await asyncio.wait_for(runtime.server.wait_closed(), 5)


# ----- tests ---------------------------------------------------------------------


async def test_every_client_appears_as_a_row_whose_first_column_is_its_full_session_id(
    tmp_path: Path,
) -> None:
    async with live_console(tmp_path) as live:
        assert live.app.main.current == "connections"
        assert live.app.focused is live.table
        assert sorted(live.shown_ids()) == sorted(live.ids.values())
        lines = [live.table.render_line(y).text for y in range(1, len(live.table.rows) + 1)]
        for session_id in live.ids.values():
            assert any(line.lstrip().startswith(f"{session_id} ") for line in lines), session_id


async def test_b_then_text_then_enter_reaches_every_client_in_its_own_protocol(
    tmp_path: Path,
) -> None:
    async with live_console(tmp_path) as live:
        await live.pilot.press("b")
        assert isinstance(live.app.screen, BroadcastDialog)
        await live.pilot.press(*"deploy at noon", "enter")
        assert not isinstance(live.app.screen, BroadcastDialog)

        message = await live.json.recv()
        assert message["type"] == "broadcast"
        assert (message["from"], message["data"]) == ("server", "deploy at noon")
        assert isinstance(message["timestamp"], int)

        notice = await live.binary.recv_notice()
        assert notice["type"] == "broadcast"
        assert (notice["from"], notice["data"]) == ("server", "deploy at noon")

        assert await live.echo.line() == b"[server] deploy at noon\n"

        on_stream = await live.stream.receive()
        assert on_stream["type"] == "broadcast"
        assert (on_stream["from"], on_stream["data"]) == ("server", "deploy at noon")


async def test_x_then_y_closes_exactly_the_selected_session_and_its_row_leaves_the_table(
    tmp_path: Path,
) -> None:
    async with live_console(tmp_path) as live:
        target = live.json.id
        await live.select(target)
        await live.pilot.press("x")
        assert isinstance(live.app.screen, ConfirmDialog)
        assert live.app.screen.question == f"Close session {target}?"
        await live.pilot.press("y")

        assert await live.json.recv() == {"type": "closing", "reason": "operator"}
        await live.json.expect_eof()
        await eventually(lambda: target not in live.shown_ids(), WAIT)
        assert sorted(live.shown_ids()) == sorted(i for i in live.ids.values() if i != target)

        # Everyone else is still served.
        live.binary.writer.write(b.encode_frame(b.HEARTBEAT))
        assert await live.binary.recv() == (b.HEARTBEAT_ACK, b"pong")
        live.echo.writer.write(b"still here\n")
        assert await live.echo.line() == b"Echo: still here\n"
        assert (await live.stream.ping())["type"] == "pong"


@pytest.mark.parametrize("key", ["n", "escape"])
async def test_x_then_n_or_escape_closes_nothing(tmp_path: Path, key: str) -> None:
    async with live_console(tmp_path) as live:
        await live.select(live.binary.id)
        await live.pilot.press("x")
        assert isinstance(live.app.screen, ConfirmDialog)
        await live.pilot.press(key)
        assert not isinstance(live.app.screen, ConfirmDialog)
        await expect_nothing(live.binary.reader)
        await live.json.expect_nothing(0.05)
        assert len(live.runtime.hub.sessions) == 5
        assert sorted(live.shown_ids()) == sorted(live.ids.values())


async def test_s_then_y_drains_and_the_app_exits_zero_within_a_second_of_the_last_client(
    tmp_path: Path,
) -> None:
    async with live_console(tmp_path, grace_period=20.0) as live:
        await live.pilot.press("s")
        assert isinstance(live.app.screen, ConfirmDialog)
        assert live.app.screen.question == "Shut down gracefully?"
        await live.pilot.press("y")

        shutdown = {
            "type": "server_shutdown",
            "message": "Server is shutting down",
            "gracePeriod": 20000,
            "reconnect": True,
        }
        assert await live.json.recv() == shutdown
        assert await live.binary.recv_notice() == shutdown
        assert await live.echo.line() == b"[server] Server is shutting down (grace period 20s)\n"
        assert await live.stream.receive() == shutdown

        await eventually(lambda: live.app.main.has_class("-draining"), WAIT)
        banner = str(live.app.main.query_one("#drain").render())
        # json, binary, echo, the mux connection and its json stream
        assert "5 sessions left" in banner
        assert re.search(r"\b(19|20)s to go\b", banner), banner

        # Sessions keep working during the drain.
        live.echo.writer.write(b"last words\n")
        assert await live.echo.line() == b"Echo: last words\n"
        assert live.app.return_code is None

        await live.json.close()
        await close_writer(live.binary.writer)
        await close_writer(live.echo.writer)
        await live.mux.close()
        waited = await live.until_stopped()
        assert waited < 1.0
        assert live.app.return_code == 0


async def test_s_again_during_the_drain_closes_everything_now_and_the_app_exits_zero(
    tmp_path: Path,
) -> None:
    async with live_console(tmp_path, grace_period=30.0) as live:
        await live.pilot.press("s", "y")
        assert (await live.json.recv())["type"] == "server_shutdown"
        await live.pilot.press("s")
        assert isinstance(live.app.screen, ConfirmDialog)
        assert live.app.screen.question == "Close everything now?"
        await live.pilot.press("y")

        closing = {"type": "closing", "reason": "shutdown"}
        assert await live.json.recv() == closing
        await live.json.expect_eof()
        assert (await live.binary.recv_notice())["type"] == "server_shutdown"
        assert await live.binary.recv_notice() == closing
        await expect_eof(live.binary.reader)
        assert (await live.echo.line()).startswith(b"[server] Server is shutting down")
        assert await live.echo.line() == b"[server] closing: shutdown\n"
        await expect_eof(live.echo.reader)
        await live.mux.wait_closed()
        assert live.mux.closing_reason == "shutdown"

        await live.until_stopped()
        assert live.app.return_code == 0
        assert live.runtime.hub.state == "stopped"


async def test_a_read_only_console_refuses_b_x_and_s_and_no_client_hears_of_it(
    tmp_path: Path,
) -> None:
    async with live_console(tmp_path, read_only=True) as live:
        notices: list[str] = []
        live.app.notify = lambda message, **_: notices.append(str(message))  # type: ignore[method-assign]
        await live.select(live.json.id)
        for key in ("b", "x", "s"):
            await live.pilot.press(key)
            assert live.app.screen is live.app.main, key
        assert len(notices) == 3
        assert all("Read-only" in n for n in notices)

        await live.json.expect_nothing(0.3)
        await expect_nothing(live.binary.reader, 0.05)
        await expect_nothing(live.echo.reader, 0.05)
        with pytest.raises(TimeoutError):
            await live.stream.receive(timeout=0.05)
        assert live.runtime.hub.state == "running"
        assert len(live.runtime.hub.sessions) == 5
        assert sorted(live.shown_ids()) == sorted(live.ids.values())


async def upload(client: JsonClient, name: str, data: bytes) -> dict[str, Any]:
    """A whole json upload; returns the ``file_complete``."""
    start = {
        "type": "file_start",
        "transferId": "t1",
        "filename": name,
        "fileSize": len(data),
        "chunkSize": len(data),
        "sha256": hashlib.sha256(data).hexdigest(),
    }
    assert (await client.request(start))["type"] == "file_start_ack"
    chunk = {
        "type": "file_chunk",
        "transferId": "t1",
        "chunkIndex": 0,
        "data": base64.b64encode(data).decode(),
    }
    assert (await client.request(chunk))["type"] == "file_chunk_ack"
    # chunkIndex 0 also brings a progress report.
    assert (await client.recv())["type"] == "file_progress"
    return await client.request({"type": "file_end", "transferId": "t1"})


def pane_rows(live: Live, name: str, table_id: str | None = None) -> list[Any]:
    pane = live.app.main.pane(name)
    table = pane.query_one(f"#{table_id}", LiveTable) if table_id else pane.table
    return list(table.rows)


PaneCheck = Callable[[Live], bool]

PANE_CHECKS: dict[str, tuple[str, PaneCheck]] = {
    "connections": (
        "1",
        lambda live: set(live.ids.values()) <= {s.id for s in pane_rows(live, "connections")},
    ),
    "throttle": (
        "2",
        lambda live: any(
            t.key == "127.0.0.1" and t.live == 4 and not t.blocked
            for t in pane_rows(live, "throttle")
        ),
    ),
    "rooms": (
        "3",
        # A page of rooms counts their members; the selected room's are listed below.
        lambda live: (
            [(r.name, r.size) for r in pane_rows(live, "rooms", "rooms")] == [("lobby", 2)]
            and [m[0] for m in pane_rows(live, "rooms", "members")]
            == sorted([live.json.id, live.stream_id])
        ),
    ),
    "streams": (
        "4",
        lambda live: (
            [c.id for c in pane_rows(live, "streams", "mux")] == [live.mux.local_id]
            and [s.session_id for s in pane_rows(live, "streams", "streams")] == [live.stream_id]
        ),
    ),
    "transfers": (
        "5",
        lambda live: any(
            t.filename == "report.txt" and t.state == "complete" and t.received == 4096
            for t in pane_rows(live, "transfers")
        ),
    ),
    "log": (
        "6",
        lambda live: all(
            any(e.kind == "connect" and i in e.text for e in pane_rows(live, "log"))
            for i in (live.json.id, live.binary.id, live.echo.id, live.mux.local_id)
        ),
    ),
}


@pytest.mark.parametrize("name", list(PANE_CHECKS))
async def test_each_digit_shows_its_pane_with_live_data_from_the_server(
    tmp_path: Path, name: str
) -> None:
    async with live_console(tmp_path) as live:
        joined = await live.json.request({"type": "join_room", "room": "lobby"})
        assert joined["type"] == "joined"
        await live.stream.request({"type": "join_room", "room": "lobby"})
        assert (await live.json.recv())["type"] == "user_joined"
        complete = await upload(live.json, "report.txt", bytes(range(256)) * 16)
        assert complete["type"] == "file_complete"

        key, check = PANE_CHECKS[name]
        await live.pilot.press("6" if key == "1" else "1", key)
        assert live.app.main.current == name
        assert live.app.focused in live.app.main.pane(name).query(LiveTable)
        await eventually(lambda: check(live), WAIT)


async def test_slash_filters_the_live_table_down_to_one_session_id(tmp_path: Path) -> None:
    async with live_console(tmp_path) as live:
        await live.pilot.press("slash", *live.echo.id, "enter")
        assert live.shown_ids() == [live.echo.id]
        assert live.app.focused is live.table
        # The filter holds across refreshes of the live data.
        await live.pilot.pause(0.6)
        assert live.shown_ids() == [live.echo.id]
        await live.pilot.press("slash", "escape")
        assert sorted(live.shown_ids()) == sorted(live.ids.values())


async def test_p_freezes_the_table_while_a_client_connects_but_the_header_keeps_counting(
    tmp_path: Path,
) -> None:
    async with live_console(tmp_path) as live:
        await live.pilot.press("p")
        header = live.app.main.header
        assert "PAUSED" in str(header.render())
        frozen = live.shown_ids()
        newcomer = await live.connect_json()
        await eventually(lambda: "sessions 5 " in str(header.render()), WAIT)
        await live.pilot.pause(0.6)  # a few more ticks
        assert live.shown_ids() == frozen
        assert newcomer.id not in live.shown_ids()

        await live.pilot.press("p")
        assert "PAUSED" not in str(header.render())
        await eventually(lambda: newcomer.id in live.shown_ids(), WAIT)


async def test_enter_opens_the_details_of_the_selected_session(tmp_path: Path) -> None:
    async with live_console(tmp_path) as live:
        await live.select(live.stream_id)
        await live.pilot.press("enter")
        screen = live.app.screen
        assert isinstance(screen, DetailScreen)
        assert screen.title_text == f"Session {live.stream_id}"
        fields = dict(screen.fetch() or [])
        assert fields["Protocol"] == "json"
        assert fields["Mux connection"] == live.mux.local_id
        await live.pilot.press("escape")
        assert not isinstance(live.app.screen, DetailScreen)
