"""The seed's TCP API (``verb_console.net``): every option applied to real sockets."""

from __future__ import annotations

import asyncio
import socket
import struct
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from helpers import eventually, open_raw

from verb_console.net import ServerProtocol, TCPOptions, TCPServer, TCPSocket, create_server

pytestmark = pytest.mark.timeout(30)

linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux socket API")


class Harness:
    """A server on 127.0.0.1:0 whose accepted sockets arrive on a queue."""

    def __init__(self, server: TCPServer) -> None:
        self.server = server
        self.accepted: asyncio.Queue[TCPSocket] = asyncio.Queue()

    @property
    def port(self) -> int:
        return self.server.address().port

    async def next_socket(self) -> TCPSocket:
        return await asyncio.wait_for(self.accepted.get(), 2)

    async def connect(self, **kwargs: Any) -> tuple[socket.socket, TCPSocket]:
        """A raw client socket and the server's side of the same connection."""
        client = await open_raw(self.port, **kwargs)
        return client, await self.next_socket()


Factory = Callable[..., Awaitable[Harness]]


@pytest.fixture
async def serve() -> AsyncIterator[Factory]:
    servers: list[TCPServer] = []

    async def start(**tcp: Any) -> Harness:
        server = create_server(ServerProtocol.TCP)
        harness = Harness(server)
        user_on_connection = tcp.pop("on_connection", None)

        def on_connection(sock: TCPSocket) -> None:
            harness.accepted.put_nowait(sock)
            if user_on_connection is not None:
                user_on_connection(sock)

        server.with_options(port=0, host="127.0.0.1", tcp={**tcp, "on_connection": on_connection})
        await server.listen()
        servers.append(server)
        return harness

    yield start
    for server in servers:
        server.close()
        await asyncio.wait_for(server.wait_closed(), 5)


async def recv_all(client: socket.socket, timeout: float = 2.0) -> bytes:
    """Read until the peer closes (FIN or RST)."""
    loop = asyncio.get_running_loop()
    out = bytearray()
    while True:
        try:
            chunk = await asyncio.wait_for(loop.sock_recv(client, 65536), timeout)
        except ConnectionResetError:
            break
        if not chunk:
            break
        out += chunk
    return bytes(out)


async def recv_exactly(client: socket.socket, n: int, timeout: float = 2.0) -> bytes:
    loop = asyncio.get_running_loop()
    out = bytearray()
    while len(out) < n:
        chunk = await asyncio.wait_for(loop.sock_recv(client, n - len(out)), timeout)
        assert chunk, f"closed after {len(out)} of {n} bytes"
        out += chunk
    return bytes(out)


def sockopt(sock: TCPSocket, level: int, name: int) -> int:
    raw = sock.raw_socket
    assert raw is not None
    return raw.getsockopt(level, name)


def listening_socket(server: TCPServer) -> socket.socket:
    # The bound socket is internal; the tests read its options from the kernel.
    sock = server._sock
    assert sock is not None
    return sock


# Options, checked with getsockopt


@pytest.mark.parametrize("no_delay", [True, False])
async def test_no_delay_sets_tcp_nodelay_on_accepted_sockets(serve, no_delay: bool) -> None:
    harness = await serve(no_delay=no_delay)
    client, sock = await harness.connect()
    with client:
        assert bool(sockopt(sock, socket.IPPROTO_TCP, socket.TCP_NODELAY)) is no_delay


@linux_only
async def test_keep_alive_and_its_initial_delay_are_applied_to_accepted_sockets(serve) -> None:
    harness = await serve(keep_alive=True, keep_alive_initial_delay=7000)
    client, sock = await harness.connect()
    with client:
        assert sockopt(sock, socket.SOL_SOCKET, socket.SO_KEEPALIVE) == 1
        assert sockopt(sock, socket.IPPROTO_TCP, socket.TCP_KEEPIDLE) == 7


