"""The admin protocol, version 1: json frames (``<length>\\n<body>``) over a Unix socket.

On connect the server sends ``{"v": 1, "type": "hello", ...}`` (or, to a peer it
refuses, ``{"v": 1, "type": "refused", "error": {...}}`` and closes). Then the
client sends requests and gets one response each, in order::

    {"v": 1, "id": 7, "op": "sessions", "args": {"limit": 100}}
    {"v": 1, "id": 7, "ok": true, "result": {...}}
    {"v": 1, "id": 7, "ok": false, "error": {"code": "bad_request", "message": "..."}}

The records are the view's (hub/snapshot.py) as JSON objects with the same
field names; this module turns them into JSON and back.
"""

from __future__ import annotations

import dataclasses
from dataclasses import replace
from typing import Any, TypeVar

from ..hub.snapshot import (
    ClosedSessionInfo,
    ClusterInfo,
    LogEvent,
    MuxConnectionInfo,
    NodeInfo,
    Overview,
    Page,
    Rates,
    RateSeries,
    Refusals,
    RoomInfo,
    SessionInfo,
    SessionPage,
    Stats,
    StreamInfo,
    ThrottleInfo,
    TransferInfo,
    TurnInfo,
    frozen,
)
from ..hub.tap import TapBatch, TapRow

# A console and its server ship together: a request of another version is
# refused (``bad_version``), never half understood.
VERSION = 1

# Operations and what they change; the read-only ones are allowed to every peer.
READ_OPS = frozenset(
    {
        "hello",
        "status",
        "overview",
        "sessions",
        "closed_sessions",
        "throttle",
        "rooms",
        "mux_connections",
        "transfers",
        "log_since",
        "tap",
        "tap_close",
        "history",
        "watch",
        "unwatch",
        "frame",
        "bans",
        "room_page",
        "room",
        "mux_page",
        "mux_connection",
    }
)
ACTION_OPS = frozenset(
    {"close", "close_ip", "broadcast", "drain", "force", "reload", "ban", "unban"}
)

T = TypeVar("T")


def session_to_wire(s: Any) -> list[Any]:
    """A live session as a JSON array, in :class:`SessionInfo` field order (compact)."""
    return list(frozen(s))


def session_from_wire(row: list[Any]) -> SessionInfo:
    info = SessionInfo._make(row)
    return info._replace(rooms=tuple(info.rooms))


def page_to_wire(page: SessionPage) -> dict[str, Any]:
    return {
        "total": page.total,
        "matched": page.matched,
        "offset": page.offset,
        "fields": list(SessionInfo._fields),
        "rows": [session_to_wire(s) for s in page.rows],
        **_error(page),
    }


def _error(page: Page[Any]) -> dict[str, str]:
    """A page's ``error`` (a filter term naming no field), only when there is one."""
    return {"error": page.error} if page.error else {}


def page_from_wire(data: dict[str, Any], record: type[Any] = SessionInfo) -> Page[Any]:
    """A page of sessions (rows as arrays), or of ``record`` (rows as objects)."""
    if record is SessionInfo:
        rows: tuple[Any, ...] = tuple(session_from_wire(r) for r in data["rows"])
    else:
        rows = tuple(from_wire(record, r) for r in data["rows"])
    page: Page[Any] = Page(data["total"], data["matched"], data["offset"], rows)
    return replace(page, error=data.get("error", ""))


def records_page_to_wire(page: Page[Any]) -> dict[str, Any]:
    """A page of rooms or mux connections: rows as objects, as :func:`to_wire` makes them."""
    return {
        "total": page.total,
        "matched": page.matched,
        "offset": page.offset,
        "rows": [to_wire(r) for r in page.rows],
        **_error(page),
    }


def to_wire(record: Any) -> Any:
    """A frozen dataclass record (nested ones too) as plain JSON values."""
    return dataclasses.asdict(record)


def from_wire(cls: type[T], data: dict[str, Any]) -> T:
    """The record of ``cls`` from :func:`to_wire`'s output; unknown fields are ignored."""
    names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    values = {k: v for k, v in data.items() if k in names}
    if cls is Overview:
        values["totals"] = Stats(**values["totals"])
        values["rates"] = Rates(**values["rates"])
        values["listeners"] = tuple(values["listeners"])
        values["slowest_turns"] = tuple(TurnInfo(*t) for t in values.get("slowest_turns", ()))
        values["refusals"] = Refusals(**values.get("refusals", {}))
    elif cls is RoomInfo:
        values["members"] = tuple(values["members"])
    elif cls is ClusterInfo:
        values["nodes"] = tuple(NodeInfo(**n) for n in values["nodes"])
    elif cls is MuxConnectionInfo:
        values["streams"] = tuple(StreamInfo(**s) for s in values["streams"])
    return cls(**values)


def tap_to_wire(batch: TapBatch | None) -> dict[str, Any]:
    """The ``tap`` op's result: new rows as arrays in :class:`TapRow` field order."""
    if batch is None:
        return {"rows": [], "seen": 0, "skipped": 0, "rate": 0}
    rows = [[r.seq, r.time, r.session, r.protocol, r.type, r.size, r.room] for r in batch.rows]
    return {"rows": rows, "seen": batch.seen, "skipped": batch.skipped, "rate": batch.rate}


def tap_from_wire(data: dict[str, Any]) -> TapBatch:
    rows = tuple(TapRow(*r) for r in data["rows"])
    return TapBatch(rows, data["seen"], data["skipped"], data["rate"])


def series_to_wire(series: RateSeries) -> dict[str, Any]:
    """The ``history`` and ``watch`` ops' result: samples as arrays in ``fields`` order."""
    return {
        "step": series.step,
        "seq": series.seq,
        "fields": list(series.fields),
        "samples": [list(s) for s in series.samples],
    }


def series_from_wire(data: dict[str, Any]) -> RateSeries:
    samples = tuple(tuple(float(v) for v in s) for s in data["samples"])
    return RateSeries(int(data["step"]), int(data["seq"]), tuple(data["fields"]), samples)


RECORDS: dict[str, type] = {
    "closed_sessions": ClosedSessionInfo,
    "throttle": ThrottleInfo,
    "rooms": RoomInfo,
    "mux_connections": MuxConnectionInfo,
    "transfers": TransferInfo,
    "log_since": LogEvent,
}
