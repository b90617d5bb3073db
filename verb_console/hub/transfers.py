"""The disk side of file uploads (PROTOCOL.md sections 2.3 and 3).

The json and binary sessions decode the wire messages; this module checks the
upload rules, writes the bytes and puts finished files in place. It promises:

- Nothing is written outside the upload directory: every path is a bare,
  checked name opened relative to a descriptor of the directory, and the
  temporary file is created with ``O_CREAT | O_EXCL | O_NOFOLLOW``.
- A final name appears whole or not at all, and never replaces a file: the
  verified, fsynced temporary file is hard-linked to its final name (``EEXIST``
  if something took the name meanwhile), then unlinked.
- Every ended upload (aborted, failed, cut off by shutdown) leaves no temporary
  file behind; a crash leaves only files that :meth:`UploadStore.prepare`
  removes at the next start. Temporary names start with ``.``, which no legal
  upload name does, so that cleanup can never touch an upload.
- Disk I/O and hashing never run on the event loop. Each upload keeps at most
  one job in a shared thread pool and chains the next one when it completes, so
  its writes stay in order without a thread per upload.

Everything except the worker-thread job bodies runs on the event loop thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import re
import secrets
import stat
import threading
import time
import unicodedata
from collections import deque
from collections.abc import Callable, Coroutine
from concurrent.futures import Executor, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..protocols.errors import ProtocolError
from .snapshot import TransferInfo

__all__ = [
    "ERROR_CODES",
    "CompletedUpload",
    "TransferError",
    "Upload",
    "UploadStore",
    "check_filename",
]

log = logging.getLogger(__name__)

MAX_FILENAME_BYTES = 255
MAX_TRANSFER_ID = 64
FINISHED_KEPT = 100
TEMP_PREFIX = ".verb-upload-"
TEMP_SUFFIX = ".part"
# Queued chunks are merged into write jobs of at most this size, so the backlog
# falls (and a paused reader resumes) while the disk is still busy.
MAX_JOB_BYTES = 2 << 20
# Ask the kernel to start writing back every this many bytes, so the final fsync
# has little left to do and a large upload does not flood the page cache.
WRITEBACK_EVERY = 16 << 20
_TEMP_RE = re.compile(r"\.verb-upload-[0-9a-f]{32}\.part")
_SHA256_RE = re.compile(r"[0-9a-fA-F]{64}")

_DEFAULT_MESSAGES = {
    "bad_filename": "Invalid filename",
    "file_exists": "File already exists",
    "too_large": "File too large",
    "too_many_transfers": "Too many open transfers",
    "duplicate_transfer": "Transfer already open",
    "unknown_transfer": "Transfer not found",
    "bad_chunk": "Bad chunk",
    "size_mismatch": "Size mismatch",
    "checksum_mismatch": "Checksum mismatch",
    "bad_message": "Bad message",
    "io_error": "Could not write the file",
    "aborted": "Transfer aborted",
}

#: Codes that end an upload as "failed" (an error) rather than "aborted" (a decision).
ERROR_CODES = frozenset(_DEFAULT_MESSAGES) - {"aborted"}

# Linux/BSD only: O_NOFOLLOW and dir_fd support are what keep writes inside the
# upload directory, and they do not exist on Windows.
_CREATE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC


class TransferError(ProtocolError):
    """An upload rule was broken; ``code`` is the PROTOCOL.md error code.

    Codes beyond section 2.3: ``bad_message`` (a malformed field), ``io_error``
    (the disk failed) and ``aborted`` (a pending :meth:`Upload.finish` was cut
    off by :meth:`Upload.abort`, e.g. at disconnect or shutdown). The transfer
    it is about, when known, is the error's ``transferId``.
    """

    def __init__(
        self, code: str, message: str | None = None, transfer_id: str | None = None
    ) -> None:
        message = message or _DEFAULT_MESSAGES.get(code, code)
        if transfer_id is None:
            super().__init__(code, message)
        else:
            super().__init__(code, message, transferId=transfer_id)


@dataclass(frozen=True, slots=True)
class CompletedUpload:
    """What ``file_complete`` reports about an upload now in place."""

    filename: str
    received: int
    duration_ms: int
    avg_speed: int  # bytes per second
    sha256_hex: str


def check_filename(name: object) -> str:
    """Return ``name`` if it is a legal upload name, else raise ``bad_filename``.

    Legal: a str of 1 to 255 bytes of UTF-8 (lone surrogates cannot be encoded,
    so they are rejected), without ``/``, ``\\`` or control characters (Unicode
    Cc, DEL included), not starting with ``.`` (which also excludes ``.``, ``..``
    and every temporary-file name).
    """
    if not isinstance(name, str):
        raise TransferError("bad_filename", "Filename must be a string")
    if not name:
        raise TransferError("bad_filename", "Filename is empty")
    if name.startswith("."):
        raise TransferError("bad_filename", "Filename must not start with '.'")
    if "/" in name or "\\" in name:
        raise TransferError("bad_filename", "Filename must not contain '/' or '\\'")
    try:
        size = len(name.encode("utf-8"))
    except UnicodeEncodeError:
        raise TransferError("bad_filename", "Filename is not valid Unicode") from None
    if size > MAX_FILENAME_BYTES:
        raise TransferError("bad_filename", f"Filename longer than {MAX_FILENAME_BYTES} bytes")
    # isprintable() is False for every Cc character, so most names skip the scan.
    if not name.isprintable() and any(unicodedata.category(ch) == "Cc" for ch in name):
        raise TransferError("bad_filename", "Filename contains control characters")
    return name


class _Job:
    __slots__ = ("bufs", "kind", "nbytes")

    def __init__(self, kind: str, bufs: list[bytes] | None = None, nbytes: int = 0) -> None:
        self.kind = kind  # "write", "finish" or "delete"
        self.bufs = bufs
        self.nbytes = nbytes


class Upload:
    """One upload in progress. Made by :meth:`UploadStore.open`.

    ``received`` counts bytes accepted by :meth:`write`; ``written`` those already
    on disk. ``sha256`` is the expected digest (lower-case hex) or None.
    ``on_drain`` is called on the event loop once the write backlog, after
    :meth:`write` returned True, has fallen below half the high-water mark (or
    the upload ended).
    """

    def __init__(
        self,
        store: UploadStore,
        loop: asyncio.AbstractEventLoop,
        owner: str,
        transfer_id: str,
        filename: str,
        size: int,
        sha256: str | None,
        protocol: str,
        temp_name: str,
        fd: int,
    ) -> None:
        self.owner = owner
        self.transfer_id = transfer_id
        self.filename = filename
        self.size = size
        self.sha256 = sha256
        self.protocol = protocol
        self.received = 0
        self.written = 0
        self.started_at = time.time()
        self.ended_at: float | None = None
        # "active", "finishing", then "complete", "aborted" or "failed".
        self.state = "active"
        self.outcome = ""
        self.on_drain: Callable[[], None] | None = None
        self.temp_name = temp_name
        self._store = store
        self._loop = loop
        self._t0 = time.monotonic()
        self._fd = fd  # touched only by this upload's jobs, one at a time
        self._on_disk = 0  # bytes written by the jobs so far (worker side)
        self._writeback_from = 0
        self._hash = hashlib.sha256()
        self._jobs: deque[_Job] = deque()
        self._inflight = False
        self._backlog = 0
        self._paused = False
        # A worker failure nobody was waiting for, raised by the next call.
        self._error: TransferError | None = None
        self._finish_fut: asyncio.Future[CompletedUpload] | None = None
        # Guards the race between abort() and the worker's point of no return
        # (the link to the final name); held only for a flag check, never for I/O.
        self._lock = threading.Lock()
        self._abort_requested = False
        self._committed = False

    def __repr__(self) -> str:
        return (
            f"<Upload {self.owner} {self.transfer_id!r} {self.filename!r} "
            f"{self.received}/{self.size} {self.state}>"
        )

    @property
    def backlog(self) -> int:
        """Bytes accepted by :meth:`write` and not yet on disk."""
        return self._backlog

    @property
    def ended(self) -> bool:
        return self.state in ("complete", "aborted", "failed")

    def info(self) -> TransferInfo:
        """A snapshot for the console."""
        return TransferInfo(
            session_id=self.owner,
            transfer_id=self.transfer_id,
            filename=self.filename,
            size=self.size,
            received=self.received,
            started_at=self.started_at,
            ended_at=self.ended_at,
            state="active" if self.state == "finishing" else self.state,
            outcome=self.outcome,
            protocol=self.protocol,
        )

    # -- called by the sessions, on the event loop -----------------------------

    def write(self, data: bytes | bytearray | memoryview) -> bool:
        """Accept the next bytes of the file; the disk write happens later, in order.

        Raises ``size_mismatch`` (and aborts the upload) if the bytes would go past
        ``size``, ``io_error`` if an earlier write failed, ``unknown_transfer`` once
        the upload has ended or :meth:`finish` was called. Returns True while the
        reader should pause: from the moment the backlog goes above the high-water
        mark until ``on_drain`` is called.
        """
        self._raise_if_unusable()
        if not isinstance(data, bytes):
            # The caller may reuse its buffer; the worker must see what was sent now.
            data = bytes(data)
        n = len(data)
        if self.received + n > self.size:
            self.abort("size_mismatch")
            raise TransferError(
                "size_mismatch",
                f"More than the announced {self.size} bytes",
                self.transfer_id,
            )
        if n:
            self.received += n
            self._backlog += n
            last = self._jobs[-1] if self._jobs else None
            if last is not None and last.kind == "write" and last.nbytes < MAX_JOB_BYTES:
                # Coalescing queued chunks into one job saves a loop round trip each.
                last.bufs.append(data)  # type: ignore[union-attr]
                last.nbytes += n
            else:
                self._jobs.append(_Job("write", [data], n))
            self._pump()
            if self._backlog > self._store.high_water:
                self._paused = True
        return self._paused

    def finish(self) -> Coroutine[Any, Any, CompletedUpload]:
        """Verify the upload and put it in place under its final name.

        Raises at once (not when awaited) ``size_mismatch`` if fewer than ``size``
        bytes were received and ``unknown_transfer`` if the upload is not taking
        bytes, so a caller answers those in order with its other replies. The
        returned future then fails with ``checksum_mismatch`` if the expected
        sha256 differs, ``file_exists`` if a file took the name meanwhile,
        ``io_error`` on a disk failure, ``aborted`` if :meth:`abort` cuts it off
        first. On any error the upload has ended and
        its temporary file is (or is queued to be) deleted. Cancelling the caller
        aborts the upload unless the final link is already under way.
        """
        self._raise_if_unusable()
        if self.received < self.size:
            self.abort("size_mismatch")
            raise TransferError(
                "size_mismatch",
                f"Received {self.received} of {self.size} bytes",
                self.transfer_id,
            )
        self.state = "finishing"
        fut: asyncio.Future[CompletedUpload] = self._loop.create_future()
        self._finish_fut = fut
        self._jobs.append(_Job("finish"))
        self._pump()
        return self._finished(fut)

    async def _finished(self, fut: asyncio.Future[CompletedUpload]) -> CompletedUpload:
        try:
            return await fut
        except asyncio.CancelledError:
            self.abort("cancelled")
            raise

    def abort(self, cause: str) -> None:
        """End the upload and queue the deletion of its temporary file.

        ``cause`` is recorded as the outcome: an error code (``bad_chunk``...) makes
        the record "failed", anything else (``client_abort``, ``disconnect``,
        ``shutdown``) "aborted". Idempotent; a no-op once the final link of a
        finishing upload has begun, since the file is then complete and verified.
        """
        if self.ended:
            self._error = None
            self._store._forget(self)
            return
        with self._lock:
            if self._committed:
                return
            self._abort_requested = True
        self._stop("failed" if cause in ERROR_CODES else "aborted", cause)
        fut = self._finish_fut
        if fut is not None and not fut.done():
            fut.set_exception(
                TransferError("aborted", f"Transfer aborted: {cause}", self.transfer_id)
            )

    # -- bookkeeping, on the event loop ----------------------------------------

    def _raise_if_unusable(self) -> None:
        err = self._error
        if err is not None:
            self._error = None
            self._store._forget(self)
            raise err
        if self.state != "active":
            raise TransferError("unknown_transfer", "Transfer not found", self.transfer_id)

    def _stop(self, state: str, outcome: str, *, report_later: bool = False) -> None:
        """End the upload: drop unstarted jobs, queue the delete, free its reservations."""
        dropped = 0
        for job in self._jobs:
            dropped += job.nbytes
        self._jobs.clear()
        self._backlog -= dropped
        self._jobs.append(_Job("delete"))
        self._pump()
        self._end(state, outcome, keep_owner=report_later)
        # A paused reader must wake up to learn the upload is gone.
        self._drained(force=True)

    def _end(self, state: str, outcome: str, *, keep_owner: bool = False) -> None:
        self.state = state
        self.outcome = outcome
        self.ended_at = time.time()
        self._store._ended(self, keep_owner=keep_owner)

    def _drained(self, force: bool = False) -> None:
        if not self._paused:
            return
        if force or self._backlog == 0 or self._backlog * 2 < self._store.high_water:
            self._paused = False
            # call_soon, not a direct call: write() and abort() must not re-enter
            # the session that is calling them.
            self._loop.call_soon(self._call_on_drain)

    def _call_on_drain(self) -> None:
        callback = self.on_drain
        if callback is None:
            return
        try:
            callback()
        except Exception:
            log.exception("on_drain callback of %r failed", self)

    def _pump(self) -> None:
        if self._inflight or not self._jobs:
            return
        job = self._jobs.popleft()
        self._inflight = True
        self._store._busy_add(self)
        body = {"write": self._do_write, "finish": self._do_finish, "delete": self._do_delete}
        fn = body[job.kind]
        try:
            fut = self._loop.run_in_executor(self._store._executor, fn, job)
        except RuntimeError:
            # The executor was shut down under us. Doing the job here blocks the
            # loop for a moment, but skipping it would leak the temporary file.
            log.warning("upload executor unavailable; running %s job inline", job.kind)
            fut = self._loop.create_future()
            try:
                fut.set_result(fn(job))
            except Exception as exc:
                fut.set_exception(exc)
        fut.add_done_callback(lambda f: self._job_done(job, f))

    def _job_done(self, job: _Job, fut: asyncio.Future) -> None:
        self._inflight = False
        exc = fut.exception()
        if job.kind == "write":
            self._backlog -= job.nbytes
            if exc is None:
                self.written += job.nbytes
            elif not self.ended:
                self._failed_in_worker(exc)
            self._drained()
        elif job.kind == "finish":
            if exc is not None:
                if not self.ended:
                    self._failed_in_worker(exc)
            else:
                self._finish_done(*fut.result())
        self._pump()
        if not self._inflight:
            self._store._busy_remove(self)

    def _failed_in_worker(self, exc: BaseException) -> None:
        if isinstance(exc, OSError):
            detail = exc.strerror or str(exc)
            log.warning("upload %r failed: %s", self, exc)
        else:
            detail = "internal error"
            log.error("upload %r failed", self, exc_info=exc)
        err = TransferError("io_error", f"Could not write the file: {detail}", self.transfer_id)
        with self._lock:
            self._abort_requested = True
        fut = self._finish_fut
        waiting = fut is not None and not fut.done()
        self._stop("failed", "io_error", report_later=not waiting)
        if waiting:
            fut.set_exception(err)  # type: ignore[union-attr]
        else:
            self._error = err

    def _finish_done(self, outcome: str, digest: str) -> None:
        fut = self._finish_fut
        if outcome == "aborted":
            return  # abort() already did the bookkeeping and answered finish()
        if outcome == "ok":
            self._end("complete", "")
            took = time.monotonic() - self._t0
            speed = self.received / took if took > 0 else float(self.received)
            result = CompletedUpload(
                filename=self.filename,
                received=self.received,
                duration_ms=int(took * 1000),
                avg_speed=int(speed),
                sha256_hex=digest,
            )
            if fut is not None and not fut.done():
                fut.set_result(result)
            return
        # checksum_mismatch or file_exists: the worker already removed the temp file.
        self._end("failed", outcome)
        if outcome == "checksum_mismatch":
            err = TransferError(
                "checksum_mismatch",
                f"SHA-256 is {digest}, expected {self.sha256}",
                self.transfer_id,
            )
        else:
            err = TransferError("file_exists", "File already exists", self.transfer_id)
        if fut is not None and not fut.done():
            fut.set_exception(err)

    # -- job bodies, in a worker thread ----------------------------------------

    def _do_write(self, job: _Job) -> None:
        fd = self._fd
        update = self._hash.update
        for buf in job.bufs:  # type: ignore[union-attr]
            update(buf)
            view = memoryview(buf)
            while view:
                view = view[os.write(fd, view) :]
        self._on_disk += job.nbytes
        start = self._writeback_from
        if self._on_disk - start >= WRITEBACK_EVERY and hasattr(os, "posix_fadvise"):
            # DONTNEED starts writeback of the dirty range without waiting for it.
            os.posix_fadvise(fd, start, self._on_disk - start, os.POSIX_FADV_DONTNEED)
            self._writeback_from = self._on_disk

    def _do_finish(self, job: _Job) -> tuple[str, str]:
        dirfd = self._store._dirfd
        digest = self._hash.hexdigest()
        if self.sha256 is not None and digest != self.sha256:
            self._close_fd()
            self._unlink_temp()
            return "checksum_mismatch", digest
        os.fsync(self._fd)
        self._close_fd()
        with self._lock:
            if self._abort_requested:
                return "aborted", digest
            self._committed = True
        try:
            # link() fails on an existing name where rename() would replace it.
            os.link(
                self.temp_name,
                self.filename,
                src_dir_fd=dirfd,
                dst_dir_fd=dirfd,
                follow_symlinks=False,
            )
        except FileExistsError:
            self._unlink_temp()
            return "file_exists", digest
        # The upload is in place from here on; a leftover temp name is cleaned
        # by prepare() at the next start, so these errors are only logged.
        self._unlink_temp()
        try:
            os.fsync(dirfd)
        except OSError as exc:
            log.warning("fsync of the upload directory failed: %s", exc)
        return "ok", digest

    def _do_delete(self, job: _Job) -> None:
        with contextlib.suppress(OSError):
            self._close_fd()
        self._unlink_temp()

    def _close_fd(self) -> None:
        fd, self._fd = self._fd, -1
        if fd >= 0:
            os.close(fd)

    def _unlink_temp(self) -> None:
        try:
            os.unlink(self.temp_name, dir_fd=self._store._dirfd)
        except FileNotFoundError:
            pass
        except OSError as exc:
            log.warning("could not remove temporary upload file %s: %s", self.temp_name, exc)


def _statvfs_free(dirfd: int) -> int:
    st = os.statvfs(dirfd)
    return st.f_bavail * st.f_frsize


class UploadStore:
    """The upload directory, its limits and the uploads open in it.

    ``free_space`` returns the bytes free on the disk holding ``directory``; it
    exists so tests can fake a full disk, and defaults to ``statvfs``. Call
    :meth:`prepare` once before the first :meth:`open`, and :meth:`aclose` at
    the end.
    """

    def __init__(
        self,
        directory: Path | str,
        max_file_size: int = 1 << 30,
        quota: int = 10 << 30,
        per_session_limit: int = 4,
        executor: Executor | None = None,
        high_water: int = 8 << 20,
        free_space: Callable[[Path], int] | None = None,
    ) -> None:
        self.directory = Path(directory)
        self.max_file_size = max_file_size
        self.quota = quota
        self.per_session_limit = per_session_limit
        self.high_water = high_water
        self._free_space = free_space
        self._own_executor = executor is None
        self._executor: Executor = executor or ThreadPoolExecutor(
            max_workers=4, thread_name_prefix="verb-upload"
        )
        self._dirfd = -1
        self._closed = False
        self._owners: dict[str, dict[str, Upload]] = {}
        self._names: dict[str, Upload] = {}
        self._live: dict[Upload, None] = {}  # open uploads, in open order
        self._busy: set[Upload] = set()
        self._idle_waiters: list[asyncio.Future[None]] = []
        self._finished: deque[TransferInfo] = deque(maxlen=FINISHED_KEPT)
        self.completed = 0
        self.aborted = 0
        self.failed = 0
        self.bytes_completed = 0

    @property
    def active_count(self) -> int:
        """Uploads open now (including those being finished)."""
        return len(self._live)

    @property
    def pending_jobs(self) -> int:
        """Uploads with disk work queued or running."""
        return len(self._busy)

    def prepare(self) -> int:
        """Create the directory if needed and delete temporary files left by a crash.

        Returns how many were removed. Only regular files named like this
        module's temporary files are removed; no legal upload name can match.
        Blocking, meant for server start (before any upload is open).
        """
        if self._live or self._busy:
            raise RuntimeError("prepare() while uploads are open")
        self.directory.mkdir(parents=True, exist_ok=True)
        if self._dirfd < 0:
            self._dirfd = os.open(self.directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        with os.scandir(self._dirfd) as entries:
            leftovers = [
                e.name
                for e in entries
                if _TEMP_RE.fullmatch(e.name) and e.is_file(follow_symlinks=False)
            ]
        removed = 0
        for name in leftovers:
            try:
                os.unlink(name, dir_fd=self._dirfd)
            except FileNotFoundError:
                continue
            removed += 1
        if removed:
            os.fsync(self._dirfd)
            log.info("removed %d unfinished upload file(s) from %s", removed, self.directory)
        return removed

    def open(
        self,
        owner: str,
        transfer_id: object,
        filename: object,
        file_size: object,
        sha256: object = None,
        limit: int | None = None,
        protocol: str = "json",
    ) -> Upload:
        """Check the rules of PROTOCOL.md 2.3 and start an upload.

        Checks, in order: malformed ``transfer_id``, ``file_size`` or ``sha256``
        (``bad_message``), ``filename`` (``bad_filename``), ``transfer_id`` already
        open for ``owner`` (``duplicate_transfer``), ``owner``'s open uploads at
        ``limit`` (default ``per_session_limit``; ``too_many_transfers``), the name
        taken on disk or by an open upload (``file_exists``), then the per-file
        limit, the quota and the free disk space (``too_large``). Runs on the
        event loop; only metadata syscalls.
        """
        if self._closed:
            raise TransferError("io_error", "Uploads are closed", _tid(transfer_id))
        if self._dirfd < 0:
            raise RuntimeError("UploadStore.prepare() was not called")
        loop = asyncio.get_running_loop()
        if not isinstance(transfer_id, str) or not 1 <= len(transfer_id) <= MAX_TRANSFER_ID:
            raise TransferError("bad_message", "transferId must be a string of 1 to 64 characters")
        if type(file_size) is not int or file_size < 0:
            raise TransferError(
                "bad_message", "fileSize must be a non-negative integer", transfer_id
            )
        if sha256 is not None:
            if not isinstance(sha256, str) or not _SHA256_RE.fullmatch(sha256):
                raise TransferError("bad_message", "sha256 must be 64 hex digits", transfer_id)
            sha256 = sha256.lower()
        try:
            name = check_filename(filename)
        except TransferError as exc:
            exc.transfer_id = transfer_id
            raise
        mine = self._owners.get(owner, {})
        if transfer_id in mine:
            raise TransferError("duplicate_transfer", "Transfer already open", transfer_id)
        cap = self.per_session_limit if limit is None else limit
        if len(mine) >= cap:
            raise TransferError(
                "too_many_transfers", f"At most {cap} open transfer(s)", transfer_id
            )
        if name in self._names or self._name_taken(name, transfer_id):
            raise TransferError("file_exists", "File already exists", transfer_id)
        if file_size > self.max_file_size:
            raise TransferError(
                "too_large", f"Larger than the {self.max_file_size}-byte limit", transfer_id
            )
        reserved = sum(u.size for u in self._live)
        if file_size > self.quota - self._usage(transfer_id) - reserved:
            raise TransferError("too_large", "Upload quota exceeded", transfer_id)
        # Open uploads will still write their remaining bytes to the same disk.
        unwritten = sum(u.size - u.written for u in self._live)
        if file_size > self._free(transfer_id) - unwritten:
            raise TransferError("too_large", "Not enough free disk space", transfer_id)
        temp_name, fd = self._create_temp(transfer_id)
        upload = Upload(
            self, loop, owner, transfer_id, name, file_size, sha256, protocol, temp_name, fd
        )
        self._owners.setdefault(owner, {})[transfer_id] = upload
        self._names[name] = upload
        self._live[upload] = None
        return upload

    def get(self, owner: str, transfer_id: str) -> Upload:
        """The upload ``transfer_id`` of ``owner``.

        Raises ``unknown_transfer`` if there is none, or the ``io_error`` of an
        upload that failed in the background (once; it is forgotten then).
        """
        upload = self._owners.get(owner, {}).get(transfer_id)
        if upload is None:
            raise TransferError("unknown_transfer", "Transfer not found", _tid(transfer_id))
        err = upload._error
        if err is not None:
            upload._error = None
            self._forget(upload)
            raise err
        return upload

    def uploads_of(self, owner: str) -> list[Upload]:
        """The open uploads of ``owner``, in open order."""
        return list(self._owners.get(owner, {}).values())

    def records(self) -> list[TransferInfo]:
        """The open uploads (in open order), then the last 100 ended ones (newest first)."""
        return [u.info() for u in self._live] + list(reversed(self._finished))

    def abort_owner(self, owner: str, cause: str) -> None:
        """Abort every upload of ``owner`` (its session ended)."""
        for upload in list(self._owners.get(owner, {}).values()):
            upload.abort(cause)

    async def wait_idle(self) -> None:
        """Wait until no disk job (write, finish, delete) is queued or running."""
        while self._busy:
            fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self._idle_waiters.append(fut)
            await fut

    async def aclose(self, cause: str = "shutdown") -> None:
        """Abort every open upload and wait for all disk jobs, temp deletions included.

        Afterwards no temporary file of this store remains and :meth:`open`
        raises ``io_error``. A finishing upload whose final link has begun still
        completes.
        """
        self._closed = True
        for mine in list(self._owners.values()):
            for upload in list(mine.values()):
                upload.abort(cause)
        await self.wait_idle()
        if self._dirfd >= 0:
            os.close(self._dirfd)
            self._dirfd = -1
        if self._own_executor:
            self._executor.shutdown(wait=False)

    # -- internals --------------------------------------------------------------

    def _name_taken(self, name: str, transfer_id: str) -> bool:
        # lstat: a symlink, a directory or anything else holding the name counts.
        try:
            os.lstat(name, dir_fd=self._dirfd)
        except FileNotFoundError:
            return False
        except OSError as exc:
            raise TransferError("io_error", f"Cannot check the name: {exc}", transfer_id) from exc
        return True

    def _usage(self, transfer_id: str) -> int:
        """Bytes in regular files of the upload directory, temporary files excepted.

        Temporary files are left out because open uploads are counted by their
        full size instead.
        """
        total = 0
        try:
            with os.scandir(self._dirfd) as entries:
                for entry in entries:
                    if _TEMP_RE.fullmatch(entry.name):
                        continue
                    try:
                        st = entry.stat(follow_symlinks=False)
                    except FileNotFoundError:
                        continue
                    if stat.S_ISREG(st.st_mode):
                        total += st.st_size
        except OSError as exc:
            raise TransferError(
                "io_error", f"Cannot read the directory: {exc}", transfer_id
            ) from exc
        return total

    def _free(self, transfer_id: str) -> int:
        try:
            if self._free_space is not None:
                return self._free_space(self.directory)
            return _statvfs_free(self._dirfd)
        except OSError as exc:
            raise TransferError("io_error", f"Cannot read free space: {exc}", transfer_id) from exc

    def _temp_name(self) -> str:
        return f"{TEMP_PREFIX}{secrets.token_hex(16)}{TEMP_SUFFIX}"

    def _create_temp(self, transfer_id: str) -> tuple[str, int]:
        for _ in range(8):
            name = self._temp_name()
            try:
                fd = os.open(name, _CREATE_FLAGS, 0o644, dir_fd=self._dirfd)
            except FileExistsError:
                continue  # something (maybe a planted symlink) holds the name: pick another
            except OSError as exc:
                raise TransferError(
                    "io_error", f"Cannot create the file: {exc.strerror}", transfer_id
                ) from exc
            return name, fd
        raise TransferError("io_error", "Cannot create a temporary file", transfer_id)

    def _ended(self, upload: Upload, *, keep_owner: bool) -> None:
        self._live.pop(upload, None)
        if self._names.get(upload.filename) is upload:
            del self._names[upload.filename]
        if not keep_owner:
            self._forget(upload)
        if upload.state == "complete":
            self.completed += 1
            self.bytes_completed += upload.received
        elif upload.state == "aborted":
            self.aborted += 1
        else:
            self.failed += 1
        self._finished.append(upload.info())

    def _forget(self, upload: Upload) -> None:
        mine = self._owners.get(upload.owner)
        if mine is not None and mine.get(upload.transfer_id) is upload:
            del mine[upload.transfer_id]
            if not mine:
                del self._owners[upload.owner]

    def _busy_add(self, upload: Upload) -> None:
        self._busy.add(upload)

    def _busy_remove(self, upload: Upload) -> None:
        self._busy.discard(upload)
        if not self._busy:
            waiters, self._idle_waiters = self._idle_waiters, []
            for fut in waiters:
                if not fut.done():
                    fut.set_result(None)


def _tid(transfer_id: object) -> str | None:
    return transfer_id if isinstance(transfer_id, str) else None
