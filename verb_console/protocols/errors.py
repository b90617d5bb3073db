"""The one exception every codec raises."""

from __future__ import annotations


class ProtocolError(Exception):
    """The peer broke the wire protocol; ``code`` is the PROTOCOL.md error code."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message

    def __repr__(self) -> str:
        return f"ProtocolError({self.code!r}, {self.message!r})"
