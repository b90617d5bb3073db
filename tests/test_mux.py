"""The ``mux`` protocol over real sockets: PROTOCOL.md section 4, and the sessions it carries.

Control-stream tests talk raw bytes through :class:`RawMux`, which frames with
``struct`` on its own, so a bug in the server's codec cannot hide itself in both
ends. Scenarios with sessions use :class:`verb_console.client.MuxClient`.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import json
import statistics
import struct
import time
from pathlib import Path
from typing import Any

import pytest
from helpers import JsonClient, eventually, frame, tls_for, wire_fixtures

from verb_console import __version__
from verb_console.client import MuxClient, MuxStream, ServerError
from verb_console.hub import uploads
from verb_console.protocols import binary as b

pytestmark = pytest.mark.timeout(60)

HEADER = struct.Struct(">II")
MAX_SERVER_PAYLOAD = 64 * 1024

# Every test here runs in plaintext, over TLS, and over TLS on uvloop.
wire, event_loop_policy = wire_fixtures()


class RawMux:
    """A mux connection spoken byte by byte."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        host, port = writer.get_extra_info("sockname")[:2]
        self.id = f"{host}:{port}"

    @classmethod
    async def connect(cls, port: int) -> RawMux:
        reader, writer = await asyncio.open_connection(
            "127.0.0.1", port, limit=1 << 22, **tls_for(port)
        )
        return cls(reader, writer)

    async def send(self, stream_id: int, payload: bytes) -> None:
        self.writer.write(HEADER.pack(stream_id, len(payload)) + payload)
        await self.writer.drain()

    async def control(self, message: Any) -> None:
        await self.send(0, json.dumps(message, separators=(",", ":")).encode())

    async def recv(self, timeout: float = 2.0) -> tuple[int, bytes]:
        async def read() -> tuple[int, bytes]:
            stream_id, length = HEADER.unpack(await self.reader.readexactly(8))
            return stream_id, await self.reader.readexactly(length)

        return await asyncio.wait_for(read(), timeout)

    async def recv_control(self, timeout: float = 2.0) -> dict[str, Any]:
        stream_id, payload = await self.recv(timeout)
        assert stream_id == 0, (stream_id, payload)
        message = json.loads(payload)
        assert isinstance(message, dict) and isinstance(message["type"], str)
        return message

    async def request(self, message: Any) -> dict[str, Any]:
        await self.control(message)
        return await self.recv_control()

    async def open(self, stream_id: int, kind: str) -> None:
        reply = await self.request(
            {"type": "stream_create", "streamId": stream_id, "streamType": kind, "metadata": {}}
        )
        assert reply == {"type": "stream_created", "streamId": stream_id}

    async def assert_alive(self) -> None:
        """The connection is still open and answers a control ping."""
        pong = await self.request({"type": "ping", "ref": "alive"})
        assert pong["type"] == "pong" and pong["ref"] == "alive"

    async def expect_nothing(self, wait: float = 0.2) -> None:
        try:
            data = await asyncio.wait_for(self.reader.read(1), wait)
        except TimeoutError:
            return
        raise AssertionError(f"expected nothing, got {data!r}")

    async def expect_eof(self, timeout: float = 3.0) -> None:
        try:
            data = await asyncio.wait_for(self.reader.read(1), timeout)
        except ConnectionResetError:
            return
        assert data == b"", f"expected the connection to close, got {data!r}"

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(OSError, TimeoutError):
            await asyncio.wait_for(self.writer.wait_closed(), 1)


def assert_error(message: dict[str, Any], code: str, stream_id: int | None = None) -> None:
    assert message["type"] == "error", message
    assert message["code"] == code, message
    assert isinstance(message["message"], str) and message["message"]
    if stream_id is None:
        assert "streamId" not in message, message
    else:
        assert message["streamId"] == stream_id, message


def assert_recent_timestamp(value: Any) -> None:
    assert type(value) is int
    assert abs(value - time.time() * 1000) < 5000


