"""File transfers over json (PROTOCOL.md section 2.3), over real sockets and real files."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from helpers import JsonClient, eventually, frame, wire_fixtures

from verb_console.runtime import Runtime

# Every test runs in plaintext, over TLS, and over TLS on uvloop (PROTOCOL.md s9).
wire, event_loop_policy = wire_fixtures()

pytestmark = pytest.mark.timeout(30)

TEMP_RE = re.compile(r"\.verb-upload-[0-9a-f]{32}\.part")


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def entries(directory: Path) -> list[str]:
    """Everything in the directory, dot-files included."""
    return sorted(os.listdir(directory))


@pytest.fixture
def up(tmp_path: Path) -> Path:
    return tmp_path / "up"


@pytest.fixture
async def srv(start_server, up: Path) -> Runtime:
    return await start_server(upload_dir=str(up))


async def start(client: JsonClient, tid: str, name: str, size: int, **extra: Any) -> dict:
    msg = {"type": "file_start", "transferId": tid, "filename": name, "fileSize": size}
    msg.update(extra)
    return await client.request(msg)


async def started(client: JsonClient, tid: str, name: str, size: int, **extra: Any) -> None:
    reply = await start(client, tid, name, size, **extra)
    assert reply == {"type": "file_start_ack", "transferId": tid, "status": "ready"}, reply


async def chunk(client: JsonClient, tid: str, index: int, data: bytes) -> dict:
    """Send one chunk and return the reply (an ack's file_progress is read and checked)."""
    msg = {"type": "file_chunk", "transferId": tid, "chunkIndex": index, "data": b64(data)}
    reply = await client.request(msg)
    if reply["type"] == "file_chunk_ack" and index % 100 == 0:
        progress = await client.recv()
        assert progress["type"] == "file_progress", progress
        assert progress["receivedBytes"] == reply["receivedBytes"]
    return reply


async def send_chunks(client: JsonClient, tid: str, data: bytes, size: int = 65536) -> None:
    """Send every chunk, then read each ack (and the progress after chunk 0, 100...)."""
    pieces = [data[i : i + size] for i in range(0, len(data), size)]
    for i, piece in enumerate(pieces):
        msg = {"type": "file_chunk", "transferId": tid, "chunkIndex": i, "data": b64(piece)}
        await client.send(msg)
    for i in range(len(pieces)):
        ack = await client.recv()
        assert ack["type"] == "file_chunk_ack" and ack["chunkIndex"] == i, ack
        if i % 100 == 0:
            assert (await client.recv())["type"] == "file_progress"


async def upload(client: JsonClient, tid: str, name: str, data: bytes, size: int = 65536) -> dict:
    await started(client, tid, name, len(data), chunkSize=size, sha256=sha(data))
    await send_chunks(client, tid, data, size)
    return await client.request({"type": "file_end", "transferId": tid}, timeout=10)


def assert_error(reply: dict, code: str, tid: str | None = None, ref: Any = None) -> None:
    assert reply["type"] == "error", reply
    assert reply["code"] == code, reply
    assert isinstance(reply["message"], str) and reply["message"]
    if tid is None:
        assert "transferId" not in reply, reply
    else:
        assert reply["transferId"] == tid, reply
    if ref is None:
        assert "ref" not in reply, reply
    else:
        assert reply["ref"] == ref, reply


async def nothing_left(runtime: Runtime, up: Path, keep: tuple[str, ...] = ()) -> None:
    """No open upload, no disk job, and the directory holds only ``keep``."""
    store = runtime.hub.uploads
    assert store is not None
    await eventually(lambda: store.active_count == 0 and store.pending_jobs == 0, 5)
    await eventually(lambda: entries(up) == sorted(keep), 5)


# ----------------------------------------------------------- a correct upload


async def test_an_upload_lands_whole_with_its_sha256_and_no_temporary_file(
    srv, connect, up
) -> None:
    client = await connect(srv)
    data = os.urandom(200_000)
    ack = await client.request(
        {
            "type": "file_start",
            "transferId": "t1",
            "filename": "report.bin",
            "fileSize": len(data),
            "chunkSize": 65536,
            "sha256": sha(data).upper(),
            "ref": "s",
        }
    )
    assert ack == {"type": "file_start_ack", "transferId": "t1", "status": "ready", "ref": "s"}
    first = await client.request(
        {
            "type": "file_chunk",
            "transferId": "t1",
            "chunkIndex": 0,
            "data": b64(data[:65536]),
            "ref": 5,
        }
    )
    assert first == {
        "type": "file_chunk_ack",
        "transferId": "t1",
        "chunkIndex": 0,
        "receivedBytes": 65536,
        "ref": 5,
    }
    progress = await client.recv()
    assert progress == {
        "type": "file_progress",
        "transferId": "t1",
        "progress": pytest.approx(65536 * 100 / len(data), abs=0.01),
        "receivedBytes": 65536,
        "totalBytes": len(data),
    }
    for i, off in enumerate(range(65536, len(data), 65536), start=1):
        ack = await chunk(client, "t1", i, data[off : off + 65536])
        assert ack["receivedBytes"] == min(off + 65536, len(data))
    done = await client.request({"type": "file_end", "transferId": "t1", "ref": "e"})
    assert set(done) == {
        "type",
        "transferId",
        "filename",
        "receivedBytes",
        "duration",
        "avgSpeed",
        "sha256",
        "ref",
    }
    assert done["type"] == "file_complete"
    assert (done["transferId"], done["filename"], done["ref"]) == ("t1", "report.bin", "e")
    assert done["receivedBytes"] == len(data)
    assert done["sha256"] == sha(data)
    assert type(done["duration"]) is int and done["duration"] >= 0
    assert isinstance(done["avgSpeed"], int | float) and done["avgSpeed"] > 0
    assert (up / "report.bin").read_bytes() == data
    await nothing_left(srv, up, keep=("report.bin",))


async def test_progress_follows_the_ack_of_chunks_0_100_and_200_only(srv, connect, up) -> None:
    client = await connect(srv)
    data = bytes(range(256)) * 8  # 2048 bytes in 205 chunks of 10 (the last one 8)
    await started(client, "p", "progress.bin", len(data))
    pieces = [data[i : i + 10] for i in range(0, len(data), 10)]
    for i, piece in enumerate(pieces):
        await client.send(
            {"type": "file_chunk", "transferId": "p", "chunkIndex": i, "data": b64(piece)}
        )
    seen: list[dict] = []
    while len([m for m in seen if m["type"] == "file_chunk_ack"]) < len(pieces):
        seen.append(await client.recv())
    progress = [m for m in seen if m["type"] == "file_progress"]
    assert [p["receivedBytes"] for p in progress] == [10, 1010, 2010]
    for p in progress:
        assert p["totalBytes"] == 2048
        assert p["progress"] == pytest.approx(p["receivedBytes"] * 100 / 2048, abs=0.01)
        assert 0 <= p["progress"] <= 100
    # Each progress comes right after the ack of its chunk.
    for i, m in enumerate(seen):
        if m["type"] == "file_progress":
            assert seen[i - 1]["chunkIndex"] % 100 == 0
    done = await client.request({"type": "file_end", "transferId": "p"})
    assert done["type"] == "file_complete" and done["sha256"] == sha(data)


async def test_an_empty_file_completes_with_the_sha256_of_nothing(srv, connect, up) -> None:
    client = await connect(srv)
    await started(client, "z", "empty.txt", 0, chunkSize=1)
    done = await client.request({"type": "file_end", "transferId": "z"})
    assert done["type"] == "file_complete"
    assert done["receivedBytes"] == 0
    assert done["sha256"] == sha(b"")
    assert (up / "empty.txt").read_bytes() == b""


async def test_the_session_is_served_while_a_file_end_is_being_finished(srv, connect) -> None:
    client = await connect(srv)
    data = os.urandom(3 << 20)
    await started(client, "f", "big.bin", len(data))
    await send_chunks(client, "f", data, 512 * 1024)
    await client.send_raw(
        frame({"type": "file_end", "transferId": "f"}) + frame({"type": "ping", "ref": "p"})
    )
    replies = [await client.recv(5), await client.recv(5)]
    assert sorted(r["type"] for r in replies) == ["file_complete", "pong"]


async def test_two_sessions_upload_in_parallel_and_both_files_are_whole(srv, connect, up) -> None:
    a, b = await connect(srv), await connect(srv)
    da, db = os.urandom(700_000), os.urandom(500_000)
    ra, rb = await asyncio.gather(upload(a, "x", "a.bin", da), upload(b, "x", "b.bin", db))
    assert ra["sha256"] == sha(da) and rb["sha256"] == sha(db)
    assert (up / "a.bin").read_bytes() == da
    assert (up / "b.bin").read_bytes() == db
    await nothing_left(srv, up, keep=("a.bin", "b.bin"))


async def test_uploads_complete_when_the_disk_backlog_pauses_reading(srv, connect, up) -> None:
    assert srv.hub.uploads is not None
    srv.hub.uploads.high_water = 1  # every write pauses the reader until it is on disk
    client = await connect(srv)
    data = os.urandom(1 << 20)
    done = await upload(client, "bp", "slow.bin", data, size=16384)
    assert done["sha256"] == sha(data)
    assert (up / "slow.bin").read_bytes() == data
    pong = await client.request({"type": "ping"})
    assert pong["type"] == "pong"


# ----------------------------------------------------------- names


HOSTILE_NAMES = [
    "../x",
    "a/b",
    "a\\b",
    "/etc/passwd",
    ".hidden",
    ".",
    "..",
    "",
    "a\x00b",
    "tab\tname",
    "line\nbreak",
    "del\x7fname",
    "c1\x85ctl",
    "x" * 256,
    "é" * 128,  # 256 bytes of UTF-8
]


@pytest.mark.parametrize("name", HOSTILE_NAMES)
async def test_a_hostile_filename_is_bad_filename_and_nothing_is_written(
    srv, connect, up, name: str
) -> None:
    client = await connect(srv)
    reply = await client.request(
        {"type": "file_start", "transferId": "h", "filename": name, "fileSize": 3, "ref": 9}
    )
    assert_error(reply, "bad_filename", "h", 9)
    assert entries(up) == []
    assert srv.hub.uploads.active_count == 0
    # The transfer was never opened.
    assert_error(await chunk(client, "h", 0, b"abc"), "unknown_transfer", "h")


@pytest.mark.parametrize("name", ["x" * 255, "é" * 127 + "x", "名前.txt", "a b-c_d.tar.gz"])
async def test_a_bare_name_of_up_to_255_utf8_bytes_is_accepted(srv, connect, up, name) -> None:
    client = await connect(srv)
    done = await upload(client, "ok", name, b"hello")
    assert done["type"] == "file_complete" and done["filename"] == name
    assert (up / name).read_bytes() == b"hello"


async def test_a_symlink_in_the_upload_dir_is_file_exists_and_nothing_is_written_outside(
    srv, connect, up, tmp_path
) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (up / "dangling").symlink_to(outside / "new.txt")
    (outside / "old.txt").write_bytes(b"keep me")
    (up / "pointer").symlink_to(outside / "old.txt")
    client = await connect(srv)
    for name in ("dangling", "pointer"):
        assert_error(await start(client, name, name, 4), "file_exists", name)
    assert entries(outside) == ["old.txt"]
    assert (outside / "old.txt").read_bytes() == b"keep me"
    assert entries(up) == ["dangling", "pointer"]


async def test_a_name_of_an_existing_file_is_file_exists_and_the_file_is_untouched(
    srv, connect, up
) -> None:
    (up / "taken.txt").write_bytes(b"original")
    (up / "subdir").mkdir()
    client = await connect(srv)
    assert_error(await start(client, "a", "taken.txt", 3, ref="r"), "file_exists", "a", "r")
    assert_error(await start(client, "b", "subdir", 3), "file_exists", "b")
    assert (up / "taken.txt").read_bytes() == b"original"
    assert entries(up) == ["subdir", "taken.txt"]


async def test_a_name_being_uploaded_by_another_transfer_is_file_exists(srv, connect, up) -> None:
    a, b = await connect(srv), await connect(srv)
    await started(a, "one", "same.bin", 4)
    assert_error(await start(b, "two", "same.bin", 4), "file_exists", "two")
    assert_error(await start(a, "three", "same.bin", 4), "file_exists", "three")
    # Once the first transfer is aborted the name is free again.
    assert (await a.request({"type": "file_abort", "transferId": "one"}))["type"] == "file_aborted"
    await started(b, "two", "same.bin", 4)


async def test_a_file_that_takes_the_name_before_file_end_makes_it_file_exists(
    srv, connect, up
) -> None:
    client = await connect(srv)
    await started(client, "race", "late.txt", 3)
    assert (await chunk(client, "race", 0, b"new"))["type"] == "file_chunk_ack"
    (up / "late.txt").write_bytes(b"someone else")
    assert_error(
        await client.request({"type": "file_end", "transferId": "race"}), "file_exists", "race"
    )
    assert (up / "late.txt").read_bytes() == b"someone else"
    await nothing_left(srv, up, keep=("late.txt",))


# ----------------------------------------------------------- fields


@pytest.mark.parametrize(
    "fields",
    [
        {"filename": "a", "fileSize": 1},
        {"transferId": "", "filename": "a", "fileSize": 1},
        {"transferId": "x" * 65, "filename": "a", "fileSize": 1},
        {"transferId": 7, "filename": "a", "fileSize": 1},
        {"transferId": None, "filename": "a", "fileSize": 1},
    ],
)
async def test_file_start_without_a_string_transfer_id_of_1_to_64_chars_is_bad_message(
    srv, connect, up, fields
) -> None:
    client = await connect(srv)
    reply = await client.request({"type": "file_start", **fields})
    assert_error(reply, "bad_message")
    assert entries(up) == []


@pytest.mark.parametrize(
    "fields",
    [
        {"fileSize": 1},
        {"filename": "a"},
        {"filename": 5, "fileSize": 1},
        {"filename": None, "fileSize": 1},
        {"filename": "a", "fileSize": "1"},
        {"filename": "a", "fileSize": 1.0},
        {"filename": "a", "fileSize": True},
        {"filename": "a", "fileSize": -1},
        {"filename": "a", "fileSize": 1, "chunkSize": "64"},
        {"filename": "a", "fileSize": 1, "chunkSize": 1.5},
        {"filename": "a", "fileSize": 1, "sha256": "abc"},
        {"filename": "a", "fileSize": 1, "sha256": 12},
        {"filename": "a", "fileSize": 1, "sha256": "g" * 64},
    ],
)
async def test_file_start_with_a_missing_or_mistyped_field_is_bad_message_with_its_transfer_id(
    srv, connect, up, fields
) -> None:
    client = await connect(srv)
    reply = await client.request({"type": "file_start", "transferId": "t", **fields, "ref": 1})
    assert_error(reply, "bad_message", "t", 1)
    assert entries(up) == []
    assert srv.hub.uploads.active_count == 0


@pytest.mark.parametrize(
    "fields",
    [
        {"chunkIndex": 0},
        {"data": "AA=="},
        {"chunkIndex": "0", "data": "AA=="},
        {"chunkIndex": 0.0, "data": "AA=="},
        {"chunkIndex": 0, "data": 5},
    ],
)
async def test_file_chunk_with_a_missing_or_mistyped_field_is_bad_message(
    srv, connect, fields
) -> None:
    client = await connect(srv)
    await started(client, "t", "f.bin", 1)
    assert_error(
        await client.request({"type": "file_chunk", "transferId": "t", **fields}),
        "bad_message",
        "t",
    )


# ----------------------------------------------------------- limits


async def test_a_file_over_the_per_file_limit_is_too_large(start_server, connect, up) -> None:
    runtime = await start_server(upload_dir=str(up), max_file_size=1000)
    client = await connect(runtime)
    assert_error(await start(client, "big", "big.bin", 1001), "too_large", "big")
    await started(client, "fits", "fits.bin", 1000)
    assert entries(up)[0].startswith(".verb-upload-")


async def test_the_quota_counts_files_on_disk_and_open_transfers(start_server, connect, up) -> None:
    up.mkdir()
    (up / "old.bin").write_bytes(b"x" * 400)
    runtime = await start_server(upload_dir=str(up), upload_quota=1000)
    client = await connect(runtime)
    assert_error(await start(client, "a", "a.bin", 601), "too_large", "a")
    await started(client, "b", "b.bin", 500)
    assert_error(await start(client, "c", "c.bin", 101), "too_large", "c")
    await started(client, "d", "d.bin", 100)


async def test_a_fifth_open_transfer_is_too_many_transfers(srv, connect) -> None:
    client = await connect(srv)
    for i in range(4):
        await started(client, f"t{i}", f"f{i}.bin", 10)
    assert_error(await start(client, "t4", "f4.bin", 10, ref="x"), "too_many_transfers", "t4", "x")
    # Another session has its own allowance.
    other = await connect(srv)
    await started(other, "t4", "f4.bin", 10)
    # Ending one frees a place.
    await client.request({"type": "file_abort", "transferId": "t0"})
    await started(client, "t5", "f5.bin", 10)


async def test_a_transfer_id_already_open_is_duplicate_transfer(srv, connect) -> None:
    client = await connect(srv)
    await started(client, "dup", "one.bin", 10)
    assert_error(await start(client, "dup", "two.bin", 10), "duplicate_transfer", "dup")
    assert (await chunk(client, "dup", 0, b"0123456789"))["receivedBytes"] == 10


@pytest.mark.parametrize(
    "message",
    [
        {"type": "file_chunk", "transferId": "nope", "chunkIndex": 0, "data": "AA=="},
        {"type": "file_end", "transferId": "nope"},
        {"type": "file_abort", "transferId": "nope"},
    ],
)
async def test_an_unknown_transfer_id_is_unknown_transfer(srv, connect, message) -> None:
    client = await connect(srv)
    reply = await client.request({**message, "ref": "q"})
    assert reply == {
        "type": "error",
        "code": "unknown_transfer",
        "message": "Transfer not found",
        "ref": "q",
        "transferId": "nope",
    }


async def test_another_sessions_transfer_is_unknown_transfer(srv, connect) -> None:
    a, b = await connect(srv), await connect(srv)
    await started(a, "mine", "mine.bin", 4)
    assert_error(await chunk(b, "mine", 0, b"abcd"), "unknown_transfer", "mine")
    assert_error(
        await b.request({"type": "file_abort", "transferId": "mine"}), "unknown_transfer", "mine"
    )
    assert (await chunk(a, "mine", 0, b"abcd"))["type"] == "file_chunk_ack"


# ----------------------------------------------------------- chunks and endings


@pytest.mark.parametrize(
    ("sent", "bad"),
    [(0, 1), (1, 2), (1, 0), (1, -1), (2, 1)],
    ids=["not-starting-at-0", "a-gap", "a-repeat", "negative", "going-back"],
)
async def test_a_chunk_out_of_order_is_bad_chunk_and_aborts_the_transfer(
    srv, connect, up, sent, bad
) -> None:
    client = await connect(srv)
    await started(client, "o", "order.bin", 30)
    for i in range(sent):
        assert (await chunk(client, "o", i, b"a" * 10))["type"] == "file_chunk_ack"
    assert_error(await chunk(client, "o", bad, b"c" * 10), "bad_chunk", "o")
    assert_error(await chunk(client, "o", sent, b"c" * 10), "unknown_transfer", "o")
    await nothing_left(srv, up)


@pytest.mark.parametrize("data", ["!!!!", "abc", "AAA=A", "AA==AA==", "é", "A A=", "AAA\n"])
async def test_a_chunk_that_is_not_valid_base64_is_bad_chunk_and_aborts_the_transfer(
    srv, connect, up, data
) -> None:
    client = await connect(srv)
    await started(client, "b", "b64.bin", 10)
    reply = await client.request(
        {"type": "file_chunk", "transferId": "b", "chunkIndex": 0, "data": data, "ref": 3}
    )
    assert_error(reply, "bad_chunk", "b", 3)
    assert_error(
        await client.request({"type": "file_end", "transferId": "b"}), "unknown_transfer", "b"
    )
    await nothing_left(srv, up)
    # The name is free again.
    await started(client, "b", "b64.bin", 10)


async def test_more_bytes_than_file_size_is_size_mismatch_and_aborts(srv, connect, up) -> None:
    client = await connect(srv)
    await started(client, "m", "more.bin", 5)
    assert (await chunk(client, "m", 0, b"abc"))["receivedBytes"] == 3
    assert_error(await chunk(client, "m", 1, b"def"), "size_mismatch", "m")
    assert_error(await chunk(client, "m", 2, b"g"), "unknown_transfer", "m")
    await nothing_left(srv, up)


async def test_fewer_bytes_than_file_size_at_file_end_is_size_mismatch_and_aborts(
    srv, connect, up
) -> None:
    client = await connect(srv)
    await started(client, "l", "less.bin", 5)
    await chunk(client, "l", 0, b"abcd")
    reply = await client.request({"type": "file_end", "transferId": "l", "ref": "end"})
    assert_error(reply, "size_mismatch", "l", "end")
    assert_error(await chunk(client, "l", 1, b"e"), "unknown_transfer", "l")
    await nothing_left(srv, up)


async def test_a_wrong_sha256_is_checksum_mismatch_and_nothing_is_kept(srv, connect, up) -> None:
    client = await connect(srv)
    await started(client, "c", "sum.bin", 4, sha256=sha(b"abcd"))
    await chunk(client, "c", 0, b"abce")
    reply = await client.request({"type": "file_end", "transferId": "c", "ref": 1})
    assert_error(reply, "checksum_mismatch", "c", 1)
    assert_error(
        await client.request({"type": "file_end", "transferId": "c"}), "unknown_transfer", "c"
    )
    await nothing_left(srv, up)


async def test_file_abort_replies_file_aborted_and_leaves_nothing(srv, connect, up) -> None:
    client = await connect(srv)
    await started(client, "a", "gone.bin", 100)
    await chunk(client, "a", 0, b"x" * 60)
    assert any(TEMP_RE.fullmatch(n) for n in entries(up))
    reply = await client.request({"type": "file_abort", "transferId": "a", "ref": "ab"})
    assert reply == {"type": "file_aborted", "transferId": "a", "ref": "ab"}
    assert_error(await chunk(client, "a", 1, b"x"), "unknown_transfer", "a")
    await nothing_left(srv, up)


# ----------------------------------------------------------- sessions ending mid-upload


async def begin_upload(client: JsonClient, up: Path) -> None:
    await started(client, "mid", "mid.bin", 1 << 20)
    for i in range(4):
        await chunk(client, "mid", i, os.urandom(65536))
    assert any(TEMP_RE.fullmatch(n) for n in entries(up))


async def test_a_client_disconnect_mid_upload_leaves_nothing(srv, connect, up) -> None:
    client = await connect(srv)
    await begin_upload(client, up)
    client.writer.transport.abort()
    await nothing_left(srv, up)
    assert srv.hub.uploads.aborted == 1


async def test_an_operator_close_mid_upload_leaves_nothing(srv, connect, up) -> None:
    client = await connect(srv)
    await begin_upload(client, up)
    assert srv.hub.operator_close(client.id)
    assert await client.recv() == {"type": "closing", "reason": "operator"}
    await client.expect_eof()
    await nothing_left(srv, up)


async def test_a_shutdown_mid_upload_leaves_nothing(srv, connect, up) -> None:
    client = await connect(srv)
    await begin_upload(client, up)
    srv.hub.force_shutdown()
    await asyncio.wait_for(srv.hub.wait_stopped(), 10)
    assert entries(up) == []


async def test_a_session_that_ends_while_its_file_end_is_pending_leaves_nothing_partial(
    srv, connect, up
) -> None:
    client = await connect(srv)
    data = os.urandom(2 << 20)
    await started(client, "e", "ending.bin", len(data))
    await send_chunks(client, "e", data, 256 * 1024)
    await client.send({"type": "file_end", "transferId": "e"})
    client.writer.transport.abort()
    await nothing_left(srv, up, keep=tuple(n for n in entries(up) if n == "ending.bin"))
    # Either the upload was already committed (whole) or nothing is there.
    if (up / "ending.bin").exists():
        assert (up / "ending.bin").read_bytes() == data


def _spawn(directory: Path) -> tuple[subprocess.Popen[bytes], int]:
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "verb_console",
            "--headless",
            "--port",
            "0",
            "--protocol",
            "json",
            "--upload-dir",
            str(directory),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    assert proc.stderr is not None
    deadline = time.monotonic() + 15
    seen = b""
    while time.monotonic() < deadline:
        line = proc.stderr.readline()
        if not line:
            break
        seen += line
        found = re.search(rb"listening on 127\.0\.0\.1:(\d+)", line)
        if found:
            # Keep reading its log so a full pipe can never stall the server.
            threading.Thread(target=proc.stderr.read, daemon=True).start()
            return proc, int(found.group(1))
    proc.kill()
    raise AssertionError(f"server did not start: {seen!r}")


async def test_a_restart_after_a_kill_removes_the_temporary_file_of_an_interrupted_upload(
    up,
) -> None:
    proc, port = await asyncio.to_thread(_spawn, up)
    try:
        client = await JsonClient.connect(port)
        await started(client, "k", "killed.bin", 1 << 20)
        for i in range(3):
            assert (await chunk(client, "k", i, os.urandom(65536)))["type"] == "file_chunk_ack"
        await eventually(lambda: any(TEMP_RE.fullmatch(n) for n in entries(up)))
        proc.send_signal(signal.SIGKILL)
        await asyncio.to_thread(proc.wait, 10)
        await client.close()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    leftovers = entries(up)
    assert len(leftovers) == 1 and TEMP_RE.fullmatch(leftovers[0])
    proc2, _ = await asyncio.to_thread(_spawn, up)
    try:
        assert entries(up) == []
    finally:
        proc2.kill()
        await asyncio.to_thread(proc2.wait, 10)


async def test_pings_from_another_client_are_answered_while_a_large_upload_runs(
    srv, connect, up
) -> None:
    uploader, pinger = await connect(srv), await connect(srv)
    data = os.urandom(24 << 20)
    task = asyncio.create_task(upload(uploader, "L", "large.bin", data, size=512 * 1024))
    latencies: list[float] = []
    started = time.perf_counter()
    while not task.done():
        t0 = time.perf_counter()
        pong = await pinger.request({"type": "ping"})
        latencies.append(time.perf_counter() - t0)
        assert pong["type"] == "pong"
        await asyncio.sleep(0.005)
    done = await task
    took = time.perf_counter() - started
    assert done["sha256"] == sha(data)
    assert len(latencies) >= 5
    # No ping waits for a large part of the upload: half a second, or an eighth
    # of the upload where a loaded machine makes the whole of it slow.
    assert max(latencies) < max(0.5, took / 8), (took, latencies)
