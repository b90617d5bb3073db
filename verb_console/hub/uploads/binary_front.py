"""File uploads over binary FILE frames (PROTOCOL.md section 3).

One open transfer per session; every error caused by a FILE frame goes back as
a FILE_REPLY ``error`` object, with ``transferId`` where one is known.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ...protocols import binary as b
from ...protocols.errors import ProtocolError
from .errors import TransferError
from .front import (
    complete_message,
    progress_message,
    start_finish,
    store_of,
    tell_owner,
    watch,
    write,
)
from .names import known_transfer_id, require
from .state import UploadState
from .upload import CompletedUpload, Upload

if TYPE_CHECKING:
    from ..binary_session import BinarySession

__all__ = ["PROGRESS_MAX_GAP", "binary_file_frame"]

#: binary: consecutive ``file_progress`` reports are at most this many bytes apart.
PROGRESS_MAX_GAP = 8 << 20


class _BinaryTransfer:
    """A binary session's one open upload and when its next progress report is due.

    A report is due once ``step`` more bytes have arrived, ``step`` leaving room
    for one more frame, so that reports are never more than 8 MiB apart.
    """

    __slots__ = ("next_progress", "step", "upload")

    def __init__(self, upload: Upload, max_frame: int) -> None:
        self.upload = upload
        self.step = PROGRESS_MAX_GAP - min(max_frame, PROGRESS_MAX_GAP // 2)
        self.next_progress = self.step


def _file_error(session: BinarySession, error: ProtocolError) -> None:
    session.reply_file(error.as_message())


def binary_file_frame(session: BinarySession, frame: Any) -> None:
    """One FILE frame (type 0x0020) of a binary session; replies go out as FILE_REPLY."""
    flags = frame.flags
    current: _BinaryTransfer | None = session.transfers
    handler = _BINARY_FLAGS.get(flags)
    if handler is None:
        tid = current.upload.transfer_id if current is not None else None
        _file_error(
            session, TransferError("bad_message", f"Unknown FILE flags: 0x{flags:04X}", tid)
        )
        return
    try:
        handler(session, current, frame.payload)
    except TransferError as exc:
        _file_error(session, exc)


def _server_ended(session: BinarySession, upload: Upload, err: TransferError) -> None:
    """The server ended ``upload`` by itself (disk failure, timeout): say so now."""
    current = session.transfers
    if current is not None and current.upload is upload:
        session.transfers = None
    if not session.closing:
        _file_error(session, err)


def _active(current: _BinaryTransfer | None) -> Upload:
    if current is None:
        raise TransferError("unknown_transfer", "Transfer not found")
    upload = current.upload
    err = upload.take_error()
    if err is not None:
        # The first error about a transfer is the real one, not unknown_transfer.
        raise err
    if upload.state is not UploadState.ACTIVE:
        raise TransferError("unknown_transfer", "Transfer not found", upload.transfer_id)
    return upload


def _start(session: BinarySession, current: _BinaryTransfer | None, payload: bytes) -> None:
    obj = b.decode_json(payload)
    if type(obj) is not dict:
        raise TransferError("bad_message", "START payload must be a JSON object")
    known = known_transfer_id(obj.get("transferId"))
    if current is not None and current.upload.state is UploadState.ACTIVE:
        raise TransferError(
            "too_many_transfers", "A binary session has one open transfer at a time", known
        )
    for name in ("transferId", "filename", "fileSize"):
        require(obj, name, known)
    if type(obj["filename"]) is not str:
        raise TransferError("bad_message", "Field filename must be a string", known)
    store = store_of(session)
    # An upload still being finished (END sent, no reply yet) does not count
    # against the one-open-transfer limit: the client may start the next file.
    finishing = sum(1 for u in store.uploads_of(session.id) if u.state is UploadState.FINISHING)
    upload = store.open(
        session.id,
        obj["transferId"],
        obj["filename"],
        obj["fileSize"],
        obj.get("sha256"),
        limit=1 + finishing,
        protocol="binary",
        connection=session.parent or session.id,
        client=session.address,
    )
    session.transfers = _BinaryTransfer(upload, session.hub.settings.max_frame)
    watch(session, upload)
    upload.on_server_end = tell_owner(session, lambda owner, err: _server_ended(owner, upload, err))
    session.reply_file(
        {"type": "file_start_ack", "transferId": upload.transfer_id, "status": "ready"}
    )


def _chunk(session: BinarySession, current: _BinaryTransfer | None, payload: bytes) -> None:
    upload = _active(current)
    assert current is not None
    try:
        write(session, upload, payload)
    except TransferError:
        if upload.state is not UploadState.ACTIVE:
            session.transfers = None
        raise
    received = upload.received
    if received >= current.next_progress:
        current.next_progress = received + current.step
        session.reply_file(progress_message(upload))


def _end(session: BinarySession, current: _BinaryTransfer | None, payload: bytes) -> None:
    upload = _active(current)
    tid = upload.transfer_id
    session.transfers = None

    def done(result: CompletedUpload) -> None:
        session.reply_file(complete_message(tid, result))

    def failed(exc: TransferError) -> None:
        _file_error(session, exc.about(tid))

    start_finish(session, upload, done, failed)


def _abort(session: BinarySession, current: _BinaryTransfer | None, payload: bytes) -> None:
    upload = _active(current)
    session.transfers = None
    upload.abort("client_abort")
    if upload.state is UploadState.COMPLETE or not upload.ended:  # pragma: no cover
        return
    session.reply_file({"type": "file_aborted", "transferId": upload.transfer_id})


_BINARY_FLAGS: dict[int, Callable[[BinarySession, _BinaryTransfer | None, bytes], None]] = {
    b.FILE_START: _start,
    b.FILE_CHUNK: _chunk,
    b.FILE_END: _end,
    b.FILE_ABORT: _abort,
}
