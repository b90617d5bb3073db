"""Pane 4: mux connections, and the streams of the one under the cursor."""

from __future__ import annotations

from operator import attrgetter
from typing import Any, ClassVar

from textual import on
from textual.app import ComposeResult
from textual.binding import BindingType
from textual.widgets import Static

from verb_console.hub.row_fields import MUX_CONNECTIONS
from verb_console.hub.snapshot import HubView, MuxConnectionInfo, StreamInfo

from ..format import fmt_bytes, fmt_clock, fmt_count, fmt_duration, fmt_int, plural
from ..glyphs import G
from ..keys import bindings
from .base import Detail, DetailRows, Pane
from .table import Column, LiveTable


def _mux(label: str, width: int, field: str, render: Any, **layout: Any) -> Column:
    """A column showing the hub's mux connection field ``field``, sorted by its own key."""
    key = MUX_CONNECTIONS.sort_key(field)
    return Column(label, width, render, key, field=field, **layout)


# In the order of the hub's mux connection fields (hub/row_fields.py): a title is
# the filter's name. Bytes are the connection's socket's, framing included.
MUX_COLUMNS = (
    _mux("MUX CONNECTION", 16, "id", lambda m, _: m.id, measure=attrgetter("id")),
    _mux("STREAMS", 7, "stream_count", lambda m, _: fmt_int(m.stream_count), align="right"),
    _mux(
        "UPTIME",
        7,
        "connected_at",
        lambda m, now: fmt_duration(now - m.connected_at),
        align="right",
        descending=True,
    ),
    _mux("BYTES IN", 9, "bytes_in", lambda m, _: fmt_bytes(m.bytes_in), align="right", priority=2),
    _mux(
        "BYTES OUT", 9, "bytes_out", lambda m, _: fmt_bytes(m.bytes_out), align="right", priority=2
    ),
)

STREAM_COLUMNS = (
    Column("STREAM", 6, lambda s, _: f"#{s.stream_id}", attrgetter("stream_id"), "right"),
    Column("KIND", 6, lambda s, _: s.kind, attrgetter("kind")),
    Column(
        "SESSION",
        16,
        lambda s, _: s.session_id,
        attrgetter("session_id"),
        measure=attrgetter("session_id"),
        priority=3,
    ),
    Column(
        "AGE", 7, lambda s, now: fmt_duration(now - s.opened_at), lambda s: -s.opened_at, "right"
    ),
    Column("FRM IN", 7, lambda s, _: fmt_count(s.frames_in), attrgetter("frames_in"), "right"),
    Column("FRM OUT", 7, lambda s, _: fmt_count(s.frames_out), attrgetter("frames_out"), "right"),
    Column("BYTES IN", 9, lambda s, _: fmt_bytes(s.bytes_in), attrgetter("bytes_in"), "right", 2),
    Column(
        "BYTES OUT", 9, lambda s, _: fmt_bytes(s.bytes_out), attrgetter("bytes_out"), "right", 2
    ),
)


def mux_rows(m: MuxConnectionInfo, now: float) -> DetailRows:
    """Every field of a mux connection, for the detail dialog."""
    return [
        ("Mux connection", m.id),
        ("Connected", f"{fmt_clock(m.connected_at)} ({fmt_duration(now - m.connected_at)} ago)"),
        ("Bytes in / out", f"{fmt_bytes(m.bytes_in)} / {fmt_bytes(m.bytes_out)}"),
        ("Streams", fmt_int(m.stream_count)),
        *((f"  #{s.stream_id}", f"{s.kind}  {s.session_id}") for s in m.streams),
    ]


def stream_rows(s: StreamInfo, now: float) -> DetailRows:
    """Every field of a mux stream, for the detail dialog."""
    return [
        ("Stream", f"#{s.stream_id}"),
        ("Kind", s.kind),
        ("Session", s.session_id),
        ("Opened", f"{fmt_clock(s.opened_at)} ({fmt_duration(now - s.opened_at)} ago)"),
        ("Frames in / out", f"{fmt_int(s.frames_in)} / {fmt_int(s.frames_out)}"),
        ("Bytes in / out", f"{fmt_bytes(s.bytes_in)} / {fmt_bytes(s.bytes_out)}"),
    ]


class StreamsPane(Pane):
    """Mux connections on top; the selected connection's streams below."""

    label = "Streams"
    BINDINGS: ClassVar[list[BindingType]] = bindings("streams")
    hints = "tab streams"

    def compose(self) -> ComposeResult:
        yield from super().compose()
        yield LiveTable(
            MUX_COLUMNS,
            key=attrgetter("id"),
            filter=MUX_CONNECTIONS.filter_rows,  # on the values, as the server filters them
            sort_column=0,
            empty_text="no mux connections",
            id="mux",
        )
        yield Static("", classes="pane-subtitle", markup=False)
        yield LiveTable(
            STREAM_COLUMNS,
            key=lambda s: s.session_id,
            search=lambda s: f"{s.session_id} {s.kind}",
            sort_column=0,
            empty_text="no streams",
            id="streams",
        )

    @property
    def table(self) -> LiveTable:
        streams = self.query_one("#streams", LiveTable)
        return streams if streams.has_focus else self.query_one("#mux", LiveTable)

    def focus_table(self) -> None:
        self.query_one("#mux", LiveTable).focus()

    def selected_session_id(self) -> str | None:
        streams = self.query_one("#streams", LiveTable)
        item = streams.cursor_item if streams.has_focus else None
        return item.session_id if item is not None else None

    def refresh_view(self, now: float) -> None:
        """Fetch the window of mux connections around the cursor; the selected one's streams."""
        table = self.query_one("#mux", LiveTable)
        page = self.view.mux_page(*self.paging.query(table))
        window = self.paging.show(table, page, now, "mux connections")
        self._refresh_streams(now)
        self.set_title(self.describe_table("mux connection", window))

    def _refresh_streams(self, now: float) -> None:
        row: MuxConnectionInfo | None = self.query_one("#mux", LiveTable).cursor_item
        mux = self.view.mux_connection(row.id) if row is not None else None
        self.query_one("#streams", LiveTable).set_items(mux.streams if mux else [], now)
        self.set_subtitle(
            f"STREAMS of {mux.id}  {G.sep}  {plural(len(mux.streams), 'stream')}"
            if mux
            else "STREAMS"
        )

    @on(LiveTable.CursorMoved, "#mux")
    def _mux_changed(self) -> None:
        self._refresh_streams(self.clock())

    def describe(self, item: MuxConnectionInfo | StreamInfo) -> Detail:
        view = self.view
        if isinstance(item, MuxConnectionInfo):
            mux_id = item.id
            return Detail(
                f"Mux connection {mux_id}", mux_rows, mux_id, lambda: _found(view, mux_id), _id
            )
        # A stream is found again among its connection's (the one selected above it).
        row = self.query_one("#mux", LiveTable).cursor_item
        parent = row.id if row is not None else ""
        return Detail(
            f"Stream {item.session_id}",
            stream_rows,
            item.session_id,
            lambda: (s for m in _found(view, parent) for s in m.streams),
            _session_id,
            watch=("session", item.session_id),
        )


def _found(view: HubView, mux_id: str) -> tuple[MuxConnectionInfo, ...]:
    found = view.mux_connection(mux_id)
    return (found,) if found is not None else ()


_id = attrgetter("id")
_session_id = attrgetter("session_id")
