"""What the codecs share: the default frame limit, and the decoder loop of the
binary and mux codecs (a fixed-size header that holds the payload length, then
the payload)."""

from __future__ import annotations

import struct
from typing import Any, ClassVar, Generic, TypeVar

from .errors import ProtocolError

#: The largest frame a decoder accepts unless told otherwise (PROTOCOL.md's default).
DEFAULT_MAX_FRAME = 1024 * 1024

F = TypeVar("F")


class HeaderDecoder(Generic[F]):
    """Splits a byte stream into frames of ``HEADER`` followed by a payload.

    ``receive(data)`` returns the events ``data`` completes, in order: the
    frames, and after them, if the stream broke, the :class:`ProtocolError`
    (``frame_too_large``) as the last event. A framing error stops the decoder:
    every later call returns nothing, and :attr:`error` keeps the error. The
    length is checked as soon as the header is read, so an oversized body is
    never awaited or buffered. ``feed(data)`` gives the frames alone. Subclasses
    name the header layout and build frames.
    """

    HEADER: ClassVar[struct.Struct]
    LENGTH_FIELD: ClassVar[int]  # index of the length in the unpacked header

    __slots__ = ("_buf", "_head", "_need", "error", "max_frame")

    def __init__(self, max_frame: int) -> None:
        self.max_frame = max_frame
        self._buf = bytearray()
        # Header of the frame whose payload is being awaited; _need is -1 while
        # reading a header. Keeping it means a payload arriving in many reads is
        # never re-parsed.
        self._need = -1
        self._head: tuple[int, ...] = ()
        self.error: ProtocolError | None = None

    @property
    def buffered(self) -> int:
        """Bytes held while waiting for the rest of a frame."""
        return len(self._buf)

    def release(self) -> None:
        """Drop the partial frame held, at once (its session has ended)."""
        self._buf = bytearray()
        self._need = -1
        self._head = ()

    @classmethod
    def first_frame(
        cls, buf: bytes | bytearray, max_frame: int
    ) -> tuple[tuple[int, ...], int, int] | ProtocolError | None:
        """The first frame in ``buf``: ``(header fields, payload start, payload
        end)``; the framing error :meth:`receive` would report; or None while
        incomplete.

        For a reader that must stop after one frame and hand the bytes after it
        to a decoder of its own (the auth gate, PROTOCOL.md section 8).
        """
        size = cls.HEADER.size
        if len(buf) < size:
            return None
        head = cls.HEADER.unpack_from(buf)
        need = head[cls.LENGTH_FIELD]
        if need > max_frame:
            return ProtocolError(
                "frame_too_large", f"Frame of {need} bytes exceeds the maximum of {max_frame}"
            )
        return (head, size, size + need) if len(buf) >= size + need else None

    def _frame(self, head: tuple[int, ...], payload: memoryview) -> F:  # pragma: no cover
        raise NotImplementedError

    def receive(self, data: bytes) -> list[F | ProtocolError]:
        """Take the next bytes of the stream; return the frames they complete,
        then the framing error if the stream broke."""
        return self._decode(data, self._frame)

    def feed(self, data: bytes) -> list[F]:
        """Like :meth:`receive`, without the error event: the frames alone (the
        error, if any, is in :attr:`error`)."""
        out = self._decode(data, self._frame)
        if out and isinstance(out[-1], ProtocolError):
            out.pop()
        return out

    def _decode(self, data: bytes, make: Any) -> list[Any]:
        """The loop: ``make(head, payload_view)`` per frame (the view is valid only
        during the call), then the framing error, if any."""
        if self.error is not None:
            return []
        buf = self._buf
        buf += data
        n = len(buf)
        need = self._need
        # Most reads of a large payload complete nothing: return before any
        # slicing so each read costs only its own append.
        if need >= 0 and n < need:
            return []
        out: list[Any] = []
        off = 0
        head = self._head
        size = self.HEADER.size
        unpack = self.HEADER.unpack_from
        length_field = self.LENGTH_FIELD
        # A memoryview slices the payload straight into bytes: one copy.
        with memoryview(buf) as view:
            while True:
                if need < 0:
                    if n - off < size:
                        break
                    head = unpack(buf, off)
                    need = head[length_field]
                    if need > self.max_frame:
                        self.error = ProtocolError(
                            "frame_too_large",
                            f"Frame of {need} bytes exceeds the maximum of {self.max_frame}",
                        )
                        break
                    off += size
                end = off + need
                if end > n:
                    break
                out.append(make(head, view[off:end]))
                off = end
                need = -1
        if self.error is not None:
            self._buf = bytearray()
            self._need = -1
            out.append(self.error)
            return out
        self._need = need
        self._head = head
        if off:
            # Deleting from the front of a bytearray is amortized O(1) in CPython.
            del buf[:off]
        return out
