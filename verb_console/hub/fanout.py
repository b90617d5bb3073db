"""One frame to many sessions: the loop behind every broadcast and room message.

``Session.deliver`` per recipient costs two Python calls (the session's, then
its outlet's ``write``) and four counter updates, for the same bytes each time;
in a 500-receiver broadcast that was half of the server's instructions per
delivery. This loop does each recipient's part inline, writes straight to a
plain TCP connection's transport (the outlet's ``wire``), and adds the
server-wide totals once at the end. What each recipient sees is exactly what
``deliver`` would have done: the same bytes, the same counters, the same
slow-consumer check.
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from typing import Any, Protocol

from .snapshot import Stats


class WireOutlet(Protocol):
    """The part of a session's outlet a fan-out uses."""

    bytes_written: int

    @property
    def wire(self) -> Callable[[bytes], object] | None: ...

    @property
    def congested(self) -> bool: ...

    def write(self, data: bytes) -> bool: ...


class Recipient(Protocol):
    """The part of a session a fan-out uses (every :class:`~.session.Session` has it)."""

    closing: bool
    msgs_out: int
    touched: bool
    _out: list[bytes] | None

    @property
    def outlet(self) -> WireOutlet: ...

    hub: Any  # its SessionHost: the console's orders' changes (see .order)

    def check_pending(self) -> None: ...


def fan_out(
    recipients: Collection[Recipient], frame: bytes, stats: Stats, exclude: object = None
) -> None:
    """Send ``frame`` to every session of ``recipients`` but ``exclude``.

    For each, what ``session.deliver(frame)`` does: a closing session is skipped,
    a session handling its own read batches the frame with its replies (counted
    when they are flushed), and a congested outlet is checked for a slow consumer.
    ``stats`` (the server's msgs_out and bytes_out) is counted once for all.
    """
    size = len(frame)
    skipped = 0
    for s in recipients:
        if s is exclude or s.closing:
            skipped += 1
            continue
        out = s._out
        if out is not None:
            out.append(frame)
            skipped += 1
            continue
        s.msgs_out += 1
        outlet = s.outlet
        wire = outlet.wire
        if wire is not None:
            # A plain TCP connection: its transport takes the bytes as they are.
            outlet.bytes_written += size
            wire(frame)
        else:
            outlet.write(frame)
        if outlet.congested:
            s.check_pending()
    written = len(recipients) - skipped
    if written:
        stats.msgs_out += written
        stats.bytes_out += written * size
        # For the console's orders (see .order): one test a fan-out while none is kept.
        for s in recipients:
            s.hub.changes.mark_all(recipients)
            break
