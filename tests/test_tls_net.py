"""TLS as a sans-IO layer inside the server's socket, on both event loops (PROTOCOL.md s9)."""

from __future__ import annotations

import asyncio
import datetime
import ssl
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
import uvloop
from helpers import closed_without_bytes, eventually

from verb_console.net import TCPServer, TCPSocket, TLSOptions, create_server, make_server_context

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


@pytest.fixture(params=["asyncio", "uvloop"])
def event_loop_policy(request: pytest.FixtureRequest) -> asyncio.AbstractEventLoopPolicy:
    if request.param == "uvloop":
        return uvloop.EventLoopPolicy()
    return asyncio.DefaultEventLoopPolicy()


Echo = Callable[..., Any]


@pytest.fixture
async def echo_server(tls_files: Any) -> AsyncIterator[Echo]:
    """An echo server (``Echo: <bytes>``) speaking TLS; returns (server, sockets seen)."""
    servers: list[TCPServer] = []

    async def start(
        *, detect: bool = False, required: bool = False, timeout: float = 10.0, ca: bool = False
    ) -> tuple[TCPServer, list[TCPSocket]]:
        seen: list[TCPSocket] = []

        def on_connection(sock: TCPSocket) -> None:
            seen.append(sock)
            sock.on("data", lambda data: sock.write(b"Echo: " + data))

        ctx = make_server_context(tls_files.cert, tls_files.key, tls_files.ca_file if ca else None)
        server = create_server().with_options(
            port=0,
            tcp={"on_connection": on_connection},
            tls=TLSOptions(ctx, detect=detect, required=required, handshake_timeout=timeout),
        )
        await server.listen(0)
        servers.append(server)
        return server, seen

    yield start
    for server in servers:
        server.close()


async def tls_connect(port: int, ctx: ssl.SSLContext) -> tuple[Any, Any]:
    return await asyncio.wait_for(
        asyncio.open_connection("127.0.0.1", port, ssl=ctx, server_hostname="localhost"), 5
    )


async def test_bytes_cross_tls_both_ways_unchanged(echo_server: Echo, tls_files: Any) -> None:
    server, seen = await echo_server()
    reader, writer = await tls_connect(server.address().port, tls_files.client_context())
    writer.write(b"hello\n")
    assert await asyncio.wait_for(reader.readexactly(12), 2) == b"Echo: hello\n"
    # Far more than one read buffer and many TLS records, in one write.
    big = bytes(range(256)) * 12_000
    writer.write(big)
    got = bytearray()
    while len(got) < len(big):
        got += await asyncio.wait_for(reader.read(1 << 20), 5)
    # Each read is echoed with its own prefix; the payload comes back whole and in order.
    assert got.replace(b"Echo: ", b"") == big
    assert writer.get_extra_info("ssl_object").version() in ("TLSv1.2", "TLSv1.3")
    assert seen[0].tls is not None and seen[0].tls.established
    writer.close()


async def test_tls_1_1_and_older_are_refused(echo_server: Echo, tls_files: Any) -> None:
    server, _ = await echo_server()
    served = make_server_context(tls_files.cert, tls_files.key)
    assert served.minimum_version == ssl.TLSVersion.TLSv1_2
    assert served.maximum_version == ssl.TLSVersion.TLSv1_3
    ctx = tls_files.client_context()
    ctx.minimum_version = ssl.TLSVersion.MINIMUM_SUPPORTED
    ctx.maximum_version = ssl.TLSVersion.TLSv1_1
    with pytest.raises((ssl.SSLError, ConnectionError)):
        await tls_connect(server.address().port, ctx)
    ctx12 = tls_files.client_context()
    ctx12.maximum_version = ssl.TLSVersion.TLSv1_2
    _, writer = await tls_connect(server.address().port, ctx12)
    assert writer.get_extra_info("ssl_object").version() == "TLSv1.2"
    writer.close()


