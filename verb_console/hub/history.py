"""Rate history: the server's traffic at three resolutions, and what an operator watches.

Both are sampled on the hub's once-a-second tick from counters that exist
anyway (the hub's :class:`~.snapshot.Stats`, a session's ``msgs_in`` and
``msgs_out``, a room's ``messages``): nothing is added to the path of a
message. The server-wide rings cost the same at any load; a watch costs one
lookup a second while a detail view of its session or room is open, and for a
while after (so that reopening it shows what happened in between).
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Mapping
from typing import Any

from .rooms import RoomRegistry
from .snapshot import Rates, RateSeries, Stats

STEPS: tuple[int, ...] = (1, 10, 60)
"""The resolutions of the server-wide history, in seconds a sample."""
KEPT: dict[int, int] = {1: 300, 10: 360, 60: 1440}
"""Samples kept at each resolution: 5 minutes, 1 hour and 24 hours."""
TRAFFIC_FIELDS = ("msgs_in", "msgs_out", "bytes_in", "bytes_out")

WATCH_KINDS: dict[str, tuple[str, ...]] = {
    "session": ("msgs_in", "msgs_out"),
    "room": ("messages",),
}
"""What can be watched, and the rates a watch of it samples."""
WATCH_KEPT = 300
"""Samples a watch keeps (one a second: 5 minutes)."""
WATCH_LINGER = 300.0
"""Seconds a watch nobody holds goes on sampling before it is dropped."""
MAX_WATCHES = 64
"""Watches at once, held or lingering; past it, opening one more is refused."""
MAX_WATCH_KEY = 256


class Ring:
    """Rates over every ``step`` ticks, from counter deltas over the real time elapsed."""

    __slots__ = ("_base", "_ticks", "samples", "seq", "step")

    def __init__(self, step: int, kept: int) -> None:
        self.step = step
        self.samples: deque[tuple[float, ...]] = deque(maxlen=kept)
        self.seq = 0
        self._base: tuple[float, tuple[int, ...]] | None = None
        self._ticks = 0

    def add(self, now: float, counters: tuple[int, ...]) -> None:
        """One tick: the counters as they are at monotonic time ``now``."""
        base = self._base
        if base is None:
            self._base = (now, counters)
            return
        self._ticks += 1
        if self._ticks < self.step:
            return
        then, before = base
        dt = now - then
        if dt > 0:
            self.samples.append(tuple((c - b) / dt for c, b in zip(counters, before, strict=True)))
            self.seq += 1
        self._base = (now, counters)
        self._ticks = 0

    def rebase(self) -> None:
        """Counting starts again (the counters were reset): the next tick only takes a base."""
        self._base = None
        self._ticks = 0

    def series(self, fields: tuple[str, ...], since: int, limit: int) -> RateSeries:
        """The samples after ``since``, at most the newest ``limit``."""
        n = max(0, min(self.seq - since, limit, len(self.samples)))
        samples = tuple(self.samples)[len(self.samples) - n :] if n else ()
        return RateSeries(self.step, self.seq, fields, samples)


class TrafficHistory:
    """The server's message and byte rates at 1 s, 10 s and 1 min a sample (fixed memory).

    :attr:`rates` is the newest 1 s sample: the rates the overview reports.
    """

    def __init__(self) -> None:
        self.rings = {step: Ring(step, KEPT[step]) for step in STEPS}
        self.rates = Rates()

    def tick(self, stats: Stats) -> None:
        """The hub's once-a-second tick (and its start, which only takes a base)."""
        counters = (stats.msgs_in, stats.msgs_out, stats.bytes_in, stats.bytes_out)
        self.sample(time.monotonic(), counters)

    def sample(self, now: float, counters: tuple[int, int, int, int]) -> None:
        """One tick: msgs_in, msgs_out, bytes_in, bytes_out as they are now."""
        for ring in self.rings.values():
            ring.add(now, counters)
        newest = self.rings[1].samples
        if newest:
            self.rates = Rates(*newest[-1])

    def series(self, step: int, since: int = 0, limit: int = 1440) -> RateSeries:
        ring = self.rings.get(step)
        if ring is None:
            raise ValueError(f"step must be one of {', '.join(map(str, STEPS))}")
        return ring.series(TRAFFIC_FIELDS, since, limit)


