"""The ``echo`` session: text lines (PROTOCOL.md section 5), for nc/telnet smoke tests."""

from __future__ import annotations

from typing import Any

from ..protocols.echo import WELCOME, EchoDecoder, encode_echo, encode_notice, notice_text
from ..protocols.errors import ProtocolError
from .pacer import HOLD_BACKLOG
from .session import CloseReason, Session


class EchoSession(Session):
    protocol = "echo"

    __slots__ = ("_backlog", "decoder")

    def setup(self) -> None:
        self.decoder = EchoDecoder(self.hub.settings.max_line)
        # Lines read but not answered yet, while reading is held (see .pacer).
        self._backlog: list[Any] | None = None

    def start(self) -> None:
        self.deliver(WELCOME)

    def encode_notice(self, message: dict[str, Any]) -> bytes:
        return encode_notice(notice_text(message))

    def feed(self, data: bytes) -> None:
        if self.closing:
            return
        self.hub.changes.mark(self)  # for the console's orders (see .order)
        self.stats.bytes_in += len(data)
        decoder = self.decoder
        lines = decoder.receive(data)
        held = decoder.buffered
        if (held or self._input) and self.parent is None:
            over = self.charge_input(held)
            if over is not None:
                lines.append(ProtocolError("frame_too_large", over))
        if lines:
            if self._backlog is not None:
                self._backlog.extend(lines)
                if len(self._backlog) > HOLD_BACKLOG:
                    self.outlet.hold(self)
            else:
                self._handle(lines)

    def _handle(self, lines: list[Any]) -> None:
        """Answer lines within this step's share of the loop turn (a line is
        two units: read and echoed); the rest waits on the run queue."""
        pacer = self.hub.pacer
        stats = self.stats
        try:
            room = (pacer.begin() - stats.msgs_in - stats.msgs_out) // 2
        finally:
            pacer.done()
        rest = None
        if room < len(lines):
            rest = lines[max(room, 0) :]
            lines = lines[: max(room, 0)]
        self._out = out = []
        failed = None
        for line in lines:
            if isinstance(line, ProtocolError):
                failed = line  # a line too long: always the last event
                break
            out.append(encode_echo(line))
        self.msgs_in += len(out)
        stats.msgs_in += len(out)
        self.flush()
        if failed is not None:
            self.close(CloseReason.FRAME_TOO_LARGE, detail=failed.code)
        elif rest and not self.closing:
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