async def test_plaintext_to_a_tls_listener_is_closed(echo_server: Echo) -> None:
    server, seen = await echo_server()
    reader, writer = await asyncio.open_connection("127.0.0.1", server.address().port)
    writer.write(b"hello there, this is not TLS\n")
    data = await asyncio.wait_for(reader.read(), 2)
    # At most a TLS alert record, never an echo of the plaintext.
    assert b"Echo" not in data and (data == b"" or data[0] == 0x15)
    await eventually(lambda: bool(seen) and seen[0].destroyed)
    assert seen[0].tls_error
    writer.close()


async def test_a_handshake_not_finished_in_time_is_closed(echo_server: Echo) -> None:
    server, seen = await echo_server(timeout=0.3)
    reader, writer = await asyncio.open_connection("127.0.0.1", server.address().port)
    writer.write(b"\x16\x03\x01")  # the start of a ClientHello, then silence
    assert await closed_without_bytes(reader, 3)
    await eventually(lambda: bool(seen) and seen[0].destroyed)
    assert seen[0].tls_error == "handshake_timeout"
    writer.close()


async def test_detecting_listener_serves_tls_and_plaintext(
    echo_server: Echo, tls_files: Any
) -> None:
    server, _ = await echo_server(detect=True)
    port = server.address().port
    reader, writer = await tls_connect(port, tls_files.client_context())
    writer.write(b"secret\n")
    assert await asyncio.wait_for(reader.readexactly(13), 2) == b"Echo: secret\n"
    writer.close()
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"plain\n")
    assert await asyncio.wait_for(reader.readexactly(12), 2) == b"Echo: plain\n"
    writer.close()


async def test_tls_required_closes_plaintext_without_a_reply(
    echo_server: Echo, tls_files: Any
) -> None:
    server, seen = await echo_server(detect=True, required=True)
    reader, writer = await asyncio.open_connection("127.0.0.1", server.address().port)
    writer.write(b"plain\n")
    assert await closed_without_bytes(reader)
    assert seen[0].tls_error == "plaintext"
    writer.close()
    reader, writer = await tls_connect(server.address().port, tls_files.client_context())
    writer.write(b"ok\n")
    assert await asyncio.wait_for(reader.readexactly(9), 2) == b"Echo: ok\n"
    writer.close()


async def test_client_certificate_names_the_peer(echo_server: Echo, tls_files: Any) -> None:
    server, seen = await echo_server(ca=True)
    port = server.address().port
    ctx = tls_files.client_context(tls_files.client_cert("alice"))
    reader, writer = await tls_connect(port, ctx)
    writer.write(b"x\n")
    assert await asyncio.wait_for(reader.readexactly(8), 2) == b"Echo: x\n"
    assert seen[0].tls is not None and seen[0].tls.peer_name == "alice"
    writer.close()


@pytest.mark.parametrize("which", ["no certificate", "wrong CA", "expired"])
async def test_a_bad_client_certificate_is_refused(
    echo_server: Echo, tls_files: Any, which: str
) -> None:
    import trustme

    server, seen = await echo_server(ca=True)
    if which == "no certificate":
        ctx = tls_files.client_context()
    elif which == "wrong CA":
        ctx = tls_files.client_context(tls_files.client_cert("mallory", ca=trustme.CA()))
    else:
        past = datetime.datetime(2020, 1, 1, tzinfo=datetime.UTC)
        cert = tls_files.client_cert(
            "mallory", not_before=past, not_after=past + datetime.timedelta(days=1)
        )
        ctx = tls_files.client_context(cert)
    try:
        reader, writer = await tls_connect(server.address().port, ctx)
    except (ssl.SSLError, ConnectionError):
        pass  # TLS 1.2 style: the client sees the alert during its handshake
    else:
        # TLS 1.3: the client's handshake ends first; the server's alert follows.
        with pytest.raises((ssl.SSLError, ConnectionError)):
            writer.write(b"x\n")
            data = await asyncio.wait_for(reader.read(100), 2)
            assert data == b""
            raise ConnectionError("closed")
        writer.close()
    await eventually(lambda: bool(seen) and seen[0].destroyed)
    assert seen[0].tls_error and "certificate" in seen[0].tls_error
