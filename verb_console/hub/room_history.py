"""Room history on one server (PROTOCOL.md section 11.2): positions and recovery.

Each room has an epoch (a random string, new whenever its position is lost)
and an offset (its latest room message's). The last ``history_size`` room
messages of a room are kept, each for ``history_ttl`` seconds and at most
:data:`ROOM_BYTES` per room, and the whole server keeps at most
``history_total`` bytes, the oldest messages going first. A room's history
outlives its last member for the TTL; a room with no member and no kept
message for the TTL is forgotten, and so gets a new epoch when it comes back.

Messages are kept as the frames first sent (with their ``offset``, without a
``seq``), so a replay sends each exactly as it was.
"""

from __future__ import annotations

import heapq
import secrets
import time
from collections import deque
from collections.abc import Collection
from typing import Any

from ..protocols.errors import ProtocolError

ROOM_BYTES = 1024 * 1024
"""JSON bytes of one room's history at most."""

_monotonic = time.monotonic


def new_epoch() -> str:
    """An epoch no earlier position of any room shares (64 random bits)."""
    return secrets.token_hex(8)


class RoomPosition:
    """One room's epoch, offset and kept messages ``(offset, monotonic time, frame, size)``."""

    __slots__ = ("bytes", "entries", "epoch", "idle_since", "offset")

    def __init__(self) -> None:
        self.epoch = new_epoch()
        self.offset = 0
        self.entries: deque[tuple[int, float, bytes, int]] = deque()
        self.bytes = 0
        # Since when the room has had no member and no kept message (None: it has).
        self.idle_since: float | None = None


class HistoryStore:
    """Every room's position and kept messages on one server."""

    def __init__(self, size: int, ttl: float, total: int) -> None:
        self.size = size
        self.ttl = ttl
        self.total = total
        self.rooms: dict[str, RoomPosition] = {}
        self.bytes = 0
        #: Recoveries asked with ``since``, by result.
        self.recoveries = {"recovered": 0, "not_recovered": 0}

    def position(self, name: str) -> RoomPosition:
        """The room's position, made (with a new epoch) if the room has none."""
        pos = self.rooms.get(name)
        if pos is None:
            pos = self.rooms[name] = RoomPosition()
        return pos

    def keep(self, name: str, message: dict[str, Any], encode: Any) -> bytes:
        """Give ``message`` (a room message) the room's next offset, keep its frame,
        and return the frame."""
        pos = self.position(name)
        pos.offset += 1
        message["offset"] = pos.offset
        frame: bytes = encode(message)
        size = len(frame) - frame.index(b"\n") - 1
        now = _monotonic()
        entries = pos.entries
        entries.append((pos.offset, now, frame, size))
        pos.bytes += size
        self.bytes += size
        pos.idle_since = None
        cutoff = now - self.ttl
        while entries and (
            len(entries) > self.size or pos.bytes > ROOM_BYTES or entries[0][1] < cutoff
        ):
            self._drop(pos)
        if self.bytes > self.total:
            self._evict()
        return frame

    def _drop(self, pos: RoomPosition) -> None:
        size = pos.entries.popleft()[3]
        pos.bytes -= size
        self.bytes -= size

    def _evict(self) -> None:
        """Over the server's total: drop the oldest messages of all rooms, down to 7/8
        of it, so that a server at its total does not look for the oldest at every message."""
        heads = [(pos.entries[0][1], id(pos), pos) for pos in self.rooms.values() if pos.entries]
        heapq.heapify(heads)
        goal = self.total - self.total // 8
        while self.bytes > goal and heads:
            _, _, pos = heapq.heappop(heads)
            self._drop(pos)
            if pos.entries:
                heapq.heappush(heads, (pos.entries[0][1], id(pos), pos))

    def joined(self, name: str, since: Any) -> tuple[dict[str, Any], list[bytes]]:
        """What ``joined`` carries for room ``name`` (``epoch``, ``offset`` and, with
        ``since``, ``recovered``) and the frames to replay after it."""
        pos = self.position(name)
        self._expire(pos)
        fields: dict[str, Any] = {"epoch": pos.epoch, "offset": pos.offset}
        if since is None:
            return fields, []
        epoch, after = since
        frames: list[bytes] = []
        ok = epoch == pos.epoch and after <= pos.offset
        if ok and after < pos.offset:
            entries = pos.entries
            if entries and entries[0][0] <= after + 1:
                frames = [e[2] for e in entries if e[0] > after]
            else:
                ok = False
        fields["recovered"] = ok
        self.recoveries["recovered" if ok else "not_recovered"] += 1
        return fields, frames

    def _expire(self, pos: RoomPosition) -> None:
        cutoff = _monotonic() - self.ttl
        entries = pos.entries
        while entries and entries[0][1] < cutoff:
            self._drop(pos)

    def sweep(self, live: Collection[str]) -> None:
        """Expire old messages, and forget rooms with no member (``live`` names the
        rooms that have one) and no kept message for the TTL; about once a second."""
        now = _monotonic()
        gone = []
        for name, pos in self.rooms.items():
            self._expire(pos)
            if pos.entries or name in live:
                pos.idle_since = None
            elif pos.idle_since is None:
                pos.idle_since = now
            elif now - pos.idle_since >= self.ttl:
                gone.append(name)
        for name in gone:
            del self.rooms[name]


def parse_since(msg: dict[str, Any]) -> tuple[str, int] | None:
    """A ``join_room``'s ``since`` as (epoch, offset); None if absent; else bad_message."""
    if "since" not in msg:
        return None
    since = msg["since"]
    if type(since) is dict:
        epoch = since.get("epoch")
        offset = since.get("offset")
        if type(epoch) is str and type(offset) is int and offset >= 0:
            return epoch, offset
    raise ProtocolError(
        "bad_message", "since must be an object with a string epoch and an integer offset >= 0"
    )


def position_reply(
    history: HistoryStore | None, name: str, since: tuple[str, int] | None, joined: dict[str, Any]
) -> list[bytes]:
    """Add the room's position (and with ``since``, ``recovered``) to ``joined``;
    returns the frames to replay after it, before any new room message."""
    if history is None:
        if since is not None:
            joined["recovered"] = False
        return []
    fields, frames = history.joined(name, since)
    joined.update(fields)
    return frames
