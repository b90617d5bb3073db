"""What the sessions that have ended add up to, kept as each one ends.

The hub adds a session here once, when it ends (never per message), so the
totals by protocol and the closes by reason can be read at any time without
touching the hot path: a reader adds the live sessions' own figures to these.
"""

from __future__ import annotations

from typing import Any

from .session import CloseReason

__all__ = ["Ended"]

#: The protocols whose traffic is counted (a connection still detecting its
#: protocol has none of its own: its bytes go to the protocol it turns out to be).
TRAFFIC_PROTOCOLS = ("json", "binary", "mux", "echo")


class Ended:
    """Closes by reason, and ``[msgs_in, msgs_out, bytes_in, bytes_out]`` by protocol."""

    __slots__ = ("reasons", "traffic")

    def __init__(self) -> None:
        self.reasons: dict[str, int] = {str(r): 0 for r in CloseReason}
        self.traffic: dict[str, list[int]] = {p: [0, 0, 0, 0] for p in TRAFFIC_PROTOCOLS}

    def add(self, session: Any, reason: str) -> None:
        key = str(reason)
        self.reasons[key] = self.reasons.get(key, 0) + 1
        row = self.traffic.get(session.protocol)
        if row is not None:
            outlet = session.outlet
            row[0] += session.msgs_in
            row[1] += session.msgs_out
            row[2] += outlet.bytes_read
            row[3] += outlet.bytes_written
