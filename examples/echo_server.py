"""The seed's basic TCP server: a welcome line, then every chunk echoed back.

    python examples/echo_server.py --port 8080
    nc 127.0.0.1 8080

Written with ``create_server(ServerProtocol.TCP).with_options(...).listen(...)`` as on
the seed page. Prints ``listening on HOST:PORT`` once it accepts connections (with
``--port 0`` that is the port the system picked). Stops on Ctrl-C or SIGTERM.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys

from verb_console.net import ServerProtocol, TCPSocket, create_server


async def serve(port: int, host: str) -> None:
    app = create_server(ServerProtocol.TCP)

    def on_connection(socket: TCPSocket) -> None:
        print(f"Client connected: {socket.remote_address}:{socket.remote_port}")
        socket.set_encoding("utf-8")
        socket.write("Welcome to TCP server!\n")

        def on_data(data: str) -> None:
            print(f"Received: {data!r}")
            socket.write(f"Echo: {data}")

        socket.on("data", on_data)
        socket.on("end", lambda: print("Client disconnected"))
        socket.on("error", lambda error: print("Socket error:", error, file=sys.stderr))

    app.with_options(
        port=port,
        host=host,
        tcp={
            "on_connection": on_connection,
            "on_error": lambda error: print("TCP Server error:", error, file=sys.stderr),
            "on_listening": lambda: print(f"listening on {host}:{app.address().port}"),
        },
    )

    await app.listen(port)

    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, app.close)
    await app.serve_forever()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="The seed's echo server on verb_console.net.")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on")
    parser.add_argument("--port", type=int, default=8080, help="port; 0 picks a free one")
    args = parser.parse_args(argv)
    sys.stdout.reconfigure(line_buffering=True)  # type: ignore[union-attr]
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(args.port, args.host))
    return 0


if __name__ == "__main__":
    sys.exit(main())
