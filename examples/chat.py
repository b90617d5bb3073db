"""A terminal chat client on ``verb_console.client.JsonClient``.

    python -m verb_console --headless --port 8080
    python examples/chat.py --port 8080 --room lobby --name alice

It works on the default ``auto`` listener (the client speaks first) as on a
pinned ``--protocol json`` one.

Joins ``--room``, sends every line typed on stdin as a room message and prints what
arrives. ``/msg ID TEXT`` sends a private message, ``/all TEXT`` a broadcast,
``/quit`` (or end of input) leaves. Input may also come from a pipe: the client
sends each line and exits at its end. ``--send TEXT`` (repeatable) sends lines
before reading stdin; with ``--once`` the client exits as soon as the server has
taken them, without reading stdin at all.

A lost connection is recovered with the client's exponential backoff; the client
rejoins the room on its own.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import sys
import threading
from collections.abc import AsyncIterator
from typing import Any

from verb_console.client import JsonClient, Recovery, ServerError


def say(text: str) -> None:
    print(text, flush=True)


def describe(message: dict[str, Any]) -> str:
    """One line for a message from the server."""
    kind = message.get("type")
    data = message.get("data")
    sender = message.get("from", "?")
    if isinstance(data, dict) and "text" in data:
        sender = data.get("name") or sender
        data = data["text"]
    if kind == "room_message":
        return f"[{message.get('room')}] {sender}: {data}"
    if kind == "private":
        return f"(private) {sender}: {data}"
    if kind == "broadcast":
        return f"(all) {sender}: {data}"
    if kind == "user_joined":
        return f"* {message.get('connectionId')} joined #{message.get('room')}"
    if kind == "user_left":
        return f"* {message.get('connectionId')} left #{message.get('room')}"
    if kind == "server_shutdown":
        return f"* server: {message.get('message')}"
    if kind == "closing":
        return f"* server closed the connection ({message.get('reason')})"
    if kind == "error":
        return f"! {message.get('code')}: {message.get('message')}"
    return f"* {message}"


async def stdin_lines() -> AsyncIterator[str]:
    """Lines of stdin, read on a daemon thread so a terminal, a pipe or a file all work."""
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[str | None] = asyncio.Queue()

    def pump() -> None:
        try:
            for line in sys.stdin:
                loop.call_soon_threadsafe(queue.put_nowait, line)
        except (OSError, ValueError):
            pass
        with contextlib.suppress(RuntimeError):  # the loop is already closed
            loop.call_soon_threadsafe(queue.put_nowait, None)

    threading.Thread(target=pump, name="stdin", daemon=True).start()
    while (line := await queue.get()) is not None:
        yield line.rstrip("\r\n")


async def send_line(client: JsonClient, room: str, name: str, line: str) -> bool:
    """Send one typed line; False for ``/quit``."""
    if not line.strip():
        return True
    try:
        if line == "/quit":
            return False
        if line.startswith("/msg "):
            _, target, text = [*line.split(" ", 2), ""][:3]
            await client.private(target, {"name": name, "text": text})
        elif line.startswith("/all "):
            await client.broadcast({"name": name, "text": line[5:]})
        else:
            await client.room_message(room, {"name": name, "text": line})
    except ServerError as exc:
        say(f"! {exc.code}: {exc.message}")
    except (ConnectionError, TimeoutError) as exc:
        say(f"! not sent ({exc or 'not connected'})")
    return True


async def print_messages(client: JsonClient) -> int:
    try:
        async for message in client.messages():
            say(describe(message))
    except ConnectionError as exc:
        say(f"* disconnected: {exc}")
        return 1
    return 0


async def read_input(client: JsonClient, args: argparse.Namespace) -> int:
    for line in args.send:
        await send_line(client, args.room, args.name, line)
    if not args.once:
        async for line in stdin_lines():
            if not await send_line(client, args.room, args.name, line):
                break
    return 0


def recovered(recovery: Recovery) -> str:
    """What came back after the connection broke: all of it, or where the holes are."""
    if recovery.resumed:
        return f"* session resumed: nothing lost ({recovery.replayed} missed messages follow)"
    rooms = ", ".join(
        f"#{room} {'recovered' if ok else 'has a gap'}" for room, ok in recovery.rooms.items()
    )
    return f"* new session; private messages meanwhile are lost; {rooms or 'no rooms'}"


async def chat(args: argparse.Namespace) -> int:
    client = JsonClient(
        args.host,
        args.port,
        max_attempts=args.attempts,
        base_delay=args.base_delay,
        on_disconnect=lambda reason: say(f"* connection ended ({reason})"),
        on_reconnect=lambda welcome: say(f"* reconnected as {welcome['id']}"),
        on_recovery=lambda recovery: say(recovered(recovery)),
    )
    try:
        await client.connect()
    except OSError as exc:  # refused, timed out, hung up: the client's error says which
        reason = str(exc) or type(exc).__name__
        print(f"chat: cannot connect to {args.host}:{args.port}: {reason}", file=sys.stderr)
        return 1
    try:
        joined = await client.join_room(args.room)
    except (ServerError, ConnectionError, TimeoutError) as exc:
        print(f"chat: cannot join {args.room!r}: {exc}", file=sys.stderr)
        await client.close()
        return 1
    say(f"joined #{args.room} as {client.id} ({len(joined['members'])} members)")
    printer = asyncio.ensure_future(print_messages(client))
    reader = asyncio.ensure_future(read_input(client, args))
    done, _ = await asyncio.wait({printer, reader}, return_when=asyncio.FIRST_COMPLETED)
    if reader in done:
        # Let messages that already arrived be printed before leaving.
        await asyncio.sleep(0.05)
    await client.close()
    reader.cancel()
    status = await printer
    with contextlib.suppress(asyncio.CancelledError):
        await reader
    return status


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Terminal chat on a verb-console json server.")
    parser.add_argument("--host", default="127.0.0.1", help="server address")
    parser.add_argument("--port", type=int, default=8080, help="server port")
    parser.add_argument("--room", default="lobby", help="room to join")
    parser.add_argument(
        "--name", default=os.environ.get("USER") or "guest", help="name shown to others"
    )
    parser.add_argument(
        "--send", action="append", default=[], metavar="TEXT", help="send TEXT first (repeatable)"
    )
    parser.add_argument(
        "--once", action="store_true", help="exit after the --send lines, without reading stdin"
    )
    parser.add_argument(
        "--attempts", type=int, default=5, help="reconnection attempts after a lost connection"
    )
    parser.add_argument(
        "--base-delay",
        type=float,
        default=1.0,
        metavar="SECONDS",
        help="wait before the first reconnection attempt; doubles after each (default 1)",
    )
    args = parser.parse_args(argv)
    with contextlib.suppress(KeyboardInterrupt):
        return asyncio.run(chat(args))
    return 130


if __name__ == "__main__":
    sys.exit(main())
