"""The columns of the live sessions, as the Connections pane shows them and the server filters them.

One :class:`SessionField` per column of the pane, in its order: its label, cell
text, sort key and layout (width, alignment, which columns hide first). The
console builds its table's columns from these, adding only colour, and the
server sorts and filters an attached console's sessions (:func:`.view.page_of`,
with the filter language of :mod:`verb_console.filtering`) on the same sort
keys and cell texts, so ``proto:mux`` or ``idle>60`` keeps exactly the same
sessions in both. A new column is one field of :class:`~.snapshot.SessionInfo`
and one entry here.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from operator import attrgetter
from typing import Any, Literal

from ..units import (
    bytes_read_back,
    count_read_back,
    duration_read_back,
    fmt_bytes,
    fmt_count,
    fmt_duration,
)
from .snapshot import SessionInfo

Align = Literal["left", "right"]


@dataclass(frozen=True, slots=True)
class SessionField:
    """One column of the live sessions: a filter term's field name is its label."""

    label: str
    width: int
    render: Callable[[SessionInfo, float], str]  # (session record, now) -> the cell's text
    sort: str  # the field of SessionInfo the column sorts by, here and on the server
    align: Align = "left"
    priority: int = 0
    """Columns with higher numbers are hidden first when the table is narrow; 0 never hides."""
    # The number the cell's text reads back as, made without the text where it can
    # be (a filter's ``idle>60`` over ten thousand sessions); None from it means the
    # text reads back as no number; a field without it is read back from the text.
    number: Callable[[SessionInfo, float], float | None] | None = None
    order: Callable[[SessionInfo], Any] | None = None
    """The sort key, when it is not the ``sort`` field's value itself."""
    measure: bool = False
    """Grow the column to fit the longest ``sort`` field (a string), so ids are never cut."""
    flex: bool = False
    """Take whatever width is left over."""
    descending: bool = False
    """The key's natural order reads backwards (e.g. a start time sorted as an age)."""

    @property
    def sort_key(self) -> Callable[[SessionInfo], Any]:
        """The column's sort key: an ``attrgetter`` (one C call a record) unless ``order``."""
        return self.order if self.order is not None else attrgetter(self.sort)


def unsent_text(s: SessionInfo, _now: float) -> str:
    return fmt_bytes(s.unsent)  # "0 B" as every other pane shows it


def unsent_number(s: SessionInfo, _now: float) -> float | None:
    return bytes_read_back(s.unsent)


def user_text(s: SessionInfo, _now: float) -> str:
    return s.user if s.user is not None else "-"


def user_order(s: SessionInfo) -> str:
    # No user sorts first.
    return s.user or ""


LIVE_FIELDS = (
    SessionField("SESSION", 16, lambda s, _: s.id, "id", measure=True),
    SessionField("PROTO", 9, lambda s, _: s.protocol, "protocol", priority=4),
    SessionField("ADDRESS", 15, lambda s, _: s.address, "address", priority=9),
    SessionField(
        "UPTIME",
        7,
        lambda s, now: fmt_duration(now - s.connected_at),
        "connected_at",
        "right",
        5,
        lambda s, now: duration_read_back(now - s.connected_at),
        descending=True,
    ),
    SessionField(
        "IDLE",
        6,
        lambda s, now: fmt_duration(now - s.last_activity),
        "last_activity",
        "right",
        2,
        lambda s, now: duration_read_back(now - s.last_activity),
        descending=True,
    ),
    SessionField(
        "MSG IN",
        7,
        lambda s, _: fmt_count(s.msgs_in),
        "msgs_in",
        "right",
        number=lambda s, _: count_read_back(s.msgs_in),
    ),
    SessionField(
        "MSG OUT",
        7,
        lambda s, _: fmt_count(s.msgs_out),
        "msgs_out",
        "right",
        number=lambda s, _: count_read_back(s.msgs_out),
    ),
    SessionField(
        "BYTES IN",
        9,
        lambda s, _: fmt_bytes(s.bytes_in),
        "bytes_in",
        "right",
        7,
        lambda s, _: bytes_read_back(s.bytes_in),
    ),
    SessionField(
        "BYTES OUT",
        9,
        lambda s, _: fmt_bytes(s.bytes_out),
        "bytes_out",
        "right",
        7,
        lambda s, _: bytes_read_back(s.bytes_out),
    ),
    SessionField("UNSENT", 9, unsent_text, "unsent", "right", 3, unsent_number),
    SessionField("ROOMS", 6, lambda s, _: ",".join(s.rooms), "rooms", priority=8, flex=True),
    # Last, so the sort keys' positions stay; hidden first when the terminal is narrow.
    SessionField("USER", 8, user_text, "user", priority=10, order=user_order),
    # The session's refusals under the policy (PROTOCOL.md 12.1); hidden before USER.
    SessionField(
        "REFUSED",
        7,
        lambda s, _: fmt_count(s.refused),
        "refused",
        "right",
        11,
        lambda s, _: count_read_back(s.refused),
    ),
)


def sort_keys(fields: tuple[SessionField, ...] = LIVE_FIELDS) -> dict[str, Callable[[Any], Any]]:
    """Each column's sort key by the name a query sorts by (its ``sort`` field)."""
    return {f.sort: f.sort_key for f in fields}


def search_text(s: SessionInfo) -> str:
    """What a bare word of the filter is looked for in: id, protocol, user, rooms."""
    return f"{s.id} {s.protocol} {s.user or ''} {' '.join(s.rooms)}"
