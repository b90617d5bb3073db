"""Disk I/O of uploads: the directory, one upload's temporary file, the job runner.

Nothing here runs on the event loop except :class:`JobQueue` bookkeeping and
:meth:`UploadDir.open`: the file operations are called from worker threads by
the jobs a :class:`JobQueue` hands to a shared :class:`DiskRunner`. Every path
is a bare name opened relative to a descriptor of the upload directory, and a
temporary file is created with ``O_CREAT | O_EXCL | O_NOFOLLOW``.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import hashlib
import logging
import os
import stat
from collections import deque
from collections.abc import Callable, Hashable
from concurrent.futures import Executor, ThreadPoolExecutor
from pathlib import Path
from typing import Any

from .names import is_temp_name

__all__ = ["DiskRunner", "Job", "JobKind", "JobQueue", "TempFile", "UploadDir"]

log = logging.getLogger(__name__)

# Queued chunks are merged into write jobs of at most this size, so the backlog
# falls (and a paused reader resumes) while the disk is still busy.
MAX_JOB_BYTES = 2 << 20
# Ask the kernel to start writing back every this many bytes, so the final fsync
# has little left to do and a large upload does not flood the page cache.
WRITEBACK_EVERY = 16 << 20

# Linux/BSD only: O_NOFOLLOW and dir_fd support are what keep writes inside the
# upload directory, and they do not exist on Windows.
_CREATE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC


class UploadDir:
    """The upload directory, held open by a descriptor; names in it are bare names."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd = -1

    @property
    def is_open(self) -> bool:
        return self._fd >= 0

    def open(self) -> None:
        """Create the directory if needed and hold it open. Blocking (metadata only)."""
        self.path.mkdir(parents=True, exist_ok=True)
        if self._fd < 0:
            self._fd = os.open(self.path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)

    def close(self) -> None:
        fd, self._fd = self._fd, -1
        if fd >= 0:
            os.close(fd)

    def fileno(self) -> int:
        return self._fd

    def at_path(self) -> bool:
        """Whether the configured path still names this very directory (two stats)."""
        try:
            here = os.stat(self.path)
        except OSError:
            return False
        held = os.fstat(self._fd)
        return (here.st_dev, here.st_ino) == (held.st_dev, held.st_ino)

    def lstat(self, name: str) -> os.stat_result:
        return os.lstat(name, dir_fd=self._fd)

    def exists(self, name: str) -> bool:
        """Whether anything (a file, a symlink, a directory...) holds ``name``."""
        try:
            os.lstat(name, dir_fd=self._fd)
        except FileNotFoundError:
            return False
        return True

    def create(self, name: str) -> int:
        """Create ``name`` exclusively, never following a symlink; its write descriptor."""
        return os.open(name, _CREATE_FLAGS, 0o644, dir_fd=self._fd)

    def link(self, src: str, dst: str) -> None:
        """Give ``src`` the name ``dst``; ``FileExistsError`` if ``dst`` is taken."""
        # link() fails on an existing name where rename() would replace it.
        os.link(src, dst, src_dir_fd=self._fd, dst_dir_fd=self._fd, follow_symlinks=False)

    def unlink(self, name: str) -> None:
        os.unlink(name, dir_fd=self._fd)

    def fsync(self) -> None:
        os.fsync(self._fd)

    def free_bytes(self) -> int:
        st = os.statvfs(self._fd)
        return st.f_bavail * st.f_frsize

    def temp_names(self) -> list[str]:
        """Regular files named like temporary upload files (leftovers of a crash)."""
        with os.scandir(self._fd) as entries:
            return [
                e.name for e in entries if is_temp_name(e.name) and e.is_file(follow_symlinks=False)
            ]

    def regular_sizes(self) -> dict[str, int]:
        """The size of every regular file, temporary files excepted. O(entries)."""
        sizes: dict[str, int] = {}
        with os.scandir(self._fd) as entries:
            for entry in entries:
                if is_temp_name(entry.name):
                    continue
                try:
                    st = entry.stat(follow_symlinks=False)
                except FileNotFoundError:
                    continue
                if stat.S_ISREG(st.st_mode):
                    sizes[entry.name] = st.st_size
        return sizes


class TempFile:
    """One upload's temporary file, used by its jobs one at a time (worker threads)."""

    def __init__(self, directory: UploadDir, name: str, fd: int) -> None:
        self.directory = directory
        self.name = name
        self._fd = fd
        self._on_disk = 0
        self._writeback_from = 0
        self._hash = hashlib.sha256()

    @property
    def fd(self) -> int:
        """The open descriptor, -1 once closed."""
        return self._fd

    def write(self, bufs: list[bytes], nbytes: int) -> None:
        fd = self._fd
        update = self._hash.update
        for buf in bufs:
            update(buf)
            view = memoryview(buf)
            while view:
                view = view[os.write(fd, view) :]
        self._on_disk += nbytes
        start = self._writeback_from
        if self._on_disk - start >= WRITEBACK_EVERY and hasattr(os, "posix_fadvise"):
            # DONTNEED starts writeback of the dirty range without waiting for it.
            os.posix_fadvise(fd, start, self._on_disk - start, os.POSIX_FADV_DONTNEED)
            self._writeback_from = self._on_disk

    def hexdigest(self) -> str:
        return self._hash.hexdigest()

    def sync_and_close(self) -> None:
        os.fsync(self._fd)
        self.close()

    def close(self) -> None:
        fd, self._fd = self._fd, -1
        if fd >= 0:
            os.close(fd)

    def link_as(self, final: str) -> None:
        self.directory.link(self.name, final)

    def discard(self) -> None:
        """Close and remove the file; errors are logged, a missing file is fine."""
        with contextlib.suppress(OSError):
            self.close()
        self.remove()

    def remove(self) -> None:
        try:
            self.directory.unlink(self.name)
        except FileNotFoundError:
            pass
        except OSError as exc:
            log.warning("could not remove temporary upload file %s: %s", self.name, exc)


