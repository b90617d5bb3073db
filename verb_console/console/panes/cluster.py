"""Pane 8: the cluster as this node sees it (PROTOCOL.md section 10).

The nodes the directory knows with their sessions, rooms and last heartbeat; the
title carries the Redis link, the cross-node message rates and the drops. The
figures come from the view (the bus's own counters), never from Redis: a console
costs the cluster nothing. A server running alone says so in one line.
"""

from __future__ import annotations

from operator import attrgetter

from textual.app import ComposeResult

from verb_console.hub.snapshot import ClusterInfo, HubView, NodeInfo

from ..format import fmt_int, fmt_rate, plural
from ..glyphs import G
from .base import Clock, Detail, DetailRows, Pane
from .table import Cell, Column, LiveTable

ALONE = "this server runs alone: start it with --cluster URL to join others"


def _heartbeat(n: NodeInfo, _now: float) -> Cell:
    if n.heartbeat_age is None:
        return ("none", "error")
    text = "now" if n.heartbeat_age < 0.05 else f"{n.heartbeat_age:.1f}s ago"
    return (text, "warn") if n.heartbeat_age > 5 else text


COLUMNS = (
    Column(
        "NODE",
        12,
        lambda n, _: (f"{n.name} (this)", "accent") if n.is_self else n.name,
        attrgetter("name"),
        measure=lambda n: f"{n.name} (this)",
    ),
    Column("SESSIONS", 8, lambda n, _: fmt_int(n.sessions), attrgetter("sessions"), "right"),
    Column("ROOMS", 6, lambda n, _: fmt_int(n.rooms), attrgetter("rooms"), "right"),
    Column(
        "LAST HEARTBEAT",
        14,
        _heartbeat,
        lambda n: n.heartbeat_age if n.heartbeat_age is not None else 1e9,
        "right",
    ),
)


def node_rows(n: NodeInfo, _now: float) -> DetailRows:
    """Every field of a node, for the detail dialog."""
    age = "link down" if n.heartbeat_age is None else f"{n.heartbeat_age:.1f} s ago"
    return [
        ("Node", n.name + (" (this console's server)" if n.is_self else "")),
        ("Sessions", fmt_int(n.sessions)),
        ("Rooms", fmt_int(n.rooms)),
        ("Last heartbeat", age),
    ]


def _rows(info: ClusterInfo | None) -> list[NodeInfo]:
    return list(info.nodes) if info is not None else []


class ClusterPane(Pane):
    """The cluster's nodes, this one first in its own colour."""

    label = "Cluster"

    def __init__(self, view: HubView, clock: Clock, *, id: str | None = None) -> None:
        super().__init__(view, clock, id=id)
        self.info: ClusterInfo | None = None

    def compose(self) -> ComposeResult:
        yield from super().compose()
        yield LiveTable(
            COLUMNS,
            key=attrgetter("name"),
            search=attrgetter("name"),
            sort_column=0,
            empty_text=ALONE,
            id="cluster",
        )

    @property
    def table(self) -> LiveTable:
        return self.query_one(LiveTable)

    def refresh_view(self, now: float) -> None:
        self.info = self.view.cluster_info()
        self.table.set_items(_rows(self.info), now)
        self.set_title(self._title())

    def _title(self) -> str:
        c = self.info
        if not c:
            return f"CLUSTER  {G.sep}  not in a cluster"  # the table says what to do
        rates = f"{fmt_rate(c.msgs_out_per_s)} out, {fmt_rate(c.msgs_in_per_s)} in"
        parts = [
            f"CLUSTER  node {c.node}",
            f"redis {c.link}",
            plural(len(c.nodes), "node"),
            f"{fmt_int(c.dropped)} dropped",
            f"cross-node {rates}",
        ]
        return f"  {G.sep}  ".join(parts)

    def describe(self, item: NodeInfo) -> Detail:
        return Detail(f"Node {item.name}", node_rows, item.name, self._current, _name)

    def _current(self) -> list[NodeInfo]:
        return _rows(self.view.cluster_info())


_name = attrgetter("name")