@pytest.fixture
async def mux_server(start_server, tmp_path: Path):
    return await start_server(protocol="mux", upload_dir=str(tmp_path / "up"))


@pytest.fixture
async def raw(mux_server):
    conns: list[RawMux] = []

    async def open_raw(runtime=None) -> RawMux:
        conn = await RawMux.connect((runtime or mux_server).port)
        conns.append(conn)
        return conn

    yield open_raw
    for conn in conns:
        await conn.close()


@pytest.fixture
async def mux(mux_server):
    clients: list[MuxClient] = []

    async def open_client(runtime=None) -> MuxClient:
        port = (runtime or mux_server).port
        client = await MuxClient.connect(
            "127.0.0.1", port, ssl_context=tls_for(port).get("ssl"), tls_hostname="localhost"
        )
        clients.append(client)
        return client

    yield open_client
    for client in clients:
        await client.close()


async def plain_json(port: int) -> JsonClient:
    """A plain json client on an ``auto`` listener (which waits for the client's first bytes)."""
    client = await JsonClient.connect(port, welcome=False)
    await client.send({"type": "ping"})
    client.welcome = await client.recv()
    assert client.welcome["type"] == "welcome"
    assert (await client.recv())["type"] == "pong"
    return client


async def open_json(client: MuxClient) -> tuple[MuxStream, Any, dict[str, Any]]:
    stream = await client.open_stream("json")
    view = stream.json()
    welcome = await view.receive()
    assert welcome["type"] == "welcome"
    return stream, view, welcome


# --------------------------------------------------------------------------- control stream


async def test_stream_create_is_answered_with_stream_created_for_that_id(raw, mux_server) -> None:
    conn = await raw()
    await conn.control({"type": "stream_create", "streamId": 1, "streamType": "echo"})
    stream_id, payload = await conn.recv()
    assert stream_id == 0
    assert json.loads(payload) == {"type": "stream_created", "streamId": 1}
    assert f"{conn.id}#1" in mux_server.hub.sessions


async def test_a_mux_listener_sends_nothing_before_the_client_speaks(raw) -> None:
    conn = await raw()
    await conn.expect_nothing(0.3)


async def test_stream_close_is_answered_with_stream_closed_and_ends_the_session(
    raw, mux_server
) -> None:
    conn = await raw()
    await conn.open(1, "json")
    assert (await conn.recv())[0] == 1  # welcome
    reply = await conn.request({"type": "stream_close", "streamId": 1})
    assert reply == {"type": "stream_closed", "streamId": 1}
    assert f"{conn.id}#1" not in mux_server.hub.sessions
    assert f"{conn.id}#1" not in mux_server.hub.json_sessions


async def test_a_control_ping_without_ref_gets_a_pong_with_only_a_timestamp(raw) -> None:
    conn = await raw()
    pong = await conn.request({"type": "ping"})
    assert set(pong) == {"type", "timestamp"}
    assert pong["type"] == "pong"
    assert_recent_timestamp(pong["timestamp"])


@pytest.mark.parametrize("ref", ["r-1", 42])
async def test_a_control_ping_ref_is_copied_into_the_pong(raw, ref: Any) -> None:
    conn = await raw()
    pong = await conn.request({"type": "ping", "ref": ref})
    assert pong["type"] == "pong"
    assert pong["ref"] == ref and type(pong["ref"]) is type(ref)


@pytest.mark.parametrize("payload", [b"{nope", b"", b"\xff\xfe", b"[1,2]", b'"ping"', b"7"])
async def test_a_control_frame_that_is_not_a_json_object_is_bad_json_and_the_link_stays(
    raw, payload: bytes
) -> None:
    conn = await raw()
    await conn.send(0, payload)
    assert_error(await conn.recv_control(), "bad_json")
    await conn.assert_alive()


