"""Hostile clients over real sockets: each attack is followed by the same check.

After every attack the server answers a ping from a fresh client within 100 ms,
the offender is gone with the right reason in the closed-sessions log (or, for
the attacks that are only message errors, is still served), and a bystander
connected before the attack still gets its pongs and nothing it did not ask
for. No attack may make a session handler raise (the server logs that as an
error, which fails the test).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import random
import re
import resource
import socket
import statistics
import struct
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from helpers import eventually, frame, raw_frame, tls_for, wire_fixtures

from verb_console.runtime import Runtime

# Every attack runs in plaintext, over TLS, and over TLS on uvloop (PROTOCOL.md s9).
wire, event_loop_policy = wire_fixtures()

pytestmark = pytest.mark.timeout(60)

ServerFactory = Callable[..., Awaitable[Runtime]]

HEARTBEAT, HEARTBEAT_ACK, DATA, FILE, FILE_REPLY, NOTICE, ERROR = 1, 2, 0x10, 0x20, 0x21, 0x30, 0xFF
START, CHUNK = 0x1, 0x2
TEMP_RE = re.compile(r"\.verb-upload-[0-9a-f]{32}\.part")
FRESH_PING_S = 0.1


# --------------------------------------------------------------- clients of every protocol


class Client:
    """A raw client of one protocol that can ping and read one message at a time."""

    def __init__(self, protocol: str, reader: asyncio.StreamReader, writer: asyncio.StreamWriter):
        self.protocol = protocol
        self.listener = protocol
        self.reader = reader
        self.writer = writer
        host, port = writer.get_extra_info("sockname")[:2]
        self.id = f"{host}:{port}"
        self.greeting: Any = None
        self.sock: socket.socket | None = None  # the real socket (under TLS too)

    @classmethod
    async def connect(
        cls, port: int, protocol: str, *, rcvbuf: int | None = None, timeout: float = 2.0
    ) -> Client:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if rcvbuf is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        sock.setblocking(False)
        loop = asyncio.get_running_loop()
        try:
            await asyncio.wait_for(loop.sock_connect(sock, ("127.0.0.1", port)), timeout)
        except BaseException:
            sock.close()
            raise
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection(sock=sock, limit=4 << 20, **tls_for(port)), timeout
        )
        client = cls("json" if protocol == "auto" else protocol, reader, writer)
        client.sock = sock
        client.listener = protocol
        if protocol == "auto":
            # Nothing comes before the client's first bytes: its ping, here.
            await client.send(client.ping_request())
            client.greeting = await client.recv(timeout)
            client.check_pong(await client.recv(timeout))
        elif client.protocol in ("json", "echo"):
            client.greeting = await client.recv(timeout)
        return client

    @property
    def raw(self) -> socket.socket:
        if self.sock is not None:  # uvloop's TLS transport gives a socket-like object only
            return self.sock
        return self.writer.get_extra_info("socket")  # type: ignore[no-any-return]

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def recv(self, timeout: float = 2.0) -> Any:
        """The next message: a dict (json, mux control), (type, flags, payload) for
        binary, (stream, payload) for a mux data frame, a line for echo."""
        return await asyncio.wait_for(self._recv(), timeout)

    async def _recv(self) -> Any:
        r = self.reader
        if self.protocol == "json":
            header = await r.readuntil(b"\n")
            return json.loads(await r.readexactly(int(header)))
        if self.protocol == "echo":
            return await r.readuntil(b"\n")
        if self.protocol == "binary":
            kind, n, flags = struct.unpack(">HIH", await r.readexactly(8))
            payload = await r.readexactly(n)
            if kind in (FILE_REPLY, ERROR, NOTICE):
                return kind, flags, json.loads(payload)
            return kind, flags, payload
        sid, n = struct.unpack(">II", await r.readexactly(8))
        payload = await r.readexactly(n)
        return json.loads(payload) if sid == 0 else (sid, payload)

    def ping_request(self) -> bytes:
        if self.protocol == "json":
            return frame({"type": "ping", "ref": "p"})
        if self.protocol == "echo":
            return b"ping\n"
        if self.protocol == "binary":
            return struct.pack(">HIH", HEARTBEAT, 0, 0)
        return mux(0, b'{"type":"ping","ref":7}')

    def check_pong(self, reply: Any) -> None:
        if self.protocol == "json":
            assert reply["type"] == "pong" and reply["ref"] == "p", reply
        elif self.protocol == "echo":
            assert reply == b"Echo: ping\n"
        elif self.protocol == "binary":
            assert reply == (HEARTBEAT_ACK, 0, b"pong")
        else:
            assert reply["type"] == "pong" and reply["ref"] == 7, reply

    async def ping(self) -> None:
        """Ping in the protocol's own way; the very next message must be the answer."""
        await self.send(self.ping_request())
        self.check_pong(await self.recv())

    async def expect_nothing(self, wait: float = 0.05) -> None:
        with contextlib.suppress(TimeoutError):
            data = await asyncio.wait_for(self.reader.read(1), wait)
            raise AssertionError(f"unexpected bytes: {data!r}")

    async def expect_eof(self, timeout: float = 3.0) -> bytes:
        """Read until the server closes; returns what came before."""
        out = bytearray()
        deadline = time.monotonic() + timeout
        while True:
            try:
                chunk = await asyncio.wait_for(
                    self.reader.read(1 << 16), deadline - time.monotonic()
                )
            except ConnectionResetError:
                return bytes(out)
            if not chunk:
                return bytes(out)
            out += chunk

    def reset(self) -> None:
        """Close with an RST instead of a FIN."""
        self.raw.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.writer.transport.abort()

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.writer.wait_closed(), 1)


