# ruff: noqa: F811 - the fixtures imported from test_attacks are used as parameters
"""Attacks on TLS and authentication, in test_attacks.py's pattern: the offender is
gone with the right reason, and a bystander notices nothing (PROTOCOL.md s8, s9)."""

from __future__ import annotations

import asyncio
import datetime
import hashlib
import os
import socket
import ssl
import time
from pathlib import Path
from typing import Any

import pytest
import trustme
from helpers import TLS_PORTS, eventually, frame, open_raw
from test_attacks import (  # noqa: F401 - fixtures
    FRESH_PING_S,
    Client,
    assert_unharmed,
    clients,
    no_server_errors,
    reasons_of,
    serve,
)

from verb_console.runtime import Runtime

pytestmark = pytest.mark.timeout(90)

TOKEN = "tok-alice"


def tls_settings(tls_files: Any, **extra: Any) -> dict[str, Any]:
    return {"tls_cert": tls_files.cert, "tls_key": tls_files.key, **extra}


async def plain_client(port: int) -> tuple[socket.socket, str]:
    sock = await open_raw(port)
    host, local = sock.getsockname()[:2]
    return sock, f"{host}:{local}"


def client_hello(tls_files: Any) -> tuple[ssl.SSLObject, ssl.MemoryBIO, ssl.MemoryBIO, bytes]:
    """A client TLS object and the ClientHello it sends first."""
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    obj = tls_files.client_context().wrap_bio(incoming, outgoing, server_hostname="localhost")
    with pytest.raises(ssl.SSLWantReadError):
        obj.do_handshake()
    return obj, incoming, outgoing, outgoing.read()


async def manual_handshake(port: int, tls_files: Any) -> tuple[socket.socket, str, ssl.SSLObject]:
    """A TLS client done by hand over a raw socket, so raw bytes can follow."""
    loop = asyncio.get_running_loop()
    sock, sid = await plain_client(port)
    obj, incoming, outgoing, hello = client_hello(tls_files)
    await loop.sock_sendall(sock, hello)
    while True:
        data = await asyncio.wait_for(loop.sock_recv(sock, 65536), 3)
        assert data, "the server closed during the handshake"
        incoming.write(data)
        try:
            obj.do_handshake()
        except ssl.SSLWantReadError:
            continue
        finally:
            if outgoing.pending:
                await loop.sock_sendall(sock, outgoing.read())
        return sock, sid, obj


async def closed(sock: socket.socket, timeout: float = 5.0) -> bytes:
    """Read until the server closes; what came before."""
    loop = asyncio.get_running_loop()
    out = b""
    deadline = time.monotonic() + timeout
    while True:
        try:
            chunk = await asyncio.wait_for(loop.sock_recv(sock, 65536), deadline - time.monotonic())
        except ConnectionResetError:
            return out
        if not chunk:
            return out
        out += chunk


# --------------------------------------------------------------- TLS


async def test_plaintext_sent_to_a_tls_listener_is_cut_off_and_harms_no_one(
    serve, clients, tls_files
) -> None:
    rt = await serve("json", **tls_settings(tls_files))
    bystander = await clients(rt.port, "json")
    sock, sid = await plain_client(rt.port)
    await asyncio.get_running_loop().sock_sendall(sock, frame({"type": "ping"}))
    got = await closed(sock)
    assert b"pong" not in got and (got == b"" or got[0] == 0x15)  # at most a TLS alert
    sock.close()
    offender = Client.__new__(Client)
    offender.id = sid
    await assert_unharmed(rt, bystander, offender, "tls_error")


async def test_a_client_hello_trickled_a_byte_at_a_time_is_cut_off_at_the_handshake_timeout(
    serve, clients, tls_files
) -> None:
    rt = await serve("mux", **tls_settings(tls_files, handshake_timeout=1.0))
    bystander = await clients(rt.port, "mux")
    _, _, _, hello = client_hello(tls_files)
    loop = asyncio.get_running_loop()
    started = time.monotonic()  # the handshake timeout runs from the connect
    sock, sid = await plain_client(rt.port)
    with pytest.raises((BrokenPipeError, ConnectionResetError)):
        for i in range(len(hello)):
            await loop.sock_sendall(sock, hello[i : i + 1])
            await asyncio.sleep(0.02)
            if time.monotonic() - started > 5:
                break
    assert 0.9 < time.monotonic() - started < 4
    sock.close()
    offender = Client.__new__(Client)
    offender.id = sid
    await assert_unharmed(rt, bystander, offender, "handshake_timeout")


