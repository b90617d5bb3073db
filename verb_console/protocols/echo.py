"""Sans-IO codec for the ``echo`` text lines of PROTOCOL.md section 5.

The decoder takes bytes in whatever pieces TCP hands them over and gives back
complete lines; it never touches a socket or a clock.
"""

from __future__ import annotations

from typing import Any, cast

import orjson

from .errors import ProtocolError

__all__ = [
    "DEFAULT_MAX_LINE",
    "WELCOME",
    "EchoDecoder",
    "encode_echo",
    "encode_notice",
    "notice_text",
]

DEFAULT_MAX_LINE = 65536
WELCOME = b"Welcome to TCP server!\n"


def encode_echo(line: bytes) -> bytes:
    """The server's answer to one line received (given without its ``\\n``)."""
    return b"Echo: " + line + b"\n"


def encode_notice(text: str) -> bytes:
    """One ``[server] <text>`` line for an operator message.

    Line breaks in ``text`` become spaces, so the notice stays a single line
    and cannot forge a line of its own.
    """
    one_line = text.replace("\r\n", " ").replace("\r", " ").replace("\n", " ")
    return b"[server] " + one_line.encode() + b"\n"


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


class EchoDecoder:
    """Splits a byte stream into lines.

    ``receive(data)`` returns the lines completed by ``data``, in order, each
    without its ``\\n`` but otherwise verbatim (a ``\\r`` before the ``\\n`` is
    kept and counts toward the limit). A line longer than ``max_line`` bytes
    stops the decoder as soon as more than ``max_line`` bytes are held without
    a newline: the lines before it are still returned, then the
    :class:`ProtocolError` ``line_too_long`` as the last event; every later call
    returns nothing, and :attr:`error` keeps the error. At most ``max_line``
    bytes are ever buffered between calls. ``feed(data)`` gives the lines alone.
    """

    __slots__ = ("_buf", "error", "max_line")

    def __init__(self, max_line: int = DEFAULT_MAX_LINE) -> None:
        self.max_line = max_line
        # Only the unfinished line is kept; complete lines are cut straight out
        # of the data fed, so a long line is never buffered past the limit.
        self._buf = bytearray()
        self.error: ProtocolError | None = None

    @property
    def buffered(self) -> int:
        """Bytes of the unfinished line held while waiting for its ``\\n``."""
        return len(self._buf)

    def release(self) -> None:
        """Drop the unfinished line held, at once (its session has ended)."""
        self._buf = bytearray()

    def feed(self, data: bytes) -> list[bytes]:
        """Like :meth:`receive`, without the error event: the lines alone (the
        error, if any, is in :attr:`error`)."""
        out = self.receive(data)
        if out and isinstance(out[-1], ProtocolError):
            out.pop()
        return cast("list[bytes]", out)  # the one error event is gone

    def receive(self, data: bytes) -> list[bytes | ProtocolError]:
        """Take the next bytes of the stream; return the lines they complete,
        then the error if a line was too long."""
        if self.error is not None:
            return []
        buf = self._buf
        limit = self.max_line
        out: list[bytes | ProtocolError] = []
        start = 0
        while True:
            nl = data.find(b"\n", start)
            if nl < 0:
                break
            if len(buf) + nl - start > limit:
                out.append(self._fail())
                return out
            if buf:
                buf += data[start:nl]
                out.append(bytes(buf))
                buf.clear()
            else:
                out.append(bytes(data[start:nl]))
            start = nl + 1
        if len(buf) + len(data) - start > limit:
            out.append(self._fail())
            return out
        buf += data[start:]
        return out

    @staticmethod
    def first_line(buf: bytes | bytearray, max_line: int) -> int | ProtocolError | None:
        """Where the first line in ``buf`` ends (the index of its ``\\n``); the
        ``line_too_long`` error :meth:`receive` would report; or None while incomplete.

        For a reader that must stop after one line and hand the bytes after it
        to a decoder of its own (the auth gate, PROTOCOL.md section 8).
        """
        nl = buf.find(b"\n")
        if nl > max_line or (nl < 0 and len(buf) > max_line):
            return ProtocolError(
                "line_too_long", f"Line longer than the maximum of {max_line} bytes"
            )
        return nl if nl >= 0 else None

    def _fail(self) -> ProtocolError:
        self.error = error = ProtocolError(
            "line_too_long", f"Line longer than the maximum of {self.max_line} bytes"
        )
        self._buf = bytearray()
        return error
