"""The example exchanges of docs/protocol.md, parsed and played against a live server.

An exchange is a fenced block right after an HTML comment that names it and the
settings its server needs::

    <!-- exchange json-ping: protocol=json -->
    ```text
    A< {"type":"welcome","id":"<A>","server":"verb-console","version":"<version>",...}
    A> {"type":"ping","ref":1}
    A< {"type":"pong","ref":1,"timestamp":"<T>"}
    ```

Each line is one step of one client (a capital letter): ``A>`` the client
sends, ``A<`` the client must receive this next. What a line holds depends on
the client's codec (the listener's protocol, or ``A=echo`` in the comment):

- json (and admin, the admin socket): one JSON body; the checker frames it;
- echo: one text line, without its ``\\n``;
- binary: ``TYPE[/FLAGS] [PAYLOAD]``, TYPE and FLAGS by name or in hex, the
  payload a JSON object or a JSON string (its bytes);
- mux: ``STREAM PAYLOAD``: on stream 0 a JSON object; on a json stream a JSON
  body (framed inside the stream); on an echo stream a JSON string of bytes.

``A>> "..."`` sends raw bytes (a JSON string, \\u00XX for any byte), ``A> (close)``
closes the client's connection, and ``A< (closed)`` expects the server to close it.
``O> (auth NAME:TOKEN,...)`` rewrites the server's auth file (an operator's edit
before a ``reload``).

The placeholder convention (docs/protocol.md says it too): a string ``"<A>"`` is
client A's session id; ``<A>`` inside a longer string stands for that id too
(``"<A>#1"``); any other ``"<word>"`` stands for a value that varies from run to
run (a timestamp, a token, a version) and matches anything; ``"<$name>"``
matches anything and keeps the value, which a later line may send as ``<$name>``.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import re
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from verb_console.protocols import binary as b
from verb_console.protocols.json import JsonDecoder
from verb_console.runtime import Runtime
from verb_console.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
STEP_TIMEOUT = 10.0
_HEAD = re.compile(r"<!--\s*exchange\s+([\w.-]+)\s*:?(.*?)-->\s*\n```[^\n]*\n(.*?)\n```", re.S)
_LINE = re.compile(r"([A-Z])(>>|>|<)\s?(.*)")
_PLACE = re.compile(r"<(\$?[A-Za-z][\w ]*)>")
_BINARY_NAMES = {
    name: value for name, value in vars(b).items() if name.isupper() and isinstance(value, int)
}
_FLAG_NAMES = {name: getattr(b, "FILE_" + name) for name in ("START", "CHUNK", "END", "ABORT")}


@dataclass
class Step:
    client: str
    kind: str  # ">" send, ">>" send raw, "<" receive
    text: str
    line: int


@dataclass
class Exchange:
    name: str
    options: dict[str, Any]
    steps: list[Step]
    line: int

    @property
    def codecs(self) -> dict[str, str]:
        default = str(self.options.get("protocol", "json"))
        return {
            s.client: str(self.options.get(s.client, default)).partition("@")[0] for s in self.steps
        }

    @property
    def nodes(self) -> list[str]:
        """The cluster's node names (``nodes=a,b``), or one unnamed server."""
        return str(self.options.get("nodes", "")).split(",")

    def node_of(self, letter: str) -> str:
        """The node a client connects to (``B=json@b``), else the first."""
        return str(self.options.get(letter, "")).partition("@")[2] or self.nodes[0]


def parse(markdown: str) -> list[Exchange]:
    """Every exchange of a page, in page order."""
    found = []
    for match in _HEAD.finditer(markdown):
        name, opts, body = match.groups()
        options: dict[str, Any] = {}
        for token in opts.split():
            key, _, value = token.partition("=")
            try:
                options[key] = orjson.loads(value)
            except orjson.JSONDecodeError:
                options[key] = value
        first = markdown.count("\n", 0, match.start(3)) + 1
        steps = []
        for i, raw in enumerate(body.split("\n")):
            if not raw.strip():
                continue
            m = _LINE.fullmatch(raw)
            if m is None:
                raise ValueError(f"exchange {name}, line {first + i}: cannot read {raw!r}")
            steps.append(Step(m[1], m[2], m[3], first + i))
        found.append(Exchange(name, options, steps, first))
    return found


def _raw_bytes(text: str) -> bytes:
    value = orjson.loads(text)
    assert isinstance(value, str), text
    try:
        return value.encode("latin-1")
    except UnicodeEncodeError:
        return value.encode()


def _frame(body: bytes) -> bytes:
    return b"%d\n%s" % (len(body), body)


class Mismatch(AssertionError):
    pass


