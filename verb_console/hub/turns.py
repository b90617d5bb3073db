"""The event loop's slowest recent turns, and what they were doing: for the operator.

Every client waits for each turn of the one event loop, so a long turn is what
an operator must see when it happens. Measuring must cost next to nothing, on
uvloop as on asyncio, so nothing wraps each callback (asyncio's debug mode does,
at a price): a timer comes due every :data:`PROBE_INTERVAL` and notes how late
it ran. A turn longer than the interval always delays it, by at least the turn's
length less the interval, so every turn over 20 ms is seen (as at least 10 ms
late). The lateness of every probe also goes into :attr:`TurnClock.histogram`,
the ``/metrics`` event-loop lag histogram.

What a turn was doing is known when the work says so: the few kinds of work
that can be long (a console refresh, a fan-out or drain step, a scan of every
session, a heap trim) run inside :meth:`TurnClock.doing`, which times them; a
late probe is put down to the longest of them since the probe before.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from .histogram import Histogram
from .snapshot import TurnInfo

#: Seconds between the probe's runs.
PROBE_INTERVAL = 0.01
#: A probe this late (seconds) was held by a slow turn, worth noting.
SLOW_TURN = 0.005
#: How long (seconds) a slow turn is kept in the figure.
KEEP_S = 60.0
KEEP_MAX = 256


class TurnClock:
    """Notes the loop's slow turns; :meth:`slowest` gives the last minute's worst."""

    def __init__(self, interval: float = PROBE_INTERVAL, slow: float = SLOW_TURN) -> None:
        self.interval = interval
        self.slow = slow
        self.histogram = Histogram()
        self._turns: deque[TurnInfo] = deque()
        self._handle: asyncio.TimerHandle | None = None
        self._due = 0.0
        # The longest labelled work since the last probe: (seconds, what).
        self._work = (0.0, "")
        # Work that runs beside the loop and may slow it (a heap trim on its
        # thread): each gives its name while it runs, else "".
        self.beside: list[Callable[[], str]] = []

    def start(self) -> None:
        if self._handle is None:
            loop = asyncio.get_running_loop()
            self._due = loop.time() + self.interval
            self._handle = loop.call_at(self._due, self._probe, loop)

    def stop(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None

    def _probe(self, loop: asyncio.AbstractEventLoop) -> None:
        now = loop.time()
        late = max(0.0, now - self._due)
        self.histogram.observe(late)
        took, what = self._work
        if late >= self.slow or took >= self.slow:
            # The turn lasted at least as long as it held the probe, and as its
            # labelled work; the label names it if that work was most of it.
            if took < late / 2:
                what = next((w for w in (f() for f in self.beside) if w), "")
            self.note(max(late, took), what)
        self._work = (0.0, "")
        self._due = now + self.interval
        self._handle = loop.call_at(self._due, self._probe, loop)

    @contextmanager
    def doing(self, what: str) -> Iterator[None]:
        """Time a piece of work that may be long, naming it for a slow turn."""
        started = time.perf_counter()
        try:
            yield
        finally:
            took = time.perf_counter() - started
            if took > self._work[0]:
                self._work = (took, what)

    def worked(self, what: str, took: float) -> None:
        """Work timed elsewhere (``took`` seconds, in this turn): as :meth:`doing`."""
        if took > self._work[0]:
            self._work = (took, what)

    def note(self, took: float, what: str = "") -> None:
        turns = self._turns
        turns.append(TurnInfo(round(took, 4), time.time(), what))
        if len(turns) > KEEP_MAX:
            # Keep the slowest half: a burst of slow turns must not grow this.
            kept = sorted(turns, key=lambda t: t.duration, reverse=True)[: KEEP_MAX // 2]
            turns.clear()
            turns.extend(sorted(kept, key=lambda t: t.at))

    def slowest(self, n: int = 5, within: float = KEEP_S) -> tuple[TurnInfo, ...]:
        """The ``n`` slowest turns of the last ``within`` seconds, slowest first."""
        turns = self._turns
        cutoff = time.time() - within
        while turns and turns[0].at < cutoff:
            turns.popleft()
        return tuple(sorted(turns, key=lambda t: t.duration, reverse=True)[:n])
