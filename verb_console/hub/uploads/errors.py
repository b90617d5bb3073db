"""The error every upload rule raises, and the codes that mean "failed"."""

from __future__ import annotations

from ...protocols.errors import ProtocolError

__all__ = ["ERROR_CODES", "TransferError"]

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
    "transfer_timeout": "No bytes received for too long; transfer aborted",
    "aborted": "Transfer aborted",
}

#: Codes that end an upload as "failed" (an error) rather than "aborted" (a decision).
ERROR_CODES = frozenset(_DEFAULT_MESSAGES) - {"aborted"}


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

    def about(self, transfer_id: str | None) -> TransferError:
        """This error, naming ``transfer_id`` when it does not name a transfer itself."""
        if self.transfer_id is None and transfer_id is not None:
            self.transfer_id = transfer_id
        return self
