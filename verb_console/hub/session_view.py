"""The console's live view of a session: :class:`SessionView`, one per session,
whose properties read the session's figures only when they are looked at."""

from __future__ import annotations

import time
from collections.abc import Callable
from operator import attrgetter
from typing import TYPE_CHECKING, Any, Protocol

from .snapshot import SessionInfo, frozen

if TYPE_CHECKING:
    from .permissions import Guard

# Wall-clock time minus monotonic time: turns a read's monotonic timestamp into
# wall time without two clock calls per session. Refreshed by the hub's ticker.
_wall_offset = [time.time() - time.monotonic()]


def refresh_wall_offset() -> None:
    _wall_offset[0] = time.time() - time.monotonic()


class _Counted(Protocol):
    """What the view reads of a session's outlet (a :class:`.session.Outlet`)."""

    @property
    def last_received(self) -> float: ...

    @property
    def bytes_read(self) -> int: ...

    @property
    def bytes_written(self) -> int: ...

    @property
    def unsent(self) -> int: ...


class Viewed(Protocol):
    """What the view reads of its session (a :class:`.session.Session`) besides
    the fields of :class:`SessionInfo` it reads by name."""

    @property
    def id(self) -> str: ...

    @property
    def protocol(self) -> str: ...

    @property
    def outlet(self) -> _Counted: ...

    @property
    def rooms(self) -> set[str]: ...

    @property
    def guard(self) -> Guard | None: ...  # its user's rules and refusals, under a policy


if TYPE_CHECKING:
    # To a type checker the live view is the record it reads as: every field of
    # SessionInfo. At run time it is a plain object holding only its session,
    # with one property per field of SessionInfo, made below from the fields.
    _Record = SessionInfo
else:
    _Record = object


class SessionView(_Record):
    """A live, read-only view of one session with the fields of :class:`SessionInfo`.

    The console samples every session several times a second; building ten
    thousand records each time cost more than the console's 20 ms budget and
    kept the garbage collector busy. One view per session is made when the
    session starts, and its fields are read only for the rows the console sorts
    by or shows.

    Its properties are not written by hand: each field of :class:`SessionInfo`
    reads the session's attribute of the same name, or what :data:`LIVE_READS`
    gives for it, so a new field of :class:`SessionInfo` is on the view, the
    wire and the console with no edit here.
    """

    __slots__ = ("__weakref__", "_s")

    def __init__(self, session: Viewed) -> None:
        self._s = session

    def snapshot(self) -> SessionInfo:
        """A frozen copy of the figures as they are now."""
        return frozen(self)

    def __repr__(self) -> str:
        return f"SessionView({self._s.id!r}, {self._s.protocol!r})"


def _rooms(view: SessionView) -> tuple[str, ...]:
    rooms = view._s.rooms
    return tuple(sorted(rooms)) if rooms else ()


def _kept_msgs(view: SessionView) -> int:
    ring = getattr(view._s, "ring", None)
    return 0 if ring is None else len(ring)


def _refused(view: SessionView) -> int:
    # Only a session under a policy has a guard, and only a guard counts refusals.
    guard = view._s.guard
    return 0 if guard is None else sum(guard.refused.values())


# How the live view reads the fields of SessionInfo that are not its session's
# attribute of the same name (any other field ``f`` reads ``session.f``, in C).
# Plain functions of the view, one Python call a read, as a hand-written
# property would be: a 10,000-session sort reads one field of every view.
LIVE_READS: dict[str, Callable[[SessionView], Any]] = {
    # Reads are timed on the monotonic clock (idle timeouts must not jump).
    "last_activity": lambda v: v._s.outlet.last_received + _wall_offset[0],
    "bytes_in": lambda v: v._s.outlet.bytes_read,
    "bytes_out": lambda v: v._s.outlet.bytes_written,
    "unsent": lambda v: v._s.outlet.unsent,
    "rooms": _rooms,  # sorted, as a tuple
    # Session resume (.resume): only json sessions have these.
    "detached_until": lambda v: getattr(getattr(v._s, "detached", None), "deadline", None),
    "kept": lambda v: getattr(v._s, "ring_bytes", 0),
    "kept_msgs": _kept_msgs,
    "state": lambda v: "live" if getattr(v._s, "detached", None) is None else "detached",
    "refused": _refused,  # every code (.permissions)
}

for _field in SessionInfo._fields:
    setattr(SessionView, _field, property(LIVE_READS.get(_field) or attrgetter("_s." + _field)))
del _field
