"""File transfer messages (PROTOCOL.md section 2.3 over json, section 3 FILE frames).

The sessions decode the wire; :mod:`.transfers` checks the rules and owns the
disk. This module sits between them: it validates the message fields, keeps the
per-session state (the next chunk index of each json transfer, the one open
binary transfer), answers a broken rule (a :class:`TransferError`) with an
error reply naming its transfer, and
connects an upload's write backlog to the session's reading (backpressure).

``file_end`` / END complete asynchronously: a task awaits :meth:`Upload.finish`
(the fsync and the link happen off the loop) and replies when it is done, while
the session goes on serving its other messages. If the session ends first,
:meth:`UploadStore.abort_owner` aborts the upload, the task sees ``aborted`` and
sends nothing (a closing session drops every reply anyway).
"""

from __future__ import annotations

import asyncio
import binascii
import logging
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any

import orjson
import pybase64

from ..protocols import binary as b
from ..protocols.errors import ProtocolError
from ..protocols.json import encode_error
from .transfers import MAX_TRANSFER_ID, CompletedUpload, TransferError, Upload

if TYPE_CHECKING:
    from .binary_session import BinarySession
    from .json_session import JsonSession
    from .session import Session
    from .transfers import UploadStore

__all__ = ["JSON_HANDLERS", "PROGRESS_EVERY_CHUNKS", "PROGRESS_MAX_GAP", "binary_file_frame"]

log = logging.getLogger(__name__)

#: json: a ``file_progress`` follows the ack of every chunk whose index is a multiple of this.
PROGRESS_EVERY_CHUNKS = 100
#: binary: consecutive ``file_progress`` reports are at most this many bytes apart.
PROGRESS_MAX_GAP = 8 << 20


def _b64decode(data: str) -> bytes:
    # SIMD base64: the standard library's strict decoder tops out near 130-300 MB/s
    # here, which would cap json uploads; pybase64 is no looser (a test pins it).
    return pybase64.b64decode(data, validate=True)


_b64_errors = (binascii.Error, ValueError)

# Finish tasks still running: the loop keeps only weak references to tasks.
_tasks: set[asyncio.Task[None]] = set()


# ----------------------------------------------------------------- shared helpers


def _store(session: Session) -> UploadStore:
    store = session.hub.uploads
    if store is None:
        raise TransferError("io_error", "Uploads are not available")
    return store


def _progress(received: int, total: int) -> float:
    """Percent received, 0 to 100, with two decimals."""
    if total <= 0:
        return 100.0
    return round(received * 100 / total, 2)


def _complete(transfer_id: str, done: CompletedUpload) -> dict[str, Any]:
    return {
        "type": "file_complete",
        "transferId": transfer_id,
        "filename": done.filename,
        "receivedBytes": done.received,
        "duration": done.duration_ms,
        "avgSpeed": done.avg_speed,
        "sha256": done.sha256_hex,
    }


def _watch_backlog(session: Session, upload: Upload) -> None:
    """Pause the session's reading while the upload's disk backlog is high."""
    outlet = session.outlet
    upload.on_drain = lambda: outlet.release(upload)


def _write(session: Session, upload: Upload, data: bytes) -> None:
    """Hand bytes to the upload; pause reading when its backlog says so."""
    if upload.write(data):
        session.outlet.hold(upload)


