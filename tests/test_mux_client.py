"""The mux client library (verb_console.client) and its example, against a real server."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import pytest
from helpers import eventually

from verb_console.client import MuxClient, MuxClosed, MuxError
from verb_console.hub.session import CloseReason
from verb_console.protocols import binary as b

pytestmark = pytest.mark.timeout(30)

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "mux_client.py"


@pytest.fixture
async def mux_server(start_server, tmp_path: Path):
    return await start_server(protocol="mux", upload_dir=str(tmp_path / "up"))


@pytest.fixture
async def mux(mux_server):
    clients: list[MuxClient] = []

    async def open_client(runtime=None) -> MuxClient:
        client = await MuxClient.connect("127.0.0.1", (runtime or mux_server).port)
        clients.append(client)
        return client

    yield open_client
    for client in clients:
        await client.close()


async def test_streams_get_odd_ids_in_order_and_each_runs_its_kind(mux, mux_server) -> None:
    client = await mux()
    streams = [await client.open_stream(kind) for kind in ("json", "echo", "binary")]
    assert [s.stream_id for s in streams] == [1, 3, 5]
    assert [s.kind for s in streams] == ["json", "echo", "binary"]
    sessions = mux_server.hub.sessions
    assert [sessions[f"{client.local_id}#{s.stream_id}"].protocol for s in streams] == [
        "json",
        "echo",
        "binary",
    ]
    assert client.streams == {1: streams[0], 3: streams[1], 5: streams[2]}


async def test_an_error_reply_to_open_stream_raises_mux_error_with_the_code(mux) -> None:
    client = await mux()
    with pytest.raises(MuxError) as info:
        await client.open_stream("ftp")
    assert info.value.code == "unknown_stream_type"
    assert info.value.stream_id == 1
    assert info.value.reply["type"] == "error"
    assert client.streams == {}
    # The failed id is not reused, and the connection still works.
    assert (await client.open_stream("echo")).stream_id == 3


async def test_open_stream_beyond_the_server_limit_raises_too_many_streams(
    start_server, mux, tmp_path: Path
) -> None:
    runtime = await start_server(protocol="mux", max_streams=2, upload_dir=str(tmp_path))
    client = await mux(runtime)
    first = await client.open_stream("echo")
    await client.open_stream("echo")
    with pytest.raises(MuxError) as info:
        await client.open_stream("echo")
    assert info.value.code == "too_many_streams"
    await first.close()
    assert (await client.open_stream("echo")).stream_id == 7


async def test_concurrent_pings_each_get_their_own_pong(mux) -> None:
    client = await mux()
    pongs = await asyncio.gather(*(client.ping() for _ in range(20)))
    assert [p["type"] for p in pongs] == ["pong"] * 20
    assert sorted(p["ref"] for p in pongs) == list(range(1, 21))


async def test_close_waits_for_stream_closed_and_the_session_is_gone_by_then(
    mux, mux_server
) -> None:
    client = await mux()
    stream = await client.open_stream("json")
    session_id = f"{client.local_id}#1"
    assert session_id in mux_server.hub.sessions
    await stream.close()
    assert session_id not in mux_server.hub.sessions
    assert stream.closed and stream.close_reason == "client"
    assert client.streams == {}
    await stream.close()  # a second close does nothing
    with pytest.raises(MuxClosed):
        stream.write(b"late")


async def test_reading_gives_the_chunks_then_empty_bytes_once_the_server_closes_the_stream(
    mux, mux_server
) -> None:
    client = await mux()
    stream = await client.open_stream("echo")
    stream.write(b"a\nb\n")
    await eventually(lambda: stream.buffered >= len(b"Welcome to TCP server!\nEcho: a\nEcho: b\n"))
    mux_server.hub.operator_close(f"{client.local_id}#1")
    chunks = [chunk async for chunk in stream]
    assert b"".join(chunks) == (
        b"Welcome to TCP server!\nEcho: a\nEcho: b\n[server] closing: operator\n"
    )
    assert stream.close_reason == "server"
    assert await stream.read() == b""
    assert await stream.wait_closed() == "server"
    assert client.streams == {}


async def test_a_close_crossing_the_servers_close_returns_quietly(mux, mux_server) -> None:
    client = await mux()
    stream = await client.open_stream("json")
    other = (await client.open_stream("json")).json()
    await other.receive()  # welcome
    mux_server.hub.operator_close(f"{client.local_id}#1")
    await stream.close()  # sent before the client has seen the server's stream_close
    assert stream.close_reason in ("server", "client")
    assert (await other.ping())["type"] == "pong"
    # The server's unknown_stream answer to the crossed close is not left for the caller.
    with pytest.raises(TimeoutError):
        await client.control_message(0.2)


async def test_an_operator_close_of_the_connection_closes_each_stream_then_the_connection(
    mux, mux_server
) -> None:
    client = await mux()
    echo = (await client.open_stream("echo")).lines()
    js = (await client.open_stream("json")).json()
    await js.receive()
    assert await echo.readline() == "Welcome to TCP server!"
    assert mux_server.hub.operator_close(client.local_id)
    await asyncio.wait_for(client.wait_closed(), 5)
    assert client.closed
    assert client.closing_reason == "operator"
    # Each stream session said goodbye in its own protocol, then got its stream_close.
    assert await js.receive() == {"type": "closing", "reason": "operator"}
    assert await echo.readline() == "[server] closing: operator"
    assert js.stream.close_reason == echo.stream.close_reason == "server"


async def test_a_connection_cut_without_notice_ends_every_stream_and_call(mux, mux_server) -> None:
    client = await mux()
    echo = await client.open_stream("echo")
    js = (await client.open_stream("json")).json()
    await js.receive()
    session = mux_server.hub.connections[client.local_id]
    session.close(CloseReason.SLOW_CONSUMER, notify=False, flush=False)
    await asyncio.wait_for(client.wait_closed(), 5)
    assert client.closed and client.closing_reason is None
    assert echo.close_reason == "connection"
    assert (await echo.read()).startswith(b"Welcome")  # data received before the end stays
    assert await echo.read() == b""
    with pytest.raises(MuxClosed):
        await js.receive()
    with pytest.raises(MuxClosed):
        await client.open_stream("echo")
    with pytest.raises(MuxClosed):
        await client.ping()
    assert client.streams == {}


async def test_a_pending_open_fails_with_mux_closed_when_the_server_goes_away(
    mux, mux_server
) -> None:
    client = await mux()
    await client.ping()
    mux_server.hub.force_shutdown()
    with pytest.raises(MuxClosed):
        for _ in range(1000):
            await client.open_stream("echo", timeout=5)
    assert client.streams == {}


async def test_a_write_larger_than_max_payload_goes_out_in_several_frames(mux, mux_server) -> None:
    client = await mux()
    stream = await client.open_stream("binary")
    payload = b"p" * 200_000
    frame = b.encode_frame(b.DATA, payload)
    stream.write(frame)
    echoed = await stream.binary().receive()
    assert echoed.payload == payload
    assert stream.frames_out == 4  # 200,008 bytes in 64 KiB frames
    assert stream.bytes_out == len(frame)
    (info,) = mux_server.hub.mux_connections()
    assert info.streams[0].frames_in == 4
    assert client.max_payload_in <= 64 * 1024


async def test_unsolicited_control_messages_are_kept_for_control_message(mux) -> None:
    client = await mux()
    client.send_control({"type": "stream_create", "streamId": 2, "streamType": "json"})
    client.send_control({"type": "nonsense"})
    first = await client.control_message()
    assert (first["type"], first["code"], first["streamId"]) == ("error", "bad_stream", 2)
    second = await client.control_message()
    assert (second["type"], second["code"]) == ("error", "unknown_type")
    with pytest.raises(TimeoutError):
        await client.control_message(0.1)


async def test_the_json_view_iterates_messages_until_the_stream_ends(mux, mux_server) -> None:
    client = await mux()
    view = (await client.open_stream("json")).json()
    await view.send({"type": "ping", "ref": 1})
    await view.send({"type": "ping", "ref": 2})
    await eventually(lambda: view.stream.buffered > 0)
    await asyncio.sleep(0.05)
    mux_server.hub.operator_close(f"{client.local_id}#1")
    types = [(m["type"], m.get("ref")) async for m in view]
    assert types == [("welcome", None), ("pong", 1), ("pong", 2), ("closing", None)]


async def test_the_line_view_reads_whole_lines_across_chunks_and_fails_at_the_end(
    mux, mux_server
) -> None:
    client = await mux()
    lines = (await client.open_stream("echo")).lines()
    assert await lines.readline() == "Welcome to TCP server!"
    await lines.send_line("y" * 60_000)
    assert await lines.readline() == "Echo: " + "y" * 60_000
    await lines.stream.close()
    with pytest.raises(MuxClosed):
        await lines.readline()


async def test_the_binary_view_heartbeats_and_echoes(mux) -> None:
    client = await mux()
    view = (await client.open_stream("binary")).binary()
    ack = await view.heartbeat()
    assert (ack.type, ack.payload) == (b.HEARTBEAT_ACK, b"pong")
    assert await view.echo(b"abc", flags=9) == (b.DATA, 9, b"abc")


async def test_the_client_works_as_an_async_context_manager(mux_server) -> None:
    async with await MuxClient.connect("127.0.0.1", mux_server.port) as client:
        await client.open_stream("echo")
        conn_id = client.local_id
    assert client.closed
    await eventually(lambda: conn_id not in mux_server.hub.connections)
    assert not [s for s in mux_server.hub.sessions if s.startswith(conn_id)]


async def test_the_example_opens_three_streams_shows_them_working_and_exits_0(
    start_server, tmp_path: Path
) -> None:
    runtime = await start_server(protocol="auto", upload_dir=str(tmp_path))
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        str(EXAMPLE),
        "--host",
        "127.0.0.1",
        "--port",
        str(runtime.port),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 20)
    text = out.decode()
    assert proc.returncode == 0, err.decode()
    assert "(json): welcome, session id 127.0.0.1:" in text
    assert "(json): ping -> pong" in text
    assert "(echo): sent 'hello over mux' -> 'Echo: hello over mux'" in text
    assert "(binary): HEARTBEAT -> HEARTBEAT_ACK b'pong'" in text
    assert "(binary): DATA of 17 bytes echoed (flags 7)" in text
    assert "closed streams 1, 3, 5" in text


async def test_the_example_exits_1_when_no_server_listens(tmp_path: Path) -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        str(EXAMPLE),
        "--port",
        str(port),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    _, err = await asyncio.wait_for(proc.communicate(), 20)
    assert proc.returncode == 1
    assert err.decode().startswith("error:")
