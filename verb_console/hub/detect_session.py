"""``auto`` listeners: the protocol is picked from the first bytes (PROTOCOL.md section 1)."""

from __future__ import annotations

import asyncio
from typing import Any

from ..protocols.detect import detect_protocol
from .session import CloseReason, Session


class DetectingSession(Session):
    """Holds a connection until its first bytes name the protocol, then hands over.

    Nothing is sent before the client's first bytes; the handshake timeout runs
    until the protocol is known (a lone 0x00 byte does not stop it).
    """

    protocol = "detecting"
    accepts_notices = False

    __slots__ = ("_buf", "_timer")

    def setup(self) -> None:
        self._buf = b""
        self._timer: asyncio.TimerHandle | None = None

    def start(self) -> None:
        timeout = self.hub.settings.handshake_timeout
        if timeout > 0:
            self._timer = asyncio.get_running_loop().call_later(timeout, self._expired)

    def _expired(self) -> None:
        self._timer = None
        self.close(CloseReason.HANDSHAKE_TIMEOUT, notify=False)

    def encode_notice(self, message: dict[str, Any]) -> bytes:
        return b""

    def feed(self, data: bytes) -> None:
        if self.closing:
            return
        self.hub.changes.mark(self)  # for the console's orders (see .order)
        buf = self._buf + data
        kind = detect_protocol(buf)
        if kind is None:
            self._buf = buf
            return
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._buf = b""
        self.hub.hand_over(self, kind, buf)

    def closed(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        super().closed()
