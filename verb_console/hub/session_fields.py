"""The live sessions' fields as a query sees them: what sorts them, what filters them.

One :class:`SessionField` per field a query may name: the field of
:class:`~.snapshot.SessionInfo` it sorts by, the name a filter term calls it
(``proto:mux``, ``idle>60``; see :mod:`verb_console.filtering`) and how its
value is read for a filter. Values, not text: a number is compared at the
precision the console shows it (``idle=1m05s`` is 65 s to the second, as
``units.duration_read_back`` says), so a filter keeps what an operator reads,
and the server filters a million sessions without formatting one. How a value
looks in a table (width, alignment, what hides first) is the console's
(``console/panes/session_columns.py``).

:func:`page_of` sorts, filters and pages a list of records: what a fixed view
does, and the answer the hub's kept orders (:mod:`.view`, :mod:`.order`) give
without re-sorting.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from operator import attrgetter
from typing import Any, NamedTuple

from ..filtering import BadFilter, Fields, Read, Test, compile_filter
from ..units import bytes_read_back, count_read_back, duration_read_back
from .snapshot import SessionInfo, SessionPage, frozen


class SessionField(NamedTuple):
    """A field of the live sessions a query sorts by (``name``) and filters by (``term``)."""

    name: str  # the field of SessionInfo
    term: str  # what a filter term calls it (a console column's title, spaces out)
    read: Read  # its value for a filter: text, or a number at the precision shown
    key: Callable[[Any], Any] | None = None  # the sort key, when not the field itself
    clock: bool = False  # the value moves with the clock (an age): no order keeps a filter on it

    @property
    def sort_key(self) -> Callable[[Any], Any]:
        return self.key if self.key is not None else attrgetter(self.name)


def text(name: str) -> Read:
    get = attrgetter(name)
    return lambda s, _now: get(s)


def count(name: str) -> Read:
    get = attrgetter(name)
    return lambda s, _now: count_read_back(get(s))


def size(name: str) -> Read:
    get = attrgetter(name)
    return lambda s, _now: bytes_read_back(get(s))


def age(name: str) -> Read:
    """Seconds since the field's time (a start, a last read)."""
    get = attrgetter(name)
    return lambda s, now: duration_read_back(now - get(s))


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

BY_NAME: dict[str, SessionField] = {f.name: f for f in FIELDS}


def search_text(s: Any) -> str:
    """What a bare word of the filter is looked for in: id, protocol, user, rooms."""
    return f"{s.id} {s.protocol} {s.user or ''} {' '.join(s.rooms)}"


QUERY = Fields(tuple(f.term for f in FIELDS), tuple(f.read for f in FIELDS), search_text)


def session_filter(text: str) -> tuple[Test, bool]:
    """The filter ``text`` as a test of ``(record, now)``, and whether its answer
    moves with the clock (a term on an age); raises :class:`BadFilter`."""
    needle = text.strip().lower()
    if needle and " " not in needle and not any(c in needle for c in ":<>="):
        # One word, the common case: no string built per session.
        def word(s: Any, _now: float) -> bool:
            return (
                needle in s.id
                or needle in s.protocol
                or (s.user is not None and needle in s.user.lower())
                or (bool(s.rooms) and needle in " ".join(s.rooms).lower())
            )

        return word, False
    test, used = compile_filter(text, QUERY)
    return test, any(FIELDS[i].clock for i in used)


def filter_rows(text: str, rows: Sequence[Any], now: float) -> tuple[list[Any], str]:
    """The rows filter ``text`` keeps, in order, and why none can (a bad term) or ``""``."""
    if not text.strip():
        return list(rows), ""
    try:
        keep, _clock = session_filter(text)
    except BadFilter as error:
        return [], str(error)
    return [r for r in rows if keep(r, now)], ""


def sort_key(name: str) -> Callable[[Any], Any]:
    """The sort key of field ``name``; ValueError for a field no query sorts by."""
    field = BY_NAME.get(name)
    if field is None:
        raise ValueError(f"unknown sort key {name!r}")
    return field.sort_key


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
    key = sort_key(sort)
    rows, error = filter_rows(filter, records, now)
    rows.sort(key=_ID, reverse=reverse)
    rows.sort(key=key, reverse=reverse)
    matched = len(rows)
    offset = max(0, min(offset, matched))
    picked = tuple(map(frozen, rows[offset : offset + max(0, limit)]))
    return SessionPage(len(records), matched, offset, picked, error=error)


_ID = attrgetter("id")
