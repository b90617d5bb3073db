"""Reconnection backoff as a policy object."""

from __future__ import annotations

import random
from dataclasses import dataclass, field

__all__ = ["Backoff"]


@dataclass
class Backoff:
    """Exponential backoff with jitter: ``base_delay * 2 ** attempt``, capped, jittered.

    :param max_attempts: reconnection attempts before giving up.
    :param base_delay: seconds before the first attempt; each next one waits twice as long.
    :param max_delay: upper bound of one delay, before jitter.
    :param jitter: each delay is multiplied by a random factor in ``[1 - jitter, 1 + jitter]``.
    :param rng: the random source of the jitter.
    """

    max_attempts: int = 5
    base_delay: float = 1.0
    max_delay: float = 30.0
    jitter: float = 0.2
    rng: random.Random = field(default_factory=random.Random, repr=False)

    def __post_init__(self) -> None:
        if self.max_attempts < 0:
            raise ValueError("max_attempts must be >= 0")
        if self.base_delay < 0 or self.max_delay < 0:
            raise ValueError("delays must be >= 0")
        if not 0 <= self.jitter < 1:
            raise ValueError("jitter must be in [0, 1)")

    def delay(self, attempt: int) -> float:
        """Seconds to wait before attempt ``attempt`` (0-based), jitter included."""
        delay = min(self.base_delay * (2**attempt), self.max_delay)
        if self.jitter:
            delay *= 1 + self.rng.uniform(-self.jitter, self.jitter)
        return max(delay, 0.0)
