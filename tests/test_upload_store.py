"""The disk side of uploads: verb_console.hub.uploads (the store), against real files."""

from __future__ import annotations

import asyncio
import errno
import hashlib
import os
import shutil
import threading
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from verb_console.hub.uploads import (
    TEMP_PREFIX,
    CompletedUpload,
    TransferError,
    Upload,
    UploadStore,
    check_filename,
)

OWNER = "127.0.0.1:5000"


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def temp_files(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.name.startswith(TEMP_PREFIX))


def names(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


class Gate:
    """An executor whose threads are held until :meth:`release`, to keep disk jobs pending."""

    def __init__(self, workers: int = 1) -> None:
        self.executor = ThreadPoolExecutor(max_workers=workers)
        self._workers = workers
        self._event = threading.Event()
        self.hold()

    def hold(self) -> None:
        self._event = threading.Event()
        for _ in range(self._workers):
            self.executor.submit(self._event.wait)

    def release(self) -> None:
        self._event.set()

    def close(self) -> None:
        self._event.set()
        self.executor.shutdown(wait=True)


@pytest.fixture
async def make_store(tmp_path: Path) -> AsyncIterator[Callable[..., UploadStore]]:
    """Builds prepared stores in tmp_path/uploads; closes them and checks none left a temp file."""
    made: list[UploadStore] = []
    gates: list[Gate] = []

    def make(**kwargs: Any) -> UploadStore:
        gate = kwargs.pop("gate", None)
        if gate is not None:
            gates.append(gate)
            kwargs["executor"] = gate.executor
        store = UploadStore(tmp_path / "uploads", **kwargs)
        store.prepare()
        made.append(store)
        return store

    yield make
    for gate in gates:
        gate.release()
    for store in made:
        await store.aclose()
        assert temp_files(store.directory) == []
    for gate in gates:
        gate.close()


@pytest.fixture
def store(make_store: Callable[..., UploadStore]) -> UploadStore:
    return make_store()


def expect_error(code: str, call: Callable[[], object]) -> TransferError:
    with pytest.raises(TransferError) as info:
        call()
    assert info.value.code == code, info.value
    return info.value


# -- filenames ------------------------------------------------------------------


@pytest.mark.parametrize(
    "name",
    ["report.pdf", "a", "résumé.txt", "名前.txt", "a..b", "trailing.", "with space", "x" * 255],
)
def test_legal_bare_names_are_accepted_unchanged(name: str) -> None:
    assert check_filename(name) == name


@pytest.mark.parametrize(
    "name",
    [
        "",
        ".",
        "..",
        "../x",
        "a/b",
        "/etc/passwd",
        "a\\b",
        "..\\x",
        ".hidden",
        ".verb-upload-0123456789abcdef0123456789abcdef.part",
        "a\x00b",
        "a\nb",
        "tab\there",
        "a\x1fb",
        "del\x7f",
        "c1\x85control",
        "lone\ud800surrogate",
        "x" * 256,
        "é" * 128,
        5,
        None,
        b"bytes.txt",
    ],
)
def test_hostile_or_malformed_names_are_bad_filename(name: object) -> None:
    expect_error("bad_filename", lambda: check_filename(name))


def test_a_name_of_exactly_255_utf8_bytes_is_accepted_and_256_is_not() -> None:
    exact = "é" * 127 + "a"
    assert len(exact.encode()) == 255
    assert check_filename(exact) == exact
    expect_error("bad_filename", lambda: check_filename(exact + "a"))


def test_a_name_is_measured_in_utf8_bytes_not_characters() -> None:
    euro = "€" * 86  # 86 characters but 258 bytes
    assert len(euro) < 255 < len(euro.encode())
    expect_error("bad_filename", lambda: check_filename(euro))
    assert check_filename("€" * 85) == "€" * 85  # exactly 255 bytes


# -- opening --------------------------------------------------------------------


async def test_open_creates_only_a_hidden_temporary_file_inside_the_directory(
    store: UploadStore,
) -> None:
    upload = store.open(OWNER, "t1", "data.bin", 10)
    assert isinstance(upload, Upload)
    (temp,) = temp_files(store.directory)
    assert temp == upload.temp_name and temp.startswith(".") and temp.endswith(".part")
    assert not (store.directory / "data.bin").exists()
    assert store.active_count == 1
    assert (upload.owner, upload.transfer_id, upload.filename, upload.size) == (
        OWNER,
        "t1",
        "data.bin",
        10,
    )
    assert upload.received == 0 and upload.started_at > 0


def test_open_before_prepare_is_a_programming_error(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError):
        UploadStore(tmp_path).open(OWNER, "t", "a", 1)


@pytest.mark.parametrize("size", [-1, True, 1.5, "10", None])
async def test_a_size_that_is_not_a_non_negative_integer_is_bad_message(
    store: UploadStore, size: object
) -> None:
    expect_error("bad_message", lambda: store.open(OWNER, "t", "a.txt", size))
    assert temp_files(store.directory) == []


@pytest.mark.parametrize("digest", ["", "abc", "g" * 64, "a" * 63, "a" * 65, 123])
async def test_a_sha256_that_is_not_64_hex_digits_is_bad_message(
    store: UploadStore, digest: object
) -> None:
    expect_error("bad_message", lambda: store.open(OWNER, "t", "a.txt", 1, sha256=digest))


@pytest.mark.parametrize("transfer_id", ["", "x" * 65, 7, None])
async def test_a_transfer_id_that_is_not_1_to_64_characters_is_bad_message(
    store: UploadStore, transfer_id: object
) -> None:
    expect_error("bad_message", lambda: store.open(OWNER, transfer_id, "a.txt", 1))  # type: ignore[arg-type]


async def test_a_hostile_name_is_refused_before_any_file_is_created(store: UploadStore) -> None:
    err = expect_error("bad_filename", lambda: store.open(OWNER, "t9", "../escape", 1))
    assert err.transfer_id == "t9"
    assert names(store.directory) == []
    assert not (store.directory.parent / "escape").exists()


async def test_a_transfer_id_already_open_is_a_duplicate_but_other_sessions_may_reuse_it(
    store: UploadStore,
) -> None:
    store.open(OWNER, "t", "a.txt", 1)
    expect_error("duplicate_transfer", lambda: store.open(OWNER, "t", "b.txt", 1))
    store.open("10.0.0.2:6000", "t", "b.txt", 1)
    assert store.active_count == 2


async def test_the_per_session_limit_counts_open_transfers_and_an_abort_frees_a_slot(
    make_store: Callable[..., UploadStore],
) -> None:
    store = make_store(per_session_limit=2)
    first = store.open(OWNER, "1", "one", 1)
    store.open(OWNER, "2", "two", 1)
    expect_error("too_many_transfers", lambda: store.open(OWNER, "3", "three", 1))
    store.open("other:1", "3", "three", 1)
    first.abort("client_abort")
    store.open(OWNER, "3", "four", 1)


async def test_the_limit_argument_overrides_the_per_session_limit(store: UploadStore) -> None:
    store.open(OWNER, "1", "one", 1, limit=1)
    expect_error("too_many_transfers", lambda: store.open(OWNER, "2", "two", 1, limit=1))


async def test_checks_run_in_the_documented_order(make_store: Callable[..., UploadStore]) -> None:
    store = make_store(per_session_limit=1, max_file_size=10)
    (store.directory / "taken").write_bytes(b"x")
    store.open(OWNER, "t", "mine", 1)
    # Every later rule is broken too; the first one in the order wins.
    expect_error("bad_filename", lambda: store.open(OWNER, "t", ".x", 99))
    expect_error("duplicate_transfer", lambda: store.open(OWNER, "t", "taken", 99))
    expect_error("too_many_transfers", lambda: store.open(OWNER, "u", "taken", 99))
    expect_error("file_exists", lambda: store.open("b:1", "u", "taken", 99))
    expect_error("too_large", lambda: store.open("b:1", "u", "free", 99))


async def test_an_existing_file_or_directory_holds_its_name(store: UploadStore) -> None:
    (store.directory / "file.txt").write_bytes(b"old")
    (store.directory / "dir").mkdir()
    expect_error("file_exists", lambda: store.open(OWNER, "1", "file.txt", 1))
    expect_error("file_exists", lambda: store.open(OWNER, "2", "dir", 1))
    assert (store.directory / "file.txt").read_bytes() == b"old"


async def test_a_name_being_uploaded_is_taken_until_that_transfer_ends(
    store: UploadStore,
) -> None:
    first = store.open(OWNER, "1", "same.txt", 1)
    expect_error("file_exists", lambda: store.open("other:1", "1", "same.txt", 1))
    first.abort("client_abort")
    store.open("other:1", "1", "same.txt", 1)


async def test_a_symlink_in_the_directory_holds_its_name_and_is_never_written_through(
    store: UploadStore, tmp_path: Path
) -> None:
    outside = tmp_path / "outside.txt"
    outside.write_bytes(b"precious")
    (store.directory / "link.txt").symlink_to(outside)
    (store.directory / "dangling").symlink_to(tmp_path / "does-not-exist")
    expect_error("file_exists", lambda: store.open(OWNER, "1", "link.txt", 4))
    expect_error("file_exists", lambda: store.open(OWNER, "2", "dangling", 4))
    assert outside.read_bytes() == b"precious"
    assert not (tmp_path / "does-not-exist").exists()


async def test_a_symlink_planted_at_the_temporary_name_is_skipped_not_followed(
    store: UploadStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    outside = tmp_path / "outside.txt"
    outside.write_bytes(b"precious")
    planted = TEMP_PREFIX + "0" * 32 + ".part"
    (store.directory / planted).symlink_to(outside)
    fresh = TEMP_PREFIX + "1" * 32 + ".part"
    candidates = iter([planted, fresh])
    monkeypatch.setattr(store, "_temp_name", lambda: next(candidates))

    upload = store.open(OWNER, "1", "safe.txt", 4)
    assert upload.temp_name == fresh
    upload.write(b"evil")
    await upload.finish()
    assert outside.read_bytes() == b"precious"
    assert (store.directory / "safe.txt").read_bytes() == b"evil"
    (store.directory / planted).unlink()


async def test_a_file_larger_than_the_per_file_limit_is_too_large(
    make_store: Callable[..., UploadStore],
) -> None:
    store = make_store(max_file_size=100)
    expect_error("too_large", lambda: store.open(OWNER, "1", "big", 101))
    store.open(OWNER, "2", "fits", 100)


async def test_the_quota_counts_regular_files_present_plus_every_open_transfer(
    make_store: Callable[..., UploadStore], tmp_path: Path
) -> None:
    store = make_store(quota=1000)
    directory = store.directory
    (directory / "present.bin").write_bytes(b"x" * 300)
    # Not regular files of the directory, so not counted:
    big_outside = tmp_path / "big-outside.bin"
    big_outside.write_bytes(b"x" * 5000)
    (directory / "link").symlink_to(big_outside)
    (directory / "sub").mkdir()
    (directory / "sub" / "nested.bin").write_bytes(b"x" * 5000)

    a = store.open(OWNER, "a", "a.bin", 400)
    a.write(b"y" * 400)
    await store.wait_idle()
    # 300 present + 400 reserved by the open transfer (its temp file is not counted again).
    expect_error("too_large", lambda: store.open(OWNER, "b", "b.bin", 301))
    b = store.open(OWNER, "b", "b.bin", 300)
    expect_error("too_large", lambda: store.open(OWNER, "c", "c.bin", 1))
    store.open(OWNER, "c", "c.bin", 0)

    b.abort("client_abort")
    store.open(OWNER, "d", "d.bin", 300)


async def test_a_finished_upload_keeps_counting_against_the_quota_as_a_file(
    make_store: Callable[..., UploadStore],
) -> None:
    store = make_store(quota=100)
    upload = store.open(OWNER, "a", "a.bin", 60)
    upload.write(b"z" * 60)
    await upload.finish()
    expect_error("too_large", lambda: store.open(OWNER, "b", "b.bin", 41))
    store.open(OWNER, "b", "b.bin", 40)


async def test_a_full_disk_makes_an_upload_too_large(
    make_store: Callable[..., UploadStore],
) -> None:
    free = 500
    seen: list[Path] = []

    def free_space(path: Path) -> int:
        seen.append(path)
        return free

    store = make_store(free_space=free_space)
    expect_error("too_large", lambda: store.open(OWNER, "1", "a", 501))
    first = store.open(OWNER, "1", "a", 300)
    # The 300 bytes the open transfer has yet to write are already spoken for.
    expect_error("too_large", lambda: store.open(OWNER, "2", "b", 201))
    store.open(OWNER, "2", "b", 200)
    first.abort("client_abort")
    assert seen and all(p == store.directory for p in seen)


async def test_the_default_free_space_check_reads_the_real_disk(
    make_store: Callable[..., UploadStore],
) -> None:
    store = make_store(max_file_size=1 << 62, quota=1 << 62)
    more_than_free = shutil.disk_usage(store.directory).free + (1 << 30)
    err = expect_error("too_large", lambda: store.open(OWNER, "1", "huge", more_than_free))
    assert "disk" in err.message
    assert temp_files(store.directory) == []


# -- writing and finishing --------------------------------------------------------


async def test_a_complete_upload_appears_under_its_final_name_with_its_bytes_and_digest(
    store: UploadStore,
) -> None:
    data = os.urandom(300_000)
    upload = store.open(OWNER, "t", "photo.jpg", len(data))
    for i in range(0, len(data), 7000):
        upload.write(data[i : i + 7000])
    done = await upload.finish()
    assert isinstance(done, CompletedUpload)
    assert done.filename == "photo.jpg" and done.received == len(data)
    assert done.sha256_hex == sha(data)
    assert done.duration_ms >= 0 and done.avg_speed > 0
    assert (store.directory / "photo.jpg").read_bytes() == data
    assert names(store.directory) == ["photo.jpg"]
    assert store.active_count == 0 and store.completed == 1
    expect_error("unknown_transfer", lambda: store.get(OWNER, "t"))


async def test_an_empty_file_can_be_uploaded(store: UploadStore) -> None:
    upload = store.open(OWNER, "t", "empty", 0)
    done = await upload.finish()
    assert done.received == 0 and done.sha256_hex == sha(b"")
    assert (store.directory / "empty").read_bytes() == b""


async def test_bytearray_and_memoryview_chunks_are_copied_when_written(
    store: UploadStore,
) -> None:
    buf = bytearray(b"abcd")
    upload = store.open(OWNER, "t", "copy", 8)
    upload.write(buf)
    buf[:] = b"XXXX"  # the caller reuses its buffer at once
    upload.write(memoryview(b"efgh"))
    await upload.finish()
    assert (store.directory / "copy").read_bytes() == b"abcdefgh"


async def test_writes_land_in_order_even_with_many_worker_threads(
    make_store: Callable[..., UploadStore],
) -> None:
    pool = ThreadPoolExecutor(max_workers=8)
    try:
        store = make_store(executor=pool)
        chunks = {
            name: [f"{name}:{i:05d};".encode() * (1 + i % 7) for i in range(800)]
            for name in ("a", "b", "c")
        }
        uploads = {
            name: store.open(OWNER, name, name, sum(map(len, parts)))
            for name, parts in chunks.items()
        }
        for i in range(800):
            for name, upload in uploads.items():
                upload.write(chunks[name][i])
            if i % 50 == 0:
                await asyncio.sleep(0)
        results = await asyncio.gather(*(u.finish() for u in uploads.values()))
        for (name, parts), done in zip(chunks.items(), results, strict=True):
            expected = b"".join(parts)
            assert (store.directory / name).read_bytes() == expected
            assert done.sha256_hex == sha(expected)
        await store.aclose()
    finally:
        pool.shutdown(wait=True)


async def test_a_matching_sha256_is_accepted_in_any_letter_case(store: UploadStore) -> None:
    data = b"checked content"
    upload = store.open(OWNER, "t", "ok.txt", len(data), sha256=sha(data).upper())
    assert upload.sha256 == sha(data)
    upload.write(data)
    done = await upload.finish()
    assert done.sha256_hex == sha(data)
    assert (store.directory / "ok.txt").read_bytes() == data


async def test_a_wrong_sha256_is_a_checksum_mismatch_that_leaves_no_file(
    store: UploadStore,
) -> None:
    upload = store.open(OWNER, "t", "bad.txt", 5, sha256=sha(b"other"))
    upload.write(b"hello")
    with pytest.raises(TransferError) as info:
        await upload.finish()
    assert info.value.code == "checksum_mismatch" and info.value.transfer_id == "t"
    await store.wait_idle()
    assert names(store.directory) == []
    assert upload.state == "failed" and upload.outcome == "checksum_mismatch"
    store.open(OWNER, "t", "bad.txt", 5)  # id and name are free again


async def test_bytes_beyond_the_announced_size_are_a_size_mismatch_that_aborts(
    store: UploadStore,
) -> None:
    upload = store.open(OWNER, "t", "over.txt", 5)
    upload.write(b"12")
    upload.write(b"345")  # exactly up to the size is fine
    err = expect_error("size_mismatch", lambda: upload.write(b"6"))
    assert err.transfer_id == "t"
    assert upload.state == "failed" and upload.outcome == "size_mismatch"
    await store.wait_idle()
    assert names(store.directory) == []
    expect_error("unknown_transfer", lambda: store.get(OWNER, "t"))


async def test_fewer_bytes_than_announced_at_finish_are_a_size_mismatch_that_aborts(
    store: UploadStore,
) -> None:
    upload = store.open(OWNER, "t", "short.txt", 10)
    upload.write(b"123")
    with pytest.raises(TransferError) as info:
        await upload.finish()
    assert info.value.code == "size_mismatch"
    await store.wait_idle()
    assert names(store.directory) == []


async def test_a_file_that_takes_the_final_name_meanwhile_is_never_replaced(
    store: UploadStore,
) -> None:
    upload = store.open(OWNER, "t", "race.txt", 3)
    upload.write(b"new")
    (store.directory / "race.txt").write_bytes(b"someone else's")
    with pytest.raises(TransferError) as info:
        await upload.finish()
    assert info.value.code == "file_exists"
    await store.wait_idle()
    assert (store.directory / "race.txt").read_bytes() == b"someone else's"
    assert names(store.directory) == ["race.txt"]


async def test_abort_leaves_neither_a_temporary_nor_a_final_file_and_is_idempotent(
    store: UploadStore,
) -> None:
    upload = store.open(OWNER, "t", "gone.txt", 10)
    upload.write(b"12345")
    upload.abort("client_abort")
    upload.abort("disconnect")
    assert upload.state == "aborted" and upload.outcome == "client_abort"
    await store.wait_idle()
    assert names(store.directory) == []
    expect_error("unknown_transfer", lambda: upload.write(b"x"))
    with pytest.raises(TransferError) as info:
        await upload.finish()
    assert info.value.code == "unknown_transfer"
    assert store.aborted == 1


async def test_abort_lets_the_running_write_end_and_drops_the_queued_ones(
    make_store: Callable[..., UploadStore],
) -> None:
    gate = Gate()
    store = make_store(gate=gate)
    upload = store.open(OWNER, "t", "held.txt", 30)
    for _ in range(3):
        upload.write(b"0123456789")
    assert upload.backlog == 30
    upload.abort("client_abort")
    # The first write was handed to the (held) pool; the rest never reach the disk.
    assert upload.backlog == 10
    assert temp_files(store.directory) == [upload.temp_name]
    gate.release()
    await store.wait_idle()
    assert names(store.directory) == []
    assert upload.written == 10


async def test_get_finds_open_transfers_by_owner_and_id(store: UploadStore) -> None:
    upload = store.open(OWNER, "t", "a", 1)
    assert store.get(OWNER, "t") is upload
    err = expect_error("unknown_transfer", lambda: store.get(OWNER, "nope"))
    assert err.message == "Transfer not found" and err.transfer_id == "nope"
    expect_error("unknown_transfer", lambda: store.get("other:1", "t"))
    assert store.uploads_of(OWNER) == [upload]


async def test_writes_after_finish_began_are_refused(store: UploadStore) -> None:
    upload = store.open(OWNER, "t", "a", 1)
    upload.write(b"a")
    finishing = asyncio.ensure_future(upload.finish())
    await asyncio.sleep(0)
    expect_error("unknown_transfer", lambda: upload.write(b""))
    await finishing


async def test_write_asks_to_pause_above_high_water_and_on_drain_runs_on_the_loop(
    make_store: Callable[..., UploadStore],
) -> None:
    gate = Gate()
    store = make_store(gate=gate, high_water=1000)
    upload = store.open(OWNER, "t", "flow", 3000)
    calls: list[int] = []
    upload.on_drain = lambda: calls.append(threading.get_ident())
    assert upload.write(b"x" * 600) is False
    assert upload.write(b"x" * 600) is True
    assert upload.write(b"x" * 600) is True  # stays paused until on_drain
    await asyncio.sleep(0.01)
    assert calls == []
    gate.release()
    await store.wait_idle()
    await asyncio.sleep(0)
    assert calls == [threading.get_ident()]
    assert upload.write(b"x" * 600) is False
    upload.write(b"x" * 600)
    await upload.finish()
    assert (store.directory / "flow").stat().st_size == 3000


async def test_abort_wakes_a_paused_reader(make_store: Callable[..., UploadStore]) -> None:
    gate = Gate()
    store = make_store(gate=gate, high_water=100)
    upload = store.open(OWNER, "t", "flow", 1000)
    woken = asyncio.Event()
    upload.on_drain = woken.set
    assert upload.write(b"x" * 200) is True
    upload.abort("disconnect")
    await asyncio.wait_for(woken.wait(), 1)


async def test_a_disk_write_error_fails_the_upload_and_is_reported_once(
    store: UploadStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    upload = store.open(OWNER, "t", "full.bin", 100)
    real_write = os.write
    target = upload.temp.fd

    def failing_write(fd: int, data: Any) -> int:
        if fd == target:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_write(fd, data)

    monkeypatch.setattr(os, "write", failing_write)
    upload.write(b"x" * 10)
    await store.wait_idle()
    assert upload.state == "failed" and upload.outcome == "io_error"
    assert names(store.directory) == []
    assert store.active_count == 0
    # The name and quota are free at once; the error waits for the session's next call.
    store.open("other:1", "t", "full.bin", 1).abort("client_abort")
    err = expect_error("io_error", lambda: upload.write(b"x"))
    assert "No space left" in err.message and err.transfer_id == "t"
    expect_error("unknown_transfer", lambda: store.get(OWNER, "t"))
    assert [r.state for r in store.records() if r.filename == "full.bin"][-1] == "failed"


async def test_a_background_write_error_is_reported_by_get_or_finish(
    store: UploadStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = store.open(OWNER, "1", "one.bin", 10)
    second = store.open(OWNER, "2", "two.bin", 10)
    real_write = os.write
    targets = {first.temp.fd, second.temp.fd}

    def failing_write(fd: int, data: Any) -> int:
        if fd in targets:
            raise OSError(errno.EIO, "Input/output error")
        return real_write(fd, data)

    monkeypatch.setattr(os, "write", failing_write)
    first.write(b"x" * 10)
    second.write(b"x" * 10)
    await store.wait_idle()
    expect_error("io_error", lambda: store.get(OWNER, "1"))
    with pytest.raises(TransferError) as info:
        await second.finish()
    assert info.value.code == "io_error"
    assert store.uploads_of(OWNER) == []
    assert names(store.directory) == []


async def test_a_disk_error_while_finishing_is_raised_by_finish_and_leaves_nothing(
    store: UploadStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    upload = store.open(OWNER, "t", "sync.bin", 3)
    upload.write(b"abc")
    real_fsync = os.fsync
    target = upload.temp.fd

    def failing_fsync(fd: int) -> None:
        if fd == target:
            raise OSError(errno.EIO, "Input/output error")
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", failing_fsync)
    with pytest.raises(TransferError) as info:
        await upload.finish()
    assert info.value.code == "io_error"
    await store.wait_idle()
    assert names(store.directory) == []


async def test_abort_owner_ends_only_that_sessions_transfers(store: UploadStore) -> None:
    mine = [store.open(OWNER, str(i), f"mine{i}", 4) for i in range(3)]
    theirs = store.open("other:1", "0", "theirs", 4)
    for upload in [*mine, theirs]:
        upload.write(b"ab")
    store.abort_owner(OWNER, "disconnect")
    assert all(u.state == "aborted" and u.outcome == "disconnect" for u in mine)
    assert store.uploads_of(OWNER) == [] and store.active_count == 1
    await store.wait_idle()
    assert temp_files(store.directory) == [theirs.temp_name]
    theirs.write(b"cd")
    await theirs.finish()
    assert names(store.directory) == ["theirs"]


async def test_aclose_during_pending_writes_leaves_no_temporary_file(
    make_store: Callable[..., UploadStore],
) -> None:
    gate = Gate(workers=2)
    store = make_store(gate=gate)
    uploads = [store.open(f"s{i}:1", "t", f"file{i}", 1 << 20) for i in range(4)]
    for upload in uploads:
        for _ in range(16):
            upload.write(b"x" * 4096)
    closing = asyncio.ensure_future(store.aclose())
    await asyncio.sleep(0.01)
    assert not closing.done()  # the held writes are still pending
    gate.release()
    await asyncio.wait_for(closing, 5)
    assert names(store.directory) == []
    assert all(u.outcome == "shutdown" for u in uploads)
    expect_error("io_error", lambda: store.open(OWNER, "late", "late", 1))


async def test_aclose_cuts_off_a_finish_waiting_behind_writes(
    make_store: Callable[..., UploadStore],
) -> None:
    gate = Gate()
    store = make_store(gate=gate)
    upload = store.open(OWNER, "t", "cut.bin", 8)
    upload.write(b"abcd")
    upload.write(b"efgh")
    finishing = asyncio.ensure_future(upload.finish())
    await asyncio.sleep(0)
    closing = asyncio.ensure_future(store.aclose())
    await asyncio.sleep(0)
    gate.release()
    with pytest.raises(TransferError) as info:
        await finishing
    assert info.value.code == "aborted"
    await closing
    assert names(store.directory) == []


async def test_an_abort_reaching_a_finish_already_handed_to_a_worker_stops_the_final_link(
    make_store: Callable[..., UploadStore],
) -> None:
    gate = Gate()
    gate.release()
    store = make_store(gate=gate)
    upload = store.open(OWNER, "t", "late.bin", 4)
    upload.write(b"data")
    await store.wait_idle()
    gate.hold()
    finishing = asyncio.ensure_future(upload.finish())
    await asyncio.sleep(0)
    assert store.pending_jobs == 1  # the finish job is submitted, waiting for a thread
    upload.abort("disconnect")
    gate.release()
    with pytest.raises(TransferError) as info:
        await finishing
    assert info.value.code == "aborted"
    await store.wait_idle()
    assert names(store.directory) == []
    assert upload.state == "aborted" and upload.outcome == "disconnect"


async def test_cancelling_finish_aborts_the_upload(make_store: Callable[..., UploadStore]) -> None:
    gate = Gate()
    store = make_store(gate=gate)
    upload = store.open(OWNER, "t", "cancelled.bin", 1)
    upload.write(b"x")
    finishing = asyncio.ensure_future(upload.finish())
    await asyncio.sleep(0)
    finishing.cancel()
    with pytest.raises(asyncio.CancelledError):
        await finishing
    assert upload.state == "aborted" and upload.outcome == "cancelled"
    gate.release()
    await store.wait_idle()
    assert names(store.directory) == []


# -- start-up cleanup ---------------------------------------------------------------


async def test_prepare_creates_the_directory_and_removes_only_crash_leftovers(
    tmp_path: Path,
) -> None:
    directory = tmp_path / "deep" / "uploads"
    store = UploadStore(directory)
    assert store.prepare() == 0
    assert directory.is_dir()

    leftover = directory / (TEMP_PREFIX + "a" * 32 + ".part")
    leftover.write_bytes(b"half an upload")
    # A crash between link() and unlink(): the temp name and the final name share a file.
    linked = directory / (TEMP_PREFIX + "b" * 32 + ".part")
    (directory / "done.bin").write_bytes(b"whole")
    os.link(directory / "done.bin", linked)
    keep = [
        "verb-upload-" + "c" * 32 + ".part",  # legal upload names that look similar
        "x.verb-upload-" + "c" * 32 + ".part",
        "notes.part",
        ".keep",  # somebody else's dot file
        TEMP_PREFIX + "short.part",
    ]
    for name in keep:
        (directory / name).write_bytes(b"keep me")
    (directory / (TEMP_PREFIX + "d" * 32 + ".part")).mkdir()  # not a file we made
    (directory / (TEMP_PREFIX + "e" * 32 + ".part")).symlink_to(directory / "done.bin")

    again = UploadStore(directory)
    assert again.prepare() == 2
    assert not leftover.exists() and not linked.exists()
    assert (directory / "done.bin").read_bytes() == b"whole"
    for name in keep:
        assert (directory / name).read_bytes() == b"keep me"
    assert (directory / (TEMP_PREFIX + "d" * 32 + ".part")).is_dir()
    assert (directory / (TEMP_PREFIX + "e" * 32 + ".part")).is_symlink()
    await again.aclose()
    await store.aclose()


# -- records ------------------------------------------------------------------------


async def test_records_show_open_transfers_then_the_latest_finished_ones(
    store: UploadStore,
) -> None:
    done = store.open(OWNER, "1", "done.txt", 2)
    done.write(b"ok")
    await done.finish()
    store.open(OWNER, "2", "gone.txt", 2).abort("client_abort")
    bad = store.open(OWNER, "3", "bad.txt", 2)
    expect_error("size_mismatch", lambda: bad.write(b"toolong"))
    active = store.open("b:2", "4", "active.txt", 10, protocol="binary")
    active.write(b"12345")

    records = store.records()
    assert [(r.transfer_id, r.state, r.outcome) for r in records] == [
        ("4", "active", ""),
        ("3", "failed", "size_mismatch"),
        ("2", "aborted", "client_abort"),
        ("1", "complete", ""),
    ]
    first = records[0]
    assert (first.session_id, first.filename, first.size, first.received, first.protocol) == (
        "b:2",
        "active.txt",
        10,
        5,
        "binary",
    )
    assert first.ended_at is None
    assert records[-1].ended_at is not None and records[-1].received == 2
    assert (store.completed, store.aborted, store.failed) == (1, 1, 1)


async def test_only_the_last_100_finished_transfers_are_kept(store: UploadStore) -> None:
    for i in range(105):
        store.open(OWNER, "t", f"f{i}", 1).abort("client_abort")
    records = store.records()
    assert len(records) == 100
    assert records[0].filename == "f104" and records[-1].filename == "f5"
    assert store.aborted == 105


# -- the event loop ---------------------------------------------------------------


async def test_the_event_loop_stays_responsive_during_a_64_mib_upload(
    store: UploadStore,
) -> None:
    chunk = os.urandom(64 * 1024)
    count = 1024
    expected = hashlib.sha256()
    for _ in range(count):
        expected.update(chunk)
    upload = store.open(OWNER, "big", "big.bin", len(chunk) * count, sha256=expected.hexdigest())
    drained = asyncio.Event()
    upload.on_drain = drained.set
    loop = asyncio.get_running_loop()
    worst = 0.0
    running = True

    async def ticker() -> None:
        nonlocal worst
        while running:
            before = loop.time()
            await asyncio.sleep(0.001)
            worst = max(worst, loop.time() - before - 0.001)

    ticking = asyncio.ensure_future(ticker())
    await asyncio.sleep(0.01)
    started = loop.time()
    pauses = 0
    for _ in range(count):
        if upload.write(chunk):
            pauses += 1
            await drained.wait()
            drained.clear()
        else:
            await asyncio.sleep(0)  # a socket reader returns to the loop between reads
    done = await upload.finish()
    took = loop.time() - started
    running = False
    await ticking

    assert done.received == len(chunk) * count
    assert done.sha256_hex == expected.hexdigest()
    assert (store.directory / "big.bin").stat().st_size == len(chunk) * count
    # No turn holds a large part of the upload: 50 ms, or a tenth of the upload
    # where a loaded machine makes the whole of it slow.
    assert worst < max(0.05, took / 10), f"event loop stalled {worst * 1000:.1f} ms of {took:.2f} s"
