"""The seed's ``verb/testing`` helpers: a throwaway TCP server and an unconnected client.

Written for tests that read like the seed's::

    server = create_tcp_server(port=0, on_connection=lambda socket: socket.write("Hello Client!"))
    client = create_tcp_client()
    server_address = server.address()
    await client.connect(server_address.port, "localhost")
    data = await promise(lambda resolve: client.on("data", resolve))
    client.destroy()
    server.close()
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from .net import ServerProtocol, TCPServer, TCPSocket, create_server

__all__ = ["create_tcp_client", "create_tcp_server", "promise"]


def create_tcp_server(
    port: int = 0,
    on_connection: Callable[[TCPSocket], Any] | None = None,
    host: str = "127.0.0.1",
    **tcp_options: Any,
) -> TCPServer:
    """A TCP server bound and accepting on the running event loop, with no ``await`` needed.

    The socket is bound before this returns, so ``server.address().port`` is the real
    port at once (port 0 picks a free one). ``tcp_options`` are the seed's ``tcp``
    options, in snake_case or camelCase (``on_error``, ``timeout``, ``noDelay``...).
    Stop it with ``server.close()``. Must be called from inside a running event loop.
    """
    options: dict[str, Any] = dict(tcp_options)
    if on_connection is not None:
        options["on_connection"] = on_connection
    server = create_server(ServerProtocol.TCP).with_options(port=port, host=host, tcp=options)
    server.listen()
    return server


def create_tcp_client() -> TCPSocket:
    """An unconnected client socket: ``await client.connect(port, host)``, then the seed's API.

    ``connect`` tries every address ``host`` resolves to, in order, so ``"localhost"``
    reaches a server on 127.0.0.1 even where it resolves to ``::1`` first.
    """
    return TCPSocket()


def promise(executor: Callable[[Callable[..., None]], Any]) -> asyncio.Future[Any]:
    """The seed's ``new Promise((resolve) => ...)``: a future ``executor``'s ``resolve`` settles.

    ``resolve`` may be called any number of times (a ``data`` listener fires on every
    read); only the first call counts, and a call with no argument resolves to None.
    """
    future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()

    def resolve(*args: Any) -> None:
        if not future.done():
            future.set_result(args[0] if args else None)

    executor(resolve)
    return future