class _Watch:
    __slots__ = ("holders", "identity", "released_at", "ring")

    def __init__(self) -> None:
        self.ring = Ring(1, WATCH_KEPT)
        self.holders = 0
        self.released_at = 0.0
        self.identity: object = None


class Watches:
    """Per-second rates of the few sessions and rooms whose detail views are open.

    A watch is keyed by ``(kind, key)``: ``("session", id)`` or ``("room", name)``.
    Opened watches are counted (two consoles may watch one session); one that
    nobody holds lingers for :data:`WATCH_LINGER` seconds, then goes.
    """

    def __init__(self, sessions: Mapping[str, Any], rooms: RoomRegistry) -> None:
        self._sessions = sessions
        self._rooms = rooms
        self._watches: dict[tuple[str, str], _Watch] = {}
        self._clock: Callable[[], float] = time.monotonic

    def __len__(self) -> int:
        return len(self._watches)

    def open(self, kind: str, key: str) -> None:
        """Hold a watch of ``key``; raises ValueError for a bad kind or key, or too many."""
        check_watch(kind, key)
        watch = self._watches.get((kind, key))
        if watch is None:
            if len(self._watches) >= MAX_WATCHES and not self._evict():
                raise ValueError(f"too many watches (at most {MAX_WATCHES})")
            watch = self._watches[kind, key] = _Watch()
            self._sample(kind, key, watch, self._clock())
        watch.holders += 1

    def close(self, kind: str, key: str) -> None:
        """Let go of a watch; it lingers, still sampling, before it goes."""
        watch = self._watches.get((kind, key))
        if watch is not None and watch.holders > 0:
            watch.holders -= 1
            if watch.holders == 0:
                watch.released_at = self._clock()

    def series(self, kind: str, key: str, since: int = 0, limit: int = WATCH_KEPT) -> RateSeries:
        """The watch's samples after ``since`` (none if nothing watches it)."""
        watch = self._watches.get((kind, key))
        fields = WATCH_KINDS.get(kind, ())
        if watch is None:
            return RateSeries(1, 0, fields, ())
        return watch.ring.series(fields, since, limit)

    def tick(self) -> None:
        """Sample every watch once; drop those that lingered long enough."""
        if not self._watches:
            return
        now = self._clock()
        for (kind, key), watch in list(self._watches.items()):
            if watch.holders == 0 and now - watch.released_at > WATCH_LINGER:
                del self._watches[kind, key]
            else:
                self._sample(kind, key, watch, now)

    def _sample(self, kind: str, key: str, watch: _Watch, now: float) -> None:
        identity: object
        counters: tuple[int, ...]
        if kind == "session":
            s = self._sessions.get(key)
            if s is None:
                return
            # An id can come back as a new connection from the same address and port.
            identity, counters = s.connected_at, (s.msgs_in, s.msgs_out)
        else:
            room = self._rooms.get(key)
            if room is None:
                return
            identity, counters = room.created_at, (room.messages,)
        if identity != watch.identity:
            watch.identity = identity
            watch.ring.rebase()
        watch.ring.add(now, counters)

    def _evict(self) -> bool:
        """Drop the lingering watch released longest ago; False if every watch is held."""
        idle = [(w.released_at, k) for k, w in self._watches.items() if w.holders == 0]
        if not idle:
            return False
        del self._watches[min(idle)[1]]
        return True


def check_watch(kind: str, key: str) -> None:
    """Raise ValueError unless ``(kind, key)`` can name a watch."""
    if kind not in WATCH_KINDS:
        raise ValueError(f"kind must be one of {', '.join(WATCH_KINDS)}")
    if not isinstance(key, str) or not 0 < len(key) <= MAX_WATCH_KEY:
        raise ValueError(f"key must be a string of 1 to {MAX_WATCH_KEY} characters")
