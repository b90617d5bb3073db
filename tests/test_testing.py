"""The seed's "Testing TCP Server" section, and the ``verb_console.testing`` helpers."""

from __future__ import annotations

import asyncio
import socket

import pytest

from verb_console.net import MessageHandler, TCPServer, TCPSocket
from verb_console.testing import create_tcp_client, create_tcp_server, promise

# --------------------------------------------------------------- the seed's two tests


async def test_tcp_server_accepts_connections() -> None:
    server = create_tcp_server(
        port=0,  # Random port
        on_connection=lambda socket: socket.write("Hello Client!"),
    )

    client = create_tcp_client()
    server_address = server.address()

    await client.connect(server_address.port, "localhost")

    data = await promise(lambda resolve: client.on("data", resolve))

    assert data.decode() == "Hello Client!"

    client.destroy()
    server.close()


async def test_tcp_server_handles_message_protocol() -> None:
    def on_connection(socket: TCPSocket) -> None:
        message_handler = MessageHandler(socket)
        message_handler.on(
            "message",
            lambda message: message_handler.send_message(
                {"type": "response", "echo": message["data"]}
            ),
        )

    server = create_tcp_server(port=0, on_connection=on_connection)

    client = create_tcp_client()
    server_address = server.address()

    await client.connect(server_address.port, "localhost")

    message_handler = MessageHandler(client)
    message_handler.send_message({"type": "test", "data": "Hello Server!"})

    response = await promise(lambda resolve: message_handler.on("message", resolve))

    assert response["type"] == "response"
    assert response["echo"] == "Hello Server!"

    client.destroy()
    server.close()


# --------------------------------------------------------------- the helpers themselves


async def test_the_server_is_bound_before_create_tcp_server_returns() -> None:
    server = create_tcp_server()
    try:
        address = server.address()
        assert isinstance(server, TCPServer)
        assert address.address == "127.0.0.1"
        assert address.port > 0
        # A plain blocking connect succeeds before the loop has run once more.
        with socket.create_connection(("127.0.0.1", address.port), timeout=2):
            pass
    finally:
        server.close()


async def test_create_tcp_server_needs_a_running_event_loop() -> None:
    def outside_the_loop() -> None:
        create_tcp_server()

    with pytest.raises(RuntimeError):
        await asyncio.to_thread(outside_the_loop)


async def test_the_seed_s_camel_case_options_are_applied() -> None:
    connected: list[TCPSocket] = []
    server = create_tcp_server(port=0, onConnection=connected.append, noDelay=False, timeout=1234)
    try:
        assert server.options.no_delay is False
        assert server.options.timeout == 1234
        client = create_tcp_client()
        await client.connect(server.address().port)
        for _ in range(100):
            if connected:
                break
            await asyncio.sleep(0.01)
        assert len(connected) == 1
        client.destroy()
    finally:
        server.close()


async def test_an_unknown_tcp_option_is_refused() -> None:
    with pytest.raises(TypeError, match="unknown tcp option"):
        create_tcp_server(port=0, no_such_option=True)


async def test_a_new_client_is_unconnected_until_connect() -> None:
    client = create_tcp_client()
    assert isinstance(client, TCPSocket)
    assert client.transport is None
    assert client.write("nothing") is False


async def test_connect_to_a_closed_port_raises_connection_refused() -> None:
    server = create_tcp_server()
    port = server.address().port
    server.close()
    client = create_tcp_client()
    with pytest.raises(ConnectionRefusedError):
        await client.connect(port, "127.0.0.1")


async def test_localhost_reaches_an_ipv4_server_when_it_resolves_to_ipv6_first() -> None:
    server = create_tcp_server(port=0, on_connection=lambda socket: socket.write("v4"))
    port = server.address().port
    loop = asyncio.get_running_loop()
    real_getaddrinfo = loop.getaddrinfo
    asked: list[str] = []

    async def ipv6_first(host, port, *args, **kwargs):  # type: ignore[no-untyped-def]
        asked.append(host)
        infos = await real_getaddrinfo("127.0.0.1", port, *args, **kwargs)
        ipv6 = (socket.AF_INET6, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", ("::1", port, 0, 0))
        return [ipv6, *infos]

    loop.getaddrinfo = ipv6_first  # type: ignore[method-assign]
    client = create_tcp_client()
    try:
        await client.connect(port, "localhost")
        data = await asyncio.wait_for(client.once("data"), 2)
    finally:
        del loop.getaddrinfo
        client.destroy()
        server.close()
    assert asked == ["localhost"]
    assert data == b"v4"
    assert client.remote_address == "127.0.0.1"


async def test_once_resolves_with_the_close_event_after_destroy() -> None:
    server = create_tcp_server()
    client = create_tcp_client()
    await client.connect(server.address().port)
    closed = client.once("close")
    client.destroy()
    had_error = await asyncio.wait_for(closed, 2)
    assert had_error is False
    assert client.destroyed
    server.close()


async def test_server_close_ends_the_client_connection() -> None:
    server = create_tcp_server(port=0, on_connection=lambda socket: socket.write("hi"))
    client = create_tcp_client()
    await client.connect(server.address().port)
    await asyncio.wait_for(client.once("data"), 2)
    closed = client.once("close")
    server.close()
    await asyncio.wait_for(closed, 2)
    assert client.destroyed


async def test_promise_keeps_the_first_value_it_is_resolved_with() -> None:
    resolvers = []
    future = promise(resolvers.append)
    resolvers[0]("first")
    resolvers[0]("second")
    assert await future == "first"
    empty = promise(lambda resolve: resolve())
    assert await empty is None
