"""The seed's per-IP connection throttle (IPv6 counted per /64)."""

from __future__ import annotations

import ipaddress
import time
from collections.abc import Callable
from dataclasses import dataclass

from .snapshot import ThrottleInfo

# Entries with no live connection and an expired window are forgotten after this
# long, so a scan from many addresses cannot grow the table without bound.
FORGET_AFTER_S = 600.0
MAX_ENTRIES = 100_000


def throttle_key(ip: str) -> str:
    """The address a connection is counted under: the IPv4 address, or the IPv6 /64."""
    try:
        addr = ipaddress.ip_address(ip.split("%", 1)[0])
    except ValueError:
        return ip
    if isinstance(addr, ipaddress.IPv6Address):
        if addr.ipv4_mapped is not None:
            return str(addr.ipv4_mapped)
        net = ipaddress.IPv6Network((int(addr) >> 64 << 64, 64))
        return str(net)
    return str(addr)


@dataclass(slots=True)
class _Entry:
    count: int  # connections counted in the current window
    first: float  # window start (monotonic)
    last: float  # last connection attempt (monotonic)
    live: int = 0
    rejected: int = 0
    seen: int = 1  # accepted connections since the entry was created


NOTE_INTERVAL = 10.0
"""Seconds between two log rows about one throttled address."""
NOTED_MAX = 10_000


class Throttle:
    """A fixed window starts at an address's first connection; each accepted connection
    counts, a closed one frees its count, rejected attempts do not count, and the count
    resets when the window ends. ``max_per_ip == 0`` turns the limit off (live counts are
    still kept for the console).
    """

    def __init__(
        self,
        max_per_ip: int = 10,
        window_s: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.max_per_ip = max_per_ip
        self.window_s = window_s
        self._clock = clock
        self._entries: dict[str, _Entry] = {}
        # When each refused address was last told of in the log.
        self._noted: dict[str, float] = {}

    def worth_noting(self, ip: str) -> bool:
        """Whether a refusal of ``ip`` deserves a log row: once per
        :data:`NOTE_INTERVAL` an address, not once per attempt."""
        now = self._clock()
        last = self._noted.get(ip)
        if last is not None and now - last < NOTE_INTERVAL:
            return False
        if len(self._noted) >= NOTED_MAX:
            # A flood from many addresses must not grow this without bound.
            self._noted.clear()
        self._noted[ip] = now
        return True

    def admit(self, ip: str) -> bool:
        """Count a new connection from ``ip``; False means refuse it."""
        key = throttle_key(ip)
        now = self._clock()
        entry = self._entries.get(key)
        if entry is None:
            if len(self._entries) >= MAX_ENTRIES:
                self.sweep(force=True)
            self._entries[key] = _Entry(count=1, first=now, last=now, live=1)
            return True
        entry.last = now
        if now - entry.first > self.window_s:
            entry.count = 1
            entry.first = now
            entry.live += 1
            entry.seen += 1
            return True
        if self.max_per_ip and entry.count >= self.max_per_ip:
            entry.rejected += 1
            return False
        entry.count += 1
        entry.live += 1
        entry.seen += 1
        return True

    def reconnects(self, ip: str) -> int:
        """How many times ``ip`` connected again after its first connection (while tracked)."""
        entry = self._entries.get(throttle_key(ip))
        return entry.seen - 1 if entry is not None else 0

    def release(self, ip: str) -> None:
        """A counted connection from ``ip`` closed: it frees its count."""
        entry = self._entries.get(throttle_key(ip))
        if entry is not None:
            entry.count = max(0, entry.count - 1)
            entry.live = max(0, entry.live - 1)

    def sweep(self, force: bool = False) -> int:
        """Forget idle addresses; returns how many were dropped."""
        now = self._clock()
        keep_for = 0.0 if force else FORGET_AFTER_S
        stale = [
            key
            for key, e in self._entries.items()
            if e.live == 0 and now - e.first > self.window_s and now - e.last > keep_for
        ]
        for key in stale:
            del self._entries[key]
        return len(stale)

    def __len__(self) -> int:
        return len(self._entries)

    def snapshot(self, wall_now: float | None = None) -> list[ThrottleInfo]:
        """Every tracked address, with times on the wall clock."""
        now = self._clock()
        wall = time.time() if wall_now is None else wall_now
        out = []
        for key, e in self._entries.items():
            expired = now - e.first > self.window_s
            in_window = 0 if expired else e.count
            out.append(
                ThrottleInfo(
                    key=key,
                    live=e.live,
                    in_window=in_window,
                    window_started=wall - (now - e.first),
                    window_ends=wall - (now - e.first) + self.window_s,
                    rejected=e.rejected,
                    last_seen=wall - (now - e.last),
                    blocked=bool(self.max_per_ip) and not expired and e.count >= self.max_per_ip,
                )
            )
        return out
