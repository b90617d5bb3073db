"""The fields of a live session as the Connections pane shows them, for filtering anywhere.

One entry per column of the pane, in its order, with the column's label and its
cell text. The console's columns render these texts (adding only colour), and
the server applies the console's filter language (:mod:`verb_console.filtering`)
to the same texts for an attached console, so ``proto:mux`` or ``idle>60``
keeps exactly the same sessions in both.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

from ..units import (
    bytes_read_back,
    count_read_back,
    duration_read_back,
    fmt_bytes,
    fmt_count,
    fmt_duration,
)


class SessionField(NamedTuple):
    """One column of the live sessions: a filter term's field name is its label."""

    label: str
    render: Callable[[Any, float], str]  # (session record, now) -> the cell's text
    sort: str | None  # the record's field the server sorts this column by
    # The number the cell's text reads back as, made without the text where it can
    # be (a filter's ``idle>60`` over ten thousand sessions); None from it means the
    # text reads back as no number; a field without it is read back from the text.
    number: Callable[[Any, float], float | None] | None = None


def unsent_text(s: Any, _now: float) -> str:
    return fmt_bytes(s.unsent) if s.unsent > 0 else "0"


def unsent_number(s: Any, _now: float) -> float | None:
    return bytes_read_back(s.unsent) if s.unsent > 0 else 0.0


def user_text(s: Any, _now: float) -> str:
    return s.user if s.user is not None else "-"


LIVE_FIELDS = (
    SessionField("SESSION", lambda s, _: s.id, "id"),
    SessionField("PROTO", lambda s, _: s.protocol, "protocol"),
    SessionField("ADDRESS", lambda s, _: s.address, "address"),
    SessionField(
        "UPTIME",
        lambda s, now: fmt_duration(now - s.connected_at),
        "connected_at",
        lambda s, now: duration_read_back(now - s.connected_at),
    ),
    SessionField(
        "IDLE",
        lambda s, now: fmt_duration(now - s.last_activity),
        "last_activity",
        lambda s, now: duration_read_back(now - s.last_activity),
    ),
    SessionField(
        "MSG IN",
        lambda s, _: fmt_count(s.msgs_in),
        "msgs_in",
        lambda s, _: count_read_back(s.msgs_in),
    ),
    SessionField(
        "MSG OUT",
        lambda s, _: fmt_count(s.msgs_out),
        "msgs_out",
        lambda s, _: count_read_back(s.msgs_out),
    ),
    SessionField(
        "BYTES IN",
        lambda s, _: fmt_bytes(s.bytes_in),
        "bytes_in",
        lambda s, _: bytes_read_back(s.bytes_in),
    ),
    SessionField(
        "BYTES OUT",
        lambda s, _: fmt_bytes(s.bytes_out),
        "bytes_out",
        lambda s, _: bytes_read_back(s.bytes_out),
    ),
    SessionField("UNSENT", unsent_text, "unsent", unsent_number),
    SessionField("ROOMS", lambda s, _: ",".join(s.rooms), "rooms"),
    SessionField("USER", user_text, "user"),
)


def search_text(s: Any) -> str:
    """What a bare word of the filter is looked for in: id, protocol, user, rooms."""
    return f"{s.id} {s.protocol} {s.user or ''} {' '.join(s.rooms)}"
