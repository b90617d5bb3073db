"""Pane 3: rooms, and the members of the room under the cursor."""

from __future__ import annotations

from operator import attrgetter, itemgetter
from typing import ClassVar

from textual import on
from textual.app import ComposeResult
from textual.binding import BindingType
from textual.widgets import Static

from verb_console.hub.snapshot import RoomInfo, SessionInfo

from ..format import fmt_bytes, fmt_clock, fmt_count, fmt_duration, fmt_int, plural
from ..glyphs import G
from ..keys import bindings
from .base import Detail, DetailRows, Pane
from .table import Column, LiveTable

ROOM_COLUMNS = (
    Column("ROOM", 12, lambda r, _: r.name, attrgetter("name"), measure=attrgetter("name")),
    Column("MEMBERS", 7, lambda r, _: fmt_int(len(r.members)), lambda r: len(r.members), "right"),
    Column("MESSAGES", 8, lambda r, _: fmt_count(r.messages), attrgetter("messages"), "right"),
    Column(
        "AGE",
        7,
        lambda r, now: fmt_duration(now - r.created_at),
        lambda r: -r.created_at,
        "right",
        priority=2,
    ),
)


def _member_protocol(m: tuple[str, SessionInfo | None], _now: float) -> str:
    return m[1].protocol if m[1] else "?"


MEMBER_COLUMNS = (
    Column("MEMBER", 16, lambda m, _: m[0], lambda m: m[0], measure=itemgetter(0)),
    Column("PROTO", 6, _member_protocol, lambda m: m[1].protocol if m[1] else ""),
    Column(
        "IDLE",
        6,
        lambda m, now: fmt_duration(now - m[1].last_activity) if m[1] else "-",
        lambda m: -m[1].last_activity if m[1] else 0.0,
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
        ("Members", fmt_int(len(r.members))),
        *((f"  #{i}", m) for i, m in enumerate(r.members, 1)),
    ]


class RoomsPane(Pane):
    """Rooms on top; the selected room's members below."""

    label = "Rooms"
    BINDINGS: ClassVar[list[BindingType]] = bindings("rooms")
    hints = "tab members"

    DEFAULT_CSS = """
    RoomsPane #rooms { height: 1fr; }
    RoomsPane #members { height: 1fr; }
    """

    def compose(self) -> ComposeResult:
        yield from super().compose()
        yield LiveTable(
            ROOM_COLUMNS,
            key=attrgetter("name"),
            search=lambda r: f"{r.name} {' '.join(r.members)}",
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
        """Sample rooms once; look up the selected room's members among the sessions."""
        rooms_table = self.query_one("#rooms", LiveTable)
        rooms_table.set_items(self.view.rooms(), now)
        self._refresh_members(now)
        self.set_title(self.describe_table("room"))

    def _refresh_members(self, now: float) -> None:
        room: RoomInfo | None = self.query_one("#rooms", LiveTable).cursor_item
        members_table = self.query_one("#members", LiveTable)
        subtitle = self.query_one(".pane-subtitle", Static)
        if room is None:
            members_table.set_items([], now)
            subtitle.update("MEMBERS")
            return
        wanted = set(room.members)
        # Only the members are looked up: a room costs its members, not the sessions.
        view = self.view
        found = {m: s for m in wanted if (s := view.session(m)) is not None}
        members_table.set_items([(m, found.get(m)) for m in room.members], now)
        subtitle.update(f"MEMBERS of {room.name}  {G.sep}  {plural(len(room.members), 'member')}")

    @on(LiveTable.CursorMoved, "#rooms")
    def _room_changed(self) -> None:
        self._refresh_members(self.clock())

    def describe(self, item: RoomInfo | tuple[str, SessionInfo | None]) -> Detail:
        if isinstance(item, RoomInfo):
            rows, rooms, name = room_rows, self.view.rooms, item.name
            return Detail(f"Room {name}", rows, name, rooms, _name, watch=("room", name))
        from .connections import session_rows

        member = item[0]

        def sessions() -> tuple[SessionInfo, ...]:
            found = self.view.session(member)
            return (found,) if found is not None else ()

        watch = ("session", member)
        return Detail(f"Session {member}", session_rows, member, sessions, _id, watch=watch)


_id = attrgetter("id")
_name = attrgetter("name")