async def test_half_a_handshake_then_silence_is_cut_off_at_the_handshake_timeout(
    serve, clients, tls_files
) -> None:
    rt = await serve("binary", **tls_settings(tls_files, handshake_timeout=0.5))
    bystander = await clients(rt.port, "binary")
    sock, sid = await plain_client(rt.port)
    _, _, _, hello = client_hello(tls_files)
    loop = asyncio.get_running_loop()
    await loop.sock_sendall(sock, hello)
    server_hello = await asyncio.wait_for(loop.sock_recv(sock, 65536), 2)
    assert server_hello[0] == 0x16
    started = time.monotonic()
    await closed(sock)
    assert time.monotonic() - started < 2
    sock.close()
    offender = Client.__new__(Client)
    offender.id = sid
    await assert_unharmed(rt, bystander, offender, "handshake_timeout")


@pytest.mark.parametrize("protocol", ["json", "binary", "echo", "mux", "auto"])
async def test_a_mib_of_garbage_after_the_handshake_is_a_tls_error_and_harms_no_one(
    serve, clients, tls_files, protocol: str
) -> None:
    rt = await serve(protocol, **tls_settings(tls_files))
    bystander = await clients(rt.port, protocol)
    sock, sid, _ = await manual_handshake(rt.port, tls_files)
    loop = asyncio.get_running_loop()
    with pytest.raises((BrokenPipeError, ConnectionResetError)):
        for _ in range(64):
            await loop.sock_sendall(sock, os.urandom(16384))
            await asyncio.sleep(0)
        await closed(sock)
        raise ConnectionResetError("closed")
    sock.close()
    offender = Client.__new__(Client)
    offender.id = sid
    await assert_unharmed(rt, bystander, offender, "tls_error")


@pytest.mark.parametrize("which", ["expired", "wrong CA"])
async def test_a_bad_client_certificate_is_refused_and_harms_no_one(
    serve, clients, tls_files, which: str
) -> None:
    rt = await serve("json", **tls_settings(tls_files, tls_client_ca=tls_files.ca_file))
    # The bystanders present a valid certificate.
    TLS_PORTS[rt.port] = tls_files.client_context(tls_files.client_cert("bystander"))
    bystander = await clients(rt.port, "json")
    if which == "expired":
        past = datetime.datetime(2020, 1, 1, tzinfo=datetime.UTC)
        cert = tls_files.client_cert(
            "mallory", not_before=past, not_after=past + datetime.timedelta(days=1)
        )
    else:
        cert = tls_files.client_cert("mallory", ca=trustme.CA())
    sock = await open_raw(rt.port)
    host, local = sock.getsockname()[:2]
    try:
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection(
                sock=sock, ssl=tls_files.client_context(cert), server_hostname="localhost"
            ),
            3,
        )
    except (ssl.SSLError, ConnectionError):
        pass
    else:  # TLS 1.3: the refusal arrives after the client's side of the handshake
        with pytest.raises((ssl.SSLError, ConnectionError, asyncio.IncompleteReadError)):
            await asyncio.wait_for(reader.readexactly(1), 3)
        writer.close()
    offender = Client.__new__(Client)
    offender.id = f"{host}:{local}"
    await assert_unharmed(rt, bystander, offender, "tls_error")
    detail = [c.detail for c in rt.hub.closed_log if c.id == offender.id]
    assert "certificate" in detail[0]


# --------------------------------------------------------------- authentication


@pytest.fixture
def auth_file(tmp_path: Path) -> str:
    path = tmp_path / "tokens"
    path.write_text(f"alice:{hashlib.sha256(TOKEN.encode()).hexdigest()}\n")
    return str(path)