async def test_keep_alive_false_leaves_keepalive_off(serve) -> None:
    harness = await serve(keep_alive=False)
    client, sock = await harness.connect()
    with client:
        assert sockopt(sock, socket.SOL_SOCKET, socket.SO_KEEPALIVE) == 0


@pytest.mark.skipif(not hasattr(socket, "SO_REUSEPORT"), reason="no SO_REUSEPORT")
async def test_exclusive_false_lets_two_servers_share_a_port(serve) -> None:
    first = await serve(exclusive=False)
    assert listening_socket(first.server).getsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT)
    second = create_server(ServerProtocol.TCP).with_options(
        port=first.port, host="127.0.0.1", tcp={"exclusive": False}
    )
    await second.listen()
    try:
        assert second.address().port == first.port
        assert listening_socket(second).getsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT)
    finally:
        second.close()
        await second.wait_closed()


@pytest.mark.parametrize("first_exclusive", [True, False])
async def test_exclusive_true_makes_a_second_bind_of_the_port_fail(
    serve, first_exclusive: bool
) -> None:
    first = await serve(exclusive=first_exclusive)
    if first_exclusive and hasattr(socket, "SO_REUSEPORT"):
        assert not listening_socket(first.server).getsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT)
    second = create_server(ServerProtocol.TCP).with_options(
        port=first.port, host="127.0.0.1", tcp={"exclusive": True}
    )
    with pytest.raises(OSError):
        second.listen()


@linux_only
async def test_backlog_is_passed_to_listen(serve) -> None:
    harness = await serve(backlog=7)
    sock = listening_socket(harness.server)
    info = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 104)
    # For a listening socket Linux reports the accept-queue limit in tcpi_sacked.
    (max_backlog,) = struct.unpack_from("I", info, 28)
    assert max_backlog == 7


async def test_readable_high_water_mark_bounds_each_data_chunk(serve) -> None:
    harness = await serve(readable_high_water_mark=1024)
    client, sock = await harness.connect()
    chunks: list[bytes] = []
    sock.on("data", chunks.append)
    payload = bytes(range(256)) * 400  # 102400 bytes
    with client:
        await asyncio.get_running_loop().sock_sendall(client, payload)
        await eventually(lambda: sum(map(len, chunks)) == len(payload))
    assert max(map(len, chunks)) <= 1024
    assert len(chunks) >= 100
    assert b"".join(chunks) == payload
    assert sock.bytes_read == len(payload)


