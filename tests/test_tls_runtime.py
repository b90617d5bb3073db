"""TLS and authentication as the server runs them: flags, listening line, client
certificates as users, reload, and ``verb-console token`` (PROTOCOL.md s8, s9)."""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from helpers import closed_without_bytes, frame, wire_fixtures

pytestmark = [pytest.mark.timeout(60), pytest.mark.filterwarnings("ignore::DeprecationWarning")]

# TLS on both loops (the plaintext runs are elsewhere).
wire, event_loop_policy = wire_fixtures(("tls", "tls-uvloop"))


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "verb_console", *args],
        capture_output=True,
        text=True,
        timeout=20,
        stdin=subprocess.DEVNULL,
    )


def listening_line(proc: subprocess.Popen[str]) -> str:
    """The server's listening line (other lines, the admin socket's, may come first)."""
    assert proc.stderr is not None
    for _ in range(20):
        line = proc.stderr.readline()
        if "listening on 127.0.0.1:" in line or not line:
            return line
    raise AssertionError("no listening line")


def one_line_error(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 2, result
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]


async def read_json(reader: asyncio.StreamReader) -> dict[str, Any]:
    header = await asyncio.wait_for(reader.readuntil(b"\n"), 3)
    return json.loads(await asyncio.wait_for(reader.readexactly(int(header)), 3))


async def tls_open(port: int, ctx: Any) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.wait_for(
        asyncio.open_connection("127.0.0.1", port, ssl=ctx, server_hostname="localhost"), 5
    )