async def authed(port: int, source_ip: str | None = None) -> Client:
    """A json client that has authenticated (reads welcome, then authenticated)."""
    sock = await open_raw(port, source_ip=source_ip)
    reader, writer = await asyncio.open_connection(sock=sock, limit=4 << 20)
    client = Client("json", reader, writer)
    client.greeting = await client.recv()
    assert client.greeting["auth"] == "required"
    await client.send(frame({"type": "auth", "token": TOKEN}))
    assert (await client.recv())["type"] == "authenticated"
    return client


async def assert_unharmed_with_auth(
    rt: Runtime, bystander: Client, offender_id: str, reason: str, source_ip: str | None = None
) -> None:
    hub = rt.hub
    await eventually(lambda: offender_id not in hub.connections, timeout=5)
    assert reasons_of(rt, offender_id) == [reason]
    assert bystander.id in hub.connections
    await bystander.ping()
    await bystander.expect_nothing()
    started = time.monotonic()
    fresh = await authed(rt.port, source_ip)
    await fresh.ping()
    took = time.monotonic() - started
    await fresh.close()
    assert took < FRESH_PING_S, f"a fresh client waited {took * 1000:.0f} ms for its pong"
    await bystander.close()


@pytest.mark.parametrize(
    ("token", "reason", "codes"),
    [
        (b"wrong", "auth_failed", ["auth_failed"]),
        (b"tok-\\u0000alice", "auth_failed", ["auth_failed"]),
        (b"x" * 10_000_000, "frame_too_large", ["frame_too_large"]),
    ],
    ids=["wrong", "nul", "10MB"],
)
async def test_a_bad_token_ends_only_its_session(
    serve, auth_file: str, token: bytes, reason: str, codes: list[str]
) -> None:
    rt = await serve("json", auth_file=auth_file)
    bystander = await authed(rt.port)
    sock = await open_raw(rt.port)
    reader, writer = await asyncio.open_connection(sock=sock, limit=4 << 20)
    offender = Client("json", reader, writer)
    await offender.recv()
    body = b'{"type":"auth","token":"' + token + b'"}'
    writer.write(b"%d\n" % len(body) + body)
    with pytest.raises((BrokenPipeError, ConnectionResetError)):
        await writer.drain()
        got = [await offender.recv(), await offender.recv()]
        assert [m.get("code") for m in got[:1]] == codes
        assert got[1] == {"type": "closing", "reason": "protocol_error" if "frame" in reason
                          else "auth_failed"}  # fmt: skip
        await offender.expect_eof()
        raise ConnectionResetError("closed as expected")
    writer.close()
    await assert_unharmed_with_auth(rt, bystander, offender.id, reason)


async def test_a_thousand_failed_authentications_from_one_address_are_refused_after_five(
    serve, auth_file: str
) -> None:
    rt = await serve("echo", auth_file=auth_file, max_per_ip=0)
    sock = await open_raw(rt.port, source_ip="127.0.0.2")
    reader, writer = await asyncio.open_connection(sock=sock)
    bystander = Client("echo", reader, writer)
    assert await bystander.recv() == b"Welcome to TCP server!\n"
    await bystander.send(f"AUTH {TOKEN}\n".encode())
    assert await bystander.recv() == b"OK alice\n"
    loop = asyncio.get_running_loop()
    answers: list[bytes] = []
    for _ in range(1000):
        s = await open_raw(rt.port)
        s.setblocking(False)
        await loop.sock_sendall(s, b"AUTH guess\n")
        answers.append(await closed(s))
        s.close()
    failed = [a for a in answers if a.endswith(b"[server] closing: auth_failed\n")]
    refused = [a for a in answers if a == b""]
    assert len(failed) == 5 and len(refused) == 995
    assert sum(c.reason == "auth_blocked" for c in rt.hub.closed_log) == 995
    assert rt.hub.auth_failures.failures("127.0.0.1") == 5
    await bystander.ping()
    await bystander.expect_nothing()
    await bystander.close()