class DiskRunner:
    """The shared worker pool of the disk jobs, and which queues have work in it."""

    def __init__(self, executor: Executor | None = None, workers: int = 4) -> None:
        self._own_executor = executor is None
        self._executor: Executor = executor or ThreadPoolExecutor(
            max_workers=workers, thread_name_prefix="verb-upload"
        )
        self._busy: set[Hashable] = set()
        self._idle_waiters: list[asyncio.Future[None]] = []

    @property
    def pending(self) -> int:
        """Queues with a job queued or running."""
        return len(self._busy)

    def run(
        self, loop: asyncio.AbstractEventLoop, fn: Callable[[Job], Any], job: Job
    ) -> asyncio.Future[Any]:
        try:
            return loop.run_in_executor(self._executor, fn, job)
        except RuntimeError:
            # The executor was shut down under us. Doing the job here blocks the
            # loop for a moment, but skipping it would leak the temporary file.
            log.warning("upload executor unavailable; running %s job inline", job.kind.value)
            fut: asyncio.Future[Any] = loop.create_future()
            try:
                fut.set_result(fn(job))
            except Exception as exc:
                fut.set_exception(exc)
            return fut

    def busy(self, key: Hashable) -> None:
        self._busy.add(key)

    def idle(self, key: Hashable) -> None:
        self._busy.discard(key)
        if not self._busy:
            waiters, self._idle_waiters = self._idle_waiters, []
            for fut in waiters:
                if not fut.done():
                    fut.set_result(None)

    async def wait_idle(self) -> None:
        """Wait until no job is queued or running."""
        while self._busy:
            fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self._idle_waiters.append(fut)
            await fut

    def shutdown(self) -> None:
        if self._own_executor:
            self._executor.shutdown(wait=False)


class JobKind(enum.Enum):
    WRITE = "write"
    FINISH = "finish"
    DELETE = "delete"


class Job:
    __slots__ = ("bufs", "kind", "nbytes")

    def __init__(self, kind: JobKind, bufs: list[bytes] | None = None, nbytes: int = 0) -> None:
        self.kind = kind
        self.bufs: list[bytes] = bufs if bufs is not None else []
        self.nbytes = nbytes


JobBody = Callable[[Job], Any]
JobDone = Callable[[Job, "BaseException | None", Any], None]


class JobQueue:
    """One upload's disk jobs, run in order with at most one in the runner at a time.

    Chaining the next job when one completes keeps the writes in order without a
    thread per upload. ``bodies`` runs a job in a worker thread; ``done`` is
    called on the loop with the job, its exception (or None) and its result.
    """

    def __init__(
        self,
        runner: DiskRunner,
        loop: asyncio.AbstractEventLoop,
        bodies: dict[JobKind, JobBody],
        done: JobDone,
    ) -> None:
        self._runner = runner
        self._loop = loop
        self._bodies = bodies
        self._done = done
        self._jobs: deque[Job] = deque()
        self._inflight = False

    def write(self, data: bytes) -> None:
        n = len(data)
        last = self._jobs[-1] if self._jobs else None
        if last is not None and last.kind is JobKind.WRITE and last.nbytes < MAX_JOB_BYTES:
            # Coalescing queued chunks into one job saves a loop round trip each.
            last.bufs.append(data)
            last.nbytes += n
        else:
            self._jobs.append(Job(JobKind.WRITE, [data], n))
        self._pump()

    def add(self, kind: JobKind) -> None:
        self._jobs.append(Job(kind))
        self._pump()

    def drop_queued(self) -> int:
        """Drop the jobs not yet started; the bytes they held."""
        dropped = sum(job.nbytes for job in self._jobs)
        self._jobs.clear()
        return dropped

    def _pump(self) -> None:
        if self._inflight or not self._jobs:
            return
        job = self._jobs.popleft()
        self._inflight = True
        self._runner.busy(self)
        fut = self._runner.run(self._loop, self._bodies[job.kind], job)
        fut.add_done_callback(lambda f: self._job_done(job, f))

    def _job_done(self, job: Job, fut: asyncio.Future[Any]) -> None:
        self._inflight = False
        exc = fut.exception()
        result = None if exc is not None else fut.result()
        self._done(job, exc, result)
        self._pump()
        if not self._inflight:
            self._runner.idle(self)
