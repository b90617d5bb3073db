"""Real client addresses behind a proxy (PROTOCOL.md 12.4): real sockets speaking
real PROXY headers, v1 and v2, IPv4 and IPv6, split, forged, truncated, from
untrusted addresses, and with TLS behind the header."""

from __future__ import annotations

import asyncio
import json
import socket
import time
from typing import Any

import pytest
from helpers import closed_without_bytes, eventually, frame, open_raw

from verb_console.cli import main
from verb_console.protocols.proxy import V2_SIGNATURE, encode_v1, encode_v2
from verb_console.runtime import Runtime

pytestmark = pytest.mark.timeout(60)

DEST = ("127.0.0.1", 8080)


@pytest.fixture(params=["asyncio", "uvloop"])
def event_loop_policy(request: pytest.FixtureRequest) -> Any:
    """Every test on both loops: uvloop calls the protocol's methods its own way."""
    if request.param == "uvloop":
        import uvloop

        return uvloop.EventLoopPolicy()
    return asyncio.DefaultEventLoopPolicy()


@pytest.fixture
async def behind(start_server: Any, tmp_path: Any) -> Any:
    async def start(trust: str = "127.0.0.1/32", **overrides: Any) -> Runtime:
        overrides.setdefault("upload_dir", str(tmp_path / "up"))
        overrides.setdefault("state_dir", str(tmp_path / "state"))
        return await start_server(proxy_protocol=trust, **overrides)

    return start


