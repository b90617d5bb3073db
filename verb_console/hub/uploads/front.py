"""What the json and binary front ends share: the store lookup, replies, backpressure
and the background finish.

``file_end`` / END complete asynchronously: a task awaits :meth:`Upload.finish`
(the fsync and the link happen off the loop) and replies when it is done, while
the session goes on serving its other messages. If the session ends first,
:meth:`UploadStore.abort_owner` aborts the upload, the task sees ``aborted`` and
sends nothing (a closing session drops every reply anyway).
"""

from __future__ import annotations

import asyncio
import logging
import weakref
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any, Protocol, TypeVar, runtime_checkable

from .errors import TransferError
from .upload import CompletedUpload, Upload

if TYPE_CHECKING:
    from ..session import Session
    from .store import UploadStore

__all__ = [
    "UploadHost",
    "complete_message",
    "progress_message",
    "start_finish",
    "store_of",
    "watch",
    "write",
]

log = logging.getLogger(__name__)

# Finish tasks still running: the loop keeps only weak references to tasks.
_tasks: set[asyncio.Task[None]] = set()


@runtime_checkable
class UploadHost(Protocol):
    """A server that keeps uploads: what the front ends need beyond a session's
    :class:`~..session.SessionHost`. Named here, not in the SessionHost, so that
    the session module does not import this package (it imports the sessions)."""

    @property
    def uploads(self) -> UploadStore | None: ...


def store_of(session: Session) -> UploadStore:
    host = session.hub
    store = host.uploads if isinstance(host, UploadHost) else None
    if store is None:
        raise TransferError("io_error", "Uploads are not available")
    return store


def progress_message(upload: Upload) -> dict[str, Any]:
    """``file_progress``: percent received, 0 to 100, with two decimals."""
    received = upload.received
    total = upload.size
    return {
        "type": "file_progress",
        "transferId": upload.transfer_id,
        "progress": 100.0 if total <= 0 else round(received * 100 / total, 2),
        "receivedBytes": received,
        "totalBytes": total,
    }


def complete_message(transfer_id: str, done: CompletedUpload) -> dict[str, Any]:
    return {
        "type": "file_complete",
        "transferId": transfer_id,
        "filename": done.filename,
        "receivedBytes": done.received,
        "duration": done.duration_ms,
        "avgSpeed": done.avg_speed,
        "sha256": done.sha256_hex,
    }


S = TypeVar("S", bound="Session")


def watch(session: Session, upload: Upload) -> None:
    """Resume the session's reading when the upload's disk backlog has drained.

    An upload refers to its session weakly (here and in :func:`tell_owner`): an
    upload outlives its session while its temporary file is deleted, and must
    not keep an ended session, its buffers and its connection in memory.
    """
    ref = weakref.ref(session)
    upload.on_drain = lambda: _drained(ref, upload)


def _drained(ref: weakref.ref[Session], upload: Upload) -> None:
    session = ref()
    if session is not None:
        session.outlet.release(upload)


def tell_owner(
    session: S, told: Callable[[S, TransferError], None]
) -> Callable[[TransferError], None]:
    """An upload's ``on_server_end``: ``told(session, err)`` while the session lives."""
    ref = weakref.ref(session)

    def tell(err: TransferError) -> None:
        owner = ref()
        if owner is not None:
            told(owner, err)

    return tell


def write(session: Session, upload: Upload, data: bytes) -> None:
    """Hand bytes to the upload; pause reading when its backlog says so."""
    if upload.write(data):
        session.outlet.hold(upload)


def start_finish(
    session: Session,
    upload: Upload,
    on_done: Callable[[CompletedUpload], None],
    on_error: Callable[[TransferError], None],
) -> None:
    """Finish ``upload`` in the background and report the outcome, if the session lives.

    Raises ``size_mismatch`` / ``unknown_transfer`` at once (before any await)
    so that those errors are answered in order with the session's other replies.
    """
    finishing = upload.finish()  # its immediate errors raise here
    task = asyncio.get_running_loop().create_task(
        _finish(session, upload, finishing, on_done, on_error)
    )
    _tasks.add(task)
    task.add_done_callback(_tasks.discard)


async def _finish(
    session: Session,
    upload: Upload,
    finishing: Coroutine[Any, Any, CompletedUpload],
    on_done: Callable[[CompletedUpload], None],
    on_error: Callable[[TransferError], None],
) -> None:
    try:
        done = await finishing
    except TransferError as exc:
        # "aborted": the client's own abort (already answered by file_aborted),
        # the session's end or shutdown (nobody left to tell).
        if exc.code != "aborted" and not session.closing:
            on_error(exc)
        return
    except Exception:  # pragma: no cover - finish() raises only TransferError
        log.exception("finishing %r failed", upload)
        if not session.closing:
            on_error(TransferError("io_error", None, upload.transfer_id))
        return
    if not session.closing:
        on_done(done)
