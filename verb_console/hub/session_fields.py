"""The live sessions' fields as a query sees them: what sorts them, what filters them.

One :class:`SessionField` per field a query may name: the field of
:class:`~.snapshot.SessionInfo` it sorts by, the name a filter term calls it
(``proto:mux``, ``idle>60``; see :mod:`verb_console.filtering`) and how its
value is read for a filter. Values, not text: a number is compared at the
precision the console shows it (``idle=1m05s`` is 65 s to the second, as
``units.duration_read_back`` says), so a filter keeps what an operator reads,
and the server filters a hundred thousand sessions without formatting one. How a value
looks in a table (width, alignment, what hides first) is the console's
(``console/panes/session_columns.py``).

:func:`page_of` sorts, filters and pages a list of records: what a fixed view
does, and the answer the hub's kept orders (:mod:`.view`, :mod:`.order`) give
without re-sorting.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from ..units import duration_read_back
from .listing import Field, Query, age, count, size, text
from .snapshot import SessionInfo, SessionPage, frozen

SessionField = Field


def _left(s: Any, now: float) -> float | None:
    until = s.detached_until
    return None if until is None else duration_read_back(until - now)


_NEVER = float("inf")

FIELDS: tuple[SessionField, ...] = (
    # In the Connections pane's column order: a term names the first field it begins.
    SessionField("id", "session", text("id")),
    SessionField("protocol", "proto", text("protocol")),
    SessionField("address", "address", text("address")),
    SessionField("connected_at", "uptime", age("connected_at"), clock=True),
    SessionField("last_activity", "idle", age("last_activity"), clock=True),
    SessionField("msgs_in", "msgin", count("msgs_in")),
    SessionField("msgs_out", "msgout", count("msgs_out")),
    SessionField("bytes_in", "bytesin", size("bytes_in")),
    SessionField("bytes_out", "bytesout", size("bytes_out")),
    SessionField("unsent", "unsent", size("unsent")),
    SessionField("rooms", "rooms", lambda s, _: ",".join(s.rooms)),
    # No user reads as "-", as the console shows it ("user:-"), and sorts first.
    SessionField("user", "user", lambda s, _: s.user or "-", lambda s: s.user or ""),
    SessionField("refused", "refused", count("refused")),
    # Detached (PROTOCOL.md 11.1): "state:detached", the window's time left, what is kept.
    SessionField("state", "state", text("state")),
    # A live session's window never ends: it sorts after every detached one.
    SessionField("detached_until", "left", _left, lambda s: s.detached_until or _NEVER, True),
    SessionField("kept", "kept", size("kept")),
)


def search_text(s: Any) -> str:
    """What a bare word of the filter is looked for in: id, protocol, user, rooms."""
    return f"{s.id} {s.protocol} {s.user or ''} {' '.join(s.rooms)}"


def _word(needle: str) -> Callable[[Any, float], bool]:
    """One bare word, the common case: no string built per session."""

    def word(s: Any, _now: float) -> bool:
        return (
            needle in s.id
            or needle in s.protocol
            or (s.user is not None and needle in s.user.lower())
            or (bool(s.rooms) and needle in " ".join(s.rooms).lower())
        )

    return word


SESSIONS = Query(FIELDS, search_text, _word)
BY_NAME = SESSIONS.by_name
session_filter = SESSIONS.compile
filter_rows = SESSIONS.filter_rows
sort_key = SESSIONS.sort_key


def page_of(
    records: Sequence[SessionInfo],
    sort: str = "id",
    reverse: bool = False,
    filter: str = "",
    offset: int = 0,
    limit: int = 100,
    now: float = 0.0,
) -> SessionPage:
    """Filter, sort (ties by id; ``reverse`` mirrors the whole order) and slice ``records``."""
    return SESSIONS.page_of(records, sort, reverse, filter, offset, limit, now, frozen)