async def through(
    rt: Runtime, header: bytes, *, split: bool = False, source_ip: str | None = None
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A connection as a load balancer opens it: the header first."""
    reader, writer = await asyncio.open_connection(
        sock=await open_raw(rt.port, source_ip=source_ip), limit=1 << 20
    )
    if split:
        for i in range(len(header)):
            writer.write(header[i : i + 1])
            await writer.drain()
            await asyncio.sleep(0.001)
    else:
        writer.write(header)
    return reader, writer


async def read_json(reader: asyncio.StreamReader) -> dict[str, Any]:
    header = await asyncio.wait_for(reader.readuntil(b"\n"), 5)
    return json.loads(await asyncio.wait_for(reader.readexactly(int(header)), 5))


@pytest.mark.parametrize(
    ("header", "sid"),
    [
        (encode_v1(("203.0.113.7", 5555), DEST), "203.0.113.7:5555"),
        (encode_v1(("2001:db8::7", 4000), ("2001:db8::1", 80)), "[2001:db8::7]:4000"),
        (encode_v2(("198.51.100.9", 6000)), "198.51.100.9:6000"),
        (encode_v2(("2001:db8::9", 6001)), "[2001:db8::9]:6001"),
    ],
)
@pytest.mark.parametrize("split", [False, True])
async def test_the_address_the_header_names_is_the_sessions_everywhere(
    behind, header: bytes, sid: str, split: bool
) -> None:
    rt = await behind(protocol="auto")
    reader, writer = await through(rt, header, split=split)
    # The first bytes after the header pick the protocol, as on any auto listener.
    writer.write(frame({"type": "ping"}))
    welcome = await read_json(reader)
    assert welcome["id"] == sid
    assert (await read_json(reader))["type"] == "pong"
    session = rt.hub.sessions[sid]
    address = sid.rpartition(":")[0].strip("[]")
    assert session.address == address
    assert session.view.address == address
    assert any(e.text.startswith(f"{sid} connected") for e in rt.hub.events)
    writer.close()


async def test_a_v2_local_header_keeps_the_proxys_address(behind) -> None:
    rt = await behind()
    reader, writer = await through(rt, encode_v2(None))
    welcome = await read_json(reader)
    host, port = writer.get_extra_info("sockname")[:2]
    assert welcome["id"] == f"{host}:{port}"
    writer.close()


@pytest.mark.parametrize(
    "raw",
    [
        frame({"type": "ping"}),  # no header at all
        b"PROXY TCP4 203.0.113.7 10.0.0.1 99999 80\r\n",  # forged port
        b"PROXY TCP4 203.0.113.7 10.0.0.1 " + b"1" * 100,  # too long, no CRLF
        V2_SIGNATURE + b"\x21\x11\x02\x10" + bytes(600),  # v2 over 536 bytes
        b"\x16\x03\x01\x00\x05hello",  # TLS before the header
    ],
)
async def test_a_missing_malformed_or_too_long_header_closes_with_no_reply(
    behind, raw: bytes
) -> None:
    rt = await behind(protocol="auto")
    reader, writer = await through(rt, raw)
    assert await closed_without_bytes(reader)
    assert not rt.hub.sessions
    await eventually(lambda: any("bad PROXY header" in e.text for e in rt.hub.events))
    writer.close()


async def test_a_truncated_header_is_closed_at_the_handshake_timeout(behind) -> None:
    rt = await behind(handshake_timeout=0.3)
    started = time.monotonic()
    reader, writer = await through(rt, encode_v2(("203.0.113.7", 1))[:20])
    # One whole header meanwhile: it is let go of at once, not when its time is up.
    good_reader, good_writer = await through(
        rt, encode_v2(("203.0.113.8", 2)) + frame({"type": "ping"})
    )
    assert (await read_json(good_reader))["type"] == "welcome"
    assert await closed_without_bytes(reader)
    assert time.monotonic() - started >= 0.3
    await eventually(lambda: any("in time" in e.text for e in rt.hub.events))
    # Nothing is awaited any more, and nothing is left to sweep.
    assert rt.server is not None
    await eventually(lambda: not rt.server._awaiting and rt.server._sweeper is None)
    writer.close()
    good_writer.close()


async def test_bad_headers_are_logged_at_most_once_per_ten_seconds(behind) -> None:
    rt = await behind()
    for _ in range(5):
        reader, writer = await through(rt, b"GARBAGE\r\n")
        assert await closed_without_bytes(reader)
        writer.close()
    assert sum("bad PROXY header" in e.text for e in rt.hub.events) == 1


async def test_from_an_untrusted_address_a_header_is_just_bytes(behind) -> None:
    # Only 127.0.0.9 is trusted; this client is 127.0.0.1.
    rt = await behind(trust="127.0.0.9/32,2001:db8::/32", protocol="auto")
    header = encode_v1(("203.0.113.7", 5555), DEST)
    reader, writer = await through(rt, header)
    # "P" is not a digit nor 0x00: an echo session, which echoes the line.
    assert await asyncio.wait_for(reader.readline(), 5) == b"Welcome to TCP server!\n"
    assert await asyncio.wait_for(reader.readline(), 5) == b"Echo: " + header[:-2] + b"\r\n"
    [session] = rt.hub.sessions.values()
    assert session.address == "127.0.0.1"
    writer.close()


async def test_bans_and_the_throttle_see_the_address_behind_the_proxy(behind) -> None:
    rt = await behind(max_per_ip=2)
    rt.hub.banning.ban("203.0.113.0/24", "ctl")
    reader, writer = await through(rt, encode_v1(("203.0.113.7", 1000), DEST))
    assert await closed_without_bytes(reader)
    writer.close()
    # The proxy's own address is not what is counted: two clients of one address
    # fill its quota, and a third client elsewhere is still served.
    held = []
    for port in (1, 2):
        r, w = await through(rt, encode_v1(("198.51.100.1", port), DEST))
        assert (await read_json(r))["type"] == "welcome"
        held.append(w)
    r, w = await through(rt, encode_v1(("198.51.100.1", 3), DEST))
    assert await closed_without_bytes(r)
    r2, w2 = await through(rt, encode_v1(("198.51.100.2", 4), DEST))
    assert (await read_json(r2))["id"] == "198.51.100.2:4"
    assert rt.hub.banning.refused == 1
    for x in (*held, w, w2):
        x.close()


async def test_tls_starts_after_the_header(behind, tls_files: Any) -> None:
    rt = await behind(tls_cert=tls_files.cert, tls_key=tls_files.key)
    sock = await open_raw(rt.port)
    await asyncio.get_running_loop().sock_sendall(sock, encode_v1(("203.0.113.70", 7), DEST))
    reader, writer = await asyncio.open_connection(
        sock=sock, ssl=tls_files.client_context(), server_hostname="localhost"
    )
    welcome = await read_json(reader)
    assert welcome["id"] == "203.0.113.70:7"
    session: Any = rt.hub.sessions["203.0.113.70:7"]
    assert session.outlet.tls is not None and session.outlet.tls.established
    writer.close()


def test_a_proxy_protocol_flag_that_is_not_a_network_stops_the_start(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["--headless", "--port", "0", "--proxy-protocol", "10.0.0.0/8,nowhere"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--proxy-protocol: 'nowhere'" in err


def test_v2_is_binary_and_v1_text_on_the_wire() -> None:
    assert encode_v2(("203.0.113.7", 1))[:12] == b"\r\n\r\n\x00\r\nQUIT\n"
    assert encode_v1(("203.0.113.7", 1), DEST).startswith(b"PROXY TCP4 203.0.113.7 ")
    assert socket.inet_aton("203.0.113.7") in encode_v2(("203.0.113.7", 1))
