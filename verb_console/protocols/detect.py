"""The ``auto`` listener's protocol detection, PROTOCOL.md section 1."""

from __future__ import annotations

from typing import Literal

__all__ = ["Detected", "detect_protocol"]

Detected = Literal["json", "binary", "mux", "echo"]

_DIGITS = frozenset(b"0123456789")


def detect_protocol(data: bytes) -> Detected | None:
    """Name the protocol a connection speaks from the first bytes it sent.

    Returns ``None`` while more bytes are needed: for no bytes at all, and for
    a lone ``0x00``, which could start either a ``binary`` or a ``mux`` frame.
    """
    if not data:
        return None
    first = data[0]
    if first in _DIGITS:
        return "json"
    if first == 0:
        if len(data) < 2:
            return None
        # A mux connection opens with a control frame, whose stream id 0 starts
        # 0x00 0x00; every binary type is a nonzero u16 below 0x0100, so it
        # starts 0x00 and then a nonzero byte.
        return "mux" if data[1] == 0 else "binary"
    return "echo"