def _start_finish(
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


# ----------------------------------------------------------------- json (section 2.3)


class _JsonTransfer:
    """A json session's view of one of its uploads: the next expected chunk index."""

    __slots__ = ("next_index", "upload")

    def __init__(self, upload: Upload) -> None:
        self.upload = upload
        self.next_index = 0


def _json_state(s: JsonSession) -> dict[str, _JsonTransfer]:
    state = s.transfers
    if state is None:
        s.transfers = state = {}
    return state


def _field(msg: dict[str, Any], name: str, tid: str | None) -> Any:
    if name not in msg:
        raise ProtocolError("bad_message", f"Missing field: {name}", **_tid_extra(tid))
    return msg[name]


def _tid_extra(tid: str | None) -> dict[str, Any]:
    return {} if tid is None else {"transferId": tid}


def _transfer_id(msg: dict[str, Any]) -> str:
    if "transferId" not in msg:
        raise ProtocolError("bad_message", "Missing field: transferId")
    tid = msg["transferId"]
    if type(tid) is not str or not 1 <= len(tid) <= MAX_TRANSFER_ID:
        raise ProtocolError(
            "bad_message", f"transferId must be a string of 1 to {MAX_TRANSFER_ID} characters"
        )
    return tid


def _int_field(msg: dict[str, Any], name: str, tid: str) -> int:
    value = _field(msg, name, tid)
    if type(value) is not int:
        raise ProtocolError("bad_message", f"Field {name} must be an integer", transferId=tid)
    return value


def _about(exc: TransferError, tid: str | None) -> TransferError:
    """``exc``, naming the transfer ``tid`` when it does not name one itself."""
    if exc.transfer_id is None and tid is not None:
        exc.transfer_id = tid
    return exc


def _lookup(s: JsonSession, tid: str) -> tuple[_JsonTransfer, Upload]:
    """The session's open transfer ``tid``; unknown_transfer (or its io_error) otherwise."""
    state = _json_state(s)
    try:
        upload = _store(s).get(s.id, tid)
    except TransferError as exc:
        state.pop(tid, None)
        raise _about(exc, tid) from None
    entry = state.get(tid)
    if entry is None or entry.upload is not upload:
        # Known to the store but no longer taking chunks: file_end was sent.
        raise ProtocolError("unknown_transfer", "Transfer not found", transferId=tid)
    return entry, upload


def handle_file_start(s: JsonSession, msg: dict[str, Any], ref: Any) -> None:
    tid = _transfer_id(msg)
    filename = _field(msg, "filename", tid)
    if type(filename) is not str:
        raise ProtocolError("bad_message", "Field filename must be a string", transferId=tid)
    size = _int_field(msg, "fileSize", tid)
    if size < 0:
        raise ProtocolError("bad_message", "fileSize must not be negative", transferId=tid)
    if "chunkSize" in msg:
        chunk = msg["chunkSize"]
        if type(chunk) is not int or chunk < 1:
            raise ProtocolError(
                "bad_message", "chunkSize must be a positive integer", transferId=tid
            )
    sha256 = msg.get("sha256")
    state = _json_state(s)
    # Forget transfers that ended on their own (a background disk failure).
    for stale in [k for k, e in state.items() if e.upload.ended]:
        del state[stale]
    try:
        upload = _store(s).open(s.id, tid, filename, size, sha256, protocol="json")
    except TransferError as exc:
        raise _about(exc, tid) from None
    state[tid] = _JsonTransfer(upload)
    _watch_backlog(s, upload)
    s.reply({"type": "file_start_ack", "transferId": tid, "status": "ready"}, ref)


def handle_file_chunk(s: JsonSession, msg: dict[str, Any], ref: Any) -> None:
    tid = _transfer_id(msg)
    index = _int_field(msg, "chunkIndex", tid)
    data = _field(msg, "data", tid)
    if type(data) is not str:
        raise ProtocolError("bad_message", "Field data must be a base64 string", transferId=tid)
    entry, upload = _lookup(s, tid)
    state = _json_state(s)
    if index != entry.next_index:
        upload.abort("bad_chunk")
        del state[tid]
        raise ProtocolError(
            "bad_chunk",
            f"Expected chunk {entry.next_index}, got {index}; transfer aborted",
            transferId=tid,
        )
    try:
        raw = _b64decode(data)
    except _b64_errors:
        upload.abort("bad_chunk")
        del state[tid]
        raise ProtocolError(
            "bad_chunk", "Chunk data is not valid base64; transfer aborted", transferId=tid
        ) from None
    try:
        _write(s, upload, raw)
    except TransferError as exc:
        if upload.ended or upload.state != "active":
            state.pop(tid, None)
        raise _about(exc, tid) from None
    entry.next_index = index + 1
    received = upload.received
    s.reply(
        {
            "type": "file_chunk_ack",
            "transferId": tid,
            "chunkIndex": index,
            "receivedBytes": received,
        },
        ref,
    )
    if index % PROGRESS_EVERY_CHUNKS == 0:
        s.reply(
            {
                "type": "file_progress",
                "transferId": tid,
                "progress": _progress(received, upload.size),
                "receivedBytes": received,
                "totalBytes": upload.size,
            },
            None,
        )


def handle_file_end(s: JsonSession, msg: dict[str, Any], ref: Any) -> None:
    tid = _transfer_id(msg)
    _, upload = _lookup(s, tid)
    state = _json_state(s)

    def done(result: CompletedUpload) -> None:
        s.reply(_complete(tid, result), ref)

    def failed(exc: TransferError) -> None:
        s.deliver(_error_frame_json(exc, tid, ref))

    try:
        _start_finish(s, upload, done, failed)
    except TransferError as exc:
        if upload.state != "active":
            state.pop(tid, None)
        raise _about(exc, tid) from None
    # The store keeps the upload (and its name) until the finish is decided;
    # this session is done with it.
    state.pop(tid, None)


def handle_file_abort(s: JsonSession, msg: dict[str, Any], ref: Any) -> None:
    tid = _transfer_id(msg)
    state = _json_state(s)
    try:
        upload = _store(s).get(s.id, tid)
    except TransferError as exc:
        state.pop(tid, None)
        raise _about(exc, tid) from None
    upload.abort("client_abort")
    state.pop(tid, None)
    if upload.state == "complete" or not upload.ended:
        # The final link had already begun: file_complete is on its way.
        return
    s.reply({"type": "file_aborted", "transferId": tid}, ref)


def _error_frame_json(exc: TransferError, tid: str, ref: Any) -> bytes:
    return encode_error(_about(exc, tid), ref)


JsonHandler = Callable[["JsonSession", dict[str, Any], Any], None]

JSON_HANDLERS: dict[str, JsonHandler] = {
    "file_start": handle_file_start,
    "file_chunk": handle_file_chunk,
    "file_end": handle_file_end,
    "file_abort": handle_file_abort,
}


# ----------------------------------------------------------------- binary (section 3)


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
        error = ProtocolError(
            "bad_message", f"Unknown FILE flags: 0x{flags:04X}", **_tid_extra(tid)
        )
        _file_error(session, error)
        return
    try:
        handler(session, current, frame.payload)
    except TransferError as exc:
        _file_error(session, exc)


def _active(current: _BinaryTransfer | None) -> Upload:
    if current is None:
        raise TransferError("unknown_transfer", "Transfer not found")
    upload = current.upload
    if upload.state != "active":
        raise TransferError("unknown_transfer", "Transfer not found", upload.transfer_id)
    return upload


def _binary_start(session: BinarySession, current: _BinaryTransfer | None, payload: bytes) -> None:
    try:
        obj = orjson.loads(payload)
    except orjson.JSONDecodeError:
        obj = None
    if type(obj) is not dict:
        raise TransferError("bad_message", "START payload must be a JSON object")
    tid = obj.get("transferId")
    known = tid if type(tid) is str and 1 <= len(tid) <= MAX_TRANSFER_ID else None
    if current is not None and current.upload.state == "active":
        raise TransferError(
            "too_many_transfers", "A binary session has one open transfer at a time", known
        )
    for name in ("transferId", "filename", "fileSize"):
        if name not in obj:
            raise TransferError("bad_message", f"Missing field: {name}", known)
    if type(obj["filename"]) is not str:
        raise TransferError("bad_message", "Field filename must be a string", known)
    store = _store(session)
    # An upload still being finished (END sent, no reply yet) does not count
    # against the one-open-transfer limit: the client may start the next file.
    finishing = sum(1 for u in store.uploads_of(session.id) if u.state == "finishing")
    upload = store.open(
        session.id,
        tid,
        obj["filename"],
        obj["fileSize"],
        obj.get("sha256"),
        limit=1 + finishing,
        protocol="binary",
    )
    session.transfers = _BinaryTransfer(upload, session.hub.settings.max_frame)
    _watch_backlog(session, upload)
    session.reply_file(
        {"type": "file_start_ack", "transferId": upload.transfer_id, "status": "ready"}
    )


def _binary_chunk(session: BinarySession, current: _BinaryTransfer | None, payload: bytes) -> None:
    upload = _active(current)
    assert current is not None
    try:
        _write(session, upload, payload)
    except TransferError:
        if upload.state != "active":
            session.transfers = None
        raise
    received = upload.received
    if received >= current.next_progress:
        current.next_progress = received + current.step
        session.reply_file(
            {
                "type": "file_progress",
                "transferId": upload.transfer_id,
                "progress": _progress(received, upload.size),
                "receivedBytes": received,
                "totalBytes": upload.size,
            }
        )


def _binary_end(session: BinarySession, current: _BinaryTransfer | None, payload: bytes) -> None:
    upload = _active(current)
    tid = upload.transfer_id
    session.transfers = None

    def done(result: CompletedUpload) -> None:
        session.reply_file(_complete(tid, result))

    def failed(exc: TransferError) -> None:
        _file_error(session, _about(exc, tid))

    _start_finish(session, upload, done, failed)


def _binary_abort(session: BinarySession, current: _BinaryTransfer | None, payload: bytes) -> None:
    upload = _active(current)
    session.transfers = None
    upload.abort("client_abort")
    if upload.state == "complete" or not upload.ended:  # pragma: no cover - see file_abort
        return
    session.reply_file({"type": "file_aborted", "transferId": upload.transfer_id})


_BINARY_FLAGS: dict[int, Callable[[BinarySession, _BinaryTransfer | None, bytes], None]] = {
    b.FILE_START: _binary_start,
    b.FILE_CHUNK: _binary_chunk,
    b.FILE_END: _binary_end,
    b.FILE_ABORT: _binary_abort,
}