def mux(sid: int, payload: bytes) -> bytes:
    return struct.pack(">II", sid, len(payload)) + payload


def bframe(kind: int, payload: bytes = b"", flags: int = 0) -> bytes:
    return struct.pack(">HIH", kind, len(payload), flags) + payload


@pytest.fixture
async def clients() -> AsyncIterator[Callable[..., Awaitable[Client]]]:
    opened: list[Client] = []

    async def open_client(port: int, protocol: str, **kwargs: Any) -> Client:
        client = await Client.connect(port, protocol, **kwargs)
        opened.append(client)
        return client

    yield open_client
    for client in opened:
        await client.close()


@pytest.fixture(autouse=True)
def no_server_errors(caplog: pytest.LogCaptureFixture) -> AsyncIterator[None]:
    """A handler that raised is logged as an error by the socket layer: fail on it."""
    caplog.set_level(logging.WARNING, logger="verb_console")
    yield  # type: ignore[misc]
    errors = [
        r.getMessage()
        for r in caplog.records
        if r.name.startswith("verb_console") and r.levelno >= logging.ERROR
    ]
    assert errors == []


@pytest.fixture
async def serve(start_server: ServerFactory, tmp_path: Path) -> Callable[..., Awaitable[Runtime]]:
    async def start(protocol: str, **overrides: Any) -> Runtime:
        overrides.setdefault("upload_dir", str(tmp_path / "uploads"))
        overrides.setdefault("max_per_ip", 0)
        return await start_server(protocol=protocol, **overrides)

    return start


def reasons_of(rt: Runtime, session_id: str) -> list[str]:
    return [c.reason for c in rt.hub.closed_log if c.id == session_id]


async def assert_unharmed(
    rt: Runtime,
    bystander: Client,
    offender: Client | None = None,
    reason: str | None = None,
) -> None:
    """The common check after an attack."""
    hub = rt.hub
    if offender is not None:
        if reason is None:
            # Not a fatal attack: the offender is still served.
            assert offender.id in hub.connections
            await offender.ping()
        else:
            await eventually(lambda: offender.id not in hub.connections, timeout=5)
            assert offender.id not in hub.sessions
            assert reasons_of(rt, offender.id) == [reason]
    assert bystander.id in hub.connections
    await bystander.ping()
    await bystander.expect_nothing()
    # A server still harmed keeps every fresh client waiting; a machine busy with
    # other tests (pytest-xdist) delays one now and then: the best of three counts.
    tooks: list[float] = []
    for _ in range(3):
        started = time.monotonic()
        fresh = await Client.connect(rt.port, bystander.listener)
        await fresh.ping()
        tooks.append(time.monotonic() - started)
        await fresh.close()
        if tooks[-1] < FRESH_PING_S:
            break
    took = min(tooks)
    assert took < FRESH_PING_S, f"a fresh client waited {took * 1000:.0f} ms for its pong"


# --------------------------------------------------------------- oversized frames


