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
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Executor
from pathlib import Path

from ...settings import Settings
from ...units import fmt_bytes
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
from .ratelog import EventSink, UploadReport
from .state import UploadState
from .upload import Upload
from .usage import DirUsage

__all__ = ["FINISHED_KEPT", "UploadStore"]

log = logging.getLogger(__name__)

FINISHED_KEPT = 100
# The limits' defaults are the server settings' (one place for both).
_D = Settings()


class UploadStore:
    """The upload directory, its limits and the uploads open in it.

    ``free_space`` returns the bytes free on the disk holding ``directory``; it
    exists so tests can fake a full disk, and defaults to ``statvfs``. Call
    :meth:`prepare` once before the first :meth:`open`, and :meth:`aclose` at
    the end.

    Limits beyond PROTOCOL.md 2.3, each refused with its code:
    ``per_connection_limit`` open transfers per TCP connection (a mux
    connection's streams together) and ``server_limit`` in all
    (``too_many_transfers``; each open transfer holds one file descriptor);
    ``max_files`` files in the directory plus open transfers, so empty files
    cannot pile up without bound, and ``client_reservation`` bytes reserved by
    the open transfers of one client address (``too_large``); and
    ``transfer_timeout`` seconds without a byte, after which an open transfer
    is aborted with ``transfer_timeout`` (0: never).
    """

    def __init__(
        self,
        directory: Path | str,
        max_file_size: int = _D.max_file_size,
        quota: int = _D.upload_quota,
        per_session_limit: int = _D.max_transfers,
        executor: Executor | None = None,
        high_water: int = 8 << 20,
        free_space: Callable[[Path], int] | None = None,
        per_connection_limit: int = _D.max_transfers_per_connection,
        server_limit: int = _D.max_transfers_total,
        max_files: int = _D.max_upload_files,
        client_reservation: int = _D.max_reserved_per_client,
        transfer_timeout: float = _D.transfer_timeout,
    ) -> None:
        self.directory = Path(directory)
        self.max_file_size = max_file_size
        self.quota = quota
        self.per_session_limit = per_session_limit
        self.per_connection_limit = per_connection_limit
        self.server_limit = server_limit
        self.max_files = max_files
        self.client_reservation = client_reservation
        self.transfer_timeout = transfer_timeout
        self._high_water = high_water
        self._free_space = free_space
        self._runner = DiskRunner(executor)
        self._dir = UploadDir(self.directory)
        self._usage: DirUsage | None = None
        # Directories replaced at the configured path, kept open for their uploads.
        self._retired: list[UploadDir] = []
        self._closed = False
        self._reserved = 0  # the sizes of the open uploads
        self._per_connection: dict[str, int] = {}
        self._per_client: dict[str, int] = {}  # bytes reserved
        self._timer: asyncio.TimerHandle | None = None
        self.report = UploadReport(log, FINISHED_KEPT)
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

    def set_event_sink(self, sink: EventSink | None) -> None:
        """Also send the upload log lines to ``sink(kind, text)`` (the event log)."""
        self.report.set_sink(sink)

    @property
    def usage(self) -> DirUsage | None:
        """The tracked contents of the upload directory (None before :meth:`prepare`)."""
        return self._usage

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
        if self._usage is None:
            self._usage = DirUsage(self._dir)
            self._usage.start()
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
        connection: str | None = None,
        client: str | None = None,
    ) -> Upload:
        """Check the rules of PROTOCOL.md 2.3 and start an upload.

        Checks, in order: malformed ``transfer_id``, ``file_size`` or ``sha256``
        (``bad_message``), ``filename`` (``bad_filename``), ``transfer_id`` already
        open for ``owner`` (``duplicate_transfer``), ``owner``'s open uploads at
        ``limit`` (default ``per_session_limit``), then those of its
        ``connection`` (default: ``owner``) and of the whole server
        (``too_many_transfers``), the name taken on disk or by an open upload
        (``file_exists``), then the per-file limit, the file count, the quota,
        the free disk space and the reservations of ``client`` (default:
        ``owner``) (``too_large``). Runs on the event loop; only metadata syscalls,
        none proportional to the directory's size. A refusal is logged
        (rate-limited) and kept in :meth:`refusals`.
        """
        try:
            return self._open(
                owner, transfer_id, filename, file_size, sha256, limit, protocol, connection, client
            )
        except TransferError as exc:
            tid = known_transfer_id(transfer_id)
            self.report.refusal(owner, tid, filename, file_size, protocol, exc)
            raise

    def _open(
        self,
        owner: str,
        transfer_id: object,
        filename: object,
        file_size: object,
        sha256: object,
        limit: int | None,
        protocol: str,
        connection: str | None,
        client: str | None,
    ) -> Upload:
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
        conn = owner if connection is None else connection
        if self._per_connection.get(conn, 0) >= self.per_connection_limit:
            raise TransferError(
                "too_many_transfers",
                f"At most {self.per_connection_limit} open transfer(s) per connection",
                tid,
            )
        if len(self._live) >= self.server_limit:
            raise TransferError(
                "too_many_transfers",
                f"The server is at its limit of {self.server_limit} open transfer(s)",
                tid,
            )
        usage = self._current_usage(tid)
        if name in self._names or self._name_taken(name, tid):
            raise TransferError("file_exists", "File already exists", tid)
        if size > self.max_file_size:
            raise TransferError(
                "too_large", f"Larger than the {self.max_file_size}-byte limit", tid
            )
        if usage.files + len(self._live) >= self.max_files:
            raise TransferError(
                "too_large", f"The upload directory is at its limit of {self.max_files} files", tid
            )
        if size > self.quota - usage.bytes - self._reserved:
            raise TransferError("too_large", "Upload quota exceeded", tid)
        # Open uploads will still write their remaining bytes to the same disk.
        unwritten = sum(u.size - u.written for u in self._live)
        if size > self._free(tid) - unwritten:
            raise TransferError("too_large", "Not enough free disk space", tid)
        who = owner if client is None else client
        if self._per_client.get(who, 0) + size > self.client_reservation:
            raise TransferError(
                "too_large",
                f"At most {self.client_reservation} bytes reserved by one client's open transfers",
                tid,
            )
        temp = self._create_temp(tid)
        upload = Upload(
            self, self._runner, loop, owner, tid, name, size, digest, protocol, temp, conn, who
        )
        self._owners.setdefault(owner, {})[tid] = upload
        self._names[name] = upload
        self._live[upload] = None
        self._reserved += size
        self._per_connection[conn] = self._per_connection.get(conn, 0) + 1
        self._per_client[who] = self._per_client.get(who, 0) + size
        self._arm_timer(loop)
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

    def refusals(self) -> list[TransferInfo]:
        """The last 100 refused ``file_start`` / START requests, newest first (state "refused")."""
        return self.report.refusals()

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
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._usage is not None:
            self._usage.close()
        for retired in self._retired:
            retired.close()
        self._retired.clear()
        self._dir.close()
        self._runner.shutdown()

    # -- what an Upload tells its store (UploadLedger) ---------------------------

    def upload_ended(self, upload: Upload, *, keep_owner: bool) -> None:
        self._live.pop(upload, None)
        if self._names.get(upload.filename) is upload:
            del self._names[upload.filename]
        if not keep_owner:
            self.forget(upload)
        self._release(upload)
        if upload.state is UploadState.COMPLETE:
            self.completed += 1
            self.bytes_completed += upload.received
            self.report.completed_log(
                logging.INFO,
                f"upload complete: {upload.filename!r} ({fmt_bytes(upload.received)}) "
                f"from {upload.owner}",
            )
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

    def _current_usage(self, tid: str) -> DirUsage:
        """The directory's tracked contents, brought up to date (following its path)."""
        usage = self._usage
        assert usage is not None
        try:
            if usage.lost or not self._dir.at_path():
                usage = self._follow_path()
            usage.refresh()
        except OSError as exc:
            raise TransferError("io_error", f"Cannot read the directory: {exc}", tid) from exc
        return usage

    def _follow_path(self) -> DirUsage:
        """The directory at the configured path was removed, renamed or replaced: use
        what is there now (created again if missing). Uploads already under way end
        in the directory they began in."""
        old, old_usage = self._dir, self._usage
        fresh = UploadDir(self.directory)
        fresh.open()
        usage = DirUsage(fresh)
        usage.start()
        self.report.failed_log(
            logging.WARNING,
            f"the upload directory {self.directory} was removed, renamed or replaced; "
            "now using the directory at that path",
        )
        if old_usage is not None:
            old_usage.close()
        self._dir, self._usage = fresh, usage
        self._retired.append(old)
        self._close_retired()
        return usage

    def _close_retired(self) -> None:
        if self._runner.pending:
            return
        in_use = {u.temp.directory for u in self._live}
        keep = []
        for d in self._retired:
            if d in in_use:
                keep.append(d)
            else:
                d.close()
        self._retired = keep

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

    def _release(self, upload: Upload) -> None:
        self._reserved -= upload.size
        conn, who = upload.connection, upload.client
        left = self._per_connection.get(conn, 0) - 1
        if left > 0:
            self._per_connection[conn] = left
        else:
            self._per_connection.pop(conn, None)
        bytes_left = self._per_client.get(who, 0) - upload.size
        if bytes_left > 0:
            self._per_client[who] = bytes_left
        else:
            self._per_client.pop(who, None)

    def _arm_timer(self, loop: asyncio.AbstractEventLoop) -> None:
        if self._timer is None and self.transfer_timeout > 0:
            tick = max(0.05, min(1.0, self.transfer_timeout / 4))
            self._timer = loop.call_later(tick, self._sweep, loop, tick)

    def _sweep(self, loop: asyncio.AbstractEventLoop, tick: float) -> None:
        """Abort the open transfers that received nothing for ``transfer_timeout`` seconds."""
        self._timer = None
        limit = self.transfer_timeout
        now = time.monotonic()
        for upload in [u for u in self._live if u.state is UploadState.ACTIVE]:
            # Bytes still going to disk: the wait is the server's, not the client's.
            if upload.backlog == 0 and now - upload.last_activity >= limit:
                self.report.failed_log(
                    logging.INFO,
                    f"upload {upload.filename!r} from {upload.owner} timed out: "
                    f"no bytes for {limit:g} s",
                )
                upload.expire(
                    TransferError(
                        "transfer_timeout",
                        f"No bytes received for {limit:g} s; transfer aborted",
                        upload.transfer_id,
                    )
                )
        if self._live and not self._closed:
            self._timer = loop.call_later(tick, self._sweep, loop, tick)