def matches(expected: Any, actual: Any, ids: dict[str, str]) -> bool:
    """``actual`` is ``expected`` with the placeholders filled in."""
    if isinstance(expected, str):
        whole = _PLACE.fullmatch(expected)
        if whole is not None:
            name = whole[1]
            if name in ids:
                return actual == ids[name]
            if name.startswith("$"):  # captured, for a later line to send
                ids[name] = actual
            return True
        if isinstance(actual, str):
            return _PLACE.sub(lambda m: str(ids.get(m[1], m[0])), expected) == actual
        return False
    if isinstance(expected, dict):
        return (
            isinstance(actual, dict)
            and expected.keys() == actual.keys()
            and all(matches(v, actual[k], ids) for k, v in expected.items())
        )
    if isinstance(expected, list):
        return (
            isinstance(actual, list)
            and len(expected) == len(actual)
            and all(matches(e, a, ids) for e, a in zip(expected, actual, strict=True))
        )
    return type(expected) is type(actual) and expected == actual


@dataclass
class Client:
    codec: str
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    events: asyncio.Queue[Any] = field(default_factory=asyncio.Queue)
    task: asyncio.Task[None] | None = None
    streams: dict[int, str] = field(default_factory=dict)

    async def pump(self) -> None:
        """Read what the server sends and queue it as the codec's events."""
        try:
            if self.codec in ("json", "admin"):
                dec = JsonDecoder(1 << 30)
                while data := await self.reader.read(65536):
                    for body in dec.feed(data):
                        self.events.put_nowait(orjson.loads(body))
            elif self.codec == "echo":
                while line := await self.reader.readline():
                    self.events.put_nowait(line.decode().removesuffix("\n"))
            elif self.codec == "binary":
                while True:
                    head = await self.reader.readexactly(8)
                    kind, length, flags = struct.unpack(">HIH", head)
                    self.events.put_nowait((kind, flags, await self.reader.readexactly(length)))
            else:
                decoders: dict[int, JsonDecoder] = {}
                while True:
                    sid, length = struct.unpack(">II", await self.reader.readexactly(8))
                    payload = await self.reader.readexactly(length)
                    kind = self.streams.get(sid)
                    if sid == 0:
                        self.events.put_nowait((0, orjson.loads(payload)))
                    elif kind == "json":
                        dec = decoders.setdefault(sid, JsonDecoder(1 << 30))
                        for body in dec.feed(payload):
                            self.events.put_nowait((sid, orjson.loads(body)))
                    else:
                        self.events.put_nowait((sid, payload))
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        self.events.put_nowait(EOFError())

    def encode(self, text: str) -> bytes:
        if self.codec in ("json", "admin"):
            return _frame(text.encode())
        if self.codec == "echo":
            return text.encode() + b"\n"
        if self.codec == "binary":
            head, _, payload = text.partition(" ")
            name, _, flags = head.partition("/")
            kind = _BINARY_NAMES.get(name) or int(name, 16)
            flag = _FLAG_NAMES.get(flags) or (int(flags, 16) if flags else 0)
            data = _payload_bytes(payload)
            return struct.pack(">HIH", kind, len(data), flag) + data
        sid_text, _, payload = text.partition(" ")
        sid = int(sid_text)
        if sid == 0:
            msg = orjson.loads(payload)
            if msg.get("type") == "stream_create":
                self.streams[msg["streamId"]] = msg["streamType"]
            data = payload.encode()
        elif self.streams.get(sid) == "json":
            data = _frame(payload.encode())
        else:
            data = _payload_bytes(payload)
        return struct.pack(">II", sid, len(data)) + data


def _payload_bytes(payload: str) -> bytes:
    payload = payload.strip()
    if not payload:
        return b""
    if payload.startswith('"'):
        return _raw_bytes(payload)
    return payload.encode()