@pytest.mark.parametrize(
    "message",
    [
        {},
        {"type": 5},
        {"streamId": 1, "streamType": "json"},
        {"type": "stream_create", "streamType": "json"},
        {"type": "stream_create", "streamId": 1},
        {"type": "stream_create", "streamId": "1", "streamType": "json"},
        {"type": "stream_create", "streamId": 1, "streamType": 7},
        {"type": "stream_close"},
    ],
)
async def test_a_control_message_without_type_or_a_required_field_is_bad_message(
    raw, mux_server, message: dict[str, Any]
) -> None:
    conn = await raw()
    await conn.control(message)
    error = await conn.recv_control()
    assert error["type"] == "error" and error["code"] == "bad_message", error
    await conn.assert_alive()
    assert not mux_server.hub.connections[conn.id].streams


async def test_an_unknown_control_type_is_unknown_type_with_its_name(raw) -> None:
    conn = await raw()
    error = await conn.request({"type": "hello"})
    assert_error(error, "unknown_type")
    assert error["message"] == "Unknown message type: hello"
    await conn.assert_alive()


@pytest.mark.parametrize("stream_id", [0, 2, 4096])
async def test_stream_id_zero_or_even_is_bad_stream(raw, mux_server, stream_id: int) -> None:
    conn = await raw()
    error = await conn.request(
        {"type": "stream_create", "streamId": stream_id, "streamType": "json"}
    )
    assert_error(error, "bad_stream", stream_id)
    assert not mux_server.hub.connections[conn.id].streams
    await conn.assert_alive()


async def test_creating_a_stream_that_is_already_open_is_bad_stream(raw, mux_server) -> None:
    conn = await raw()
    await conn.open(3, "echo")
    assert await conn.recv() == (3, b"Welcome to TCP server!\n")
    error = await conn.request({"type": "stream_create", "streamId": 3, "streamType": "json"})
    assert_error(error, "bad_stream", 3)
    # The first session on stream 3 is untouched.
    assert mux_server.hub.sessions[f"{conn.id}#3"].protocol == "echo"
    await conn.send(3, b"still\n")
    assert await conn.recv() == (3, b"Echo: still\n")


async def test_an_unknown_stream_type_is_unknown_stream_type(raw, mux_server) -> None:
    conn = await raw()
    error = await conn.request({"type": "stream_create", "streamId": 1, "streamType": "ftp"})
    assert_error(error, "unknown_stream_type", 1)
    assert f"{conn.id}#1" not in mux_server.hub.sessions
    await conn.assert_alive()


async def test_the_257th_open_stream_is_too_many_streams_and_a_freed_slot_opens_again(
    raw, mux_server
) -> None:
    conn = await raw()
    ids = [2 * i + 1 for i in range(257)]
    for sid in ids:
        await conn.control({"type": "stream_create", "streamId": sid, "streamType": "binary"})
    replies = [await conn.recv_control() for _ in ids]
    assert replies[:256] == [{"type": "stream_created", "streamId": sid} for sid in ids[:256]]
    assert_error(replies[256], "too_many_streams", ids[256])
    assert len(mux_server.hub.connections[conn.id].streams) == 256
    assert await conn.request({"type": "stream_close", "streamId": 1}) == {
        "type": "stream_closed",
        "streamId": 1,
    }
    await conn.open(ids[256], "binary")


async def test_data_for_a_stream_never_opened_is_unknown_stream_and_dropped(raw) -> None:
    conn = await raw()
    await conn.send(9, b"hello\n")
    assert_error(await conn.recv_control(), "unknown_stream", 9)
    await conn.assert_alive()


async def test_data_for_a_closed_stream_is_unknown_stream_and_a_new_stream_is_not_fed_it(
    raw,
) -> None:
    conn = await raw()
    await conn.open(1, "echo")
    await conn.recv()  # welcome line
    await conn.request({"type": "stream_close", "streamId": 1})
    await conn.send(1, b"ghost\n")
    assert_error(await conn.recv_control(), "unknown_stream", 1)
    await conn.open(3, "echo")
    assert await conn.recv() == (3, b"Welcome to TCP server!\n")
    await conn.send(3, b"live\n")
    assert await conn.recv() == (3, b"Echo: live\n")


