"""``seq`` on every delivery a json session gets because of someone else (PROTOCOL.md 11.1).

With session resume on, each such frame is stamped with the session's next
``seq`` and kept in the session's ring: the deliveries of the last
:data:`RING_SECONDS` while the session is attached (a connection that broke may
have lost what was written to it shortly before), everything while it is
detached, and never more than the unsent-output limit. A resume replays from
the ring. The cost per delivery is one counter and one ring append; the frame
is made per recipient, since its ``seq`` differs, from the body encoded once.

The ring holds frames with consecutive ``seq``s, so the first one's is
``session.seq - len(ring) + 1``. When they were sent is kept coarsely, in
*marks*: ``(monotonic time, seq)`` at most once a :data:`MARK_S`, so that a
delivery allocates nothing the garbage collector tracks.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Collection
from typing import Any, Protocol

from .fanout import Recipient, fan_out
from .snapshot import Stats

RING_SECONDS = 10.0
"""How long a delivery is kept for a replay while its session is attached."""
MARK_S = 1.0
"""The granularity of a ring's times: deliveries are kept RING_SECONDS to RING_SECONDS + MARK_S."""

_monotonic = time.monotonic

POW10 = tuple(10**k for k in range(21))
"""``POW10[w]`` is the first ``seq`` of width ``w + 1``."""


class Kept(Protocol):
    """What the detached state of a session counts (see :mod:`.resume`)."""

    before: int  # ring entries kept from before the session was detached
    delivered: int  # bytes delivered since the session was detached


class Stamped(Recipient, Protocol):
    """A json session with resume on: its counter, its ring and its detached state."""

    seq: int
    seq_width: int  # digits of ``seq`` (1 while it is 0)
    ring: deque[bytes] | None
    ring_bytes: int
    marks: deque[tuple[float, int]]
    mark_at: float
    detached: Kept | None

    def deliver(self, frame: bytes) -> None: ...

    def overflowed(self) -> None: ...


def stamp(prefix: bytes, base: int, n: int) -> bytes:
    """The frame of a body (``prefix``: the body without its closing brace) with ``seq`` n."""
    sn = b"%d" % n
    return b'%d\n%b,"seq":%b}' % (base + len(sn), prefix, sn)


def split(frame: bytes) -> tuple[bytes, int]:
    """``frame``'s body without its closing brace, and the body's length with ``,"seq":}``."""
    prefix = frame[frame.index(b"\n") + 1 : -1]
    return prefix, len(prefix) + 8


def drop_before(s: Stamped, first: int) -> None:
    """Drop the ring's frames whose ``seq`` is below ``first``."""
    ring = s.ring
    assert ring is not None
    n = first - (s.seq - len(ring) + 1)
    for _ in range(min(n, len(ring))):
        s.ring_bytes -= len(ring.popleft())


def retime(s: Stamped, now: float, limit: int, delivered: bool = True) -> None:
    """Drop what the ring need not keep; just after a delivery, mark its time
    (at most once a MARK_S)."""
    ring = s.ring
    if ring is None:
        return
    marks = s.marks
    if delivered and s.mark_at <= now - MARK_S and ring:
        # The last frame is the first sent at or after ``now``.
        marks.append((now, s.seq))
        s.mark_at = now
    cutoff = now - RING_SECONDS
    while len(marks) > 1 and marks[1][0] <= cutoff:
        marks.popleft()
    if marks and marks[0][0] <= cutoff:
        if len(marks) == 1 and marks[0][0] <= cutoff - MARK_S:
            # No mark since: every frame was sent within MARK_S of this one.
            drop_before(s, s.seq + 1)
            marks.clear()
        else:
            # What came before the first mark was sent before its time.
            drop_before(s, marks[0][1])
    while s.ring_bytes > limit:
        s.ring_bytes -= len(ring.popleft())


def trim(s: Stamped, now: float, limit: int) -> None:
    """Drop what the ring need not keep; a detached session over the limit overflows."""
    ring = s.ring
    if ring is None:
        return
    kept = s.detached
    if kept is None:
        retime(s, now, limit)
        return
    # Detached: nothing expires by time. What came before the break goes first.
    while s.ring_bytes > limit and kept.before > 0:
        s.ring_bytes -= len(ring.popleft())
        kept.before -= 1
    if kept.delivered > limit:
        s.overflowed()


class SeqDelivery:
    """Delivery with ``seq`` for one server: ``limit`` is its unsent-output limit."""

    __slots__ = ("limit",)

    def __init__(self, limit: int) -> None:
        self.limit = limit

    def one(self, s: Stamped, frame: bytes) -> None:
        """Deliver ``frame`` (encoded without ``seq``) to one session."""
        if s.closing:
            return
        ring = s.ring
        if ring is None:
            s.deliver(frame)
            return
        prefix, base = split(frame)
        n = s.seq = s.seq + 1
        if n == POW10[s.seq_width]:
            s.seq_width += 1
        f = stamp(prefix, base, n)
        ring.append(f)
        s.ring_bytes += len(f)
        kept = s.detached
        if kept is not None:
            kept.delivered += len(f)
        now = _monotonic()
        if kept is not None or s.ring_bytes > self.limit or s.mark_at <= now - MARK_S:
            trim(s, now, self.limit)
        s.deliver(f)

    def fan_out(
        self, recipients: Collection[Any], frame: bytes, stats: Stats, exclude: object = None
    ) -> None:
        """What :func:`.fanout.fan_out` does, each recipient's frame stamped and kept.

        A frame is made by one ``%`` of a template per width of ``seq`` (the
        length header depends on it), made once per fan-out.
        """
        prefix = frame[frame.index(b"\n") + 1 : -1]
        base = len(prefix) + 8
        body = prefix.replace(b"%", b"%%") + b',"seq":%d}'
        templates: list[bytes | None] = [None] * len(POW10)
        now = _monotonic()
        due = now - MARK_S
        limit = self.limit
        written = 0
        size = 0
        for s in recipients:
            if s is exclude or s.closing:
                continue
            ring = s.ring
            if ring is None:
                # Not a json session with a ring (none is, with resume off).
                fan_out((s,), frame, stats)
                continue
            n = s.seq = s.seq + 1
            w = s.seq_width
            if n == POW10[w]:
                w = s.seq_width = w + 1
            t = templates[w]
            if t is None:
                t = templates[w] = b"%d\n" % (base + w) + body
            f = t % n
            fl = len(f)
            ring.append(f)
            rb = s.ring_bytes = s.ring_bytes + fl
            kept = s.detached
            if kept is not None:
                kept.delivered += fl
                trim(s, now, limit)
            elif rb > limit or s.mark_at <= due:
                retime(s, now, limit)
            out = s._out
            if out is not None:
                out.append(f)
                continue
            s.msgs_out += 1
            outlet = s.outlet
            wire = outlet.wire
            if wire is not None:
                outlet.bytes_written += fl
                wire(f)
            else:
                outlet.write(f)
            if outlet.congested:
                s.check_pending()
            written += 1
            size += fl
        if written:
            stats.msgs_out += written
            stats.bytes_out += size

    def sweep(self, sessions: Collection[Any]) -> None:
        """Let the rings of sessions that get nothing now forget what is old; once a second."""
        now = _monotonic()
        old = now - RING_SECONDS
        limit = self.limit
        for s in sessions:
            marks = getattr(s, "marks", None)
            if marks and marks[0][0] <= old and s.detached is None:
                retime(s, now, limit, delivered=False)
