"""The errors the clients raise.

:class:`ServerError` (the server answered ``error``) is the protocol's own, rooted
in :class:`~verb_console.protocols.errors.ProtocolError`; the others say the
client or its connection is closed.
"""

from __future__ import annotations

from ..protocols.errors import ServerError

__all__ = [
    "ClientClosed",
    "MuxClosed",
    "MuxError",
    "ReconnectFailed",
    "SendBufferFull",
    "ServerError",
]


#: The mux client's name for :class:`ServerError` (one error class for both clients).
MuxError = ServerError


class ClientClosed(ConnectionError):
    """The client (or stream) is closed: by its own ``close`` or for good by the server."""


class MuxClosed(ClientClosed):
    """The mux stream or its connection is closed."""


class ReconnectFailed(ConnectionError):
    """Every reconnection attempt failed; the client is closed."""

    def __init__(self, attempts: int, last_error: BaseException | None) -> None:
        super().__init__(f"gave up reconnecting after {attempts} attempts: {last_error}")
        self.attempts = attempts
        self.last_error = last_error


class SendBufferFull(ConnectionError):
    """A send while the client reconnects would hold more than its send buffer allows."""

    def __init__(self, limit: int) -> None:
        super().__init__(
            f"not connected, and the {limit}-byte send buffer is full: the message was not sent"
        )
        self.limit = limit