async def test_closing_a_stream_that_is_not_open_is_an_error_about_that_stream(raw) -> None:
    conn = await raw()
    error = await conn.request({"type": "stream_close", "streamId": 11})
    assert_error(error, "unknown_stream", 11)
    await conn.assert_alive()


async def test_an_oversized_frame_gets_frame_too_large_on_control_then_the_close(
    start_server, raw, tmp_path: Path
) -> None:
    runtime = await start_server(protocol="mux", max_frame=4096, upload_dir=str(tmp_path))
    conn = await raw(runtime)
    await conn.open(1, "echo")
    await conn.recv()
    # Only the header: the error must not wait for a body.
    conn.writer.write(HEADER.pack(1, 4097))
    await conn.writer.drain()
    control: list[dict[str, Any]] = []
    while True:
        try:
            sid, payload = await conn.recv()
        except asyncio.IncompleteReadError as exc:
            assert exc.partial == b""
            break
        if sid == 0:
            control.append(json.loads(payload))
    assert_error(control[0], "frame_too_large")
    await eventually(lambda: conn.id not in runtime.hub.connections)
    assert f"{conn.id}#1" not in runtime.hub.sessions


async def test_a_frame_of_exactly_the_maximum_size_is_accepted(
    start_server, raw, tmp_path: Path
) -> None:
    runtime = await start_server(protocol="mux", max_frame=4096, upload_dir=str(tmp_path))
    conn = await raw(runtime)
    await conn.open(1, "binary")
    data = b.encode_frame(b.DATA, b"x" * (4096 - 8))
    await conn.send(1, data)
    assert await conn.recv() == (1, data)


# --------------------------------------------------------------------------- auto listener


async def test_the_auto_listener_detects_mux_from_two_zero_bytes(
    start_server, tmp_path: Path
) -> None:
    runtime = await start_server(protocol="auto", upload_dir=str(tmp_path))
    client = await MuxClient.connect("127.0.0.1", runtime.port)
    try:
        pong = await client.ping()
        assert pong["type"] == "pong"
        assert runtime.hub.connections[client.local_id].protocol == "mux"
        _, view, welcome = await open_json(client)
        assert welcome["id"] == f"{client.local_id}#1"
        assert (await view.ping())["type"] == "pong"
    finally:
        await client.close()


async def test_the_auto_listener_hands_over_a_mux_header_split_after_its_first_byte(
    start_server, tmp_path: Path
) -> None:
    runtime = await start_server(protocol="auto", upload_dir=str(tmp_path))
    conn = await RawMux.connect(runtime.port)
    try:
        body = b'{"type":"ping","ref":1}'
        data = HEADER.pack(0, len(body)) + body
        conn.writer.write(data[:1])
        await conn.writer.drain()
        await asyncio.sleep(0.05)
        conn.writer.write(data[1:])
        pong = await conn.recv_control()
        assert pong["type"] == "pong" and pong["ref"] == 1
    finally:
        await conn.close()


# --------------------------------------------------------------------------- json streams


async def test_a_json_stream_greets_with_a_welcome_whose_id_is_connection_hash_stream(
    mux, mux_server
) -> None:
    client = await mux()
    _, _, welcome = await open_json(client)
    assert welcome == {
        "type": "welcome",
        "id": f"{client.local_id}#1",
        "server": "verb-console",
        "version": __version__,
        "maxFrameBytes": 1048576,
    }
    _, _, second = await open_json(client)
    assert second["id"] == f"{client.local_id}#3"
    session = mux_server.hub.json_sessions[second["id"]]
    assert session.parent == client.local_id


