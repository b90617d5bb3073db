"""One upload's state machine: bytes in, verified, put in place or ended.

An :class:`Upload` takes bytes on the event loop, hands them to its
:class:`~.disk.JobQueue` and moves through :class:`~.state.UploadState`. Its
jobs run in worker threads; their bodies (``_do_*``) touch only the upload's
:class:`~.disk.TempFile`. The final name appears whole or not at all, and
never replaces a file: the verified, fsynced temporary file is hard-linked to
its final name (``EEXIST`` if something took the name meanwhile), then
unlinked.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any, Protocol

from ..snapshot import TransferInfo
from .disk import DiskRunner, Job, JobKind, JobQueue, TempFile
from .errors import ERROR_CODES, TransferError
from .state import UploadState

__all__ = ["CompletedUpload", "Upload", "UploadLedger"]

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class CompletedUpload:
    """What ``file_complete`` reports about an upload now in place."""

    filename: str
    received: int
    duration_ms: int
    avg_speed: int  # bytes per second
    sha256_hex: str


class UploadLedger(Protocol):
    """What an upload tells the store that keeps it (the store implements this)."""

    @property
    def high_water(self) -> int:
        """Write backlog above which the reader is paused."""
        ...

    def upload_ended(self, upload: Upload, *, keep_owner: bool) -> None:
        """``upload`` reached an ended state; ``keep_owner``: its owner still must hear why."""
        ...

    def forget(self, upload: Upload) -> None:
        """``upload`` no longer answers to its transferId."""
        ...


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
        ledger: UploadLedger,
        runner: DiskRunner,
        loop: asyncio.AbstractEventLoop,
        owner: str,
        transfer_id: str,
        filename: str,
        size: int,
        sha256: str | None,
        protocol: str,
        temp: TempFile,
        connection: str = "",
        client: str = "",
    ) -> None:
        self.owner = owner
        self.transfer_id = transfer_id
        self.filename = filename
        self.size = size
        self.sha256 = sha256
        self.protocol = protocol
        self.connection = connection or owner
        self.client = client or owner
        self.received = 0
        self.written = 0
        self.started_at = time.time()
        self.ended_at: float | None = None
        self.state = UploadState.ACTIVE
        self.outcome = ""
        self.on_drain: Callable[[], None] | None = None
        # Called with the error when the server ends the upload by itself (a disk
        # failure, a stalled transfer), so its owner hears of it at once.
        self.on_server_end: Callable[[TransferError], None] | None = None
        self.temp = temp
        self._ledger = ledger
        self._loop = loop
        self._t0 = self.last_activity = time.monotonic()
        self._jobs = JobQueue(
            runner,
            loop,
            {
                JobKind.WRITE: self._do_write,
                JobKind.FINISH: self._do_finish,
                JobKind.DELETE: self._do_delete,
            },
            self._job_done,
        )
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
            f"{self.received}/{self.size} {self.state.value}>"
        )

    @property
    def temp_name(self) -> str:
        return self.temp.name

    @property
    def backlog(self) -> int:
        """Bytes accepted by :meth:`write` and not yet on disk."""
        return self._backlog

    @property
    def ended(self) -> bool:
        return self.state.ended

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
            state=self.state.shown,
            outcome=self.outcome,
            protocol=self.protocol,
        )

    # -- called by the sessions, on the event loop -----------------------------

    def take_error(self) -> TransferError | None:
        """The disk failure nobody heard of yet, once; the upload is forgotten then."""
        err = self._error
        if err is not None:
            self._error = None
            self._ledger.forget(self)
        return err

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
        self.last_activity = time.monotonic()
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
            self._jobs.write(data)
            if self._backlog > self._ledger.high_water:
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
        self.state = UploadState.FINISHING
        fut: asyncio.Future[CompletedUpload] = self._loop.create_future()
        self._finish_fut = fut
        self._jobs.add(JobKind.FINISH)
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
            self._ledger.forget(self)
            return
        with self._lock:
            if self._committed:
                return
            self._abort_requested = True
        self._stop(UploadState.FAILED if cause in ERROR_CODES else UploadState.ABORTED, cause)
        fut = self._finish_fut
        if fut is not None and not fut.done():
            fut.set_exception(
                TransferError("aborted", f"Transfer aborted: {cause}", self.transfer_id)
            )

    def expire(self, err: TransferError) -> None:
        """End a stalled upload (``err`` is its ``transfer_timeout``) and tell its owner."""
        self.abort(err.code)
        self._tell(err)

    # -- bookkeeping, on the event loop ----------------------------------------

    def _tell(self, err: TransferError) -> None:
        callback = self.on_server_end
        if callback is None:
            return
        try:
            callback(err)
        except Exception:
            log.exception("on_server_end callback of %r failed", self)

    def _raise_if_unusable(self) -> None:
        err = self.take_error()
        if err is not None:
            raise err
        if self.state is not UploadState.ACTIVE:
            raise TransferError("unknown_transfer", "Transfer not found", self.transfer_id)

    def _stop(self, state: UploadState, outcome: str, *, report_later: bool = False) -> None:
        """End the upload: drop unstarted jobs, queue the delete, free its reservations."""
        self._backlog -= self._jobs.drop_queued()
        self._jobs.add(JobKind.DELETE)
        self._end(state, outcome, keep_owner=report_later)
        # A paused reader must wake up to learn the upload is gone.
        self._drained(force=True)

    def _end(self, state: UploadState, outcome: str, *, keep_owner: bool = False) -> None:
        self.state = state
        self.outcome = outcome
        self.ended_at = time.time()
        self._ledger.upload_ended(self, keep_owner=keep_owner)

    def _drained(self, force: bool = False) -> None:
        if not self._paused:
            return
        if force or self._backlog == 0 or self._backlog * 2 < self._ledger.high_water:
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

    def _job_done(self, job: Job, exc: BaseException | None, result: Any) -> None:
        if job.kind is JobKind.WRITE:
            self._backlog -= job.nbytes
            if exc is None:
                self.written += job.nbytes
                self.last_activity = time.monotonic()
            elif not self.ended:
                self._failed_in_worker(exc)
            self._drained()
        elif job.kind is JobKind.FINISH:
            if exc is not None:
                if not self.ended:
                    self._failed_in_worker(exc)
            else:
                self._finish_done(*result)

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
        told = not waiting and self.on_server_end is not None
        self._stop(UploadState.FAILED, "io_error", report_later=not waiting and not told)
        if fut is not None and waiting:
            fut.set_exception(err)
        elif told:
            # The owner hears the real error now, before any later chunk of it.
            self._tell(err)
        else:
            self._error = err

    def _finish_done(self, outcome: str, digest: str) -> None:
        fut = self._finish_fut
        if outcome == "aborted":
            return  # abort() already did the bookkeeping and answered finish()
        if outcome == "ok":
            self._end(UploadState.COMPLETE, "")
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
        self._end(UploadState.FAILED, outcome)
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

    def _do_write(self, job: Job) -> None:
        self.temp.write(job.bufs, job.nbytes)

    def _do_finish(self, job: Job) -> tuple[str, str]:
        temp = self.temp
        digest = temp.hexdigest()
        if self.sha256 is not None and digest != self.sha256:
            temp.close()
            temp.remove()
            return "checksum_mismatch", digest
        temp.sync_and_close()
        with self._lock:
            if self._abort_requested:
                return "aborted", digest
            self._committed = True
        try:
            temp.link_as(self.filename)
        except FileExistsError:
            temp.remove()
            return "file_exists", digest
        # The upload is in place from here on; a leftover temp name is cleaned
        # at the next start, so these errors are only logged.
        temp.remove()
        try:
            temp.directory.fsync()
        except OSError as exc:
            log.warning("fsync of the upload directory failed: %s", exc)
        return "ok", digest

    def _do_delete(self, job: Job) -> None:
        self.temp.discard()
