"""The Connections pane's live columns: how each of the hub's session fields looks.

The hub serves values and sorts and filters on them (``hub/session_fields.py``);
these columns only lay them out: a title (whose letters, spaces out, are the
filter's name for the field), a width, an alignment, which columns hide first on
a narrow terminal, the cell's text and its colour. Each names the field it
shows, which is what the pane asks the server to sort by.
"""

from __future__ import annotations

from collections.abc import Callable
from operator import attrgetter
from typing import Any

from verb_console.hub.session_fields import BY_NAME
from verb_console.hub.snapshot import ClosedSessionInfo, SessionInfo

from ..format import fmt_bytes, fmt_count, fmt_duration
from .columns import Cell, Column

# Unsent output above these marks means the client is not keeping up.
UNSENT_WARN = 64 * 1024
UNSENT_ERROR = 1024 * 1024
IDLE_WARN = 60.0


def protocol_tone(s: SessionInfo | ClosedSessionInfo, _now: float) -> str:
    return "muted" if s.protocol == "detecting" else ""


def _idle_tone(s: SessionInfo, now: float) -> str:
    return "warn" if now - s.last_activity >= IDLE_WARN else ""


def _unsent_tone(s: SessionInfo, _now: float) -> str:
    if s.unsent <= 0:
        return "muted"
    return "error" if s.unsent >= UNSENT_ERROR else "warn" if s.unsent >= UNSENT_WARN else ""


def toned(
    text: Callable[[Any, float], str], tone: Callable[[Any, float], str]
) -> Callable[[Any, float], Cell]:
    """A cell of ``text`` coloured by ``tone`` ("" for none)."""

    def cell(s: Any, now: float) -> Cell:
        colour = tone(s, now)
        return (text(s, now), colour) if colour else text(s, now)

    return cell


def _state(s: SessionInfo, _now: float) -> Cell:
    return (s.state, "muted" if s.state == "live" else "warn")


def _left(s: SessionInfo, now: float) -> Cell:
    # A detached session: the time its resume window has left.
    if s.detached_until is None:
        return ("-", "muted")
    return fmt_duration(s.detached_until - now)


def _kept(s: SessionInfo, _now: float) -> Cell:
    # What is kept for a resume to replay: bytes/messages.
    if not s.kept_msgs:
        return ("-", "muted")
    return f"{fmt_bytes(s.kept)}/{fmt_count(s.kept_msgs)}"


def live(
    label: str,
    width: int,
    field: str,
    render: Callable[[SessionInfo, float], Cell],
    align: str = "left",
    priority: int = 0,
    **layout: Any,
) -> Column:
    """A live column showing hub field ``field``, sorted here by the hub's own key."""
    return Column(
        label,
        width,
        render,
        BY_NAME[field].sort_key,
        "right" if align == "right" else "left",
        priority,
        field=field,
        **layout,
    )


def _count(name: str) -> Callable[[SessionInfo, float], str]:
    get = attrgetter(name)
    return lambda s, _: fmt_count(get(s))


def _bytes(name: str) -> Callable[[SessionInfo, float], str]:
    get = attrgetter(name)
    return lambda s, _: fmt_bytes(get(s))


LIVE_COLUMNS: tuple[Column, ...] = (
    live("SESSION", 16, "id", lambda s, _: s.id, measure=attrgetter("id")),
    live("PROTO", 9, "protocol", toned(lambda s, _: s.protocol, protocol_tone), priority=4),
    live("ADDRESS", 15, "address", lambda s, _: s.address, priority=9),
    live(
        "UPTIME",
        7,
        "connected_at",
        lambda s, now: fmt_duration(now - s.connected_at),
        "right",
        5,
        descending=True,
    ),
    live(
        "IDLE",
        6,
        "last_activity",
        toned(lambda s, now: fmt_duration(now - s.last_activity), _idle_tone),
        "right",
        2,
        descending=True,
    ),
    live("MSG IN", 7, "msgs_in", _count("msgs_in"), "right"),
    live("MSG OUT", 7, "msgs_out", _count("msgs_out"), "right"),
    live("BYTES IN", 9, "bytes_in", _bytes("bytes_in"), "right", 7),
    live("BYTES OUT", 9, "bytes_out", _bytes("bytes_out"), "right", 7),
    live("UNSENT", 9, "unsent", toned(_bytes("unsent"), _unsent_tone), "right", 3),
    live("ROOMS", 6, "rooms", lambda s, _: ",".join(s.rooms), priority=8, flex=True),
    # Hidden first when the terminal is narrow, from the last one on.
    live(
        "USER",
        8,
        "user",
        lambda s, _: s.user if s.user is not None else ("-", "muted"),
        priority=10,
    ),
    # The session's refusals under the policy (PROTOCOL.md 12.1).
    live(
        "REFUSED",
        7,
        "refused",
        lambda s, _: (fmt_count(s.refused), "warn" if s.refused else "muted"),
        "right",
        11,
    ),
    # Detached sessions (PROTOCOL.md 11.1): the window's time left, bytes/messages kept.
    live("STATE", 8, "state", _state, priority=12),
    live("LEFT", 6, "detached_until", _left, "right", 12),
    live("KEPT", 12, "kept", _kept, "right", 12),
)