async def test_a_json_frame_split_across_mux_frames_is_one_message(mux) -> None:
    client = await mux()
    stream, view, _ = await open_json(client)
    data = frame({"type": "ping", "ref": "split"})
    for i in range(len(data)):
        stream.write(data[i : i + 1])
    pong = await view.receive()
    assert pong["type"] == "pong" and pong["ref"] == "split"


async def test_pings_pipelined_in_separate_mux_frames_are_answered_together(raw) -> None:
    conn = await raw()
    await conn.open(1, "json")
    await conn.recv()  # welcome
    ping = frame({"type": "ping"})
    conn.writer.write(b"".join(HEADER.pack(1, len(ping)) + ping for _ in range(20)))
    sid, payload = await conn.recv()
    # Consecutive frames of one stream are handled as one piece: one reply frame.
    assert sid == 1
    assert payload.count(b'"type":"pong"') == 20


async def test_a_broadcast_from_one_json_stream_reaches_the_other_streams_of_its_connection(
    mux,
) -> None:
    client = await mux()
    _, one, w1 = await open_json(client)
    _, three, w3 = await open_json(client)
    assert w1["id"] != w3["id"]
    await one.send({"type": "broadcast", "data": {"n": 1}})
    got = await three.receive()
    assert got["type"] == "broadcast" and got["from"] == w1["id"] and got["data"] == {"n": 1}
    with pytest.raises(TimeoutError):
        await one.receive(0.2)


async def test_json_streams_and_plain_json_clients_share_broadcasts_private_and_rooms(
    start_server, tmp_path: Path
) -> None:
    # One hub, two listeners' worth of clients: an auto listener serves both kinds.
    runtime = await start_server(protocol="auto", upload_dir=str(tmp_path))
    plain = await plain_json(runtime.port)
    client = await MuxClient.connect("127.0.0.1", runtime.port)
    try:
        _, view, welcome = await open_json(client)
        sid = welcome["id"]

        # broadcast: stream -> plain, then plain -> stream; senders get nothing
        await view.send({"type": "broadcast", "data": "from stream"})
        got = await plain.recv()
        assert got["type"] == "broadcast" and got["from"] == sid and got["data"] == "from stream"
        assert_recent_timestamp(got["timestamp"])
        await plain.send({"type": "broadcast", "data": [1, 2]})
        got = await view.receive()
        assert got == {**got, "type": "broadcast", "from": plain.id, "data": [1, 2]}
        await plain.expect_nothing()

        # private to the stream session's id, and back
        await plain.send({"type": "private", "target": sid, "data": "psst"})
        got = await view.receive()
        assert got["type"] == "private" and got["from"] == plain.id and got["data"] == "psst"
        await view.send({"type": "private", "target": plain.id, "data": "hi"})
        got = await plain.recv()
        assert got["type"] == "private" and got["from"] == sid and got["data"] == "hi"

        # a room with members from both
        joined = await plain.request({"type": "join_room", "room": "mixed"})
        assert joined["members"] == [plain.id]
        joined = await view.request({"type": "join_room", "room": "mixed", "ref": 5})
        assert joined == {
            "type": "joined",
            "room": "mixed",
            "members": sorted([plain.id, sid]),
            "epoch": joined["epoch"],
            "offset": 0,
            "ref": 5,
        }
        note = await plain.recv()
        assert note["type"] == "user_joined" and note["connectionId"] == sid
        await view.send({"type": "room_message", "room": "mixed", "data": "to room"})
        got = await plain.recv()
        assert got["type"] == "room_message" and got["from"] == sid and got["room"] == "mixed"
        await plain.send({"type": "room_message", "room": "mixed", "data": "back"})
        got = await view.receive()
        assert got["type"] == "room_message" and got["from"] == plain.id and got["data"] == "back"
    finally:
        await client.close()
        await plain.close()


