"""The message tap: a rate-limited sample of the messages flowing, as redis-cli MONITOR.

Off (``Hub.tap`` is None) until a reader opens it, and then the only cost on the
hot path is the one ``hub.tap`` read per network read that sessions make anyway.
While open, at most :attr:`Tap.rate` messages a second become rows; the rest are
only counted as skipped, so a flood costs one counter increment per message.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

TAP_RATE = 20
"""Rows a second kept by default; the rest are counted as skipped."""
TAP_KEPT = 500
"""Rows kept for readers that come late."""


@dataclass(frozen=True, slots=True)
class TapRow:
    """One sampled message: who sent it, what it was, how big, to which room."""

    seq: int
    time: float
    session: str
    protocol: str
    type: str
    size: int
    room: str = ""


@dataclass(frozen=True, slots=True)
class TapBatch:
    """What the tap saw since a reader's last look: new rows and the running counts."""

    rows: tuple[TapRow, ...]
    seen: int
    """Messages seen since the tap opened."""
    skipped: int
    """Messages seen but not kept as rows (over the rate)."""
    rate: int


class Tap:
    """Rows of sampled messages, at most :attr:`rate` a second, the last :data:`TAP_KEPT` kept."""

    __slots__ = ("_clock", "_in_window", "_seq", "_window", "rate", "rows", "seen", "skipped")

    def __init__(
        self,
        rate: int = TAP_RATE,
        clock: Callable[[], float] = time.monotonic,
        *,
        first_seq: int = 1,
    ) -> None:
        self.rate = rate
        self.rows: deque[TapRow] = deque(maxlen=TAP_KEPT)
        self.seen = 0
        self.skipped = 0
        # Numbers go on from the last tap's, so a reader's "since" stays right.
        self._seq = first_seq - 1
        self._clock = clock
        self._window = clock()
        self._in_window = 0

    def see(self, session: str, protocol: str, kind: str, size: int, room: str = "") -> None:
        """One message: kept as a row if this second has room left, else counted as skipped."""
        self.seen += 1
        if self._in_window >= self.rate:
            now = self._clock()
            if now - self._window < 1.0:
                self.skipped += 1
                return
            self._window = now
            self._in_window = 0
        elif self._in_window == 0:
            self._window = self._clock()
        self._in_window += 1
        self._seq += 1
        self.rows.append(TapRow(self._seq, time.time(), session, protocol, kind, size, room))

    @property
    def last_seq(self) -> int:
        return self._seq

    def since(self, seq: int) -> TapBatch:
        """The rows newer than ``seq``, with the counts."""
        rows = self.rows
        new = tuple(r for r in rows if r.seq > seq) if rows and rows[-1].seq > seq else ()
        return TapBatch(new, self.seen, self.skipped, self.rate)


class TapSwitch:
    """Opens the hub's tap for its first reader and closes it after its last."""

    def __init__(self, install: Callable[[Tap | None], None]) -> None:
        self._install = install
        self._readers = 0
        self._last_seq = 0
        self.tap: Tap | None = None

    def open(self) -> None:
        self._readers += 1
        if self.tap is None:
            self.tap = Tap(first_seq=self._last_seq + 1)
            self._install(self.tap)

    def close(self) -> None:
        if self._readers == 0:
            return
        self._readers -= 1
        if self._readers == 0 and self.tap is not None:
            self._last_seq = self.tap.last_seq
            self.tap = None
            self._install(None)

    def since(self, seq: int) -> TapBatch | None:
        """New rows, or None while the tap is closed."""
        return self.tap.since(seq) if self.tap is not None else None
