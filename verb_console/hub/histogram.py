"""A histogram as plain bucket counts: one comparison loop per observation, no locks.

Kept by whoever measures (the metrics' event-loop lag sampler, the cluster's
pub/sub probe) and turned into a Prometheus histogram only at scrape time.
"""

from __future__ import annotations

from collections.abc import Iterable

__all__ = ["LATENCY_BOUNDS", "Histogram"]

#: Upper bounds (seconds) for latencies from a millisecond to five seconds.
LATENCY_BOUNDS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


class Histogram:
    """Counts of observations per bucket (``counts[-1]``: above every bound), their sum."""

    __slots__ = ("bounds", "count", "counts", "sum")

    def __init__(self, bounds: Iterable[float] = LATENCY_BOUNDS) -> None:
        self.bounds = tuple(bounds)
        self.counts = [0] * (len(self.bounds) + 1)
        self.sum = 0.0
        self.count = 0

    def observe(self, value: float) -> None:
        for i, bound in enumerate(self.bounds):
            if value <= bound:
                self.counts[i] += 1
                break
        else:
            self.counts[-1] += 1
        self.sum += value
        self.count += 1

    def copy(self) -> Histogram:
        """The counts as they are now, apart from later observations."""
        other = Histogram(self.bounds)
        other.counts = list(self.counts)
        other.sum = self.sum
        other.count = self.count
        return other

    def cumulative(self) -> list[tuple[float, int]]:
        """``(bound, observations <= bound)`` for each bound, in order."""
        out: list[tuple[float, int]] = []
        total = 0
        for bound, n in zip(self.bounds, self.counts, strict=False):
            total += n
            out.append((bound, total))
        return out