async def test_a_private_message_to_a_closed_stream_session_is_unknown_target(
    mux, mux_server
) -> None:
    client = await mux()
    stream, _, welcome = await open_json(client)
    _, other, _ = await open_json(client)
    await stream.close()
    # request means what JsonClient.request means: an error reply raises ServerError.
    with pytest.raises(ServerError) as info:
        await other.request({"type": "private", "target": welcome["id"], "data": 1})
    error = info.value.reply
    assert error["type"] == "error" and error["code"] == "unknown_target"


# --------------------------------------------------------------------------- binary and echo


async def test_a_binary_stream_sends_nothing_first_then_acks_heartbeats_and_echoes_data(
    mux,
) -> None:
    client = await mux()
    stream = await client.open_stream("binary")
    view = stream.binary()
    with pytest.raises(TimeoutError):
        await stream.read(0.2)
    assert await view.heartbeat() == (b.HEARTBEAT_ACK, 0, b"pong")
    payload = bytes(range(256)) * 300  # spans several mux frames both ways
    echoed = await view.echo(payload, flags=0x0102)
    assert echoed == (b.DATA, 0x0102, payload)
    await view.send(0x0777)
    error = await view.receive()
    assert error.type == b.ERROR and json.loads(error.payload)["code"] == "unknown_type"


async def test_an_echo_stream_greets_and_echoes_each_line(mux) -> None:
    client = await mux()
    view = (await client.open_stream("echo")).lines()
    assert await view.readline() == "Welcome to TCP server!"
    view.stream.write(b"one\ntw")
    view.stream.write(b"o\n")
    assert await view.readline() == "Echo: one"
    assert await view.readline() == "Echo: two"


async def test_an_overlong_echo_line_ends_only_that_stream(mux) -> None:
    client = await mux()
    echo = (await client.open_stream("echo")).lines()
    await echo.readline()
    _, view, _ = await open_json(client)
    echo.stream.write(b"x" * 70000)
    assert await echo.stream.wait_closed() == "server"
    assert (await view.ping())["type"] == "pong"


# --------------------------------------------------------------------------- operator actions


async def test_an_operator_broadcast_reaches_each_stream_session_in_its_own_protocol(
    mux, mux_server
) -> None:
    client = await mux()
    _, js, _ = await open_json(client)
    bin_view = (await client.open_stream("binary")).binary()
    echo = (await client.open_stream("echo")).lines()
    await echo.readline()
    n = mux_server.hub.operator_broadcast("hello all")
    assert n == 3  # the three stream sessions, not the mux connection itself
    got = await js.receive()
    assert got["type"] == "broadcast" and got["from"] == "server" and got["data"] == "hello all"
    notice = await bin_view.receive()
    assert notice.type == b.NOTICE
    assert json.loads(notice.payload)["data"] == "hello all"
    assert await echo.readline() == "[server] hello all"
    with pytest.raises(TimeoutError):
        await client.control_message(0.2)


async def test_an_operator_close_of_a_stream_sends_closing_then_stream_close_only_for_it(
    mux, mux_server
) -> None:
    client = await mux()
    stream, view, welcome = await open_json(client)
    _, other, _ = await open_json(client)
    assert mux_server.hub.operator_close(welcome["id"])
    assert await view.receive() == {"type": "closing", "reason": "operator"}
    assert await stream.wait_closed() == "server"
    assert stream.buffered == 0
    assert welcome["id"] not in mux_server.hub.sessions
    assert (await other.ping())["type"] == "pong"
    assert (await client.ping())["type"] == "pong"
    assert client.local_id in mux_server.hub.connections


async def test_the_stream_close_comes_after_the_closing_message_on_the_wire(
    raw, mux_server
) -> None:
    conn = await raw()
    await conn.open(1, "json")
    await conn.recv()  # welcome
    mux_server.hub.operator_close(f"{conn.id}#1")
    sid, payload = await conn.recv()
    assert sid == 1
    assert payload.split(b"\n", 1)[1] == b'{"type":"closing","reason":"operator"}'
    assert await conn.recv_control() == {"type": "stream_close", "streamId": 1}


