"""File uploads (PROTOCOL.md sections 2.3 and 3), split by job.

- :mod:`.names`: the rules about one field (transferId, filename, fileSize,
  sha256) and the temporary-file names.
- :mod:`.errors`: :class:`TransferError`, the error every upload rule raises.
- :mod:`.state`: :class:`UploadState`, where one upload is.
- :mod:`.disk`: the directory, one upload's temporary file, and the job runner
  that keeps disk I/O and hashing off the event loop.
- :mod:`.upload`: one upload's state machine.
- :mod:`.store`: :class:`UploadStore`, the directory's limits and the open uploads.
- :mod:`.json_front`, :mod:`.binary_front`: the two protocols' front ends, which
  decode the wire and reply; :mod:`.front` is what they share.
"""

from __future__ import annotations

from .binary_front import PROGRESS_MAX_GAP, binary_file_frame
from .errors import ERROR_CODES, TransferError
from .json_front import JSON_HANDLERS, PROGRESS_EVERY_CHUNKS
from .names import MAX_TRANSFER_ID, TEMP_PREFIX, TEMP_SUFFIX, check_filename
from .state import UploadState
from .store import UploadStore
from .upload import CompletedUpload, Upload

__all__ = [
    "ERROR_CODES",
    "JSON_HANDLERS",
    "MAX_TRANSFER_ID",
    "PROGRESS_EVERY_CHUNKS",
    "PROGRESS_MAX_GAP",
    "TEMP_PREFIX",
    "TEMP_SUFFIX",
    "CompletedUpload",
    "TransferError",
    "Upload",
    "UploadState",
    "UploadStore",
    "binary_file_frame",
    "check_filename",
]
