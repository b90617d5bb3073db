"""Give the C heap's free memory back to the system, so RSS comes back after a peak.

glibc's malloc raises its mmap threshold to the size of each large block freed
(up to 32 MiB): after the first ~1 MiB partial frame is dropped, later ones are
carved from the heap instead of mapped on their own, and when their sessions
end the heap keeps the freed pages. Only the free space at the very top is
returned by itself; the holes below a live block stay resident. A soak with
partial-frame attackers left a headless server 17 to 27% above where it
started after every client had gone, all of it free heap (``malloc_trim``
brought it back). Fixing the threshold instead (``M_MMAP_THRESHOLD``) cost
uploads 1.4x to 3x the server CPU, one mmap and page faults per large buffer.

So a timer on the loop looks at the process's RSS (``/proc/self/statm``:
microseconds) every few seconds. While it grows, nothing is done; once it
stops growing, ``malloc_trim(0)`` hands the free pages back (``MADV_DONTNEED``).
A trim is not free: on a large, fragmented heap it takes 40 to 450 ms (224 ms
to give back 657 MiB), one ``madvise`` per free chunk. It runs on a thread of
its own (ctypes lets go of the GIL for the call), so the loop goes on turning
meanwhile. glibc holds each arena's lock while it trims that arena, though: a
block the loop asks of ``malloc`` itself (over 512 bytes: pymalloc serves the
smaller ones) waits for the trim of the main arena, so a trim still delays a
loop that reads big messages. (``mallinfo2``, which would say how much lies
free, walks every free chunk: 17 ms there.) So a trim that gives back less
than :data:`TRIM_FREE_BYTES` doubles the wait before the next trim, up to
:data:`TRIM_MAX_INTERVAL` (the looks go on every :data:`TRIM_INTERVAL`); the
wait starts again when RSS grows past where the last trim left it. A server
whose memory is steady trims a few times, then once
every five minutes at most. Anywhere but glibc on Linux this is a no-op.

RSS does not fall when memory is freed, so it cannot tell that clients have
left: a trim made while traffic was still at its peak leaves RSS where it is,
and the holes the departed sessions leave behind look like "nothing new". So
the trimmer is also told how many connections are open (``live``): when at
least :data:`LEFT_MANY` have gone and fewer than half remain of the most seen
open at a look since the last trim, a trim is due again at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import os
import threading
import time
from collections.abc import Callable

from .libc import libc as load_libc

log = logging.getLogger(__name__)

TRIM_INTERVAL = 2.0  # seconds between looks at RSS
TRIM_FREE_BYTES = 1024 * 1024  # a trim that gives back less than this was not worth it
TRIM_MAX_INTERVAL = 300.0  # the longest wait between trims of a steady heap
LEFT_MANY = 16  # connections gone since the last trim that make one due again
_PAGE = 4096
with contextlib.suppress(ValueError, OSError, AttributeError):
    _PAGE = os.sysconf("SC_PAGE_SIZE")


def resident_bytes() -> int:
    """This process's RSS, from /proc/self/statm (0 where there is none)."""
    try:
        with open("/proc/self/statm", "rb") as f:
            return int(f.read().split()[1]) * _PAGE
    except (OSError, IndexError, ValueError):
        return 0


def _libc() -> ctypes.CDLL | None:
    with contextlib.suppress(AttributeError, TypeError):
        libc = load_libc()
        if libc is None:
            return None
        libc.malloc_trim.argtypes = [ctypes.c_size_t]
        libc.malloc_trim.restype = ctypes.c_int
        return libc
    return None


class HeapTrimmer:
    """Trims the heap once RSS stops growing, backing off while trims give back nothing."""

    def __init__(
        self,
        interval: float = TRIM_INTERVAL,
        threshold: int = TRIM_FREE_BYTES,
        max_interval: float = TRIM_MAX_INTERVAL,
        live: Callable[[], int] | None = None,
    ) -> None:
        self.interval = interval
        # How many connections are open now (the server's count), if known.
        self.live = live
        self._live_peak = 0  # the most open at a look since the last trim
        self.threshold = threshold
        self.max_interval = max_interval
        self.libc = _libc() if resident_bytes() else None
        self.trims = 0
        self.released = 0  # bytes of RSS the trims gave back
        self.last_took = 0.0  # seconds the last trim took (on its own thread)
        self.backoff = interval  # seconds a trim that gave back nothing waits for the next
        self._due = 0.0  # monotonic time before which no trim is made
        self._seen = 0  # RSS at the last look
        self._after = 0  # RSS the last trim left
        self._handle: asyncio.TimerHandle | None = None
        self._stopped = False
        self.trimming = False  # a trim runs on its thread now

    @property
    def available(self) -> bool:
        return self.libc is not None

    def check(self) -> bool:
        """One look, and a trim here and now if one is due; True if it trimmed."""
        before = self._due_trim()
        if before is None:
            return False
        self._trimmed(before, *self._trim())
        return True

    def _due_trim(self) -> int | None:
        """One look at RSS: what it is if a trim is due (it stopped growing), else None."""
        if self.libc is None:
            return None
        now = resident_bytes()
        seen, self._seen = self._seen, now
        clock = time.monotonic()
        left = False
        if self.live is not None:
            live = self.live()
            peak = self._live_peak = max(self._live_peak, live)
            left = peak - live >= LEFT_MANY and live * 2 < peak
        if now > self._after + self.threshold or left:
            # Grown past where the last trim left it, or most connections have
            # gone since (their memory is free, RSS does not show it): due again.
            self.backoff = self.interval
            self._due = 0.0
        if now > seen + self.threshold or (now <= self._after and not left) or clock < self._due:
            # Still growing (nothing freed yet), nothing new, or backing off.
            return None
        return now

    def _trim(self) -> tuple[float, int]:
        """``malloc_trim(0)``: how long it took, and RSS after it. Runs on any thread."""
        assert self.libc is not None
        started = time.perf_counter()
        self.libc.malloc_trim(0)
        return time.perf_counter() - started, resident_bytes()

    def _trimmed(self, before: int, took: float, after: int) -> None:
        self.last_took = took
        if self.live is not None:
            self._live_peak = self.live()
        self._after = self._seen = after
        self.trims += 1
        gave = max(0, before - after)
        self.released += gave
        if gave < self.threshold:
            # Not worth what it cost: wait twice as long for the next one.
            self.backoff = min(self.backoff * 2, self.max_interval)
            self._due = time.monotonic() + self.backoff
        log.debug("heap trimmed: %d bytes back, %.1f ms", gave, took * 1000)

    def start(self) -> None:
        if self.libc is not None and self._handle is None and not self._stopped:
            self._handle = asyncio.get_running_loop().call_later(self.interval, self._tick)

    def _tick(self) -> None:
        """A look on the loop; the trim, if due, on a thread of its own (see above)."""
        self._handle = None
        before = self._due_trim()
        if before is None:
            self.start()
            return
        loop = asyncio.get_running_loop()
        self.trimming = True

        def run() -> None:
            took, after = self._trim()
            with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
                loop.call_soon_threadsafe(self._done, before, took, after)

        threading.Thread(target=run, name="heap-trim", daemon=True).start()

    def _done(self, before: int, took: float, after: int) -> None:
        self.trimming = False
        self._trimmed(before, took, after)
        self.start()

    def stop(self) -> None:
        self._stopped = True
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