async def test_a_json_framing_error_on_one_stream_ends_only_that_stream(mux, mux_server) -> None:
    client = await mux()
    bad, bad_view, welcome = await open_json(client)
    _, good, _ = await open_json(client)
    bad.write(b"12x\n{}")
    error = await bad_view.receive()
    assert error["type"] == "error" and error["code"] == "bad_header"
    assert await bad_view.receive() == {"type": "closing", "reason": "protocol_error"}
    assert await bad.wait_closed() == "server"
    assert welcome["id"] not in mux_server.hub.sessions
    assert (await good.ping())["type"] == "pong"


async def test_a_json_frame_too_large_on_a_stream_ends_only_that_stream(mux) -> None:
    client = await mux()
    bad, bad_view, _ = await open_json(client)
    _, good, _ = await open_json(client)
    bad.write(b"2000000\n")
    assert (await bad_view.receive())["code"] == "frame_too_large"
    assert await bad_view.receive() == {"type": "closing", "reason": "protocol_error"}
    assert await bad.wait_closed() == "server"
    assert (await good.ping())["type"] == "pong"


# --------------------------------------------------------------------------- connection end


async def test_closing_the_connection_ends_its_streams_and_their_rooms(
    start_server, tmp_path: Path
) -> None:
    runtime = await start_server(protocol="auto", upload_dir=str(tmp_path))
    hub = runtime.hub
    plain = await plain_json(runtime.port)
    client = await MuxClient.connect("127.0.0.1", runtime.port)
    try:
        ids = []
        for room in ("shared", "solo"):
            _, view, welcome = await open_json(client)
            ids.append(welcome["id"])
            await view.request({"type": "join_room", "room": room})
        await client.open_stream("echo")
        await plain.request({"type": "join_room", "room": "shared"})
        await client.close()
        note = await plain.recv()
        assert note["type"] == "user_left"
        assert note["connectionId"] == ids[0] and note["room"] == "shared"
        await eventually(lambda: client.local_id not in hub.connections)
        assert not [s for s in hub.sessions if s.startswith(client.local_id)]
        assert not [s for s in hub.json_sessions if s.startswith(client.local_id)]
        assert hub.rooms.get("solo") is None
        assert sorted(hub.rooms.get("shared").members) == [plain.id]
        assert hub.mux_connections() == []
    finally:
        await plain.close()


# --------------------------------------------------------------------------- figures


async def test_hub_mux_connections_list_each_stream_with_kind_session_bytes_and_frames(
    mux, mux_server
) -> None:
    client = await mux()
    _, view, welcome = await open_json(client)
    echo = await client.open_stream("echo")
    await echo.lines().readline()
    # A bare ping (view.ping() adds a ref, which would change the byte count).
    await view.send({"type": "ping"})
    assert (await view.receive())["type"] == "pong"
    echo.write(b"abc\n")
    await echo.read()
    (info,) = mux_server.hub.mux_connections()
    assert info.id == client.local_id
    by_id = {s.stream_id: s for s in info.streams}
    assert sorted(by_id) == [1, 3]
    js, es = by_id[1], by_id[3]
    assert (js.kind, js.session_id) == ("json", welcome["id"])
    assert (es.kind, es.session_id) == ("echo", f"{client.local_id}#3")
    assert js.frames_in == 1 and js.bytes_in == len(frame({"type": "ping"}))
    assert js.frames_out == 2 and js.bytes_out > 0
    assert (es.frames_in, es.bytes_in) == (1, 4)
    assert es.frames_out == 2
    assert es.bytes_out == len(b"Welcome to TCP server!\n") + len(b"Echo: abc\n")


# --------------------------------------------------------------------------- uploads


