"""Sans-IO codec for the ``echo`` text lines of PROTOCOL.md section 5.

The decoder takes bytes in whatever pieces TCP hands them over and gives back
complete lines; it never touches a socket or a clock.
"""

from __future__ import annotations

from .errors import ProtocolError

__all__ = ["DEFAULT_MAX_LINE", "WELCOME", "EchoDecoder", "encode_echo", "encode_notice"]

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


class EchoDecoder:
    """Splits a byte stream into lines.

    ``feed(data)`` returns the lines completed by ``data``, in order, each
    without its ``\\n`` but otherwise verbatim (a ``\\r`` before the ``\\n`` is
    kept and counts toward the limit). A line longer than ``max_line`` bytes
    stops the decoder as soon as more than ``max_line`` bytes are held without
    a newline: the lines before it are still returned, and :attr:`error` holds
    the :class:`ProtocolError` ``line_too_long``; every later feed returns
    nothing. At most ``max_line`` bytes are ever buffered between feeds.
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

    def feed(self, data: bytes) -> list[bytes]:
        """Take the next bytes of the stream; return the lines they complete."""
        if self.error is not None:
            return []
        buf = self._buf
        limit = self.max_line
        out: list[bytes] = []
        start = 0
        while True:
            nl = data.find(b"\n", start)
            if nl < 0:
                break
            if len(buf) + nl - start > limit:
                self._fail()
                return out
            if buf:
                buf += data[start:nl]
                out.append(bytes(buf))
                buf.clear()
            else:
                out.append(bytes(data[start:nl]))
            start = nl + 1
        if len(buf) + len(data) - start > limit:
            self._fail()
            return out
        buf += data[start:]
        return out

    def _fail(self) -> None:
        self.error = ProtocolError(
            "line_too_long", f"Line longer than the maximum of {self.max_line} bytes"
        )
        self._buf = bytearray()
