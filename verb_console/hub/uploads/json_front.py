"""File transfer messages over json (PROTOCOL.md section 2.3).

The handlers decode the message fields, keep the per-session state (the next
chunk index of each open transfer), answer a broken rule with an error naming
its transfer, and connect an upload's write backlog to the session's reading.
"""

from __future__ import annotations

import binascii
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import pybase64

from ...protocols.json import encode_error
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
from .names import check_file_size, check_transfer_id, require
from .state import UploadState
from .upload import CompletedUpload, Upload

if TYPE_CHECKING:
    from ..json_session import JsonSession

__all__ = ["JSON_HANDLERS", "PROGRESS_EVERY_CHUNKS"]

#: json: a ``file_progress`` follows the ack of every chunk whose index is a multiple of this.
PROGRESS_EVERY_CHUNKS = 100

_b64_errors = (binascii.Error, ValueError)


def _b64decode(data: str) -> bytes:
    # SIMD base64: the standard library's strict decoder tops out near 130-300 MB/s
    # here, which would cap json uploads; pybase64 is no looser (a test pins it).
    return pybase64.b64decode(data, validate=True)


class _JsonTransfer:
    """A json session's view of one of its uploads: the next expected chunk index."""

    __slots__ = ("next_index", "upload")

    def __init__(self, upload: Upload) -> None:
        self.upload = upload
        self.next_index = 0


def _state(s: JsonSession) -> dict[str, _JsonTransfer]:
    state = s.transfers
    if state is None:
        s.transfers = state = {}
    return state


def _transfer_id(msg: dict[str, Any]) -> str:
    return check_transfer_id(require(msg, "transferId", None))


def _int_field(msg: dict[str, Any], name: str, tid: str) -> int:
    value = require(msg, name, tid)
    if type(value) is not int:
        raise TransferError("bad_message", f"Field {name} must be an integer", tid)
    return value


def _lookup(s: JsonSession, tid: str) -> tuple[_JsonTransfer, Upload]:
    """The session's open transfer ``tid``; unknown_transfer (or its io_error) otherwise."""
    state = _state(s)
    try:
        upload = store_of(s).get(s.id, tid)
    except TransferError as exc:
        state.pop(tid, None)
        raise exc.about(tid) from None
    entry = state.get(tid)
    if entry is None or entry.upload is not upload:
        # Known to the store but no longer taking chunks: file_end was sent.
        raise TransferError("unknown_transfer", "Transfer not found", tid)
    return entry, upload


def _server_ended(s: JsonSession, tid: str, upload: Upload, err: TransferError) -> None:
    """The server ended ``upload`` by itself (disk failure, timeout): say so now."""
    state = _state(s)
    entry = state.get(tid)
    if entry is not None and entry.upload is upload:
        del state[tid]
    if not s.closing:
        s.deliver(encode_error(err.about(tid), None))


def handle_file_start(s: JsonSession, msg: dict[str, Any], ref: Any) -> None:
    tid = _transfer_id(msg)
    filename = require(msg, "filename", tid)
    if type(filename) is not str:
        raise TransferError("bad_message", "Field filename must be a string", tid)
    size = check_file_size(require(msg, "fileSize", tid), tid)
    if "chunkSize" in msg:
        chunk = msg["chunkSize"]
        if type(chunk) is not int or chunk < 1:
            raise TransferError("bad_message", "chunkSize must be a positive integer", tid)
    sha256 = msg.get("sha256")
    state = _state(s)
    # Forget transfers that ended on their own (a background disk failure).
    for stale in [k for k, e in state.items() if e.upload.ended]:
        del state[stale]
    try:
        upload = store_of(s).open(
            s.id,
            tid,
            filename,
            size,
            sha256,
            protocol="json",
            connection=s.parent or s.id,
            client=s.address,
        )
    except TransferError as exc:
        raise exc.about(tid) from None
    state[tid] = _JsonTransfer(upload)
    watch(s, upload)
    upload.on_server_end = tell_owner(s, lambda owner, err: _server_ended(owner, tid, upload, err))
    s.reply({"type": "file_start_ack", "transferId": tid, "status": "ready"}, ref)


def handle_file_chunk(s: JsonSession, msg: dict[str, Any], ref: Any) -> None:
    tid = _transfer_id(msg)
    index = _int_field(msg, "chunkIndex", tid)
    data = require(msg, "data", tid)
    if type(data) is not str:
        raise TransferError("bad_message", "Field data must be a base64 string", tid)
    entry, upload = _lookup(s, tid)
    state = _state(s)
    if index != entry.next_index:
        upload.abort("bad_chunk")
        del state[tid]
        raise TransferError(
            "bad_chunk", f"Expected chunk {entry.next_index}, got {index}; transfer aborted", tid
        )
    try:
        raw = _b64decode(data)
    except _b64_errors:
        upload.abort("bad_chunk")
        del state[tid]
        raise TransferError(
            "bad_chunk", "Chunk data is not valid base64; transfer aborted", tid
        ) from None
    try:
        write(s, upload, raw)
    except TransferError as exc:
        if upload.state is not UploadState.ACTIVE:
            state.pop(tid, None)
        raise exc.about(tid) from None
    entry.next_index = index + 1
    s.reply(
        {
            "type": "file_chunk_ack",
            "transferId": tid,
            "chunkIndex": index,
            "receivedBytes": upload.received,
        },
        ref,
    )
    if index % PROGRESS_EVERY_CHUNKS == 0:
        s.reply(progress_message(upload), None)


def handle_file_end(s: JsonSession, msg: dict[str, Any], ref: Any) -> None:
    tid = _transfer_id(msg)
    _, upload = _lookup(s, tid)
    state = _state(s)

    def done(result: CompletedUpload) -> None:
        s.reply(complete_message(tid, result), ref)

    def failed(exc: TransferError) -> None:
        s.deliver(encode_error(exc.about(tid), ref))

    try:
        start_finish(s, upload, done, failed)
    except TransferError as exc:
        if upload.state is not UploadState.ACTIVE:
            state.pop(tid, None)
        raise exc.about(tid) from None
    # The store keeps the upload (and its name) until the finish is decided;
    # this session is done with it.
    state.pop(tid, None)


def handle_file_abort(s: JsonSession, msg: dict[str, Any], ref: Any) -> None:
    tid = _transfer_id(msg)
    state = _state(s)
    try:
        upload = store_of(s).get(s.id, tid)
    except TransferError as exc:
        state.pop(tid, None)
        raise exc.about(tid) from None
    upload.abort("client_abort")
    state.pop(tid, None)
    if upload.state is UploadState.COMPLETE or not upload.ended:
        # The final link had already begun: file_complete is on its way.
        return
    s.reply({"type": "file_aborted", "transferId": tid}, ref)


JsonHandler = Callable[["JsonSession", dict[str, Any], Any], None]

JSON_HANDLERS: dict[str, JsonHandler] = {
    "file_start": handle_file_start,
    "file_chunk": handle_file_chunk,
    "file_end": handle_file_end,
    "file_abort": handle_file_abort,
}
