"""The binary, echo and auto listeners over real sockets (PROTOCOL.md sections 1, 3, 5, 6)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import struct
import time
from typing import Any

import pytest
from helpers import frame, tls_for, wire_fixtures

from verb_console.runtime import Runtime

pytestmark = pytest.mark.timeout(30)

HEARTBEAT, HEARTBEAT_ACK, DATA, NOTICE, ERROR = 0x0001, 0x0002, 0x0010, 0x0030, 0x00FF
ECHO_WELCOME = b"Welcome to TCP server!\n"
_NOISE = random.Random(7).randbytes(100_000)

# Every test here runs in plaintext, over TLS, and over TLS on uvloop.
wire, event_loop_policy = wire_fixtures()


def bframe(kind: int, payload: bytes = b"", flags: int = 0) -> bytes:
    return struct.pack(">HIH", kind, len(payload), flags) + payload


class Raw:
    """A bare TCP client: bytes in, bytes out."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def exactly(self, n: int, timeout: float = 3.0) -> bytes:
        return await asyncio.wait_for(self.reader.readexactly(n), timeout)

    async def line(self, timeout: float = 3.0) -> bytes:
        return await asyncio.wait_for(self.reader.readuntil(b"\n"), timeout)

    async def bin_frame(self, timeout: float = 3.0) -> tuple[int, int, bytes]:
        kind, length, flags = struct.unpack(">HIH", await self.exactly(8, timeout))
        return kind, flags, await self.exactly(length, timeout)

    async def json_frame(self, timeout: float = 3.0) -> dict[str, Any]:
        header = await self.line(timeout)
        assert header[:-1].isdigit(), header
        return json.loads(await self.exactly(int(header[:-1]), timeout))

    async def nothing(self, wait: float = 0.2) -> None:
        """No byte arrives within ``wait`` seconds and the connection stays open."""
        try:
            data = await asyncio.wait_for(self.reader.read(1), wait)
        except TimeoutError:
            return
        raise AssertionError(f"expected nothing, got {data!r}")

    async def eof(self, timeout: float = 3.0) -> None:
        """The server closes with no more bytes."""
        try:
            data = await asyncio.wait_for(self.reader.read(1), timeout)
        except ConnectionResetError:
            return
        assert data == b"", data


@pytest.fixture
async def raw():
    clients: list[Raw] = []

    async def open_client(runtime: Runtime) -> Raw:
        reader, writer = await asyncio.open_connection(
            "127.0.0.1", runtime.port, limit=1 << 20, **tls_for(runtime.port)
        )
        client = Raw(reader, writer)
        clients.append(client)
        return client

    yield open_client
    for client in clients:
        client.writer.close()
        with contextlib.suppress(Exception):
            await client.writer.wait_closed()


@pytest.fixture
async def binary_server(start_server, tmp_path) -> Runtime:
    return await start_server(protocol="binary", upload_dir=str(tmp_path / "up"))


@pytest.fixture
async def echo_server(start_server, tmp_path) -> Runtime:
    return await start_server(protocol="echo", upload_dir=str(tmp_path / "up"))


@pytest.fixture
async def auto_server(start_server, tmp_path) -> Runtime:
    return await start_server(
        protocol="auto", upload_dir=str(tmp_path / "up"), handshake_timeout=0.3
    )


# ----------------------------------------------------------- binary


async def test_a_binary_session_sends_nothing_on_connect(binary_server, raw) -> None:
    client = await raw(binary_server)
    await client.nothing(0.3)


@pytest.mark.parametrize("payload", [b"", b"ping?"])
async def test_a_heartbeat_is_answered_with_a_heartbeat_ack_saying_pong(
    binary_server, raw, payload
) -> None:
    client = await raw(binary_server)
    await client.send(bframe(HEARTBEAT, payload))
    assert await client.bin_frame() == (HEARTBEAT_ACK, 0, b"pong")


@pytest.mark.parametrize(
    ("flags", "payload"),
    # Seeded noise: every xdist worker must collect the same payload (and id).
    [(0, b""), (0x1234, b"hello"), (0xFFFF, bytes(range(256)) * 40), (7, _NOISE)],
    ids=["empty", "hello", "10KiB", "100KB-noise"],
)
async def test_a_data_frame_comes_back_unchanged(binary_server, raw, flags, payload) -> None:
    client = await raw(binary_server)
    await client.send(bframe(DATA, payload, flags))
    assert await client.bin_frame() == (DATA, flags, payload)


async def test_frames_split_across_writes_and_batched_in_one_write_are_all_answered(
    binary_server, raw
) -> None:
    client = await raw(binary_server)
    stream = bframe(DATA, b"one", 1) + bframe(HEARTBEAT) + bframe(DATA, b"two", 2)
    for i in range(len(stream)):
        await client.send(stream[i : i + 1])
    await client.send(stream)
    expected = [(DATA, 1, b"one"), (HEARTBEAT_ACK, 0, b"pong"), (DATA, 2, b"two")] * 2
    assert [await client.bin_frame() for _ in expected] == expected


