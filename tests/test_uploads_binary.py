"""File uploads over binary FILE frames (PROTOCOL.md sections 2.3 and 3), real sockets and files."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import itertools
import json
import os
import re
import struct
import time
from pathlib import Path
from typing import Any

import pytest
from helpers import tls_for, wire_fixtures

from verb_console.runtime import Runtime

# Every test runs in plaintext, over TLS, and over TLS on uvloop (PROTOCOL.md s9).
wire, event_loop_policy = wire_fixtures()

pytestmark = pytest.mark.timeout(30)

HEARTBEAT, HEARTBEAT_ACK, FILE, FILE_REPLY, NOTICE, ERROR = 0x01, 0x02, 0x20, 0x21, 0x30, 0xFF
START, CHUNK, END, ABORT = 0x1, 0x2, 0x4, 0x8
TEMP_RE = re.compile(r"\.verb-upload-[0-9a-f]{32}\.part")


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def entries(directory: Path) -> list[str]:
    return sorted(os.listdir(directory))


def bframe(kind: int, payload: bytes = b"", flags: int = 0) -> bytes:
    return struct.pack(">HIH", kind, len(payload), flags) + payload


def start_frame(tid: Any, name: Any, size: Any, **extra: Any) -> bytes:
    obj = {"transferId": tid, "filename": name, "fileSize": size, **extra}
    return bframe(FILE, json.dumps(obj).encode(), START)


class BinaryClient:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def connect(cls, port: int) -> BinaryClient:
        reader, writer = await asyncio.open_connection("127.0.0.1", port, **tls_for(port))
        return cls(reader, writer)

    @property
    def id(self) -> str:
        host, port = self.writer.get_extra_info("sockname")[:2]
        return f"{host}:{port}"

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def recv(self, timeout: float = 5.0) -> tuple[int, int, bytes]:
        async def read() -> tuple[int, int, bytes]:
            kind, length, flags = struct.unpack(">HIH", await self.reader.readexactly(8))
            return kind, flags, await self.reader.readexactly(length)

        return await asyncio.wait_for(read(), timeout)

    async def reply(self, timeout: float = 5.0) -> dict[str, Any]:
        """The next frame, which must be a FILE_REPLY; its JSON object."""
        kind, flags, payload = await self.recv(timeout)
        assert (kind, flags) == (FILE_REPLY, 0), (kind, flags, payload)
        obj = json.loads(payload)
        assert isinstance(obj, dict)
        return obj

    async def request(self, data: bytes, timeout: float = 5.0) -> dict[str, Any]:
        await self.send(data)
        return await self.reply(timeout)

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(Exception):
            await self.writer.wait_closed()


@pytest.fixture
def up(tmp_path: Path) -> Path:
    return tmp_path / "up"


@pytest.fixture
async def srv(start_server, up: Path) -> Runtime:
    return await start_server(protocol="binary", upload_dir=str(up))


@pytest.fixture
async def bconnect():
    clients: list[BinaryClient] = []

    async def open_client(runtime: Runtime) -> BinaryClient:
        client = await BinaryClient.connect(runtime.port)
        clients.append(client)
        return client

    yield open_client
    for client in clients:
        await client.close()


def assert_error(obj: dict, code: str, tid: str | None = None) -> None:
    assert obj["type"] == "error", obj
    assert obj["code"] == code, obj
    assert isinstance(obj["message"], str) and obj["message"]
    if tid is None:
        assert "transferId" not in obj, obj
    else:
        assert obj["transferId"] == tid, obj
    assert "ref" not in obj


async def started(client: BinaryClient, tid: str, name: str, size: int, **extra: Any) -> None:
    reply = await client.request(start_frame(tid, name, size, **extra))
    assert reply == {"type": "file_start_ack", "transferId": tid, "status": "ready"}, reply


async def nothing_left(runtime: Runtime, up: Path, keep: tuple[str, ...] = ()) -> None:
    store = runtime.hub.uploads
    assert store is not None
    deadline = time.monotonic() + 5
    while not (store.active_count == 0 and store.pending_jobs == 0 and entries(up) == sorted(keep)):
        assert time.monotonic() < deadline, (store.active_count, entries(up))
        await asyncio.sleep(0.01)


async def test_a_binary_upload_lands_whole_and_reports_progress_at_least_every_8_mib(
    srv, bconnect, up
) -> None:
    client = await bconnect(srv)
    data = os.urandom(20 << 20)
    await started(client, "bin-1", "raw.bin", len(data), sha256=sha(data))
    step = 1 << 20
    for off in range(0, len(data), step):
        client.writer.write(bframe(FILE, data[off : off + step], CHUNK))
    client.writer.write(bframe(FILE, b"", END))
    await client.writer.drain()
    progress: list[dict] = []
    while True:
        obj = await client.reply(10)
        if obj["type"] != "file_progress":
            break
        progress.append(obj)
    assert set(obj) == {
        "type",
        "transferId",
        "filename",
        "receivedBytes",
        "duration",
        "avgSpeed",
        "sha256",
    }
    assert obj["type"] == "file_complete"
    assert (obj["transferId"], obj["filename"]) == ("bin-1", "raw.bin")
    assert obj["receivedBytes"] == len(data)
    assert obj["sha256"] == sha(data)
    assert type(obj["duration"]) is int and obj["avgSpeed"] > 0
    marks = [0] + [p["receivedBytes"] for p in progress] + [len(data)]
    assert all(b - a <= 8 << 20 for a, b in itertools.pairwise(marks)), marks
    for p in progress:
        assert set(p) == {"type", "transferId", "progress", "receivedBytes", "totalBytes"}
        assert p["transferId"] == "bin-1" and p["totalBytes"] == len(data)
        assert p["progress"] == pytest.approx(p["receivedBytes"] * 100 / len(data), abs=0.01)
    assert (up / "raw.bin").read_bytes() == data
    await nothing_left(srv, up, keep=("raw.bin",))


async def test_after_a_completed_upload_the_session_can_start_another(srv, bconnect, up) -> None:
    client = await bconnect(srv)
    for i in range(3):
        await started(client, "same-id", f"f{i}.txt", 2)
        await client.send(bframe(FILE, b"hi", CHUNK))
        assert (await client.request(bframe(FILE, b"", END)))["type"] in ("file_complete",)
    assert entries(up) == ["f0.txt", "f1.txt", "f2.txt"]


async def test_an_empty_binary_upload_completes(srv, bconnect, up) -> None:
    client = await bconnect(srv)
    await started(client, "e", "empty", 0)
    done = await client.request(bframe(FILE, b"", END))
    assert done["type"] == "file_complete" and done["sha256"] == sha(b"")
    assert (up / "empty").read_bytes() == b""


async def test_heartbeats_are_answered_between_file_chunks(srv, bconnect) -> None:
    client = await bconnect(srv)
    await started(client, "hb", "hb.bin", 4)
    await client.send(bframe(FILE, b"ab", CHUNK) + bframe(HEARTBEAT) + bframe(FILE, b"cd", CHUNK))
    assert await client.recv() == (HEARTBEAT_ACK, 0, b"pong")
    done = await client.request(bframe(FILE, b"", END))
    assert done["type"] == "file_complete" and done["sha256"] == sha(b"abcd")


# ----------------------------------------------------------- START


@pytest.mark.parametrize(
    "payload", [b"", b"not json", b"\xff\xfe", b"[1,2]", b'"text"', b"42", b"null"]
)
async def test_a_start_payload_that_is_not_a_json_object_is_bad_message(
    srv, bconnect, up, payload
) -> None:
    client = await bconnect(srv)
    assert_error(await client.request(bframe(FILE, payload, START)), "bad_message")
    assert entries(up) == []


@pytest.mark.parametrize(
    "obj",
    [
        {"filename": "a", "fileSize": 1},
        {"transferId": "t", "fileSize": 1},
        {"transferId": "t", "filename": "a"},
        {"transferId": "t", "filename": 3, "fileSize": 1},
        {"transferId": "t", "filename": "a", "fileSize": "1"},
        {"transferId": "t", "filename": "a", "fileSize": -5},
        {"transferId": "t", "filename": "a", "fileSize": 1, "sha256": "xyz"},
    ],
)
async def test_a_start_with_a_missing_or_mistyped_field_is_bad_message(
    srv, bconnect, up, obj
) -> None:
    client = await bconnect(srv)
    reply = await client.request(bframe(FILE, json.dumps(obj).encode(), START))
    assert_error(reply, "bad_message", obj.get("transferId"))
    assert entries(up) == []


@pytest.mark.parametrize("tid", ["", "x" * 65, 12, None])
async def test_a_start_whose_transfer_id_is_not_a_1_to_64_char_string_is_bad_message(
    srv, bconnect, tid
) -> None:
    client = await bconnect(srv)
    assert_error(await client.request(start_frame(tid, "a", 1)), "bad_message")


HOSTILE_NAMES = [
    "../x",
    "a/b",
    "a\\b",
    ".hidden",
    ".",
    "..",
    "",
    "nul\x00",
    "esc\x1b[31m",
    "del\x7f",
    "x" * 256,
]


@pytest.mark.parametrize("name", HOSTILE_NAMES)
async def test_a_hostile_filename_in_start_is_bad_filename(srv, bconnect, up, name) -> None:
    client = await bconnect(srv)
    assert_error(await client.request(start_frame("h", name, 1)), "bad_filename", "h")
    assert entries(up) == []


async def test_a_symlink_or_existing_file_name_is_file_exists(srv, bconnect, up, tmp_path) -> None:
    (up / "link").symlink_to(tmp_path / "outside.txt")
    (up / "there.txt").write_bytes(b"keep")
    client = await bconnect(srv)
    assert_error(await client.request(start_frame("l", "link", 1)), "file_exists", "l")
    assert_error(await client.request(start_frame("t", "there.txt", 1)), "file_exists", "t")
    assert not (tmp_path / "outside.txt").exists()
    assert (up / "there.txt").read_bytes() == b"keep"


async def test_a_name_being_uploaded_by_another_session_is_file_exists(srv, bconnect) -> None:
    a, b = await bconnect(srv), await bconnect(srv)
    await started(a, "a", "shared.bin", 10)
    assert_error(await b.request(start_frame("b", "shared.bin", 10)), "file_exists", "b")


async def test_a_file_over_the_limit_or_the_quota_is_too_large(start_server, bconnect, up) -> None:
    runtime = await start_server(
        protocol="binary", upload_dir=str(up), max_file_size=100, upload_quota=150
    )
    a, b = await bconnect(runtime), await bconnect(runtime)
    assert_error(await a.request(start_frame("big", "big", 101)), "too_large", "big")
    await started(a, "ok", "ok", 100)
    assert_error(await b.request(start_frame("q", "q", 51)), "too_large", "q")
    await started(b, "q", "q", 50)


async def test_a_second_start_while_a_transfer_is_open_is_too_many_transfers(
    srv, bconnect, up
) -> None:
    client = await bconnect(srv)
    await started(client, "first", "first.bin", 4)
    assert_error(
        await client.request(start_frame("second", "second.bin", 4)), "too_many_transfers", "second"
    )
    assert_error(
        await client.request(start_frame("first", "other.bin", 4)), "too_many_transfers", "first"
    )
    # The open one is untouched.
    await client.send(bframe(FILE, b"1234", CHUNK))
    done = await client.request(bframe(FILE, b"", END))
    assert done["type"] == "file_complete" and done["transferId"] == "first"
    assert entries(up) == ["first.bin"]


# ----------------------------------------------------------- no transfer open


@pytest.mark.parametrize("flags", [CHUNK, END, ABORT])
async def test_chunk_end_or_abort_with_no_transfer_open_is_unknown_transfer(
    srv, bconnect, flags
) -> None:
    client = await bconnect(srv)
    reply = await client.request(bframe(FILE, b"data" if flags == CHUNK else b"", flags))
    assert reply == {"type": "error", "code": "unknown_transfer", "message": "Transfer not found"}


@pytest.mark.parametrize("flags", [0, 0x10, 0x3, 0xFFFF])
async def test_an_unknown_file_flag_is_bad_message_and_the_transfer_goes_on(
    srv, bconnect, flags
) -> None:
    client = await bconnect(srv)
    assert_error(await client.request(bframe(FILE, b"x", flags)), "bad_message")
    await started(client, "go", "go.bin", 1)
    assert_error(await client.request(bframe(FILE, b"x", flags)), "bad_message", "go")
    await client.send(bframe(FILE, b"!", CHUNK))
    assert (await client.request(bframe(FILE, b"", END)))["type"] == "file_complete"


# ----------------------------------------------------------- failures and endings


async def test_more_bytes_than_file_size_is_size_mismatch_and_aborts(srv, bconnect, up) -> None:
    client = await bconnect(srv)
    await started(client, "m", "more.bin", 5)
    await client.send(bframe(FILE, b"abc", CHUNK))
    assert_error(await client.request(bframe(FILE, b"def", CHUNK)), "size_mismatch", "m")
    assert_error(await client.request(bframe(FILE, b"", END)), "unknown_transfer")
    await nothing_left(srv, up)


async def test_fewer_bytes_than_file_size_at_end_is_size_mismatch_and_aborts(
    srv, bconnect, up
) -> None:
    client = await bconnect(srv)
    await started(client, "l", "less.bin", 5)
    await client.send(bframe(FILE, b"abc", CHUNK))
    assert_error(await client.request(bframe(FILE, b"", END)), "size_mismatch", "l")
    assert_error(await client.request(bframe(FILE, b"de", CHUNK)), "unknown_transfer")
    await nothing_left(srv, up)


async def test_a_wrong_sha256_is_checksum_mismatch_and_nothing_is_kept(srv, bconnect, up) -> None:
    client = await bconnect(srv)
    await started(client, "c", "sum.bin", 3, sha256=sha(b"abc"))
    await client.send(bframe(FILE, b"abd", CHUNK))
    assert_error(await client.request(bframe(FILE, b"", END)), "checksum_mismatch", "c")
    await nothing_left(srv, up)


async def test_abort_replies_file_aborted_and_leaves_nothing(srv, bconnect, up) -> None:
    client = await bconnect(srv)
    await started(client, "a", "gone.bin", 100)
    await client.send(bframe(FILE, b"x" * 60, CHUNK))
    reply = await client.request(bframe(FILE, b"", ABORT))
    assert reply == {"type": "file_aborted", "transferId": "a"}
    await nothing_left(srv, up)
    await started(client, "a2", "gone.bin", 1)


async def begin_upload(client: BinaryClient, up: Path) -> None:
    await started(client, "mid", "mid.bin", 1 << 20)
    await client.send(bframe(FILE, os.urandom(300_000), CHUNK))
    deadline = time.monotonic() + 5
    while not any(TEMP_RE.fullmatch(n) for n in entries(up)):
        assert time.monotonic() < deadline
        await asyncio.sleep(0.01)


async def test_a_client_disconnect_mid_upload_leaves_nothing(srv, bconnect, up) -> None:
    client = await bconnect(srv)
    await begin_upload(client, up)
    client.writer.transport.abort()
    await nothing_left(srv, up)


async def test_an_operator_close_mid_upload_sends_a_closing_notice_and_leaves_nothing(
    srv, bconnect, up
) -> None:
    client = await bconnect(srv)
    await begin_upload(client, up)
    await asyncio.sleep(0.05)
    session_id = next(iter(srv.hub.connections))
    assert srv.hub.operator_close(session_id)
    kind, _, payload = await client.recv()
    assert (kind, json.loads(payload)) == (NOTICE, {"type": "closing", "reason": "operator"})
    assert await client.reader.read() == b""
    await nothing_left(srv, up)


async def test_a_shutdown_mid_upload_leaves_nothing(srv, bconnect, up) -> None:
    client = await bconnect(srv)
    await begin_upload(client, up)
    srv.hub.force_shutdown()
    await asyncio.wait_for(srv.hub.wait_stopped(), 10)
    assert entries(up) == []
