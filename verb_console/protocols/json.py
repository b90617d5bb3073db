"""Sans-IO codec for the ``json`` framing of PROTOCOL.md section 2: ``<length>\\n<body>``.

The decoder takes bytes in whatever pieces TCP hands them over and gives back the
bodies of complete frames. It never touches a socket or a clock, so it is used by
the server, by the clients and by the tests alike.
"""

from __future__ import annotations

from typing import Any, cast

import orjson

from .errors import ProtocolError

__all__ = [
    "MAX_HEADER_DIGITS",
    "JsonDecoder",
    "MessageHandler",
    "encode",
    "encode_body",
    "encode_error",
]

MAX_HEADER_DIGITS = 10
DEFAULT_MAX_FRAME = 1024 * 1024

_dumps = orjson.dumps


def encode_body(body: bytes) -> bytes:
    """Frame an already-serialized JSON body."""
    return b"%d\n%s" % (len(body), body)


def encode(message: Any) -> bytes:
    """Serialize ``message`` to one frame."""
    body = _dumps(message)
    return b"%d\n%s" % (len(body), body)


def encode_error(error: ProtocolError, ref: Any = None) -> bytes:
    """Frame ``error`` as an ``error`` message answering the message whose ``ref`` is given."""
    return encode(error.as_message(ref))


class JsonDecoder:
    """Splits a byte stream into frame bodies.

    ``receive(data)`` returns the events ``data`` completes, in order: the
    bodies, and after them, if the stream broke, the :class:`ProtocolError`
    (``bad_header`` or ``frame_too_large``) as the last event. A framing error
    stops the decoder: every later call returns nothing, and :attr:`error` keeps
    the error. ``frame_too_large`` is reported as soon as the header is read, so
    the body is never buffered. ``feed(data)`` gives the bodies alone.
    """

    __slots__ = ("_buf", "_need", "error", "max_frame")

    def __init__(self, max_frame: int = DEFAULT_MAX_FRAME) -> None:
        self.max_frame = max_frame
        self._buf = bytearray()
        # Length of the body being awaited, or -1 while reading a header.
        self._need = -1
        self.error: ProtocolError | None = None

    @property
    def buffered(self) -> int:
        """Bytes held while waiting for the rest of a frame."""
        return len(self._buf)

    def feed(self, data: bytes) -> list[bytearray]:
        """Like :meth:`receive`, without the error event: the bodies alone (the
        error, if any, is in :attr:`error`)."""
        out = self.receive(data)
        if out and isinstance(out[-1], ProtocolError):
            out.pop()
        return cast("list[bytearray]", out)  # the one error event is gone

    def receive(self, data: bytes) -> list[bytearray | ProtocolError]:
        """Take the next bytes of the stream; return the bodies they complete,
        then the framing error if the stream broke."""
        if self.error is not None:
            return []
        buf = self._buf
        buf += data
        out: list[bytearray | ProtocolError] = []
        off = 0
        n = len(buf)
        need = self._need
        while True:
            if need < 0:
                nl = buf.find(b"\n", off, off + MAX_HEADER_DIGITS + 1)
                if nl < 0:
                    if n - off > MAX_HEADER_DIGITS:
                        self._fail(
                            ProtocolError("bad_header", "Frame header is longer than 10 digits")
                        )
                        break
                    # A partial header must be digits so far: fail fast on garbage.
                    if n > off and not buf[off:n].isdigit():
                        self._fail(ProtocolError("bad_header", "Frame header must be ASCII digits"))
                    break
                header = buf[off:nl]
                if not header.isdigit():
                    self._fail(
                        ProtocolError(
                            "bad_header",
                            "Empty frame header"
                            if not header
                            else "Frame header must be ASCII digits",
                        )
                    )
                    break
                need = int(header)
                if need > self.max_frame:
                    self._fail(
                        ProtocolError(
                            "frame_too_large",
                            f"Frame of {need} bytes exceeds the maximum of {self.max_frame}",
                        )
                    )
                    break
                off = nl + 1
            end = off + need
            if end > n:
                break
            # One copy; orjson reads a bytearray as well as bytes.
            out.append(buf[off:end])
            off = end
            need = -1
        if self.error is not None:
            out.append(self.error)
            return out
        self._need = need
        if off:
            del buf[:off]
        return out

    def _fail(self, error: ProtocolError) -> None:
        self.error = error
        self._buf = bytearray()
        self._need = -1


class MessageHandler:
    """The seed's MessageHandler: JSON messages over a :class:`~verb_console.net.TCPSocket`.

    ``handler.on("message", fn)`` receives each decoded message, ``on("error", fn)``
    each framing or JSON error; :meth:`send_message` frames and writes one message.
    """

    def __init__(self, socket: Any, max_frame: int = DEFAULT_MAX_FRAME) -> None:
        self.socket = socket
        self._decoder = JsonDecoder(max_frame)
        self._listeners: dict[str, list[Any]] = {"message": [], "error": []}
        socket.on("data", self._on_data)

    def on(self, event: str, listener: Any) -> MessageHandler:
        if event not in self._listeners:
            raise ValueError(f"unknown event {event!r}; expected 'message' or 'error'")
        self._listeners[event].append(listener)
        return self

    def _on_data(self, data: bytes | str) -> None:
        if isinstance(data, str):
            data = data.encode()
        for body in self._decoder.receive(data):
            if isinstance(body, ProtocolError):
                # The stream cannot be trusted past a framing error, which the
                # decoder reports once, as its last event.
                self._emit("error", body)
                break
            try:
                message = orjson.loads(body)
            except orjson.JSONDecodeError as exc:
                self._emit("error", ProtocolError("bad_json", f"Invalid JSON message: {exc}"))
                continue
            self._emit("message", message)

    def _emit(self, event: str, value: Any) -> None:
        for listener in list(self._listeners[event]):
            listener(value)

    def send_message(self, message: Any) -> None:
        self.socket.write(encode(message))