@pytest.mark.parametrize("kind", [0x0000, 0x0003, HEARTBEAT_ACK, NOTICE, ERROR, 0x0100, 0xFFFF])
async def test_an_unknown_type_is_error_unknown_type_and_the_connection_stays_open(
    binary_server, raw, kind
) -> None:
    client = await raw(binary_server)
    await client.send(bframe(kind, b"xyz", 3))
    got, flags, payload = await client.bin_frame()
    assert (got, flags) == (ERROR, 0)
    obj = json.loads(payload)
    assert obj["code"] == "unknown_type" and isinstance(obj["message"], str)
    await client.send(bframe(HEARTBEAT))
    assert await client.bin_frame() == (HEARTBEAT_ACK, 0, b"pong")


async def test_a_frame_over_the_maximum_is_frame_too_large_then_the_close(
    start_server, tmp_path, raw
) -> None:
    runtime = await start_server(protocol="binary", upload_dir=str(tmp_path), max_frame=1024)
    client = await raw(runtime)
    # Only the header: the server must not wait for the body.
    await client.send(struct.pack(">HIH", DATA, 1025, 0))
    kind, _, payload = await client.bin_frame()
    assert kind == ERROR
    assert json.loads(payload)["code"] == "frame_too_large"
    rest = await asyncio.wait_for(client.reader.read(), 3)
    if rest:
        kind, length, _ = struct.unpack(">HIH", rest[:8])
        assert kind == NOTICE and len(rest) == 8 + length
        assert json.loads(rest[8:]) == {"type": "closing", "reason": "protocol_error"}
    await client.eof()


async def test_a_frame_of_exactly_the_maximum_is_echoed(start_server, tmp_path, raw) -> None:
    runtime = await start_server(protocol="binary", upload_dir=str(tmp_path), max_frame=1024)
    client = await raw(runtime)
    await client.send(bframe(DATA, b"m" * 1024))
    assert await client.bin_frame() == (DATA, 0, b"m" * 1024)


# ----------------------------------------------------------- echo


async def test_an_echo_session_greets_then_echoes_each_line(echo_server, raw) -> None:
    client = await raw(echo_server)
    assert await client.line() == ECHO_WELCOME
    await client.send(b"hello world\n")
    assert await client.line() == b"Echo: hello world\n"
    await client.send(b"\n")
    assert await client.line() == b"Echo: \n"


async def test_many_lines_in_one_write_are_echoed_in_order(echo_server, raw) -> None:
    client = await raw(echo_server)
    assert await client.line() == ECHO_WELCOME
    await client.send(b"".join(b"line %d\n" % i for i in range(50)))
    assert [await client.line() for _ in range(50)] == [b"Echo: line %d\n" % i for i in range(50)]


async def test_a_line_split_across_writes_is_echoed_once_whole(echo_server, raw) -> None:
    client = await raw(echo_server)
    assert await client.line() == ECHO_WELCOME
    await client.send(b"spl")
    await client.nothing(0.1)
    await client.send(b"it li")
    await client.send(b"ne\r\nnext")
    assert await client.line() == b"Echo: split line\r\n"
    await client.send(b"\n")
    assert await client.line() == b"Echo: next\n"


async def test_a_line_of_65536_bytes_is_echoed_and_a_longer_one_closes(echo_server, raw) -> None:
    client = await raw(echo_server)
    assert await client.line() == ECHO_WELCOME
    await client.send(b"a" * 65536 + b"\n")
    assert await client.exactly(6 + 65536 + 1) == b"Echo: " + b"a" * 65536 + b"\n"
    await client.send(b"b" * 65537 + b"\n")
    rest = await asyncio.wait_for(client.reader.read(), 3)
    assert b"Echo: b" not in rest
    await client.eof()


# ----------------------------------------------------------- auto


async def test_an_auto_listener_sends_nothing_before_the_first_bytes(auto_server, raw) -> None:
    client = await raw(auto_server)
    await client.nothing(0.2)


async def test_a_digit_first_is_json_and_the_first_write_is_served_after_the_welcome(
    auto_server, raw
) -> None:
    client = await raw(auto_server)
    await client.send(frame({"type": "ping", "ref": "first"}))
    welcome = await client.json_frame()
    assert welcome["type"] == "welcome"
    pong = await client.json_frame()
    assert pong["type"] == "pong" and pong["ref"] == "first"


