"""One stream of a ``mux`` connection (PROTOCOL.md section 4), as its session sees it.

A :class:`StreamOutlet` is the outlet a stream's json, binary or echo session
writes to: it frames the session's bytes for the stream and queues them on its
connection (:class:`~.mux_session.MuxSession`), which pumps every stream's
queue fairly onto the one socket.
"""

from __future__ import annotations

import time
from collections import deque
from typing import TYPE_CHECKING, Protocol

from ..protocols import mux as m

if TYPE_CHECKING:
    from .session import Outlet, Session

MAX_PAYLOAD = m.DEFAULT_MAX_PAYLOAD
"""The largest payload of a frame the server writes on a stream."""


class StreamHost(Protocol):
    """What a stream asks of its mux connection."""

    @property
    def outlet(self) -> Outlet: ...

    def enqueue(self, stream: StreamOutlet, frames: list[bytes]) -> None: ...

    def drop_queue(self, stream: StreamOutlet) -> None: ...

    def end_stream(
        self, st: StreamOutlet, *, announce: bool, reason: str | None = None
    ) -> None: ...


class StreamOutlet:
    """One stream's side of a mux connection, with the outlet interface sessions use."""

    __slots__ = (
        "bytes_read",
        "bytes_written",
        "destroyed",
        "frames_in",
        "frames_out",
        "held",
        "mux",
        "opened_at",
        "queue",
        "queued",
        "session",
        "stream_id",
    )

    def __init__(self, mux: StreamHost, stream_id: int) -> None:
        self.mux = mux
        self.stream_id = stream_id
        self.session: Session | None = None
        self.queue: deque[bytes] = deque()
        self.queued = 0
        self.bytes_read = 0
        self.bytes_written = 0
        self.frames_in = 0
        self.frames_out = 0
        # Bytes of a partial frame its session's decoder held after the last feed.
        self.held = 0
        self.opened_at = time.time()
        self.destroyed = False

    # --- outlet interface -------------------------------------------------
    # A stream's bytes are framed for its connection: a fan-out calls write().
    wire = None

    @property
    def congested(self) -> bool:
        # The connection-wide slow-consumer check lives in MuxSession.enqueue.
        return False

    @property
    def last_received(self) -> float:
        return self.mux.outlet.last_received

    @property
    def unsent(self) -> int:
        return self.queued + self.mux.outlet.unsent

    def write(self, data: bytes) -> bool:
        if self.destroyed:
            return False
        self.bytes_written += len(data)
        frames = m.encode_chunked(self.stream_id, data, MAX_PAYLOAD)
        self.frames_out += len(frames)
        self.mux.enqueue(self, frames)
        return True

    def end(self) -> None:
        """The stream's session ended on purpose: tell the client with ``stream_close``."""
        self.mux.end_stream(self, announce=True)

    def destroy(self) -> None:
        """Drop what is queued for this stream and end it."""
        self.mux.drop_queue(self)
        self.mux.end_stream(self, announce=True)

    def hold(self, token: object) -> None:
        self.mux.outlet.hold(token)

    def release(self, token: object) -> None:
        self.mux.outlet.release(token)
