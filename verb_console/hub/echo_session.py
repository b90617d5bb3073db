"""The ``echo`` session: text lines (PROTOCOL.md section 5), for nc/telnet smoke tests."""

from __future__ import annotations

from typing import Any

from ..protocols.echo import WELCOME, EchoDecoder, encode_echo, encode_notice, notice_text
from ..protocols.errors import ProtocolError
from .session import CloseReason, Session


class EchoSession(Session):
    protocol = "echo"

    __slots__ = ("decoder",)

    def setup(self) -> None:
        self.decoder = EchoDecoder(self.hub.settings.max_line)

    def start(self) -> None:
        self.deliver(WELCOME)

    def encode_notice(self, message: dict[str, Any]) -> bytes:
        return encode_notice(notice_text(message))

    def feed(self, data: bytes) -> None:
        if self.closing:
            return
        self.stats.bytes_in += len(data)
        decoder = self.decoder
        lines = decoder.receive(data)
        held = decoder.buffered
        if (held or self._input) and self.parent is None:
            over = self.charge_input(held)
            if over is not None:
                lines.append(ProtocolError("frame_too_large", over))
        if lines:
            self._out = out = []
            failed = None
            for line in lines:
                if isinstance(line, ProtocolError):
                    failed = line  # a line too long: always the last event
                    break
                out.append(encode_echo(line))
            self.msgs_in += len(out)
            self.stats.msgs_in += len(out)
            self.flush()
            if failed is not None:
                self.close(CloseReason.FRAME_TOO_LARGE, detail=failed.code)
