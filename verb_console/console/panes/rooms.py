"""Pane 3: rooms, and the members of the room under the cursor."""

from __future__ import annotations

from collections.abc import Callable
from operator import attrgetter, itemgetter
from typing import Any, ClassVar

from textual import on
from textual.app import ComposeResult
from textual.binding import BindingType
from textual.widgets import Static

from verb_console.hub.row_fields import ROOMS
from verb_console.hub.snapshot import RoomInfo, SessionInfo

from ..format import fmt_bytes, fmt_clock, fmt_count, fmt_duration, fmt_int, plural
from ..glyphs import G
from ..keys import bindings
from .base import WINDOW, Detail, DetailRows, Pane
from .table import Cell, Column, LiveTable


def _room(label: str, width: int, field: str, render: Any, **layout: Any) -> Column:
    """A column showing the hub's room field ``field``, sorted here by its own key."""
    key = ROOMS.sort_key(field)
    return Column(label, width, render, key, field=field, **layout)


def _epoch(r: RoomInfo, _now: float) -> Cell:
    return r.epoch or ("-", "muted")


def _positioned(text: Callable[[RoomInfo], str]) -> Callable[[RoomInfo, float], Cell]:
    """A figure of the room's history: "-" for a room with none (no epoch; in a
    cluster, whose history Redis keeps, the offset seen here is shown alone)."""
    return lambda r, _now: text(r) if r.epoch or r.offset else ("-", "muted")


# In the order of the hub's room fields (hub/row_fields.py): a title is the filter's name.
ROOM_COLUMNS = (
    _room("ROOM", 12, "name", lambda r, _: r.name, measure=attrgetter("name")),
    _room("MEMBERS", 7, "size", lambda r, _: fmt_int(r.size), align="right"),
    _room("MESSAGES", 8, "messages", lambda r, _: fmt_count(r.messages), align="right"),
    _room(
        "AGE",
        7,
        "created_at",
        lambda r, now: fmt_duration(now - r.created_at),
        align="right",
        priority=2,
        descending=True,
    ),
    # The room's position and kept messages (PROTOCOL.md 11.2); "-" with history off.
    _room("EPOCH", 16, "epoch", _epoch, priority=3),
    _room(
        "OFFSET", 8, "offset", _positioned(lambda r: fmt_count(r.offset)), align="right", priority=3
    ),
    _room(
        "HISTORY",
        7,
        "history",
        _positioned(lambda r: fmt_count(r.history)),
        align="right",
        priority=3,
    ),
    _room(
        "HIST SIZE",
        9,
        "history_bytes",
        _positioned(lambda r: fmt_bytes(r.history_bytes)),
        align="right",
        priority=3,
    ),
)


def _member_protocol(m: tuple[str, SessionInfo | None], _now: float) -> str:
    return m[1].protocol if m[1] else "?"


# In the order the members joined, a window of them at a time (a room of 100,000
# costs a tick the window): no column sorts, as a sort of the window would look
# like a sort of the room.
MEMBER_COLUMNS = (
    Column("MEMBER", 16, lambda m, _: m[0], None, measure=itemgetter(0)),
    Column("PROTO", 6, _member_protocol, None),
    Column(
        "IDLE",
        6,
        lambda m, now: fmt_duration(now - m[1].last_activity) if m[1] else "-",
        None,
        "right",
    ),
    Column("MSG IN", 7, lambda m, _: fmt_count(m[1].msgs_in) if m[1] else "-", None, "right", 2),
    Column("MSG OUT", 7, lambda m, _: fmt_count(m[1].msgs_out) if m[1] else "-", None, "right", 2),
    Column("UNSENT", 9, lambda m, _: fmt_bytes(m[1].unsent) if m[1] else "-", None, "right", 3),
)


def room_rows(r: RoomInfo, now: float) -> DetailRows:
    """Every field of a room, for the detail dialog."""
    return [
        ("Room", r.name),
        ("Created", f"{fmt_clock(r.created_at)} ({fmt_duration(now - r.created_at)} ago)"),
        ("Messages", fmt_int(r.messages)),
        *_history_rows(r),
        ("Members", fmt_int(r.size)),
        *((f"  #{i}", m) for i, m in enumerate(r.members, r.members_from + 1)),
        *_more_members(r),
    ]


def _more_members(r: RoomInfo) -> DetailRows:
    """The members past the window a look at the room gives (see ROOM_MEMBERS)."""
    past = r.size - r.members_from - len(r.members)
    return [("  ...", f"{fmt_int(past)} more")] if past > 0 else []