async def test_a_json_frame_split_after_its_first_digit_is_detected_and_served(
    auto_server, raw
) -> None:
    client = await raw(auto_server)
    data = frame({"type": "ping"})
    await client.send(data[:1])
    assert (await client.json_frame())["type"] == "welcome"
    await client.send(data[1:])
    assert (await client.json_frame())["type"] == "pong"


async def test_zero_then_non_zero_is_binary_and_the_first_frame_is_served(auto_server, raw) -> None:
    client = await raw(auto_server)
    await client.send(bframe(HEARTBEAT) + bframe(DATA, b"abc", 9))
    assert await client.bin_frame() == (HEARTBEAT_ACK, 0, b"pong")
    assert await client.bin_frame() == (DATA, 9, b"abc")


async def test_a_lone_zero_byte_then_the_rest_is_binary(auto_server, raw) -> None:
    client = await raw(auto_server)
    data = bframe(DATA, b"late", 1)
    await client.send(data[:1])
    await client.nothing(0.1)
    await client.send(data[1:])
    assert await client.bin_frame() == (DATA, 1, b"late")


@pytest.mark.parametrize("first", [b"hello\n", b"a", b"\x01\n", b"\xff\n", b"{json}\n"])
async def test_anything_else_is_echo_with_the_welcome_first(auto_server, raw, first) -> None:
    client = await raw(auto_server)
    await client.send(first if first.endswith(b"\n") else first + b"\n")
    assert await client.line() == ECHO_WELCOME
    line = first if first.endswith(b"\n") else first + b"\n"
    assert await client.line() == b"Echo: " + line


async def test_zero_zero_is_not_treated_as_binary_or_echo(auto_server, raw) -> None:
    client = await raw(auto_server)
    body = json.dumps({"type": "ping"}).encode()
    await client.send(struct.pack(">II", 0, len(body)) + body)
    try:
        head = await client.exactly(8, 1.0)
    except (TimeoutError, asyncio.IncompleteReadError, ConnectionResetError):
        pytest.skip("mux is not served on this server")
    assert not head.startswith(ECHO_WELCOME[:8])
    stream, length = struct.unpack(">II", head)
    assert stream == 0
    reply = json.loads(await client.exactly(length))
    assert reply["type"] == "pong"


async def test_a_connection_that_sends_nothing_is_closed_at_the_handshake_timeout(
    auto_server, raw
) -> None:
    client = await raw(auto_server)
    t0 = time.monotonic()
    await client.eof(3)
    assert 0.2 < time.monotonic() - t0 < 2.5


async def test_a_lone_zero_byte_does_not_stop_the_handshake_timeout(auto_server, raw) -> None:
    client = await raw(auto_server)
    await client.send(b"\x00")
    t0 = time.monotonic()
    await client.eof(3)
    assert time.monotonic() - t0 < 2.5


async def test_a_detected_session_outlives_the_handshake_timeout(auto_server, raw) -> None:
    client = await raw(auto_server)
    await client.send(b"x\n")
    assert await client.line() == ECHO_WELCOME
    await asyncio.sleep(0.5)
    await client.send(b"still here\n")
    assert await client.line() == b"Echo: x\n"
    assert await client.line() == b"Echo: still here\n"


# ----------------------------------------------------------- operator broadcasts


async def test_an_operator_broadcast_reaches_json_binary_and_echo_sessions_in_their_form(
    auto_server, raw
) -> None:
    j, b, e = await raw(auto_server), await raw(auto_server), await raw(auto_server)
    await j.send(frame({"type": "ping"}))
    assert (await j.json_frame())["type"] == "welcome"
    assert (await j.json_frame())["type"] == "pong"
    await b.send(bframe(HEARTBEAT))
    assert (await b.bin_frame())[0] == HEARTBEAT_ACK
    await e.send(b"hi\n")
    assert await e.line() == ECHO_WELCOME
    assert await e.line() == b"Echo: hi\n"
    assert auto_server.hub.operator_broadcast("maintenance at noon") == 3

    jmsg = await j.json_frame()
    assert set(jmsg) == {"type", "from", "data", "timestamp"}
    assert (jmsg["type"], jmsg["from"], jmsg["data"]) == (
        "broadcast",
        "server",
        "maintenance at noon",
    )
    kind, flags, payload = await b.bin_frame()
    assert (kind, flags) == (NOTICE, 0)
    bmsg = json.loads(payload)
    assert (bmsg["type"], bmsg["from"], bmsg["data"]) == (
        "broadcast",
        "server",
        "maintenance at noon",
    )
    assert type(bmsg["timestamp"]) is int
    assert await e.line() == b"[server] maintenance at noon\n"


async def test_a_connection_still_detecting_gets_no_broadcast(auto_server, raw) -> None:
    client = await raw(auto_server)
    await client.send(b"\x00")
    auto_server.hub.operator_broadcast("not for you")
    await client.eof(3)