async def test_a_file_uploaded_over_a_json_stream_lands_in_the_upload_directory(
    mux, mux_server
) -> None:
    if not uploads.JSON_HANDLERS:
        pytest.skip("json file transfer handlers are not implemented yet (hub/uploads.py)")
    client = await mux()
    _, view, _ = await open_json(client)
    content = bytes(range(256)) * 1000
    digest = hashlib.sha256(content).hexdigest()
    chunk = 64 * 1024

    async def next_reply(message: dict[str, Any]) -> dict[str, Any]:
        # send + receive: the next message, without the ref that request() would add.
        await view.send(message)
        return await view.receive()

    reply = await next_reply(
        {
            "type": "file_start",
            "transferId": "t1",
            "filename": "mux.bin",
            "fileSize": len(content),
            "chunkSize": chunk,
            "sha256": digest,
        }
    )
    assert reply == {"type": "file_start_ack", "transferId": "t1", "status": "ready"}
    for i, off in enumerate(range(0, len(content), chunk)):
        data = base64.b64encode(content[off : off + chunk]).decode()
        ack = await next_reply(
            {"type": "file_chunk", "transferId": "t1", "chunkIndex": i, "data": data}
        )
        if ack["type"] == "file_progress":
            ack = await view.receive()
        assert ack["type"] == "file_chunk_ack" and ack["chunkIndex"] == i
    done = await next_reply({"type": "file_end", "transferId": "t1"})
    while done["type"] == "file_progress":
        done = await view.receive()
    assert done["type"] == "file_complete" and done["sha256"] == digest
    path = Path(mux_server.settings.upload_dir) / "mux.bin"
    assert path.read_bytes() == content


# --------------------------------------------------------------------------- fairness


async def test_a_ping_on_one_stream_is_answered_promptly_while_another_stream_floods(
    mux, mux_server
) -> None:
    """Stream 1 (json) receives 64 MiB of room messages; stream 3 (json) pings all along.

    The flood comes from another connection, so this connection's input holds only
    the pings: a slow pong could only come from the server's output side.
    """
    client = await mux()
    _, flooded, _ = await open_json(client)
    await flooded.request({"type": "join_room", "room": "flood"})
    _, view, _ = await open_json(client)
    sender_client = await mux()
    _, sender, _ = await open_json(sender_client)
    await sender.request({"type": "join_room", "room": "flood"})
    await flooded.receive()  # user_joined
    data = "z" * (256 * 1024)
    total = 512  # 128 MiB
    window = 6  # messages in flight: well under the 4 MiB slow-consumer limit
    received = 0
    got_one = asyncio.Event()

    async def receive_flood() -> None:
        nonlocal received
        while received < total:
            message = await flooded.receive(10)
            assert message["type"] == "room_message" and len(message["data"]) == len(data)
            received += 1
            got_one.set()

    async def send_flood() -> None:
        for sent in range(total):
            while sent - received >= window:
                got_one.clear()
                await got_one.wait()
            await sender.send({"type": "room_message", "room": "flood", "data": data})

    rtts: list[float] = []

    async def pinger() -> None:
        while received < total:
            t0 = time.perf_counter()
            pong = await view.ping(10)
            rtts.append(time.perf_counter() - t0)
            assert pong["type"] == "pong"

    t0 = time.perf_counter()
    await asyncio.gather(receive_flood(), send_flood(), pinger())
    took = time.perf_counter() - t0
    rtts.sort()
    p50 = statistics.median(rtts)
    p99 = rtts[min(len(rtts) - 1, int(len(rtts) * 0.99))]
    print(
        f"\nfairness: {total * len(data) / 2**20:.0f} MiB of room messages in {took:.2f}s; "
        f"{len(rtts)} pings, p50 {p50 * 1000:.2f} ms, p99 {p99 * 1000:.2f} ms, "
        f"max {rtts[-1] * 1000:.2f} ms; largest server payload {client.max_payload_in}"
    )
    assert len(rtts) >= 20
    assert p99 < 0.5
    assert client.max_payload_in <= MAX_SERVER_PAYLOAD
    assert mux_server.hub.stats.slow_consumers == 0
