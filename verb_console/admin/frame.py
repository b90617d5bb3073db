"""The ``frame`` op: one request per tick of an attached console, answered as a delta.

An attached console asks, several times a second, for the overview, the new log
events and its window of sessions. ``frame`` answers all three at once, and only
with what changed since the frame this connection last got: the session rows
that differ (keyed by id), the window's order only when it moved, the overview
only when more than its clock moved. So a quiet server answers a tick in about a
hundred bytes, and a busy one sends only the rows of the sessions that talked.

:class:`FrameState` is the server's side (one per admin connection: what its
client holds); :class:`FrameCopy` the client's (the rows, order and overview it
rebuilds from the deltas).
"""

from __future__ import annotations

from dataclasses import fields, replace
from typing import Any

from ..hub.snapshot import (
    ClusterInfo,
    LogEvent,
    Overview,
    Rates,
    Refusals,
    SessionInfo,
    SessionPage,
    Stats,
)
from ..hub.view import LiveHubView
from .protocol import from_wire, session_from_wire, session_to_wire, to_wire

_OVERVIEW = tuple(f.name for f in fields(Overview))
_STATS = tuple(f.name for f in fields(Stats))
_RATES = tuple(f.name for f in fields(Rates))
_REFUSALS = tuple(f.name for f in fields(Refusals))


def overview_to_wire(ov: Overview) -> dict[str, Any]:
    """:func:`~.protocol.to_wire` of an :class:`Overview`, without ``dataclasses.asdict``'s
    deep copy (made for every tick of every attached console)."""
    out = {name: getattr(ov, name) for name in _OVERVIEW}
    out["listeners"] = list(ov.listeners)
    out["totals"] = {name: getattr(ov.totals, name) for name in _STATS}
    out["rates"] = {name: getattr(ov.rates, name) for name in _RATES}
    out["slowest_turns"] = [list(t) for t in ov.slowest_turns]
    out["refusals"] = {name: getattr(ov.refusals, name) for name in _REFUSALS}
    return out


class FrameState:
    """What one admin connection's client holds of the last frame it was sent."""

    def __init__(self) -> None:
        self.seq = 0
        self.rows: dict[str, SessionInfo] = {}
        self.ids: list[str] = []
        self.overview: dict[str, Any] | None = None

    def frame(self, view: LiveHubView, args: dict[str, Any]) -> dict[str, Any]:
        """The ``frame`` op's result: ``args`` are ``sessions``'s, ``log_seq`` and ``have``."""
        have = int(args.get("have", 0))
        if have != self.seq or have == 0:
            # The client holds nothing, or not what this connection sent: all of it.
            self.rows, self.ids, self.overview = {}, [], None
        page = view.session_page(
            sort=str(args.get("sort", "id")),
            reverse=bool(args.get("reverse", False)),
            filter=str(args.get("filter", "")),
            offset=int(args.get("offset", 0)),
            limit=min(int(args.get("limit", 100)), 100_000),
        )
        log = [
            {"seq": e.seq, "time": e.time, "kind": e.kind, "text": e.text}
            for e in view.log_since(int(args.get("log_seq", 0)))
        ]
        held = self.rows
        changed = [session_to_wire(r) for r in page.rows if held.get(r.id) != r]
        self.rows = {r.id: r for r in page.rows}
        wire_page: dict[str, Any] = {
            "total": page.total,
            "matched": page.matched,
            "offset": page.offset,
            "rows": changed,
        }
        if page.error:
            wire_page["error"] = page.error
        ids = list(self.rows)
        if ids != self.ids or have == 0:
            wire_page["ids"] = self.ids = ids
        if have == 0:
            wire_page["fields"] = list(SessionInfo._fields)
        self.seq += 1
        out: dict[str, Any] = {"seq": self.seq, "page": wire_page, "log": log}
        overview = overview_to_wire(view.overview())
        cluster = view.cluster_info()
        overview["cluster"] = to_wire(cluster) if cluster is not None else None
        now = overview.pop("now")
        if overview != self.overview:
            self.overview = overview
            out["overview"] = {**overview, "now": now}
        else:
            out["now"] = now
        return out


class FrameCopy:
    """The client's copy, rebuilt from each frame; ``have`` is the frame it holds."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        """Hold nothing (a new connection): the next frame comes whole."""
        self.have = 0
        self.rows: dict[str, SessionInfo] = {}
        self.ids: list[str] = []
        self.raw_overview: dict[str, Any] = {}
        self.overview: Overview | None = None

    def apply(self, result: dict[str, Any]) -> tuple[Overview, SessionPage, list[LogEvent]]:
        """Take in one frame; the overview, the window and the new log events it makes."""
        wire_page = result["page"]
        rows = self.rows
        for raw in wire_page["rows"]:
            info = session_from_wire(raw)
            rows[info.id] = info
        ids = wire_page.get("ids")
        if ids is not None:
            self.ids = ids
            self.rows = rows = {i: rows[i] for i in ids}
        page = SessionPage(
            wire_page["total"],
            wire_page["matched"],
            wire_page["offset"],
            tuple(rows[i] for i in self.ids),
            error=wire_page.get("error", ""),
        )
        raw_overview = result.get("overview")
        if raw_overview is not None:
            self.raw_overview = raw_overview
            self.overview = from_wire(Overview, raw_overview)
        elif self.overview is not None:
            self.overview = replace(self.overview, now=result["now"])
        else:
            raise ValueError("a frame without an overview, to a copy that has none")
        self.have = int(result["seq"])
        events = [from_wire(LogEvent, e) for e in result["log"]]
        return self.overview, page, events

    @property
    def cluster(self) -> ClusterInfo | None:
        """The cluster as the server's node sees it, from the last overview sent."""
        cluster = self.raw_overview.get("cluster")
        return from_wire(ClusterInfo, cluster) if cluster is not None else None