async def test_write_returns_false_above_the_writable_high_water_mark_and_drain_follows(
    serve,
) -> None:
    harness = await serve(writable_high_water_mark=2048)
    client, sock = await harness.connect(rcvbuf=4096)
    chunk = b"w" * 65536
    written = 0
    with client:
        for _ in range(2000):
            written += len(chunk)
            if not sock.write(chunk):
                break
        else:
            pytest.fail("write() never reported congestion")
        assert sock.congested
        assert sock.unsent > 2048
        drained = sock.once("drain")
        await asyncio.sleep(0.05)
        assert not drained.done()
        assert await recv_exactly(client, written, timeout=5) == chunk * (written // len(chunk))
        await asyncio.wait_for(drained, 2)
        assert not sock.congested
        assert sock.write(b"x") is True
        assert sock.bytes_written == written + 1


async def test_allow_half_open_lets_the_server_write_after_the_client_ends(serve) -> None:
    harness = await serve(allow_half_open=True)
    client, sock = await harness.connect()
    loop = asyncio.get_running_loop()

    def on_end() -> None:
        loop.call_later(0.1, lambda: sock.end(b"late reply"))

    sock.on("end", on_end)
    ended = sock.once("end")
    with client:
        await loop.sock_sendall(client, b"hi")
        client.shutdown(socket.SHUT_WR)
        await asyncio.wait_for(ended, 2)
        assert not sock.destroyed
        assert await recv_all(client) == b"late reply"


async def test_without_allow_half_open_the_connection_closes_when_the_client_ends(serve) -> None:
    harness = await serve(allow_half_open=False)
    client, sock = await harness.connect()
    loop = asyncio.get_running_loop()
    writes: list[bool] = []
    sock.on("end", lambda: loop.call_later(0.1, lambda: writes.append(sock.write(b"late"))))
    closed = sock.once("close")
    with client:
        client.shutdown(socket.SHUT_WR)
        assert await recv_all(client) == b""
        assert await asyncio.wait_for(closed, 2) is False
        await eventually(lambda: writes == [False])


async def test_pause_on_connect_delivers_no_data_until_resume(serve) -> None:
    harness = await serve(pause_on_connect=True)
    client, sock = await harness.connect()
    chunks: list[bytes] = []
    sock.on("data", chunks.append)
    with client:
        assert sock.is_paused
        await asyncio.get_running_loop().sock_sendall(client, b"early")
        await asyncio.sleep(0.2)
        assert chunks == []
        sock.resume()
        await eventually(lambda: b"".join(chunks) == b"early")
        assert not sock.is_paused


async def test_the_timeout_option_emits_timeout_after_the_idle_period(serve) -> None:
    harness = await serve(timeout=200)
    started = time.monotonic()
    client, sock = await harness.connect()
    with client:
        await asyncio.wait_for(sock.once("timeout"), 2)
        assert time.monotonic() - started >= 0.18
        # A timeout is an event, not a close.
        assert not sock.destroyed


async def test_the_event_handlers_are_called(serve) -> None:
    events: list[str] = []
    errors: list[BaseException] = []
    boom = RuntimeError("handler failed")

    def on_connection(sock: TCPSocket) -> None:
        events.append("connection")
        raise boom

    harness = await serve(
        on_connection=on_connection,
        on_error=errors.append,
        on_listening=lambda: events.append("listening"),
        on_close=lambda: events.append("close"),
    )
    assert events == ["listening"]
    assert harness.server.listening
    port = harness.port
    client, _sock = await harness.connect()
    with client:
        # A failing on_connection reports the error and drops that connection only.
        assert await recv_all(client) == b""
    assert events == ["listening", "connection"]
    assert errors == [boom]
    harness.server.close()
    assert events == ["listening", "connection", "close"]
    await harness.server.wait_closed()
    with pytest.raises(ConnectionRefusedError):
        (await open_raw(port)).close()


async def test_on_error_is_called_when_the_server_cannot_start_accepting() -> None:
    errors: list[BaseException] = []
    server = create_server(ServerProtocol.TCP).with_options(
        port=0, host="127.0.0.1", tcp={"on_error": errors.append}
    )
    listening = server.listen()
    listening_socket(server).close()  # gone before the loop starts serving on it
    with pytest.raises(OSError):
        await listening
    assert len(errors) == 1 and isinstance(errors[0], OSError)
    server.close()


async def test_camel_case_option_names_are_accepted(serve) -> None:
    harness = await serve(noDelay=False, keepAlive=True, keepAliveInitialDelay=5000)
    assert harness.server.options.no_delay is False
    client, sock = await harness.connect()
    with client:
        assert sockopt(sock, socket.IPPROTO_TCP, socket.TCP_NODELAY) == 0
        if hasattr(socket, "TCP_KEEPIDLE"):
            assert sockopt(sock, socket.IPPROTO_TCP, socket.TCP_KEEPIDLE) == 5


@pytest.mark.parametrize("name", ["no_such_option", "noSuchOption", "nodelay"])
def test_an_unknown_option_is_a_type_error(name: str) -> None:
    with pytest.raises(TypeError, match="unknown tcp option"):
        create_server(ServerProtocol.TCP).with_options(tcp={name: 1})


@pytest.mark.parametrize(
    "options",
    [{"backlog": 0}, {"readable_high_water_mark": -1}, {"timeout": -5}, {"backlog": True}],
)
def test_an_invalid_option_value_is_a_value_error(options: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        create_server(ServerProtocol.TCP).with_options(tcp=options)


def test_a_tcp_options_object_is_accepted_whole() -> None:
    options = TCPOptions(backlog=9, no_delay=False)
    server = create_server(ServerProtocol.TCP).with_options(port=0, tcp=options)
    assert server.options is options


# TCPSocket members


async def test_remote_address_and_port_are_the_clients(serve) -> None:
    harness = await serve()
    client, sock = await harness.connect(source_ip="127.0.0.2")
    with client:
        host, port = client.getsockname()
        assert (sock.remote_address, sock.remote_port) == (host, port) == ("127.0.0.2", port)
        assert sock.id == f"127.0.0.2:{port}"
        assert sock.address()["port"] == harness.port


async def test_write_accepts_str_and_bytes_and_end_flushes_then_closes(serve) -> None:
    harness = await serve()
    client, sock = await harness.connect()
    with client:
        assert sock.write("héllo ") is True
        assert sock.write(b"world") is True
        sock.end(b"!")
        assert await recv_all(client) == "héllo world!".encode()
        assert sock.bytes_written == len("héllo world!".encode())
        await eventually(lambda: sock.destroyed)


async def test_data_end_and_close_events_fire_and_count_bytes_read(serve) -> None:
    harness = await serve()
    client, sock = await harness.connect()
    chunks: list[bytes] = []
    sock.on("data", chunks.append)
    ended = sock.once("end")
    closed = sock.once("close")
    with client:
        await asyncio.get_running_loop().sock_sendall(client, b"abc" * 100)
        await eventually(lambda: sock.bytes_read == 300)
    assert b"".join(chunks) == b"abc" * 100
    await asyncio.wait_for(ended, 2)
    assert await asyncio.wait_for(closed, 2) is False
    assert sock.destroyed


async def test_destroy_closes_at_once_and_destroy_with_an_error_emits_it(serve) -> None:
    harness = await serve()
    client, sock = await harness.connect()
    errors: list[BaseException] = []
    sock.on("error", errors.append)
    closed = sock.once("close")
    problem = ValueError("bad peer")
    with client:
        sock.destroy(problem)
        assert errors == [problem]
        assert await asyncio.wait_for(closed, 2) is True
        assert await recv_all(client) == b""
    assert sock.write(b"after") is False


async def test_set_keep_alive_and_set_no_delay_change_the_socket(serve) -> None:
    harness = await serve(keep_alive=False, no_delay=True)
    client, sock = await harness.connect()
    with client:
        assert sock.set_keep_alive(True, 3000) is sock
        assert sockopt(sock, socket.SOL_SOCKET, socket.SO_KEEPALIVE) == 1
        if hasattr(socket, "TCP_KEEPIDLE"):
            assert sockopt(sock, socket.IPPROTO_TCP, socket.TCP_KEEPIDLE) == 3
        sock.set_keep_alive(False)
        assert sockopt(sock, socket.SOL_SOCKET, socket.SO_KEEPALIVE) == 0
        assert sock.set_no_delay(False) is sock
        assert sockopt(sock, socket.IPPROTO_TCP, socket.TCP_NODELAY) == 0
        sock.set_no_delay()
        assert sockopt(sock, socket.IPPROTO_TCP, socket.TCP_NODELAY) == 1


async def test_set_timeout_calls_back_after_idle_and_zero_turns_it_off(serve) -> None:
    harness = await serve(timeout=0)
    client, sock = await harness.connect()
    fired: list[float] = []
    started = time.monotonic()
    with client:
        sock.set_timeout(150, lambda: fired.append(time.monotonic() - started))
        await eventually(lambda: len(fired) >= 1)
        assert fired[0] >= 0.13
        sock.set_timeout(0)
        count = len(fired)
        await asyncio.sleep(0.4)
        assert len(fired) == count


async def test_bytes_received_push_the_timeout_back(serve) -> None:
    harness = await serve(timeout=300)
    client, sock = await harness.connect()
    fired: list[float] = []
    sock.on("timeout", lambda: fired.append(time.monotonic()))
    loop = asyncio.get_running_loop()
    with client:
        for _ in range(6):
            await asyncio.sleep(0.1)
            await loop.sock_sendall(client, b".")
        assert fired == []
        await eventually(lambda: len(fired) == 1)


async def test_set_encoding_delivers_str_even_when_a_character_is_split(serve) -> None:
    harness = await serve()
    client, sock = await harness.connect()
    texts: list[Any] = []
    assert sock.set_encoding("utf-8") is sock
    sock.on("data", texts.append)
    data = "naïve ☃".encode()
    loop = asyncio.get_running_loop()
    with client:
        await loop.sock_sendall(client, data[:3])  # "na" plus half of "ï"
        await eventually(lambda: bool(texts))
        await loop.sock_sendall(client, data[3:])
        await eventually(lambda: "".join(texts) == "naïve ☃")
    assert all(isinstance(t, str) for t in texts)


async def test_pause_stops_data_events_and_resume_delivers_what_waited(serve) -> None:
    harness = await serve()
    client, sock = await harness.connect()
    chunks: list[bytes] = []
    sock.on("data", chunks.append)
    loop = asyncio.get_running_loop()
    with client:
        assert sock.pause() is sock
        assert sock.is_paused
        await loop.sock_sendall(client, b"held")
        await asyncio.sleep(0.2)
        assert chunks == []
        assert sock.resume() is sock
        await eventually(lambda: chunks == [b"held"])


async def test_off_removes_a_listener_and_an_unknown_event_is_refused(serve) -> None:
    harness = await serve()
    client, sock = await harness.connect()
    chunks: list[bytes] = []
    sock.on("data", chunks.append)
    sock.off("data", chunks.append)
    with pytest.raises(ValueError):
        sock.on("bogus", print)
    with client:
        await asyncio.get_running_loop().sock_sendall(client, b"x")
        await eventually(lambda: sock.bytes_read == 1)
    assert chunks == []


async def test_a_failing_data_listener_ends_only_its_connection(serve) -> None:
    harness = await serve()
    bad_client, bad = await harness.connect()
    good_client, good = await harness.connect()

    def explode(data: bytes) -> None:
        raise RuntimeError("listener bug")

    bad.on("data", explode)
    echoed: list[bytes] = []
    good.on("data", lambda d: (echoed.append(d), good.write(d)))
    loop = asyncio.get_running_loop()
    with bad_client, good_client:
        await loop.sock_sendall(bad_client, b"x")
        assert await recv_all(bad_client) == b""
        await loop.sock_sendall(good_client, b"ok")
        assert await recv_exactly(good_client, 2) == b"ok"
    assert bad.had_error


async def test_close_destroys_open_connections_and_wait_closed_returns(serve) -> None:
    harness = await serve()
    client, sock = await harness.connect()
    with client:
        assert sock in harness.server.connections
        harness.server.close()
        await asyncio.wait_for(harness.server.wait_closed(), 2)
        assert await recv_all(client) == b""
    await eventually(lambda: not harness.server.connections)


def test_only_the_tcp_protocol_exists() -> None:
    assert create_server() is not None
    with pytest.raises(ValueError):
        create_server("udp")  # type: ignore[arg-type]


async def test_address_is_the_bound_address() -> None:
    server = create_server(ServerProtocol.TCP).with_options(port=0, host="127.0.0.1")
    assert server.address() is None  # not listening yet, as the seed's null
    listening = server.listen()
    address = server.address()  # known at once, before the loop starts accepting
    assert address.address == "127.0.0.1" and address.family == "IPv4" and address.port > 0
    assert await listening is server
    server.close()
    await server.wait_closed()
    assert server.address() is None  # closed, as the seed's null
