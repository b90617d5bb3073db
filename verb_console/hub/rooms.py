"""Rooms: named groups of json sessions."""

from __future__ import annotations

import time
import unicodedata
from itertools import islice
from typing import Any, Protocol

from ..protocols.json import encode
from .fanout import Recipient
from .order import Changes
from .pacer import Pacer
from .room_history import HistoryStore
from .snapshot import RoomInfo, Stats


class Member(Recipient, Protocol):
    """What a room needs of a session: its id, its own set of room names, and
    delivery (one frame by ``deliver``, or what a fan-out needs)."""

    @property
    def id(self) -> str: ...

    @property
    def rooms(self) -> set[str]: ...

    def deliver(self, frame: bytes) -> None: ...


MAX_ROOM_NAME = 64


def valid_room_name(name: str) -> bool:
    """1 to 64 characters, none of Unicode category Cc (DEL included)."""
    if not 1 <= len(name) <= MAX_ROOM_NAME:
        return False
    if name.isprintable():  # fast path: no control characters at all
        return True
    return not any(unicodedata.category(ch) == "Cc" for ch in name)


class Room:
    __slots__ = ("created_at", "members", "messages", "name", "offset", "touched")

    def __init__(self, name: str) -> None:
        self.name = name
        self.members: dict[str, Member] = {}
        self.messages = 0
        self.created_at = time.time()
        # The latest offset this node delivered here, when the cluster keeps the history.
        self.offset = 0
        self.touched = False  # on the registry's changes since the console last looked

    @property
    def id(self) -> str:
        """Its name: what the console's kept orders know a room by (see .order)."""
        return self.name


class RoomRegistry:
    """Rooms by name; a room exists while it has members."""

    def __init__(self, stats: Stats, pacer: Pacer | None = None) -> None:
        self.rooms: dict[str, Room] = {}
        # The server's counters, which room deliveries count into.
        self.stats = stats
        # Room deliveries are paced with every other fan-out (see .pacer).
        self.pacer = pacer if pacer is not None else Pacer(stats)
        # Messages of rooms that no longer exist (a room is deleted with its last member).
        self.retired_messages = 0
        # Room positions and kept messages (PROTOCOL.md 11.2); None: history is off.
        self.history: HistoryStore | None = None
        # Rooms whose figures moved, for the console's kept orders (see .order).
        self.changes: Changes[Room] = Changes()

    def join(self, session: Member, name: str) -> tuple[Room, bool]:
        """Add ``session``; returns the room and whether it was newly added."""
        room = self.rooms.get(name)
        if room is None:
            room = self.rooms[name] = Room(name)
        if session.id in room.members:
            return room, False
        room.members[session.id] = session
        session.rooms.add(name)
        self.changes.mark(room)
        return room, True

    def leave(self, session: Member, name: str) -> Room | None:
        """Remove ``session``; returns the room (possibly now deleted) or None if not a member."""
        room = self.rooms.get(name)
        if room is None or room.members.pop(session.id, None) is None:
            return None
        session.rooms.discard(name)
        self.changes.mark(room)
        if not room.members:
            del self.rooms[name]
            self.retired_messages += room.messages
        return room

    def get(self, name: str) -> Room | None:
        return self.rooms.get(name)

    def send(
        self,
        room: Room,
        message: dict[str, Any],
        exclude: Member | None = None,
        origin: Any = None,
    ) -> int:
        """Send ``message`` (stamped with the time) to a room's members but ``exclude``;
        returns how many members that is."""
        message["timestamp"] = int(time.time() * 1000)
        return self.send_frame(room, encode(message), exclude, origin)

    def post(
        self,
        room: Room,
        message: dict[str, Any],
        exclude: Member | None = None,
        origin: Any = None,
    ) -> int:
        """Send a ``room_message`` to a room's members but ``exclude``: stamped with the
        time and, with history on, the room's next offset, and kept."""
        message["timestamp"] = int(time.time() * 1000)
        history = self.history
        if history is None:
            return self.send_frame(room, encode(message), exclude, origin)
        return self.send_frame(room, history.keep(room.name, message, encode), exclude, origin)

    def send_frame(
        self, room: Room, frame: bytes, exclude: Member | None = None, origin: Any = None
    ) -> int:
        """Send an encoded frame to a room's members but ``exclude``; returns how many.
        ``origin``, the session whose message it is, waits if the fan-out must."""
        members = room.members
        self.changes.mark(room)  # its messages and position moved
        self.pacer.fan_out(members.values(), frame, exclude, origin)
        if exclude is not None and members.get(exclude.id) is exclude:
            return len(members) - 1
        return len(members)

    def __len__(self) -> int:
        return len(self.rooms)

    def messages_total(self) -> int:
        """Room messages relayed since the server started, deleted rooms' included."""
        return self.retired_messages + sum(r.messages for r in self.rooms.values())

    def snapshot(self) -> list[RoomInfo]:
        return [self.info(r) for r in self.rooms.values()]

    def info(
        self, r: Room, members: bool = True, start: int = 0, limit: int | None = None
    ) -> RoomInfo:
        """A room's record with its members' ids in the order they joined, ``limit``
        of them from ``start`` on (all when None); with ``members`` False (a page of
        rooms), without them: a page costs its rows, not their members."""
        pos = self.history.rooms.get(r.name) if self.history is not None else None
        ids: tuple[str, ...] = ()
        if members:
            stop = None if limit is None else start + max(0, limit)
            ids = tuple(islice(r.members, start, stop))
        return RoomInfo(
            name=r.name,
            members=ids,
            messages=r.messages,
            created_at=r.created_at,
            epoch=pos.epoch if pos is not None else "",
            # On a cluster the position is Redis's: the latest offset seen here.
            offset=pos.offset if pos is not None else r.offset,
            history=len(pos.entries) if pos is not None else 0,
            history_bytes=pos.bytes if pos is not None else 0,
            size=len(r.members),
            members_from=start if members else 0,
        )
