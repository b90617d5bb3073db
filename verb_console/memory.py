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

So a timer on the loop reads the heap's free bytes (``mallinfo2``, which walks
the free lists: microseconds) every few seconds, and only when more than
:data:`TRIM_FREE_BYTES` lie free does it call ``malloc_trim(0)``, which hands
the free pages back (``MADV_DONTNEED``). Under a steady load the free space is
reused and stays small, so nothing happens. Anywhere but glibc this is a no-op.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import ctypes.util
import logging
import time

log = logging.getLogger(__name__)

TRIM_INTERVAL = 2.0  # seconds between looks at the heap
TRIM_FREE_BYTES = 1024 * 1024  # free heap bytes (below the top) worth a trim


class _MallInfo2(ctypes.Structure):
    _fields_ = [
        (name, ctypes.c_size_t)
        for name in (
            "arena",
            "ordblks",
            "smblks",
            "hblks",
            "hblkhd",
            "usmblks",
            "fsmblks",
            "uordblks",
            "fordblks",
            "keepcost",
        )
    ]


def _libc() -> ctypes.CDLL | None:
    with contextlib.suppress(OSError, AttributeError, TypeError):
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.mallinfo2.restype = _MallInfo2
        libc.malloc_trim.argtypes = [ctypes.c_size_t]
        libc.malloc_trim.restype = ctypes.c_int
        return libc
    return None


class HeapTrimmer:
    """Every ``interval`` s, trims the heap when more than ``threshold`` bytes lie free."""

    def __init__(self, interval: float = TRIM_INTERVAL, threshold: int = TRIM_FREE_BYTES) -> None:
        self.interval = interval
        self.threshold = threshold
        self.libc = _libc()
        self.trims = 0
        self.released = 0  # free bytes the trims found (an upper bound of what went back)
        self.last_took = 0.0  # seconds the last trim kept the loop
        self._handle: asyncio.TimerHandle | None = None
        self._stopped = False

    @property
    def available(self) -> bool:
        return self.libc is not None

    def free_bytes(self) -> int:
        """Free bytes held by the allocator below each arena's top (the part a trim returns)."""
        if self.libc is None:
            return 0
        info = self.libc.mallinfo2()
        return max(0, int(info.fordblks) - int(info.keepcost))

    def check(self) -> bool:
        """Trim now if it is worth it; True if it trimmed."""
        free = self.free_bytes()
        if free < self.threshold or self.libc is None:
            return False
        started = time.perf_counter()
        self.libc.malloc_trim(0)
        self.last_took = time.perf_counter() - started
        self.trims += 1
        self.released += free
        log.debug("heap trimmed: %d bytes free, %.1f ms", free, self.last_took * 1000)
        return True

    def start(self) -> None:
        if self.libc is not None and self._handle is None and not self._stopped:
            self._handle = asyncio.get_running_loop().call_later(self.interval, self._tick)

    def _tick(self) -> None:
        self._handle = None
        try:
            self.check()
        finally:
            self.start()

    def stop(self) -> None:
        self._stopped = True
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None
