"""File transfer messages (PROTOCOL.md section 2.3 over json, section 3 FILE frames)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .binary_session import BinarySession

JSON_HANDLERS: dict[str, Any] = {}


def binary_file_frame(session: BinarySession, frame: Any) -> None:
    session.reply_file(
        {"type": "error", "code": "unknown_transfer", "message": "Transfer not found"}
    )