@pytest.mark.parametrize(
    ("protocol", "header"),
    [
        ("json", b"4294967296\n"),
        ("binary", struct.pack(">HIH", DATA, 0xFFFFFFFF, 0)),
        ("mux", struct.pack(">II", 0, 0xFFFFFFFF)),
        ("mux", struct.pack(">II", 1, 0xFFFFFFFF)),
    ],
)
async def test_a_header_announcing_4_gib_is_frame_too_large_and_harms_no_one(
    serve, clients, protocol: str, header: bytes
) -> None:
    rt = await serve(protocol)
    bystander = await clients(rt.port, protocol)
    offender = await clients(rt.port, protocol)
    await offender.send(header)
    error = await offender.recv()
    closing = {"type": "closing", "reason": "protocol_error"}
    if protocol == "binary":
        assert error[0] == ERROR and error[2]["code"] == "frame_too_large"
        assert await offender.recv() == (NOTICE, 0, closing)
    else:
        assert error["type"] == "error" and error["code"] == "frame_too_large"
        assert await offender.recv() == closing
    assert await offender.expect_eof() == b""
    await assert_unharmed(rt, bystander, offender, "frame_too_large")


# --------------------------------------------------------------- slow clients


async def test_a_header_trickled_a_byte_a_second_is_cut_off_by_the_idle_timeout(
    serve, clients
) -> None:
    rt = await serve("json", idle_timeout=0.6)
    bystander = await clients(rt.port, "json")
    offender = await clients(rt.port, "json")
    started = time.monotonic()
    trips: list[float] = []
    for byte in b"15\n":
        with contextlib.suppress(ConnectionError):
            await offender.send(bytes([byte]))
        # Meanwhile the server goes on serving everyone else at once: a server that
        # waited on the trickle would hold every ping for most of its 0.2 s gaps.
        for _ in range(5):
            t0 = time.monotonic()
            await bystander.ping()
            trips.append(time.monotonic() - t0)
            await asyncio.sleep(0.2)
        if offender.id not in rt.hub.connections:
            break
    # The median, not each one: a machine busy with other tests delays one now and then.
    assert statistics.median(trips) < FRESH_PING_S, sorted(trips)
    assert await offender.recv() == {"type": "closing", "reason": "idle_timeout"}
    assert time.monotonic() - started < 2.0
    await assert_unharmed(rt, bystander, offender, "idle_timeout")


async def test_a_frame_trickled_faster_than_the_idle_timeout_is_served(serve, clients) -> None:
    rt = await serve("json", idle_timeout=0.6)
    bystander = await clients(rt.port, "json")
    offender = await clients(rt.port, "json")
    for i, byte in enumerate(frame({"type": "ping", "ref": "slow"})):
        await offender.send(bytes([byte]))
        await asyncio.sleep(0.02)
        if i % 10 == 0:
            await bystander.ping()  # the bystander is under the same idle timeout
    reply = await offender.recv()
    assert reply["type"] == "pong" and reply["ref"] == "slow"
    await assert_unharmed(rt, bystander, offender)


async def test_a_lone_zero_byte_on_an_auto_listener_is_cut_off_by_the_handshake_timeout(
    serve, clients
) -> None:
    rt = await serve("auto", handshake_timeout=0.3)
    bystander = await clients(rt.port, "auto")
    offender = await clients(rt.port, "binary")  # sends no greeting request
    await offender.send(b"\x00")
    assert await offender.expect_eof() == b""
    await assert_unharmed(rt, bystander, offender, "handshake_timeout")


# --------------------------------------------------------------- deep JSON


async def test_json_nested_100000_levels_deep_is_bad_json_on_an_auto_listener(
    serve, clients
) -> None:
    rt = await serve("auto")
    bystander = await clients(rt.port, "auto")
    offender = await clients(rt.port, "auto")
    await offender.send(raw_frame(b"[" * 100_000 + b"]" * 100_000))
    assert (await offender.recv())["code"] == "bad_json"
    await offender.send(raw_frame(b'{"a":' * 100_000 + b"1" + b"}" * 100_000))
    assert (await offender.recv())["code"] == "bad_json"
    await assert_unharmed(rt, bystander, offender)


