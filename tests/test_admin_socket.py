"""The admin socket (issue 10, item 3): real Unix sockets, real processes, real uids."""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import stat
import sys
import tempfile
import time
from pathlib import Path

import pytest
from helpers import eventually

from verb_console.admin.client import AdminClient, AdminError
from verb_console.admin.paths import AdminSocketError, default_path
from verb_console.admin.protocol import page_from_wire
from verb_console.hub.view import LiveHubView
from verb_console.protocols.json import JsonDecoder

pytestmark = [
    pytest.mark.skipif(sys.platform != "linux", reason="SO_PEERCRED is Linux's"),
    pytest.mark.timeout(60),
]


@pytest.fixture(autouse=True)
def runtime_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    directory = tmp_path / "run"
    directory.mkdir(mode=0o755)
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(directory))
    return directory


async def test_the_default_socket_is_0600_in_a_0700_directory_named_by_the_port(
    server, runtime_dir: Path
) -> None:
    path = runtime_dir / "verb-console" / f"{server.port}.sock"
    assert server.admin.path == path == default_path(server.port)
    assert stat.S_ISSOCK(path.stat().st_mode)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700


async def test_a_looser_existing_directory_is_made_0700(start_server, runtime_dir: Path) -> None:
    (runtime_dir / "verb-console").mkdir(mode=0o777)
    os.chmod(runtime_dir / "verb-console", 0o777)
    await start_server()
    assert stat.S_IMODE((runtime_dir / "verb-console").stat().st_mode) == 0o700


async def test_status_and_a_sorted_filtered_page_of_sessions(server, connect) -> None:
    clients = [await connect(server) for _ in range(5)]
    await clients[2].request({"type": "join_room", "room": "ops"})
    async with await AdminClient.connect(server.admin.path) as admin:
        assert admin.hello["type"] == "hello" and admin.hello["port"] == server.port
        assert admin.hello["pid"] == os.getpid()
        status = await admin.request("status")
        assert status["state"] == "running" and status["sessions"] == 5
        page = page_from_wire(await admin.request("sessions", sort="id", reverse=True, limit=2))
        ids = sorted((c.id for c in clients), reverse=True)
        assert (page.total, page.matched, page.offset) == (5, 5, 0)
        assert [s.id for s in page.rows] == ids[:2]
        page = page_from_wire(await admin.request("sessions", sort="id", offset=4, limit=10))
        assert [s.id for s in page.rows] == sorted(ids)[4:]
        page = page_from_wire(await admin.request("sessions", filter="OPS"))
        assert [s.id for s in page.rows] == [clients[2].id]
        assert page.rows[0].rooms == ("ops",) and page.matched == 1
        # The same page as the in-process view gives.
        local = LiveHubView(server.hub).session_page(filter="ops")
        assert local == page
        with pytest.raises(AdminError) as refused:
            await admin.request("sessions", sort="nonsense")
        assert refused.value.code == "bad_request"
        with pytest.raises(AdminError) as unknown:
            await admin.request("explode")
        assert unknown.value.code == "unknown_op"


async def test_actions_close_broadcast_and_a_read_only_client_is_refused_them(
    server, connect
) -> None:
    target, other = await connect(server), await connect(server)
    async with await AdminClient.connect(server.admin.path, read_only=True) as viewer:
        assert (await viewer.request("status"))["sessions"] == 2
        for op, args in (("close", {"id": target.id}), ("broadcast", {"text": "x"})):
            with pytest.raises(AdminError) as refused:
                await viewer.request(op, **args)
            assert refused.value.code == "read_only"
    await other.expect_nothing(0.1)
    async with await AdminClient.connect(server.admin.path) as admin:
        assert await admin.request("broadcast", text="hello all") == {"sent": 2}
        assert (await other.recv())["data"] == "hello all"
        assert (await target.recv())["data"] == "hello all"
        assert await admin.request("close", id=target.id) == {"closed": True}
        assert await target.recv() == {"type": "closing", "reason": "operator"}
        assert await admin.request("close", id=target.id) == {"closed": False}
        assert await admin.request("reload") == {"errors": []}


async def test_a_garbled_frame_gets_an_error_and_the_server_goes_on(server) -> None:
    reader, writer = await asyncio.open_unix_connection(str(server.admin.path))
    decoder = JsonDecoder()
    assert b'"hello"' in await reader.read(4096)
    writer.write(b"5\nnope!3\n[1]xx")
    replies: list[bytes] = []
    while len(replies) < 3:
        data = await asyncio.wait_for(reader.read(4096), 5)
        assert data
        replies.extend(bytes(b) for b in decoder.feed(data))
    assert b'"bad_json"' in replies[0] and b'"bad_request"' in replies[1]
    assert b'"bad_header"' in replies[2]
    assert await asyncio.wait_for(reader.read(10), 5) == b""
    writer.close()
    async with await AdminClient.connect(server.admin.path) as admin:
        assert (await admin.request("status"))["state"] == "running"


async def test_a_stale_socket_is_replaced_and_a_live_one_is_an_error_naming_it(
    start_server, tmp_path: Path
) -> None:
    path = tmp_path / "admin.sock"
    dead = socket.socket(socket.AF_UNIX)
    dead.bind(str(path))
    dead.close()  # a socket file nobody listens on, as a killed server leaves
    first = await start_server(admin_socket=str(path))
    async with await AdminClient.connect(path) as admin:
        assert admin.hello["port"] == first.port
    with pytest.raises(AdminSocketError) as held:
        await start_server(admin_socket=str(path))
    assert str(path) in str(held.value) and "running server" in str(held.value)
    # The first server still owns it.
    async with await AdminClient.connect(path) as admin:
        assert admin.hello["port"] == first.port


