"""The ``echo`` session: text lines (PROTOCOL.md section 5), for nc/telnet smoke tests."""

from __future__ import annotations

from typing import Any

import orjson

from ..protocols.echo import WELCOME, EchoDecoder, encode_echo, encode_notice
from ..protocols.errors import ProtocolError
from .session import CloseReason, Session


def notice_text(message: dict[str, Any]) -> str:
    """A server-initiated message as one human line (section 6, echo form)."""
    kind = message.get("type")
    if kind == "broadcast":
        data = message.get("data")
    elif kind == "room_message":
        data = f"({message.get('room')}) {message.get('data')}"
    elif kind == "server_shutdown":
        grace = message.get("gracePeriod", 0) / 1000
        return f"{message.get('message', 'Server is shutting down')} (grace period {grace:g}s)"
    elif kind == "closing":
        return f"closing: {message.get('reason')}"
    else:
        data = message
    return data if isinstance(data, str) else orjson.dumps(data).decode()


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
