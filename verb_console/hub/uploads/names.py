"""The naming rules of uploads: transfer ids, file names, sizes, digests, temp names.

Each rule of PROTOCOL.md 2.3 about one field lives here once; the store and
both front ends call it.
"""

from __future__ import annotations

import re
import secrets
import unicodedata
from typing import Any

from .errors import TransferError

__all__ = [
    "MAX_FILENAME_BYTES",
    "MAX_TRANSFER_ID",
    "TEMP_PREFIX",
    "TEMP_SUFFIX",
    "check_file_size",
    "check_filename",
    "check_sha256",
    "check_transfer_id",
    "is_temp_name",
    "known_transfer_id",
    "new_temp_name",
    "require",
]

MAX_FILENAME_BYTES = 255
MAX_TRANSFER_ID = 64
TEMP_PREFIX = ".verb-upload-"
TEMP_SUFFIX = ".part"
_TEMP_RE = re.compile(r"\.verb-upload-[0-9a-f]{32}\.part")
_SHA256_RE = re.compile(r"[0-9a-fA-F]{64}")


def known_transfer_id(value: object) -> str | None:
    """``value`` if it is a well-formed transferId (a str of 1 to 64 characters), else None."""
    if type(value) is str and 1 <= len(value) <= MAX_TRANSFER_ID:
        return value
    return None


def check_transfer_id(value: object) -> str:
    """Return a well-formed transferId, else raise ``bad_message``."""
    tid = known_transfer_id(value)
    if tid is None:
        raise TransferError(
            "bad_message", f"transferId must be a string of 1 to {MAX_TRANSFER_ID} characters"
        )
    return tid


def require(msg: dict[str, Any], name: str, tid: str | None) -> Any:
    """``msg[name]``; ``bad_message`` naming the transfer ``tid`` if it is missing."""
    if name not in msg:
        raise TransferError("bad_message", f"Missing field: {name}", tid)
    return msg[name]


def check_file_size(value: object, tid: str | None) -> int:
    """Return a legal fileSize (a non-negative int, bools excluded), else ``bad_message``."""
    if type(value) is not int:
        raise TransferError("bad_message", "Field fileSize must be an integer", tid)
    if value < 0:
        raise TransferError("bad_message", "fileSize must not be negative", tid)
    return value


def check_sha256(value: object, tid: str | None) -> str | None:
    """None, or the expected digest as lower-case hex; ``bad_message`` if malformed."""
    if value is None:
        return None
    if not isinstance(value, str) or not _SHA256_RE.fullmatch(value):
        raise TransferError("bad_message", "sha256 must be 64 hex digits", tid)
    return value.lower()


def check_filename(name: object) -> str:
    """Return ``name`` if it is a legal upload name, else raise ``bad_filename``.

    Legal: a str of 1 to 255 bytes of UTF-8 (lone surrogates cannot be encoded,
    so they are rejected), without ``/``, ``\\`` or control characters (Unicode
    Cc, DEL included), not starting with ``.`` (which also excludes ``.``, ``..``
    and every temporary-file name).
    """
    if not isinstance(name, str):
        raise TransferError("bad_filename", "Filename must be a string")
    if not name:
        raise TransferError("bad_filename", "Filename is empty")
    if name.startswith("."):
        raise TransferError("bad_filename", "Filename must not start with '.'")
    if "/" in name or "\\" in name:
        raise TransferError("bad_filename", "Filename must not contain '/' or '\\'")
    try:
        size = len(name.encode("utf-8"))
    except UnicodeEncodeError:
        raise TransferError("bad_filename", "Filename is not valid Unicode") from None
    if size > MAX_FILENAME_BYTES:
        raise TransferError("bad_filename", f"Filename longer than {MAX_FILENAME_BYTES} bytes")
    # isprintable() is False for every Cc character, so most names skip the scan.
    if not name.isprintable() and any(unicodedata.category(ch) == "Cc" for ch in name):
        raise TransferError("bad_filename", "Filename contains control characters")
    return name


def new_temp_name() -> str:
    """A fresh temporary-file name; it starts with ``.``, which no upload name may."""
    return f"{TEMP_PREFIX}{secrets.token_hex(16)}{TEMP_SUFFIX}"


def is_temp_name(name: str) -> bool:
    """Whether ``name`` has the shape of :func:`new_temp_name`'s names."""
    return _TEMP_RE.fullmatch(name) is not None
