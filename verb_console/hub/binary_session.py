"""The ``binary`` session: 8-byte header frames (PROTOCOL.md section 3)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ..protocols import binary as b
from ..protocols.errors import ProtocolError
from .pacer import HOLD_BACKLOG
from .session import CloseReason, Outlet, Session, SessionHost

# What a FILE frame goes to: the hub gives the upload code's handler.
FileHandler = Callable[["BinarySession", b.BinaryFrame], None]

_PONG = b.encode_frame(b.HEARTBEAT_ACK, b"pong")


# Frame types as the message tap shows them.
_TYPE_NAMES = {
    b.HEARTBEAT: "heartbeat",
    b.AUTH: "auth",
    b.DATA: "data",
    b.FILE: "file",
}


class BinarySession(Session):
    """Heartbeats, DATA echo and raw file uploads. Nothing is sent on connect."""

    protocol = "binary"

    __slots__ = ("_backlog", "decoder", "on_file", "transfers")

    def __init__(
        self,
        hub: SessionHost,
        outlet: Outlet,
        session_id: str,
        address: str,
        port: int,
        parent: str | None = None,
        *,
        on_file: FileHandler | None = None,
    ) -> None:
        self.on_file = on_file
        super().__init__(hub, outlet, session_id, address, port, parent)

    def setup(self) -> None:
        self.decoder = b.BinaryDecoder(self.hub.settings.max_frame)
        self.transfers: Any = None
        # Frames read but not handled yet, while reading is held (see .pacer).
        self._backlog: list[Any] | None = None

    def encode_notice(self, message: dict[str, Any]) -> bytes:
        return b.encode_json(b.NOTICE, message)

    def feed(self, data: bytes) -> None:
        if self.closing:
            return
        self.hub.changes.mark(self)  # for the console's orders (see .order)
        stats = self.stats
        stats.bytes_in += len(data)
        decoder = self.decoder
        frames = decoder.receive(data)
        held = decoder.buffered
        if (held or self._input) and self.parent is None:
            # A mux stream's partial frames are charged by its connection.
            over = self.charge_input(held)
            if over is not None:
                # After the frames this read completed, as a framing error is.
                frames.append(ProtocolError("frame_too_large", over))
        if frames:
            if self._backlog is not None:
                self._backlog.extend(frames)
                if len(self._backlog) > HOLD_BACKLOG:
                    self.outlet.hold(self)
            else:
                self._handle(frames)

    def _handle(self, frames: list[Any]) -> None:
        """Handle frames within this step's share of the loop turn (a frame is
        two units: read and answered); the rest waits on the run queue."""
        pacer = self.hub.pacer
        stats = self.stats
        try:
            room = max(0, (pacer.begin() - stats.msgs_in - stats.msgs_out) // 2)
        finally:
            pacer.done()
        rest = None
        if room < len(frames):
            rest = frames[room:]
            frames = frames[:room]
        self._out = out = []
        failed = None
        count = 0
        # The tap is None unless someone watches: one read per step.
        tap = self.hub.tap
        for frame in frames:
            if isinstance(frame, ProtocolError):
                failed = frame  # a framing error is always the last event
                break
            count += 1
            kind = frame.type
            if tap is not None:
                tap.see(
                    self.id,
                    "binary",
                    _TYPE_NAMES.get(kind) or f"0x{kind:04X}",
                    len(frame.payload),
                )
            if kind == b.HEARTBEAT:
                out.append(_PONG)
            elif kind == b.DATA:
                out.append(b.encode_frame(b.DATA, frame.payload, frame.flags))
            elif kind == b.FILE and self.on_file is not None:
                self.on_file(self, frame)
            elif kind == b.AUTH and self.hub.auth is not None:
                out.append(b.encode_error(ProtocolError("bad_message", "Already authenticated")))
            else:
                error = ProtocolError("unknown_type", f"Unknown message type: 0x{kind:04X}")
                out.append(b.encode_error(error))
            if self.closing:
                break
        self.msgs_in += count
        stats.msgs_in += count
        self.flush()
        if self.closing:
            return
        if failed is not None:
            self.deliver(b.encode_error(failed))
            self.close(CloseReason.FRAME_TOO_LARGE, detail=failed.code)
        elif rest:
            self._backlog = rest
            if len(rest) > HOLD_BACKLOG:
                self.outlet.hold(self)
            pacer.defer(self)

    def take_turn(self) -> None:
        """The run queue's call (see .pacer): one more step of the backlog."""
        backlog = self._backlog
        self._backlog = None
        if backlog is None or self.closing:
            return
        self._handle(backlog)
        if self._backlog is None and not self.closing:
            self.outlet.release(self)

    def reply_file(self, message: dict[str, Any]) -> None:
        """A FILE_REPLY frame (section 2.3 objects)."""
        self.deliver(b.encode_json(b.FILE_REPLY, message))
