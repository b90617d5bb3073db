"""A terminal chat client on ``verb_console.client.JsonClient``.

    python -m verb_console --headless --port 8080
    python examples/chat.py --port 8080 --room lobby --name alice

It works on the default ``auto`` listener (the client speaks first) as on a
pinned ``--protocol json`` one.

Joins ``--room``, sends every line typed on stdin as a room message and prints what
arrives, under the names people chose with ``--name``. ``/msg NAME TEXT`` sends a
private message, ``/all TEXT`` a broadcast, ``/who`` lists who is in the room,
``/help`` lists the commands, ``/quit`` (or end of input) leaves. Commands stay
on this side: a line starting with ``/`` is never sent to the room.

The server knows sessions by id, not by name, so the clients tell each other:
every message's data carries its sender's ``name``; on joining, a client asks
the room ``{"name": ..., "who": true}`` and each member answers privately with
``{"name": ..., "here": true}``. Input may also come from a pipe: the client
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

HELP = """commands:
  TEXT             say TEXT to the room
  /msg NAME TEXT   say TEXT to NAME only
  /all TEXT        say TEXT to everyone on the server
  /who             who is in the room
  /help            this list
  /quit            leave (end of input does too)"""


NAME_WAIT = 1.0
"""Seconds to wait for a newcomer's name, or for the room's answers to ``/msg NAME``."""


def say(text: str) -> None:
    print(text, flush=True)


class Names:
    """Who is who: the name each session id chose, learnt from what they send."""

    def __init__(self) -> None:
        self.by_id: dict[str, str] = {}
        self.answered = asyncio.Event()  # set whenever a member says who they are

    def learn(self, message: dict[str, Any]) -> None:
        data, sender = message.get("data"), message.get("from")
        named = isinstance(data, dict) and isinstance(data.get("name"), str)
        if named and sender and sender != "server":
            self.by_id[str(sender)] = data["name"]  # type: ignore[index]
            self.answered.set()

    def name(self, session_id: str) -> str:
        """The chosen name, or the id for a session that has not said one."""
        return self.by_id.get(session_id, session_id)

    def find(self, name: str) -> list[str]:
        """The ids of ``name`` (exactly, else ignoring case); an id stands for itself."""
        exact = [i for i, n in self.by_id.items() if n == name]
        if exact:
            return exact
        folded = [i for i, n in self.by_id.items() if n.casefold() == name.casefold()]
        return folded or ([name] if name in self.by_id else [])


def describe(message: dict[str, Any], names: Names | None = None) -> str | None:
    """One line for a message from the server; None for what only updates the names."""
    names = names or Names()
    kind = message.get("type")
    data = message.get("data")
    sender = str(message.get("from", "?"))
    if isinstance(data, dict) and data.get("here"):
        return f"* {data.get('name')} is here"
    if isinstance(data, dict) and data.get("who"):
        return f"* {data.get('name')} joined #{message.get('room')}"
    if isinstance(data, dict) and "text" in data:
        sender = data.get("name") or names.name(sender)
        data = data["text"]
    if kind == "room_message":
        return f"[{message.get('room')}] {sender}: {data}"
    if kind == "private":
        return f"(private) {sender}: {data}"
    if kind == "broadcast":
        return f"(all) {sender}: {data}"
    if kind == "user_joined":
        # Announced by name when the newcomer asks who is here, just after (see
        # print_messages for a newcomer that never does).
        return None
    if kind == "user_left":
        return f"* {names.name(str(message.get('connectionId')))} left #{message.get('room')}"
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


async def ask_who(client: JsonClient, room: str, name: str) -> None:
    """Tell the room our name and ask theirs (each member answers privately)."""
    await client.room_message(room, {"name": name, "who": True})


async def find_name(client: JsonClient, room: str, me: str, names: Names, who: str) -> list[str]:
    """The ids called ``who``; asks the room again, once, for a name not heard yet."""
    found = names.find(who)
    if not found:
        names.answered.clear()
        await ask_who(client, room, me)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(NAME_WAIT):
                while not (found := names.find(who)):
                    await names.answered.wait()
                    names.answered.clear()
    return found


async def send_line(
    client: JsonClient, room: str, name: str, line: str, names: Names | None = None
) -> bool:
    """Send one typed line, or run a ``/`` command here; False for ``/quit``."""
    names = names if names is not None else Names()
    if not line.strip():
        return True
    command, _, rest = line.partition(" ")
    try:
        if command == "/quit":
            return False
        if command == "/help":
            say(HELP)
        elif command == "/who":
            here = sorted(set(names.by_id.values()), key=str.casefold)
            say(f"* in #{room}: {', '.join([name, *here])}")
        elif command == "/msg":
            target, _, text = rest.strip().partition(" ")
            if not target or not text:
                say("! usage: /msg NAME TEXT")
                return True
            ids = await find_name(client, room, name, names, target)
            if len(ids) != 1:
                many = f"{len(ids)} people are" if ids else "nobody is"
                say(f"! {many} called {target} in #{room} (/who lists names)")
                return True
            await client.private(ids[0], {"name": name, "text": text})
        elif command == "/all":
            await client.broadcast({"name": name, "text": rest})
        elif line.startswith("/") and not line.startswith("//"):
            say(f"! unknown command {command} (/help lists them; // sends a line starting /)")
        else:
            text = line[1:] if line.startswith("//") else line
            await client.room_message(room, {"name": name, "text": text})
    except ServerError as exc:
        say(f"! {exc.code}: {exc.message}")
    except (ConnectionError, TimeoutError) as exc:
        say(f"! not sent ({exc or 'not connected'})")
    return True


def unnamed(names: Names, joiner: str, room: str) -> None:
    """Announce a newcomer by id once it has had time to say its name, and did not."""
    if joiner not in names.by_id:
        say(f"* {joiner} joined #{room}")


async def print_messages(client: JsonClient, args: argparse.Namespace, names: Names) -> int:
    try:
        async for message in client.messages():
            names.learn(message)
            data = message.get("data")
            if isinstance(data, dict) and data.get("who") and message.get("from"):
                # Someone asks who is here: answer them alone.
                with contextlib.suppress(ServerError, ConnectionError, TimeoutError):
                    await client.private(
                        str(message["from"]), {"name": args.name, "here": True}, confirm=False
                    )
            line = describe(message, names)
            if line is not None:
                say(line)
            elif message.get("type") == "user_joined":
                # A client that never says its name is announced by its id.
                joiner, room = str(message.get("connectionId")), str(message.get("room"))
                asyncio.get_running_loop().call_later(NAME_WAIT, unnamed, names, joiner, room)
    except ConnectionError as exc:
        say(f"* disconnected: {exc}")
        return 1
    return 0


async def read_input(client: JsonClient, args: argparse.Namespace, names: Names) -> int:
    for line in args.send:
        await send_line(client, args.room, args.name, line, names)
    if not args.once:
        async for line in stdin_lines():
            if not await send_line(client, args.room, args.name, line, names):
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
    others = len(joined["members"]) - 1
    here = "nobody else here" if others == 0 else f"{others} other{'s' if others > 1 else ''} here"
    say(f"joined #{args.room} as {args.name} ({here}; /help lists the commands)")
    names = Names()
    printer = asyncio.ensure_future(print_messages(client, args, names))
    with contextlib.suppress(ServerError, ConnectionError, TimeoutError):
        await ask_who(client, args.room, args.name)
    reader = asyncio.ensure_future(read_input(client, args, names))
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
