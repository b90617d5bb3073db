"""Authentication on every protocol (PROTOCOL.md section 8), over real sockets."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import struct
from pathlib import Path
from typing import Any

import pytest
from helpers import closed_without_bytes, eventually, frame, open_raw, tls_for, wire_fixtures

from verb_console.hub import LiveHubView
from verb_console.hub.auth import AuthFailures, AuthFile
from verb_console.runtime import Runtime

pytestmark = pytest.mark.timeout(60)

# Every test here runs in plaintext, over TLS, and over TLS on uvloop.
wire, event_loop_policy = wire_fixtures()

TOKENS = {"alice": "tok-alice-1", "bob": "tok-bob-1"}
AUTH, AUTH_OK, HEARTBEAT, HEARTBEAT_ACK, NOTICE, ERROR = 0x3, 0x4, 0x1, 0x2, 0x30, 0xFF


def auth_line(name: str, token: str) -> str:
    return f"{name}:{hashlib.sha256(token.encode()).hexdigest()}\n"


@pytest.fixture
def auth_file(tmp_path: Path) -> Path:
    path = tmp_path / "tokens"
    path.write_text(
        "# users\n\n"
        + "".join(auth_line(n, t) for n, t in TOKENS.items())
        # a rotated token for alice
        + auth_line("alice", "tok-alice-2")
    )
    return path


@pytest.fixture
async def serve(start_server: Any, tmp_path: Path, auth_file: Path) -> Any:
    async def start(protocol: str, **overrides: Any) -> Runtime:
        overrides.setdefault("upload_dir", str(tmp_path / "uploads"))
        overrides.setdefault("max_per_ip", 0)
        overrides.setdefault("auth_file", str(auth_file))
        return await start_server(protocol=protocol, **overrides)

    return start


async def raw(port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection("127.0.0.1", port, limit=1 << 22, **tls_for(port))


async def read_json(reader: asyncio.StreamReader) -> dict[str, Any]:
    header = await asyncio.wait_for(reader.readuntil(b"\n"), 3)
    return json.loads(await asyncio.wait_for(reader.readexactly(int(header)), 3))


async def read_bin(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    kind, n, _ = struct.unpack(">HIH", await asyncio.wait_for(reader.readexactly(8), 3))
    return kind, await asyncio.wait_for(reader.readexactly(n), 3)


async def read_mux(reader: asyncio.StreamReader) -> tuple[int, Any]:
    sid, n = struct.unpack(">II", await asyncio.wait_for(reader.readexactly(8), 3))
    payload = await asyncio.wait_for(reader.readexactly(n), 3)
    return sid, json.loads(payload) if sid == 0 else payload


def mux(sid: int, payload: bytes) -> bytes:
    return struct.pack(">II", sid, len(payload)) + payload


async def eof(reader: asyncio.StreamReader) -> None:
    with contextlib.suppress(ConnectionResetError):
        assert await asyncio.wait_for(reader.read(1), 3) == b""


def reasons(rt: Runtime) -> list[tuple[str, str]]:
    return [(c.reason, c.detail) for c in rt.hub.closed_log]


# --------------------------------------------------------------- json


async def test_a_json_session_authenticates_then_works_as_before(serve) -> None:
    rt = await serve("json")
    reader, writer = await raw(rt.port)
    welcome = await read_json(reader)
    assert welcome["type"] == "welcome" and welcome["auth"] == "required"
    # The auth message and a ping in one write: the ping is served after it.
    writer.write(
        frame({"type": "auth", "token": "tok-alice-2", "ref": "a"}) + frame({"type": "ping"})
    )
    assert await read_json(reader) == {"type": "authenticated", "user": "alice", "ref": "a"}
    assert (await read_json(reader))["type"] == "pong"
    sid = welcome["id"]
    assert rt.hub.sessions[sid].user == "alice"
    assert rt.hub.sessions[sid].view.user == "alice"
    assert [s.user for s in LiveHubView(rt.hub).sessions()] == ["alice"]
    # A second auth is bad_message, and the session goes on.
    writer.write(frame({"type": "auth", "token": "tok-alice-1", "ref": 2}))
    err = await read_json(reader)
    assert (err["type"], err["code"], err["ref"]) == ("error", "bad_message", 2)
    writer.write(frame({"type": "ping"}))
    assert (await read_json(reader))["type"] == "pong"
    writer.close()
    await eventually(lambda: not rt.hub.sessions)
    assert any(f"{sid} (user alice) closed" in e.text for e in rt.hub.events)
    assert any(f"{sid} authenticated as alice" in e.text for e in rt.hub.events)


@pytest.mark.parametrize(
    ("first", "code"),
    [
        ({"type": "auth", "token": "wrong", "ref": 9}, "auth_failed"),
        ({"type": "auth", "token": "tok-alice-1\u0000", "ref": 9}, "auth_failed"),
        ({"type": "auth", "token": 12, "ref": 9}, "auth_failed"),
        ({"type": "ping", "ref": 9}, "auth_required"),
    ],
)
async def test_a_json_session_that_fails_gets_the_error_then_closing_then_the_close(
    serve, first: dict[str, Any], code: str
) -> None:
    rt = await serve("json")
    reader, writer = await raw(rt.port)
    await read_json(reader)
    writer.write(frame(first))
    err = await read_json(reader)
    assert (err["type"], err["code"], err["ref"]) == ("error", code, 9)
    assert await read_json(reader) == {"type": "closing", "reason": "auth_failed"}
    await eof(reader)
    await eventually(lambda: bool(rt.hub.closed_log))
    assert reasons(rt) == [("auth_failed", code)]
    assert rt.hub.auth_failures.failures("127.0.0.1") == (1 if code == "auth_failed" else 0)
    writer.close()


async def test_without_an_auth_file_auth_is_an_unknown_type(start_server, connect) -> None:
    rt = await start_server()
    client = await connect(rt)
    assert "auth" not in client.welcome
    reply = await client.request({"type": "auth", "token": "x"})
    assert (reply["code"], reply["message"]) == ("unknown_type", "Unknown message type: auth")


async def test_a_framing_error_before_authentication_is_handled_as_usual(serve) -> None:
    rt = await serve("json")
    reader, writer = await raw(rt.port)
    await read_json(reader)
    writer.write(b"12x\n")
    assert (await read_json(reader))["code"] == "bad_header"
    assert await read_json(reader) == {"type": "closing", "reason": "protocol_error"}
    await eof(reader)
    writer.close()


async def test_a_session_not_authenticated_in_time_gets_closing_auth_timeout(serve) -> None:
    rt = await serve("json", handshake_timeout=0.3)
    reader, writer = await raw(rt.port)
    await read_json(reader)
    assert await read_json(reader) == {"type": "closing", "reason": "auth_timeout"}
    await eof(reader)
    await eventually(lambda: bool(rt.hub.closed_log))
    assert reasons(rt)[0][0] == "auth_timeout"
    writer.close()


# --------------------------------------------------------------- binary, echo, mux, auto


async def test_a_binary_session_authenticates_with_an_auth_frame(serve) -> None:
    rt = await serve("binary")
    reader, writer = await raw(rt.port)
    writer.write(struct.pack(">HIH", AUTH, 9, 0) + b"tok-bob-1" + struct.pack(">HIH", 1, 0, 0))
    kind, payload = await read_bin(reader)
    assert (kind, json.loads(payload)) == (AUTH_OK, {"user": "bob"})
    assert await read_bin(reader) == (HEARTBEAT_ACK, b"pong")
    writer.write(struct.pack(">HIH", AUTH, 9, 0) + b"tok-bob-1")
    kind, payload = await read_bin(reader)
    assert (kind, json.loads(payload)["code"]) == (ERROR, "bad_message")
    writer.close()


@pytest.mark.parametrize(
    ("first", "code"),
    [
        (struct.pack(">HIH", AUTH, 5, 0) + b"wrong", "auth_failed"),
        (struct.pack(">HIH", HEARTBEAT, 0, 0), "auth_required"),
    ],
)
async def test_a_binary_session_that_fails_gets_error_then_notice_closing(
    serve, first: bytes, code: str
) -> None:
    rt = await serve("binary")
    reader, writer = await raw(rt.port)
    writer.write(first)
    kind, payload = await read_bin(reader)
    assert (kind, json.loads(payload)["code"]) == (ERROR, code)
    kind, payload = await read_bin(reader)
    assert (kind, json.loads(payload)) == (NOTICE, {"type": "closing", "reason": "auth_failed"})
    await eof(reader)
    writer.close()


async def test_an_echo_session_authenticates_with_its_first_line(serve) -> None:
    rt = await serve("echo")
    reader, writer = await raw(rt.port)
    assert await reader.readline() == b"Welcome to TCP server!\n"
    writer.write(b"AUTH tok-alice-1\r\nhello\n")
    assert await asyncio.wait_for(reader.readline(), 3) == b"OK alice\n"
    assert await asyncio.wait_for(reader.readline(), 3) == b"Echo: hello\n"
    writer.close()


@pytest.mark.parametrize("first", [b"AUTH nope\n", b"hello\n", b"AUTH tok\x00alice\n"])
async def test_an_echo_session_that_fails_gets_the_closing_line(serve, first: bytes) -> None:
    rt = await serve("echo")
    reader, writer = await raw(rt.port)
    await reader.readline()
    writer.write(first)
    assert await asyncio.wait_for(reader.readline(), 3) == b"[server] closing: auth_failed\n"
    await eof(reader)
    writer.close()


async def test_a_mux_connection_authenticates_once_for_all_its_streams(serve) -> None:
    rt = await serve("mux")
    reader, writer = await raw(rt.port)
    writer.write(mux(0, b'{"type":"auth","token":"tok-bob-1","ref":1}'))
    assert await read_mux(reader) == (0, {"type": "authenticated", "user": "bob", "ref": 1})
    writer.write(mux(0, b'{"type":"stream_create","streamId":1,"streamType":"json"}'))
    assert (await read_mux(reader))[1]["type"] == "stream_created"
    sid, payload = await read_mux(reader)
    _header, body = payload.split(b"\n", 1)
    welcome = json.loads(body)
    assert sid == 1 and welcome["type"] == "welcome" and "auth" not in welcome
    assert rt.hub.sessions[welcome["id"]].user == "bob"
    writer.write(mux(0, b'{"type":"auth","token":"tok-bob-1"}'))
    assert (await read_mux(reader))[1]["code"] == "bad_message"
    writer.close()


@pytest.mark.parametrize(
    ("first", "code"),
    [
        (mux(0, b'{"type":"auth","token":"bad"}'), "auth_failed"),
        (mux(0, b'{"type":"ping"}'), "auth_required"),
        (mux(1, b"5\nhello"), "auth_required"),
    ],
)
async def test_a_mux_connection_that_fails_gets_control_error_then_closing(
    serve, first: bytes, code: str
) -> None:
    rt = await serve("mux")
    reader, writer = await raw(rt.port)
    writer.write(first)
    assert (await read_mux(reader))[1]["code"] == code
    assert await read_mux(reader) == (0, {"type": "closing", "reason": "auth_failed"})
    await eof(reader)
    writer.close()


async def test_an_auto_listener_detects_then_authenticates(serve) -> None:
    rt = await serve("auto")
    reader, writer = await raw(rt.port)
    writer.write(frame({"type": "auth", "token": "tok-alice-1"}))
    welcome = await read_json(reader)
    assert welcome["auth"] == "required"
    assert (await read_json(reader))["user"] == "alice"
    writer.close()
    reader, writer = await raw(rt.port)
    writer.write(b"AUTH tok-bob-1\n")
    assert await reader.readline() == b"Welcome to TCP server!\n"
    assert await reader.readline() == b"OK bob\n"
    writer.close()


# --------------------------------------------------------------- brute force


async def test_five_wrong_tokens_refuse_the_address_at_accept_even_with_no_throttle(
    serve,
) -> None:
    rt = await serve("echo", max_per_ip=0)
    for _ in range(5):
        reader, writer = await raw(rt.port)
        await reader.readline()
        writer.write(b"AUTH wrong\n")
        assert await reader.readline() == b"[server] closing: auth_failed\n"
        writer.close()
    reader, writer = await asyncio.open_connection("127.0.0.1", rt.port)
    assert await closed_without_bytes(reader)
    writer.close()
    assert rt.hub.closed_log[-1].reason == "auth_blocked"
    # Another address is not refused.
    sock = await open_raw(rt.port, source_ip="127.0.0.2")
    reader, writer = await asyncio.open_connection(sock=sock, **tls_for(rt.port))
    assert await asyncio.wait_for(reader.readline(), 3) == b"Welcome to TCP server!\n"
    writer.close()


def test_failures_are_counted_per_address_and_ipv6_per_64_and_end_with_the_window() -> None:
    now = [0.0]
    failures = AuthFailures(window_s=60, clock=lambda: now[0])
    for _ in range(4):
        failures.record("2001:db8::1")
    assert not failures.blocked("2001:db8::2")
    failures.record("2001:db8::ffff")  # the same /64
    assert failures.blocked("2001:db8::3")
    assert not failures.blocked("2001:db8:0:1::1")
    assert not failures.blocked("10.0.0.1")
    now[0] = 60.0
    assert not failures.blocked("2001:db8::3")
    failures.sweep()
    assert failures.failures("2001:db8::3") == 0


def test_the_auth_file_keeps_only_hashes_and_checks_every_rule(auth_file: Path) -> None:
    auth = AuthFile.load(str(auth_file))
    assert len(auth) == 3
    assert auth.check(b"tok-alice-1") == "alice" and auth.check(b"tok-alice-2") == "alice"
    assert auth.check(b"tok-bob-1") == "bob"
    for bad in (b"", b"tok-bob-1 ", b"x" * 257, b"tok bob", b"tok-bob-1\x00"):
        assert auth.check(bad) is None
    assert all(isinstance(h, bytes) and len(h) == 32 for _, h in auth.entries)