class Player:
    """Plays one exchange against a server started for it."""

    def __init__(self, exchange: Exchange, tmp: Path, redis_url: str = "") -> None:
        self.exchange = exchange
        self.tmp = tmp
        self.redis_url = redis_url
        self.clients: dict[str, Client] = {}
        self.ids: dict[str, str] = {}
        self.runtimes: dict[str, Runtime] = {}

    def settings(self, node: str) -> Settings:
        values: dict[str, Any] = {
            "host": "127.0.0.1",
            "port": 0,
            "upload_dir": str(self.tmp / f"uploads{node}"),
            "admin_socket": str(self.tmp / f"admin{node}.sock"),
            "state_dir": str(self.tmp / f"state{node}"),  # bans are kept there
        }
        if node:
            values.update(cluster=self.redis_url, node_name=node)
        for key, value in self.exchange.options.items():
            if (len(key) == 1 and key.isupper()) or key in ("nodes", "slow_turn"):
                continue
            if key == "auth":  # NAME:TOKEN, written to an auth file
                values["auth_file"] = str(self.write_auth(str(value)))
                continue
            if key == "policy":  # a path from the repository's root
                value = str(ROOT / str(value))
            if key.endswith("?"):  # set only where the setting exists
                key = key[:-1]
                if key not in Settings.names():
                    continue
            values[key] = value
        return Settings(**values)

    def write_auth(self, users: str) -> Path:
        """The auth file of ``NAME:TOKEN[,NAME:TOKEN...]``, as ``verb-console token`` makes it."""
        path = self.tmp / "auth.txt"
        lines = []
        for user in users.split(","):
            name, _, token = user.partition(":")
            lines.append(f"{name}:{hashlib.sha256(token.encode()).hexdigest()}\n")
        path.write_text("".join(lines))
        return path

    async def run(self) -> None:
        for node in self.exchange.nodes:
            self.runtimes[node] = runtime = Runtime(self.settings(node))
            await runtime.start()
            if "slow_turn" in self.exchange.options:
                # A loop turn this long (seconds) is a slow one, noted in the
                # overview: an exchange that shows a quiet server's overview
                # unchanged sets it above what a loaded test machine's turns take.
                runtime.hub.turns.slow = float(self.exchange.options["slow_turn"])
        try:
            await self.cluster_formed()
            for step in self.exchange.steps:
                await self.step(step)
            await asyncio.sleep(0.05)
            for letter, client in self.clients.items():
                if not client.events.empty():
                    extra = client.events.get_nowait()
                    if not isinstance(extra, EOFError):
                        raise Mismatch(f"{self.where()}: {letter} also received {extra!r}")
        finally:
            for client in self.clients.values():
                client.writer.close()
                if client.task is not None:
                    client.task.cancel()
            for runtime in self.runtimes.values():
                runtime.hub.force_shutdown()
            for runtime in self.runtimes.values():
                await asyncio.wait_for(runtime.hub.wait_stopped(), 10)

    async def cluster_formed(self) -> None:
        """Wait until every node's Redis link is up and it knows every other node
        (what a client sees before then is what a node sees while Redis is away)."""
        names = set(self.exchange.nodes)
        for _ in range(400):
            infos = [r.hub.cluster_info() for r in self.runtimes.values()]
            if all(
                i is None or (i.link == "up" and {n.name for n in i.nodes} == names) for i in infos
            ):
                return
            await asyncio.sleep(0.05)
        raise Mismatch(f"{self.where()}: the cluster did not form within 20 s: {infos}")

    def where(self, step: Step | None = None) -> str:
        line = f", line {step.line}" if step else ""
        return f"docs/protocol.md exchange {self.exchange.name}{line}"

    async def client(self, letter: str) -> Client:
        if letter in self.clients:
            return self.clients[letter]
        runtime = self.runtimes[self.exchange.node_of(letter)]
        codec = self.exchange.codecs[letter]
        if codec == "admin":
            reader, writer = await asyncio.open_unix_connection(str(runtime.admin_path))
        else:
            reader, writer = await asyncio.open_connection("127.0.0.1", runtime.port)
        if codec != "admin":
            host, port = writer.get_extra_info("sockname")[:2]
            self.ids[letter] = f"{host}:{port}"
        c = Client(codec, reader, writer)
        c.task = asyncio.create_task(c.pump())
        self.clients[letter] = c
        return c

    async def step(self, step: Step) -> None:
        c = await self.client(step.client)
        text = _PLACE.sub(lambda m: str(self.ids.get(m[1], m[0])), step.text)
        if step.kind == ">>":
            c.writer.write(_raw_bytes(text))
        elif step.kind == ">":
            if step.text.startswith("(auth "):  # the operator edits the auth file
                self.write_auth(step.text.removeprefix("(auth ").removesuffix(")"))
                return
            if step.text == "(close)":
                c.writer.close()
                with contextlib.suppress(ConnectionError):
                    await c.writer.wait_closed()
                return
            c.writer.write(c.encode(text))
        else:
            await self.expect(c, step)

    async def expect(self, c: Client, step: Step) -> None:
        try:
            got = await asyncio.wait_for(c.events.get(), STEP_TIMEOUT)
        except TimeoutError:
            raise Mismatch(f"{self.where(step)}: nothing received, expected {step.text}") from None
        if step.text == "(closed)":
            if not isinstance(got, EOFError):
                raise Mismatch(f"{self.where(step)}: expected the close, got {got!r}")
            return
        if isinstance(got, EOFError):
            raise Mismatch(f"{self.where(step)}: connection closed, expected {step.text}")
        if not self.same(c, step.text, got):
            raise Mismatch(f"{self.where(step)}:\n  expected {step.text}\n  received {got!r}")

    def same(self, c: Client, text: str, got: Any) -> bool:
        if c.codec in ("json", "admin"):
            return matches(orjson.loads(text), got, self.ids)
        if c.codec == "echo":
            return matches(text, got, self.ids)
        if c.codec == "binary":
            head, _, payload = text.partition(" ")
            name, _, flags = head.partition("/")
            kind, flag, data = got
            if kind != (_BINARY_NAMES.get(name) or int(name, 16)):
                return False
            if flags and flag != (_FLAG_NAMES.get(flags) or int(flags, 16)):
                return False
            return self._payload_same(payload.strip(), data)
        sid_text, _, payload = text.partition(" ")
        sid, data = got
        if sid != int(sid_text):
            return False
        if isinstance(data, dict):
            return matches(orjson.loads(payload), data, self.ids)
        return self._payload_same(payload.strip(), data)

    def _payload_same(self, payload: str, data: bytes) -> bool:
        if not payload:
            return data == b""
        if payload.startswith('"'):
            return _raw_bytes(payload) == data
        try:
            return matches(orjson.loads(payload), orjson.loads(data), self.ids)
        except orjson.JSONDecodeError:
            return False