async def test_the_socket_file_goes_with_the_server(start_server, tmp_path: Path) -> None:
    path = tmp_path / "gone.sock"
    runtime = await start_server(admin_socket=str(path))
    assert path.exists()
    runtime.hub.force_shutdown()
    await runtime.hub.wait_stopped()
    assert not path.exists()
    with pytest.raises(AdminSocketError, match="cannot reach"):
        await AdminClient.connect(path)


def _connect_as_nobody(path: Path) -> tuple[str, bytes]:
    """Fork; the child becomes uid 65534 and tries the socket. Returns (outcome, bytes)."""
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        try:
            os.close(read_fd)
            os.setgroups([])
            os.setgid(65534)
            os.setuid(65534)
            s = socket.socket(socket.AF_UNIX)
            s.settimeout(5)
            try:
                s.connect(str(path))
            except PermissionError:
                os.write(write_fd, b"EACCES\n")
            else:
                data = b""
                while chunk := s.recv(4096):
                    data += chunk
                os.write(write_fd, b"CONNECTED\n" + data)
        finally:
            os._exit(0)
    os.close(write_fd)
    out = b""
    while chunk := os.read(read_fd, 4096):
        out += chunk
    os.close(read_fd)
    os.waitpid(pid, 0)
    outcome, _, rest = out.partition(b"\n")
    return outcome.decode(), rest


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to become another uid")
async def test_another_uid_is_refused_by_the_file_mode_and_by_its_peer_credentials(
    start_server, request: pytest.FixtureRequest
) -> None:
    runtime = await start_server()
    # The default socket: the 0700 directory and 0600 socket keep uid 65534 out.
    outcome, _ = await asyncio.to_thread(_connect_as_nobody, runtime.admin.path)
    assert outcome == "EACCES"
    # Even where an operator opened the file up by mistake, SO_PEERCRED refuses.
    # (Under /tmp itself: pytest's tmp_path sits in a directory only root may enter.)
    open_dir = Path(tempfile.mkdtemp(prefix="verb-admin-open-", dir="/tmp"))
    request.addfinalizer(lambda: shutil.rmtree(open_dir, ignore_errors=True))
    os.chmod(open_dir, 0o755)
    path = open_dir / "admin.sock"
    second = await start_server(admin_socket=str(path))
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    os.chmod(path, 0o666)
    outcome, data = await asyncio.to_thread(_connect_as_nobody, path)
    assert outcome == "CONNECTED"
    assert b'"type":"refused"' in data and b'"forbidden"' in data
    await eventually(lambda: any("uid 65534" in e.text for e in second.hub.log_since(0)), timeout=5)
    # The owner still gets in.
    async with await AdminClient.connect(path) as admin:
        assert (await admin.request("status"))["state"] == "running"


FILTERS = (
    "proto:mux",
    "proto:detect",
    "proto!=mux",
    "proto=mux idle<60",
    "idle>60",
    "idle<=1m",
    "unsent<1KiB",
    "user:-",
    "mux",
    "127.0.0.1",
    "nosuchcolumn:1",
)


async def test_field_filters_keep_on_the_server_exactly_what_the_console_keeps_in_process(
    start_server,
) -> None:
    from verb_console.client import MuxClient
    from verb_console.hub.session_fields import filter_rows

    runtime = await start_server(protocol="auto")
    muxes = [await MuxClient.connect("127.0.0.1", runtime.port) for _ in range(2)]
    for client in muxes:
        await client.ping()  # the client's first bytes make it a mux connection
    # Connections that send nothing stay "detecting".
    raws = [await asyncio.open_connection("127.0.0.1", runtime.port) for _ in range(3)]
    hub = runtime.hub
    try:
        await eventually(lambda: len(hub.sessions) == 5, timeout=5)
        await eventually(
            lambda: sum(s.protocol == "mux" for s in hub.sessions.values()) == 2, timeout=5
        )
        mux_ids = sorted(s.id for s in hub.sessions.values() if s.protocol == "mux")
        async with await AdminClient.connect(runtime.admin.path) as admin:
            for text in FILTERS:
                page = page_from_wire(await admin.request("sessions", filter=text, limit=100))
                here, _ = filter_rows(text, LiveHubView(hub).sessions(), time.time())
                assert sorted(s.id for s in page.rows) == sorted(s.id for s in here), text
                assert page.total == 5 and page.matched == len(here), text
                if text in ("proto:mux", "proto=mux idle<60", "mux"):
                    assert sorted(s.id for s in page.rows) == mux_ids, text
            counts = {
                text: page_from_wire(await admin.request("sessions", filter=text)).matched
                for text in ("proto:detect", "proto!=mux", "idle>60", "nosuchcolumn:1")
            }
            assert counts == {"proto:detect": 3, "proto!=mux": 3, "idle>60": 0, "nosuchcolumn:1": 0}
            # A term naming no field says so, rather than only matching nothing.
            bad = page_from_wire(await admin.request("sessions", filter="nosuchcolumn:1"))
            assert bad.error.startswith("no column 'nosuchcolumn'"), bad.error
            # Sorted by the USER column (no user anywhere) without failing.
            page = page_from_wire(await admin.request("sessions", sort="user", limit=3))
            assert len(page.rows) == 3
    finally:
        for client in muxes:
            await client.close()
        for _reader, writer in raws:
            writer.close()