def _history_rows(r: RoomInfo) -> DetailRows:
    """Its position and kept messages (PROTOCOL.md 11.2), with history on."""
    if not r.epoch:
        return [("History", "off")]
    kept = f"{fmt_int(r.history)} messages, {fmt_bytes(r.history_bytes)} kept"
    return [("Epoch", r.epoch), ("Offset", fmt_int(r.offset)), ("History", kept)]


class RoomsPane(Pane):
    """Rooms on top; the selected room's members below."""

    label = "Rooms"
    BINDINGS: ClassVar[list[BindingType]] = bindings("rooms")
    hints = "tab members"
    # The room whose members the lower table holds, and where its window begins.
    _members_of: str | None = None
    _members_from = 0

    DEFAULT_CSS = """
    RoomsPane #rooms { height: 1fr; }
    RoomsPane #members { height: 1fr; }
    """

    def compose(self) -> ComposeResult:
        yield from super().compose()
        yield LiveTable(
            ROOM_COLUMNS,
            key=attrgetter("name"),
            filter=ROOMS.filter_rows,  # on the values, as the server filters them
            sort_column=0,
            empty_text="no rooms",
            id="rooms",
        )
        yield Static("", classes="pane-subtitle", markup=False)
        yield LiveTable(
            MEMBER_COLUMNS,
            key=lambda m: m[0],
            search=lambda m: m[0],
            sort_column=0,
            empty_text="no members",
            id="members",
        )

    @property
    def table(self) -> LiveTable:
        members = self.query_one("#members", LiveTable)
        return members if members.has_focus else self.query_one("#rooms", LiveTable)

    def focus_table(self) -> None:
        self.query_one("#rooms", LiveTable).focus()

    def selected_session_id(self) -> str | None:
        members = self.query_one("#members", LiveTable)
        item = members.cursor_item if members.has_focus else None
        return item[0] if item is not None and item[1] is not None else None

    def refresh_view(self, now: float) -> None:
        """Fetch the window of rooms around the cursor; the selected room's members."""
        rooms_table = self.query_one("#rooms", LiveTable)
        page = self.view.room_page(*self.paging.query(rooms_table))
        window = self.paging.show(rooms_table, page, now, "rooms")
        self._refresh_members(now)
        self.set_title(self.describe_table("room", window))

    def _refresh_members(self, now: float) -> None:
        """The window of the selected room's members around the members' cursor: a
        tick costs the window, however many the room has."""
        row: RoomInfo | None = self.query_one("#rooms", LiveTable).cursor_item
        members_table = self.query_one("#members", LiveTable)
        start = 0
        item = members_table.cursor_item
        if row is not None and row.name == self._members_of and item in members_table.rows:
            start = max(0, self._members_from + members_table.rows.index(item) - WINDOW // 2)
        room = self.view.room(row.name, start, WINDOW) if row is not None else None
        if room is None:
            self._members_of, self._members_from = None, 0
            members_table.set_items([], now)
            self.set_subtitle("MEMBERS")
            return
        self._members_of, self._members_from = room.name, room.members_from
        view = self.view
        members = [(m, view.session(m)) for m in room.members]
        members_table.set_items(members, now, (room.size, room.size, ""))
        text = f"MEMBERS of {room.name}  {G.sep}  {plural(room.size, 'member')}"
        if len(room.members) < room.size:
            first = room.members_from + 1 if room.members else 0
            last = room.members_from + len(room.members)
            text += f"  {G.sep}  {fmt_int(first)}-{fmt_int(last)} in the order they joined"
        self.set_subtitle(text)

    @on(LiveTable.CursorMoved, "#rooms")
    def _room_changed(self) -> None:
        self._refresh_members(self.clock())

    def describe(self, item: RoomInfo | tuple[str, SessionInfo | None]) -> Detail:
        if isinstance(item, RoomInfo):
            name, view = item.name, self.view

            def room() -> tuple[RoomInfo, ...]:
                found = view.room(name)
                return (found,) if found is not None else ()

            return Detail(f"Room {name}", room_rows, name, room, _name, watch=("room", name))
        from .connections import session_rows

        member = item[0]

        def sessions() -> tuple[SessionInfo, ...]:
            found = self.view.session(member)
            return (found,) if found is not None else ()

        watch = ("session", member)
        return Detail(f"Session {member}", session_rows, member, sessions, _id, watch=watch)


_id = attrgetter("id")
_name = attrgetter("name")
