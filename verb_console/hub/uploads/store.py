"""The upload store: the directory, its limits, and the uploads open in it.

It promises:

- Nothing is written outside the upload directory (see :mod:`.disk`).
- Every ended upload (aborted, failed, cut off by shutdown) leaves no temporary
  file behind; a crash leaves only files that :meth:`UploadStore.prepare`
  removes at the next start. Temporary names start with ``.``, which no legal
  upload name does, so that cleanup can never touch an upload.
- Disk I/O and hashing never run on the event loop: each upload keeps at most
  one job in a shared thread pool (:class:`~.disk.DiskRunner`).

Everything here runs on the event loop thread.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable
from concurrent.futures import Executor
from pathlib import Path

from ..snapshot import TransferInfo
from .disk import DiskRunner, TempFile, UploadDir
from .errors import TransferError
from .names import (
    check_file_size,
    check_filename,
    check_sha256,
    check_transfer_id,
    known_transfer_id,
    new_temp_name,
)
from .state import UploadState
from .upload import Upload

__all__ = ["FINISHED_KEPT", "UploadStore"]

log = logging.getLogger(__name__)

FINISHED_KEPT = 100


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
        self._high_water = high_water
        self._free_space = free_space
        self._runner = DiskRunner(executor)
        self._dir = UploadDir(self.directory)
        self._closed = False
        self._owners: dict[str, dict[str, Upload]] = {}
        self._names: dict[str, Upload] = {}
        self._live: dict[Upload, None] = {}  # open uploads, in open order
        self._finished: deque[TransferInfo] = deque(maxlen=FINISHED_KEPT)
        self.completed = 0
        self.aborted = 0
        self.failed = 0
        self.bytes_completed = 0

    @property
    def high_water(self) -> int:
        """Write backlog (bytes) above which an upload pauses its reader."""
        return self._high_water

    @high_water.setter
    def high_water(self, value: int) -> None:
        self._high_water = value

    @property
    def active_count(self) -> int:
        """Uploads open now (including those being finished)."""
        return len(self._live)

    @property
    def pending_jobs(self) -> int:
        """Uploads with disk work queued or running."""
        return self._runner.pending

    def prepare(self) -> int:
        """Create the directory if needed and delete temporary files left by a crash.

        Returns how many were removed. Only regular files named like this
        package's temporary files are removed; no legal upload name can match.
        Blocking, meant for server start (before any upload is open).
        """
        if self._live or self._runner.pending:
            raise RuntimeError("prepare() while uploads are open")
        self._dir.open()
        removed = 0
        for name in self._dir.temp_names():
            try:
                self._dir.unlink(name)
            except FileNotFoundError:
                continue
            removed += 1
        if removed:
            self._dir.fsync()
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
            raise TransferError("io_error", "Uploads are closed", known_transfer_id(transfer_id))
        if not self._dir.is_open:
            raise RuntimeError("UploadStore.prepare() was not called")
        loop = asyncio.get_running_loop()
        tid = check_transfer_id(transfer_id)
        size = check_file_size(file_size, tid)
        digest = check_sha256(sha256, tid)
        try:
            name = check_filename(filename)
        except TransferError as exc:
            raise exc.about(tid) from None
        mine = self._owners.get(owner, {})
        if tid in mine:
            raise TransferError("duplicate_transfer", "Transfer already open", tid)
        cap = self.per_session_limit if limit is None else limit
        if len(mine) >= cap:
            raise TransferError("too_many_transfers", f"At most {cap} open transfer(s)", tid)
        if name in self._names or self._name_taken(name, tid):
            raise TransferError("file_exists", "File already exists", tid)
        if size > self.max_file_size:
            raise TransferError(
                "too_large", f"Larger than the {self.max_file_size}-byte limit", tid
            )
        reserved = sum(u.size for u in self._live)
        if size > self.quota - self._usage(tid) - reserved:
            raise TransferError("too_large", "Upload quota exceeded", tid)
        # Open uploads will still write their remaining bytes to the same disk.
        unwritten = sum(u.size - u.written for u in self._live)
        if size > self._free(tid) - unwritten:
            raise TransferError("too_large", "Not enough free disk space", tid)
        temp = self._create_temp(tid)
        upload = Upload(self, self._runner, loop, owner, tid, name, size, digest, protocol, temp)
        self._owners.setdefault(owner, {})[tid] = upload
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
            raise TransferError(
                "unknown_transfer", "Transfer not found", known_transfer_id(transfer_id)
            )
        err = upload.take_error()
        if err is not None:
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
        await self._runner.wait_idle()

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
        self._dir.close()
        self._runner.shutdown()

    # -- what an Upload tells its store (UploadLedger) ---------------------------

    def upload_ended(self, upload: Upload, *, keep_owner: bool) -> None:
        self._live.pop(upload, None)
        if self._names.get(upload.filename) is upload:
            del self._names[upload.filename]
        if not keep_owner:
            self.forget(upload)
        if upload.state is UploadState.COMPLETE:
            self.completed += 1
            self.bytes_completed += upload.received
        elif upload.state is UploadState.ABORTED:
            self.aborted += 1
        else:
            self.failed += 1
        self._finished.append(upload.info())

    def forget(self, upload: Upload) -> None:
        mine = self._owners.get(upload.owner)
        if mine is not None and mine.get(upload.transfer_id) is upload:
            del mine[upload.transfer_id]
            if not mine:
                del self._owners[upload.owner]

    # -- internals --------------------------------------------------------------

    def _name_taken(self, name: str, tid: str) -> bool:
        # lstat: a symlink, a directory or anything else holding the name counts.
        try:
            return self._dir.exists(name)
        except OSError as exc:
            raise TransferError("io_error", f"Cannot check the name: {exc}", tid) from exc

    def _usage(self, tid: str) -> int:
        """Bytes in regular files of the upload directory, temporary files excepted.

        Temporary files are left out because open uploads are counted by their
        full size instead.
        """
        try:
            return self._dir.usage()
        except OSError as exc:
            raise TransferError("io_error", f"Cannot read the directory: {exc}", tid) from exc

    def _free(self, tid: str) -> int:
        try:
            if self._free_space is not None:
                return self._free_space(self.directory)
            return self._dir.free_bytes()
        except OSError as exc:
            raise TransferError("io_error", f"Cannot read free space: {exc}", tid) from exc

    def _temp_name(self) -> str:
        return new_temp_name()

    def _create_temp(self, tid: str) -> TempFile:
        for _ in range(8):
            name = self._temp_name()
            try:
                fd = self._dir.create(name)
            except FileExistsError:
                continue  # something (maybe a planted symlink) holds the name: pick another
            except OSError as exc:
                raise TransferError(
                    "io_error", f"Cannot create the file: {exc.strerror}", tid
                ) from exc
            return TempFile(self._dir, name, fd)
        raise TransferError("io_error", "Cannot create a temporary file", tid)