async def test_json_nested_100000_levels_deep_is_bad_json_on_a_mux_stream(serve, clients) -> None:
    rt = await serve("mux")
    bystander = await clients(rt.port, "mux")
    offender = await clients(rt.port, "mux")
    create = {"type": "stream_create", "streamId": 1, "streamType": "json"}
    await offender.send(mux(0, json.dumps(create).encode()))
    assert await offender.recv() == {"type": "stream_created", "streamId": 1}
    sid, welcome = await offender.recv()
    assert sid == 1 and b'"welcome"' in welcome
    body = raw_frame(b"[" * 100_000 + b"]" * 100_000)
    # Split across many mux frames, as a client with a small frame size would send it.
    await offender.send(b"".join(mux(1, body[i : i + 65536]) for i in range(0, len(body), 65536)))
    sid, reply = await offender.recv()
    assert sid == 1 and json.loads(reply.split(b"\n", 1)[1])["code"] == "bad_json"
    # The control stream of the mux connection also takes deep JSON in its stride.
    await offender.send(mux(0, b"[" * 100_000 + b"]" * 100_000))
    assert (await offender.recv())["code"] == "bad_json"
    await assert_unharmed(rt, bystander, offender)


# --------------------------------------------------------------- connection storms


def raise_fd_limit(needed: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < needed:
        pytest.skip(f"RLIMIT_NOFILE hard limit {hard} is below the {needed} descriptors needed")
    if soft != resource.RLIM_INFINITY and soft < needed:
        resource.setrlimit(resource.RLIMIT_NOFILE, (needed, hard))


# Thousands of handshakes at once take both cores for seconds: the bursts run one
# after another on one pytest-xdist worker (--dist loadgroup), never together.
@pytest.mark.xdist_group("connection-burst")
async def test_5000_connections_in_one_burst_are_all_served_and_the_server_stays_responsive(
    serve, clients, wire: str
) -> None:
    # Over TLS both ends' handshakes (about 1.3 ms of CPU each, client and server
    # in this one process) would take the whole burst past its timeouts: fewer.
    burst = 5000 if wire == "plain" else 1000
    # Both ends live in this process: two descriptors per connection, plus headroom.
    raise_fd_limit(2 * burst + 1000)
    # The handshake timeout is not under test: a busy machine may take more than the
    # default 10 s to get through a thousand TLS handshakes on one core.
    rt = await serve("auto", max_connections=burst + 100, idle_timeout=0, handshake_timeout=30)
    bystander = await clients(rt.port, "auto")

    async def one() -> Client | None:
        try:
            # Each client speaks first (its ping), as on any auto listener. A SYN
            # dropped by the full accept queue (backlog 511) is retried by the
            # kernel after 1 s, then 3 s: the burst gets time to get in.
            return await Client.connect(rt.port, "auto", timeout=15)
        except (ConnectionError, asyncio.IncompleteReadError):
            return None  # cleanly refused

    results = await asyncio.gather(*(one() for _ in range(burst)))
    served = [c for c in results if c is not None]
    try:
        # Nothing is refused here (the limits are above the burst): all are served.
        assert len(served) == burst
        assert rt.hub.stats.rejected_max == rt.hub.stats.rejected_throttle == 0
        assert len(rt.hub.connections) == burst + 1
        # A second round of pings, all in flight at once.
        await asyncio.gather(*(c.ping() for c in served))
        await assert_unharmed(rt, bystander)
    finally:
        for c in served:
            c.writer.close()
    await eventually(lambda: len(rt.hub.connections) == 1, timeout=10)
    assert list(rt.hub.connections) == [bystander.id]
    await assert_unharmed(rt, bystander)


# Thousands of handshakes at once take both cores for seconds: the bursts run one
# after another on one pytest-xdist worker (--dist loadgroup), never together.
@pytest.mark.xdist_group("connection-burst")
async def test_a_burst_over_max_connections_is_refused_cleanly_and_the_rest_served(
    serve, clients
) -> None:
    rt = await serve("json", max_connections=300)
    bystander = await clients(rt.port, "json")
    results = await asyncio.gather(
        # 600 handshakes at once (TLS: both ends in this process) need more than the
        # usual 2 s on a busy machine; refusals come at once whatever the timeout.
        *(Client.connect(rt.port, "json", timeout=15) for _ in range(600)),
        return_exceptions=True,
    )
    served = [c for c in results if isinstance(c, Client)]
    refused = [e for e in results if not isinstance(e, Client)]
    assert all(isinstance(e, ConnectionError | asyncio.IncompleteReadError) for e in refused)
    assert len(served) == 299  # the bystander holds the 300th place
    assert rt.hub.stats.rejected_max == len(refused) == 301
    await asyncio.gather(*(c.ping() for c in served))
    for c in served:
        await c.close()
    await eventually(lambda: len(rt.hub.connections) == 1)
    await assert_unharmed(rt, bystander)


# --------------------------------------------------------------- slow consumer


async def test_a_client_that_reads_nothing_is_closed_as_a_slow_consumer_and_no_one_else_notices(
    serve, clients
) -> None:
    rt = await serve("json", max_pending=256 * 1024, writable_high_water_mark=16 * 1024)
    bystander = await clients(rt.port, "json")
    sender = await clients(rt.port, "json")
    victim = await clients(rt.port, "json", rcvbuf=4096)
    for c in (sender, victim):
        await c.send(frame({"type": "join_room", "room": "flood"}))
        assert (await c.recv())["type"] == "joined"
    assert (await sender.recv())["type"] == "user_joined"
    blob = "x" * 60_000
    started = time.monotonic()
    for _ in range(200):
        await sender.send(frame({"type": "room_message", "room": "flood", "data": blob}))
        if victim.id not in rt.hub.connections:
            break
    # The sender was never held up by the victim's full buffers.
    assert time.monotonic() - started < 2
    await eventually(lambda: victim.id not in rt.hub.connections)
    assert rt.hub.stats.slow_consumers == 1
    # The sender hears that the victim left the room, and nothing else.
    left = await sender.recv()
    assert left["type"] == "user_left" and left["connectionId"] == victim.id
    await assert_unharmed(rt, sender, victim, "slow_consumer")
    await assert_unharmed(rt, bystander)


# --------------------------------------------------------------- resets and half-closes


@pytest.mark.parametrize(
    ("protocol", "partial"),
    [
        ("json", b'30\n{"type":"pi'),
        ("json", b"12"),
        ("binary", bframe(DATA, b"x" * 100)[:50]),
        ("mux", mux(0, b'{"type":"ping"}')[:12]),
        ("echo", b"half a line"),
    ],
)
async def test_a_reset_in_the_middle_of_a_frame_ends_only_that_session(
    serve, clients, protocol: str, partial: bytes
) -> None:
    rt = await serve(protocol)
    bystander = await clients(rt.port, protocol)
    offender = await clients(rt.port, protocol)
    await offender.send(partial)
    await eventually(lambda: rt.hub.connections[offender.id].outlet.bytes_read == len(partial))
    offender.reset()
    await assert_unharmed(rt, bystander, offender, "connection_error")


def temp_files(rt: Runtime) -> list[str]:
    return [n for n in os.listdir(rt.settings.upload_dir) if TEMP_RE.fullmatch(n)]


@pytest.mark.parametrize("protocol", ["json", "binary"])
async def test_a_reset_in_the_middle_of_an_upload_leaves_no_file_and_no_transfer(
    serve, clients, protocol: str
) -> None:
    rt = await serve(protocol)
    store = rt.hub.uploads
    assert store is not None
    bystander = await clients(rt.port, protocol)
    offender = await clients(rt.port, protocol)
    start = {"transferId": "t1", "filename": "cut.bin", "fileSize": 1 << 20}
    if protocol == "json":
        await offender.send(frame({"type": "file_start", **start}))
        assert (await offender.recv())["type"] == "file_start_ack"
        chunk = {"type": "file_chunk", "transferId": "t1", "chunkIndex": 0, "data": "QUJD" * 1000}
        await offender.send(frame(chunk))
        assert (await offender.recv())["type"] == "file_chunk_ack"
        # Half of the next frame, then the reset.
        await offender.send(frame({**chunk, "chunkIndex": 1})[:2000])
    else:
        await offender.send(bframe(FILE, json.dumps(start).encode(), START))
        kind, _, ack = await offender.recv()
        assert kind == FILE_REPLY and ack["type"] == "file_start_ack", ack
        await offender.send(
            bframe(FILE, b"y" * 3000, CHUNK) + bframe(FILE, b"z" * 3000, CHUNK)[:1000]
        )
    await eventually(lambda: store.active_count == 1 and store.uploads_of(offender.id)[0].written)
    await eventually(lambda: len(temp_files(rt)) == 1)
    offender.reset()
    await assert_unharmed(rt, bystander, offender, "connection_error")
    await store.wait_idle()
    assert store.active_count == 0
    assert store.uploads_of(offender.id) == []
    assert [r.state for r in store.records() if r.session_id == offender.id] == ["aborted"]
    assert os.listdir(rt.settings.upload_dir) == []


@pytest.mark.parametrize("protocol", ["json", "binary", "mux", "echo"])
async def test_a_half_closed_client_still_gets_its_answer_then_its_session_ends_cleanly(
    serve, clients, protocol: str
) -> None:
    rt = await serve(protocol)
    bystander = await clients(rt.port, protocol)
    offender = await clients(rt.port, protocol)
    await offender.send(offender.ping_request())
    offender.raw.shutdown(socket.SHUT_WR)
    offender.check_pong(await offender.recv())
    assert await offender.expect_eof() == b""
    await assert_unharmed(rt, bystander, offender, "client_closed")


# --------------------------------------------------------------- invalid UTF-8


async def test_invalid_utf8_in_a_json_body_is_bad_json_and_the_session_goes_on(
    serve, clients
) -> None:
    rt = await serve("json")
    bystander = await clients(rt.port, "json")
    offender = await clients(rt.port, "json")
    for body in (b'{"type":"ping","x":"\xff"}', b'{"type":"\xc3\x28"}', b"\xed\xa0\x80"):
        await offender.send(raw_frame(body))
        assert (await offender.recv())["code"] == "bad_json"
    await assert_unharmed(rt, bystander, offender)


async def test_invalid_utf8_in_an_echo_line_is_echoed_byte_for_byte(serve, clients) -> None:
    rt = await serve("echo")
    bystander = await clients(rt.port, "echo")
    offender = await clients(rt.port, "echo")
    await offender.send(b"\xff\xfe\xc3\x28 \xed\xa0\x80\n")
    assert await offender.recv() == b"Echo: \xff\xfe\xc3\x28 \xed\xa0\x80\n"
    await assert_unharmed(rt, bystander, offender)


async def test_invalid_utf8_in_a_mux_control_frame_is_bad_json_and_the_connection_goes_on(
    serve, clients
) -> None:
    rt = await serve("mux")
    bystander = await clients(rt.port, "mux")
    offender = await clients(rt.port, "mux")
    await offender.send(mux(0, b'{"type":"ping","ref":"\xff"}'))
    reply = await offender.recv()
    assert reply["type"] == "error" and reply["code"] == "bad_json"
    await assert_unharmed(rt, bystander, offender)


# --------------------------------------------------------------- garbage


@pytest.mark.parametrize(
    ("protocol", "prefix"),
    [
        ("json", b""),
        ("binary", b""),
        ("mux", b""),
        ("echo", b""),
        # On an auto listener the first bytes pick the protocol the rest is fed to.
        ("auto", b"7"),
        ("auto", b"\x00\x05"),
        ("auto", b"\x00\x00"),
        ("auto", b"e"),
    ],
)
@pytest.mark.parametrize("seed", [1, 2])
async def test_a_mebibyte_of_random_garbage_ends_at_most_that_session(
    serve, clients, protocol: str, prefix: bytes, seed: int
) -> None:
    rt = await serve(protocol)
    bystander = await clients(rt.port, protocol)
    # A client that sends first and reads no greeting (the drain below reads all).
    offender = await clients(rt.port, "binary" if protocol in ("auto", "echo") else protocol)
    # Ending in a newline, so that an echo session has no half line left over.
    garbage = prefix + random.Random(seed).randbytes(1 << 20) + b"\n"
    if protocol == "auto":
        first = garbage[:2]
        if first[:1].isdigit():
            offender.protocol = "json"
        elif first[:1] == b"\x00":
            offender.protocol = "mux" if first == b"\x00\x00" else "binary"
        else:
            offender.protocol = "echo"
    else:
        offender.protocol = protocol
    received = bytearray()

    async def drain() -> None:
        with contextlib.suppress(ConnectionError):
            while chunk := await offender.reader.read(1 << 16):
                received.extend(chunk)

    reading = asyncio.create_task(drain())
    with contextlib.suppress(ConnectionError):
        for i in range(0, len(garbage), 1 << 16):
            await offender.send(garbage[i : i + (1 << 16)])
    if offender.protocol == "echo":
        # Random bytes hold a newline every 256 bytes or so: every line is echoed.
        lines = garbage.split(b"\n")[:-1]
        expected = b"".join(b"Echo: " + line + b"\n" for line in lines)
        await eventually(lambda: len(received) >= len(expected), timeout=5)
        await eventually(lambda: bytes(received).endswith(expected), timeout=2)
        reading.cancel()
        await assert_unharmed(rt, bystander, offender)
        return
    await asyncio.wait_for(reading, 5)
    reasons = reasons_of(rt, offender.id)
    assert reasons in (["protocol_error"], ["frame_too_large"]), reasons
    await assert_unharmed(rt, bystander, offender, reasons[0])