def sha(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


async def test_the_listening_line_says_tls(start_server, tls_files) -> None:
    rt = await start_server(protocol="echo")
    assert rt.hub.listeners == [f"127.0.0.1:{rt.port} (echo, tls)"]


async def test_a_client_certificate_authenticates_as_its_common_name(
    start_server, tls_files, tmp_path: Path
) -> None:
    tokens = tmp_path / "tokens"
    tokens.write_text(f"alice:{sha('secret')}\n")
    rt = await start_server(tls_client_ca=tls_files.ca_file, auth_file=str(tokens))
    ctx = tls_files.client_context(tls_files.client_cert("carol"))
    reader, writer = await tls_open(rt.port, ctx)
    welcome = await read_json(reader)
    # No token needed, even with an auth file: the welcome does not ask for one.
    assert "auth" not in welcome
    writer.write(frame({"type": "ping"}))
    assert (await read_json(reader))["type"] == "pong"
    assert rt.hub.sessions[welcome["id"]].user == "carol"
    writer.close()


async def test_reload_rereads_the_auth_file_and_keeps_sessions_already_in(
    start_server, tls_files, tmp_path: Path
) -> None:
    tokens = tmp_path / "tokens"
    tokens.write_text(f"alice:{sha('old')}\n")
    rt = await start_server(protocol="echo", auth_file=str(tokens))
    ctx = tls_files.client_context()
    reader, writer = await tls_open(rt.port, ctx)
    await reader.readline()
    writer.write(b"AUTH old\n")
    assert await reader.readline() == b"OK alice\n"
    tokens.write_text(f"alice:{sha('new')}\n")  # "old" revoked
    assert rt.reload() == []
    assert any(f"reload: auth file {tokens}: 1 token" in e.text for e in rt.hub.events)
    # The session already in stays in.
    writer.write(b"still here\n")
    assert await asyncio.wait_for(reader.readline(), 3) == b"Echo: still here\n"
    for token, answer in (("old", b"[server] closing: auth_failed\n"), ("new", b"OK alice\n")):
        r2, w2 = await tls_open(rt.port, ctx)
        await r2.readline()
        w2.write(b"AUTH %s\n" % token.encode())
        assert await asyncio.wait_for(r2.readline(), 3) == answer
        w2.close()
    # A malformed file keeps the tokens loaded before.
    tokens.write_text("not a line\n")
    errors = rt.reload()
    assert len(errors) == 1 and "kept the previous auth file" in errors[0], errors
    assert f"{tokens} line 1" in errors[0]
    assert rt.hub.auth is not None and rt.hub.auth.check(b"new") == "alice"
    writer.close()


async def test_reload_of_a_bad_certificate_keeps_the_old_one_and_says_why(
    start_server, tls_files, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    cert = tmp_path / "server.crt"
    cert.write_bytes(Path(tls_files.cert).read_bytes())
    rt = await start_server(tls_cert=str(cert))
    assert rt.server is not None and rt.server.tls is not None
    before = rt.server.tls.context
    r1, w1 = await tls_open(rt.port, tls_files.client_context())
    await read_json(r1)
    cert.write_text("garbage\n")
    with caplog.at_level(logging.WARNING, logger="verb_console"):
        errors = rt.reload()
    assert len(errors) == 1 and "kept the previous certificate" in errors[0], errors
    assert str(cert) in errors[0]
    assert any("kept the previous certificate" in r.getMessage() for r in caplog.records)
    assert rt.server.tls.context is before
    # Sessions stay, and new connections are still served with the old certificate.
    w1.write(frame({"type": "ping"}))
    assert (await read_json(r1))["type"] == "pong"
    r2, w2 = await tls_open(rt.port, tls_files.client_context())
    assert (await read_json(r2))["type"] == "welcome"
    cert.write_bytes(Path(tls_files.cert).read_bytes())
    assert rt.reload() == []
    assert rt.server.tls.context is not before
    w1.close()
    w2.close()


async def test_tls_required_on_auto_closes_plaintext_with_no_reply(start_server) -> None:
    rt = await start_server(protocol="auto", tls_required=True)
    reader, writer = await asyncio.open_connection("127.0.0.1", rt.port)
    writer.write(frame({"type": "ping"}))
    assert await closed_without_bytes(reader)
    writer.close()


def test_token_prints_a_token_and_its_auth_file_line() -> None:
    result = run_cli("token", "alice")
    assert result.returncode == 0, result
    token, line = result.stdout.splitlines()
    assert len(token) >= 22 and token.split() == [token]  # at least 128 bits, no whitespace
    assert line == f"alice:{sha(token)}"
    assert run_cli("token", "alice").stdout.splitlines()[0] != token
    assert run_cli("token", "bad name!").returncode == 2


def test_a_malformed_auth_file_stops_the_server_naming_file_and_line(tmp_path: Path) -> None:
    tokens = tmp_path / "tokens"
    tokens.write_text(f"# ok\nalice:{sha('x')}\nbob:NOTHEX\n")
    line = one_line_error(run_cli("--headless", "--port", "0", "--auth-file", str(tokens)))
    assert str(tokens) in line and "line 3" in line


def test_a_certificate_that_cannot_load_stops_the_server_in_one_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.pem"
    bad.write_text("nope")
    line = one_line_error(
        run_cli("--headless", "--port", "0", "--tls-cert", str(bad), "--tls-key", str(bad))
    )
    assert str(bad) in line
    assert "--tls-key" in one_line_error(run_cli("--headless", "--tls-cert", str(bad)))


def test_headless_logs_the_tls_listening_line(tls_files) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "verb_console", "--headless", "--port", "0", "--protocol",
         "json", "--tls-cert", tls_files.cert, "--tls-key", tls_files.key],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        line = listening_line(proc)
        assert "(json, tls)" in line, line
    finally:
        proc.terminate()
        assert proc.wait(15) == 0


def test_sighup_to_a_headless_server_reloads_the_auth_file(tmp_path: Path) -> None:
    import signal
    import socket as socketlib

    tokens = tmp_path / "tokens"
    tokens.write_text(f"alice:{sha('one')}\n")
    proc = subprocess.Popen(
        [sys.executable, "-m", "verb_console", "--headless", "--port", "0", "--protocol",
         "echo", "--auth-file", str(tokens), "--upload-dir", str(tmp_path / "up")],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        line = listening_line(proc)
        port = int(line.split("listening on 127.0.0.1:")[1].split()[0])

        def login(token: str) -> bytes:
            with socketlib.create_connection(("127.0.0.1", port), timeout=5) as s:
                f = s.makefile("rwb")
                f.readline()
                f.write(b"AUTH %s\n" % token.encode())
                f.flush()
                return f.readline()

        assert login("one") == b"OK alice\n"
        tokens.write_text(f"bob:{sha('two')}\n")
        proc.send_signal(signal.SIGHUP)
        while "reload: auth file" not in (text := proc.stderr.readline()):
            assert text, "the server ended"
        assert login("two") == b"OK bob\n"
        assert login("one") == b"[server] closing: auth_failed\n"
    finally:
        proc.terminate()
        assert proc.wait(15) == 0


async def test_a_broadcast_during_a_clients_handshake_comes_after_its_welcome_in_order(
    start_server, tls_files
) -> None:
    """A session starts when its handshake ends: a broadcast sent while it is under
    way is not delivered ahead of the welcome; those after it come in order."""
    import ssl

    rt = await start_server()
    sender_reader, sender = await tls_open(rt.port, tls_files.client_context())
    await read_json(sender_reader)  # its welcome
    # A sans-IO client that stops before its last handshake flight.
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    obj = tls_files.client_context().wrap_bio(incoming, outgoing, server_hostname="localhost")
    reader, writer = await asyncio.open_connection("127.0.0.1", rt.port)
    with pytest.raises(ssl.SSLWantReadError):
        obj.do_handshake()
    writer.write(outgoing.read())  # the ClientHello
    flight = await asyncio.wait_for(reader.read(65536), 5)  # ServerHello .. Finished
    await asyncio.sleep(0.05)
    assert len(rt.hub.json_sessions) == 1  # the sender only: the other is not in yet
    sender.write(frame({"type": "broadcast", "data": "during"}))
    await asyncio.sleep(0.1)
    # Finish the handshake, then broadcast a few more.
    incoming.write(flight)
    obj.do_handshake()
    writer.write(outgoing.read())
    got: list[dict[str, Any]] = []
    plain = bytearray()

    async def next_message() -> dict[str, Any]:
        while True:
            if b"\n" in plain:
                head, _, rest = bytes(plain).partition(b"\n")
                if len(rest) >= int(head):
                    del plain[: len(head) + 1 + int(head)]
                    return dict(json.loads(rest[: int(head)]))
            try:
                plain.extend(obj.read(65536))
                continue
            except ssl.SSLWantReadError:
                pass
            data = await asyncio.wait_for(reader.read(65536), 5)
            assert data, "closed early"
            incoming.write(data)

    got.append(await next_message())
    assert got[0]["type"] == "welcome"
    for n in range(5):
        sender.write(frame({"type": "broadcast", "data": n}))
    while len(got) < 6:
        message = await next_message()
        if message["type"] == "broadcast":
            got.append(message)
    assert [m.get("data") for m in got[1:]] == [0, 1, 2, 3, 4]
    assert "during" not in [m.get("data") for m in got]
    writer.close()
    sender.close()
