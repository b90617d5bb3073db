"""Work over every session, spread over turns of the loop in slices of bounded time.

Every client waits for each turn of the one event loop, so a walk over all the
sessions (an operator's broadcast, a drain's notice, a ban or revocation pass)
must not run in one turn: at 100,000 sessions one such walk is a quarter of a
second. :class:`Slices` does the walk a slice per turn, each at most
:data:`SLICE_S` long, and names its work to the hub's turn clock, so a slow turn
it still causes says what it was.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from typing import Any, Generic, TypeVar

__all__ = ["SLICE_S", "Slices"]

T = TypeVar("T")

#: Seconds of work one slice may take before the rest waits for the next turn.
SLICE_S = 0.005
# Items between looks at the clock (a look costs about as much as a cheap item).
_LOOK_EVERY = 16


class Slices(Generic[T]):
    """Calls ``each(item)`` for every item, a slice per turn; then ``done()``.

    ``clock`` is the hub's :class:`~.turns.TurnClock` (or None), told of each
    slice under ``label``. :attr:`finished` is set once every item was seen.
    """

    __slots__ = ("_at", "_items", "clock", "done", "each", "finished", "label", "slices")

    def __init__(
        self,
        items: Sequence[T],
        each: Callable[[T], object],
        label: str,
        *,
        clock: Any = None,
        done: Callable[[], object] | None = None,
    ) -> None:
        self._items = items
        self._at = 0
        self.each = each
        self.label = label
        self.clock = clock
        self.done = done
        self.slices = 0
        self.finished = asyncio.Event()

    def start(self) -> Slices[T]:
        """Do the first slice now (the rest on later turns)."""
        self._slice()
        return self

    def _slice(self) -> None:
        self.slices += 1
        items, each = self._items, self.each
        started = time.perf_counter()
        deadline = started + SLICE_S
        at, end = self._at, len(items)
        while at < end:
            each(items[at])
            at += 1
            if at % _LOOK_EVERY == 0 and time.perf_counter() > deadline:
                break
        self._at = at
        if self.clock is not None:
            self.clock.worked(self.label, time.perf_counter() - started)
        if at < end:
            asyncio.get_running_loop().call_soon(self._slice)
            return
        self._items = ()
        self.finished.set()
        if self.done is not None:
            self.done()
