"""The seed's ``TCPMessageServer``: ping, broadcast, private messages and rooms.

    python examples/message_server.py --port 8080

A teaching example on ``verb_console.net`` and the seed's ``MessageHandler``, standalone
from the hub (``python -m verb_console`` is the full server). It speaks the json
framing of PROTOCOL.md (``<length>\\n<body>``), greets each client with a
``welcome`` carrying its id and copies a request's ``ref`` into the reply, so
``verb_console.client.JsonClient`` can talk to it. Prints ``listening on HOST:PORT``
once it accepts connections.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys
import time
from typing import Any

from verb_console.net import MessageHandler, ServerProtocol, TCPServer, TCPSocket, create_server


def now_ms() -> int:
    return int(time.time() * 1000)


class TCPMessageServer:
    def __init__(self, app: TCPServer, port: int = 8080, host: str = "127.0.0.1") -> None:
        self.app = app
        self.port = port
        self.host = host
        self.clients: dict[str, MessageHandler] = {}
        self.rooms: dict[str, set[str]] = {}
        self.setup_server()

    def setup_server(self) -> None:
        self.app.with_options(
            port=self.port,
            host=self.host,
            tcp={
                "on_connection": self.on_connection,
                "on_listening": lambda: print(
                    f"listening on {self.host}:{self.app.address().port}"
                ),
            },
        )

    def on_connection(self, socket: TCPSocket) -> None:
        client_id = f"{socket.remote_address}:{socket.remote_port}"
        # Set up message handling
        message_handler = MessageHandler(socket)
        self.clients[client_id] = message_handler
        print(f"Client {client_id} connected")
        message_handler.send_message({"type": "welcome", "id": client_id, "server": "example"})

        message_handler.on(
            "message", lambda message: self.handle_message(client_id, message, message_handler)
        )
        message_handler.on("error", lambda error: self.on_bad_frame(client_id, error, socket))

        def on_close(had_error: bool) -> None:
            self.forget(client_id)
            print(f"Client {client_id} disconnected")

        def on_error(error: BaseException) -> None:
            print(f"Socket error for {client_id}:", error, file=sys.stderr)
            self.forget(client_id)

        socket.on("close", on_close)
        socket.on("error", on_error)

    def handle_message(self, client_id: str, message: Any, handler: MessageHandler) -> None:
        if not isinstance(message, dict):
            self.reply(
                handler,
                {"type": "error", "code": "bad_message", "message": "A message must be an object"},
            )
            return
        ref = message.get("ref")
        match message.get("type"):
            case "ping":
                self.reply(handler, {"type": "pong", "timestamp": now_ms()}, ref)
            case "broadcast":
                self.broadcast(message.get("data"), client_id)
            case "private":
                self.send_private_message(message.get("target"), message.get("data"), client_id)
            case "join_room":
                self.join_room(client_id, message.get("room"), handler, ref)
            case kind:
                error = {"code": "unknown_type", "message": f"Unknown message type: {kind}"}
                self.reply(handler, {"type": "error", **error}, ref)

    def reply(self, handler: MessageHandler, message: dict[str, Any], ref: Any = None) -> None:
        if ref is not None:
            message["ref"] = ref
        handler.send_message(message)

    def broadcast(self, data: Any, exclude_client: str | None = None) -> None:
        message = {"type": "broadcast", "from": exclude_client, "data": data, "timestamp": now_ms()}
        for client_id, handler in self.clients.items():
            if client_id != exclude_client:
                handler.send_message(message)

    def send_private_message(self, target_client: Any, data: Any, from_client: str) -> None:
        handler = self.clients.get(target_client)
        if handler is not None:
            handler.send_message(
                {"type": "private", "from": from_client, "data": data, "timestamp": now_ms()}
            )

    def join_room(self, client_id: str, room: Any, handler: MessageHandler, ref: Any) -> None:
        if not isinstance(room, str) or not room:
            error = {"code": "bad_room", "message": "room must be a non-empty string"}
            self.reply(handler, {"type": "error", **error}, ref)
            return
        members = self.rooms.setdefault(room, set())
        members.add(client_id)
        self.reply(handler, {"type": "joined", "room": room, "members": sorted(members)}, ref)

    def on_bad_frame(self, client_id: str, error: Exception, socket: TCPSocket) -> None:
        print(f"Bad frame from {client_id}: {error}", file=sys.stderr)
        socket.destroy()

    def forget(self, client_id: str) -> None:
        self.clients.pop(client_id, None)
        for name in list(self.rooms):
            self.rooms[name].discard(client_id)
            if not self.rooms[name]:
                del self.rooms[name]


async def serve(port: int, host: str) -> None:
    app = create_server(ServerProtocol.TCP)
    TCPMessageServer(app, port, host)
    await app.listen()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, app.close)
    await app.serve_forever()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="The seed's TCPMessageServer on verb_console.net.")
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on")
    parser.add_argument("--port", type=int, default=8080, help="port; 0 picks a free one")
    args = parser.parse_args(argv)
    sys.stdout.reconfigure(line_buffering=True)  # type: ignore[union-attr]
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(args.port, args.host))
    return 0


if __name__ == "__main__":
    sys.exit(main())
