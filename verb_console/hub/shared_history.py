"""Room history kept by the cluster (PROTOCOL.md 11.2 on a cluster): the hub's side.

On one server the history is in memory (:mod:`.room_history`). On a cluster a
room's epoch and offset must be the same on every node, so the bus keeps them
(in Redis): a room message is posted to the bus without an offset, the bus
gives it the room's next offset, keeps it and publishes it in one step, and
every node's members, this node's too, get it back from the bus with its
offset. A ``join_room`` asks the bus for the room's position (and, with
``since``, the messages after it), answered in the same order as the room's
messages, so nothing is missed or repeated between the reply and what follows.

Posts are pipelined: a session may send room message after room message
without waiting for any to come back (the bus keeps their order). While some
are out, a message of that session that would reach others by another way (a
private message, a broadcast, a join or leave) waits (:class:`Later`) until
they are back and delivered, so messages from one session still reach
another in the order sent; so does the session during a join. What comes
back is fanned out when it comes, in the order the bus delivers (the room's
offsets), with everything else. A joiner becomes
a member of the room here only when the position comes: the room's messages
before it are not sent to it, those after it are. The bus answers every request it takes, or tells
:meth:`SharedHistory.lost` that it never will (its link to Redis went down);
then posts go to this node's members without an offset, and joins are
answered without a position, as while Redis is unreachable.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import TYPE_CHECKING, Any, NamedTuple

from ..protocols.json import encode
from .fanout import fan_out
from .snapshot import Stats

if TYPE_CHECKING:
    from .rooms import Room


def offset_of(frame: bytes) -> int:
    """The offset of a room message as the bus made it (its body ends ``,"offset":N}``)."""
    return int(frame[frame.rindex(b":") + 1 : -1])


class Later(Exception):
    """Raised by a handler: this message must wait for the session's room posts
    still out (see the module's doc); the session goes on with it once they are back."""


class Position(NamedTuple):
    """A room's position as the bus tells it, and what a ``since`` recovered."""

    epoch: str
    offset: int
    recovered: bool | None  # None: no ``since`` was asked
    frames: list[bytes]


class _Post(NamedTuple):
    room: str
    frame: bytes  # without an offset: what this node's members get if it is lost
    sender: Any  # the session (held until the post is back), or None: the operator


class _Join(NamedTuple):
    session: Any  # a .json_session.JsonSession (which imports this module)
    room: str
    since: tuple[str, int] | None
    ref: Any
    rejoin: bool  # already a member: taken out of the room's delivery meanwhile
    held: bool  # the session waits for the bus's answer


class SharedHistory:
    """A cluster node's posts and joins waiting on the bus (see the module's doc)."""

    def __init__(self, hub: Any) -> None:
        self.hub = hub
        self.posts: dict[int, _Post] = {}
        # Rooms whose messages are also kept aside, for resumes under way (see .handover).
        self.taps: dict[str, list[list[bytes]]] = {}
        # Sessions with posts out: how many; and those waiting for them (see Later).
        self.out: dict[Any, int] = {}
        self.waiting: set[Any] = set()
        self.joins: dict[int, _Join] = {}
        self._next = 0
        #: Recoveries asked with ``since``, by result.
        self.recoveries = {"recovered": 0, "not_recovered": 0}

    def _id(self) -> int:
        self._next += 1
        return self._next

    # ----------------------------------------------------------- posts
    def post(self, room: Room | None, name: str, frame: bytes, sender: Any) -> None:
        """A room message (``frame``, without an offset) for every member on every node."""
        hub = self.hub
        bus = hub.bus
        if room is None:
            # No member here: nothing comes back to this node, nothing waits.
            bus.room_post(name, frame, 0)
            return
        pid = self._id()
        if not bus.room_post(name, frame, pid):
            # Redis unreachable: this node's members get it, without an offset.
            hub.pacer.fan_out(room.members.values(), frame, sender, sender)
            return
        if sender is not None:
            out = self.out
            out[sender] = out.get(sender, 0) + 1
        self.posts[pid] = _Post(name, frame, sender)

    def check(self, s: Any) -> None:
        """Before a message of ``s`` that reaches others by another way than its
        room posts: it waits (raises :class:`Later`) while any of them is out."""
        if s in self.out:
            self.waiting.add(s)
            self.hub.pacer.hold(s)
            raise Later

    def arrived(self, pid: int, frame: bytes) -> None:
        """This node's post ``pid`` came back from the bus as ``frame``, with its offset.

        The bus answers in the order it was asked: an earlier post still
        waiting will never come back, and is lost.
        """
        posts = self.posts
        while posts:
            earlier = next(iter(posts))  # the oldest still out (ids only grow)
            if earlier >= pid:
                break
            self._lost_post(earlier)
        post = posts.pop(pid, None)
        if post is None:
            return
        self._deliver(post, frame)

    def saw(self, name: str, frame: bytes, room: Room | None) -> None:
        """A room message with its offset reached this node (for ``room``'s members here)."""
        if room is not None:
            try:  # noqa: SIM105 (a try is cheaper than a context manager per message)
                room.offset = offset_of(frame)
            except ValueError:  # a node keeping no history: no offset
                pass
        taps = self.taps.get(name)
        if taps:
            for kept in taps:
                kept.append(frame)

    def tap(self, rooms: list[str]) -> dict[str, list[bytes]]:
        """Keep aside what ``rooms`` are sent from now on, until :meth:`untap`."""
        kept: dict[str, list[bytes]] = {}
        for name in rooms:
            kept[name] = []
            self.taps.setdefault(name, []).append(kept[name])
        return kept

    def untap(self, kept: dict[str, list[bytes]]) -> None:
        for name, frames in kept.items():
            taps = self.taps.get(name)
            if taps is not None:
                taps[:] = [t for t in taps if t is not frames]
                if not taps:
                    del self.taps[name]

    def _deliver(self, post: _Post, frame: bytes) -> None:
        room = self.hub.rooms.get(post.room)
        if frame is not post.frame:
            self.saw(post.room, frame, room)
        members = room.members.values() if room is not None else ()
        sender = post.sender
        origin = None
        if sender is not None:
            left = self.out.pop(sender, 1) - 1
            if left:
                self.out[sender] = left
            elif sender in self.waiting:
                # Its last post: the message that waited goes on once this is out.
                self.waiting.discard(sender)
                origin = sender
        self.hub.pacer.release(origin, members, frame, sender)

    def _lost_post(self, pid: int) -> None:
        post = self.posts.pop(pid)
        self._deliver(post, post.frame)

    # ----------------------------------------------------------- joins
    def join(self, s: Any, name: str, since: tuple[str, int] | None, ref: Any) -> None:
        """Join ``s`` to ``name`` once the bus tells the room's position."""
        hub = self.hub
        rejoin = name in s.rooms
        if rejoin:
            # Out of the room's delivery until the position is known: what the
            # room sends meanwhile is either replayed or follows the reply.
            hub.rooms.leave(s, name)
        jid = self._id()
        if not hub.bus.room_position(name, since, jid):
            self._finish(_Join(s, name, since, ref, rejoin, False), None)
            return
        hub.pacer.hold(s)
        self.joins[jid] = _Join(s, name, since, ref, rejoin, True)

    def position(self, jid: int, position: Position | None) -> None:
        """The bus's answer to join ``jid`` (None: it has no position to give)."""
        join = self.joins.pop(jid, None)
        if join is not None:
            self._finish(join, position)

    def _finish(self, join: _Join, position: Position | None) -> None:
        hub = self.hub
        s, name = join.session, join.room
        if s.closing or hub.json_sessions.get(s.id) is not s:
            if join.held:
                hub.pacer.release(s, (), b"")
            if join.rejoin:
                # It ended while out of the room's delivery: the room is told now.
                room = hub.rooms.get(name)
                if room is not None and room.members:
                    hub.rooms.send(room, {"type": "user_left", "connectionId": s.id, "room": name})
                hub.bus.room_left(name, s.id)
            return
        room, added = hub.rooms.join(s, name)
        members = sorted({*room.members, *hub.bus.remote_members(name)})
        joined: dict[str, Any] = {"type": "joined", "room": name, "members": members}
        frames: list[bytes] = []
        if position is not None:
            joined["epoch"] = position.epoch
            joined["offset"] = position.offset
            if position.recovered is not None:
                joined["recovered"] = position.recovered
                frames = position.frames if position.recovered else []
        elif join.since is not None:
            joined["recovered"] = False
        if "recovered" in joined:
            self.recoveries["recovered" if joined["recovered"] else "not_recovered"] += 1
        if join.ref is not None:
            joined["ref"] = join.ref
        reply = encode(joined)
        fan = hub.pacer.fan

        def deliver(to: Collection[Any], _: bytes, stats: Stats, exclude: object) -> None:
            # ``joined`` (no seq), then the replay, each with the joiner's next seq.
            fan_out(to, reply, stats)
            for f in frames:
                fan(to, f, stats, None)

        if not join.held:
            hub.pacer.hold(s)
        hub.pacer.release(s, (s,), reply, None, deliver)
        if added and not join.rejoin:
            notice = {"type": "user_joined", "connectionId": s.id, "room": name}
            hub.rooms.send(room, notice, exclude=s, origin=s)
            hub.bus.room_joined(name, s.id)

    # ----------------------------------------------------------- the link
    def lost(self) -> None:
        """The bus will answer nothing that is out (its link to Redis went down)."""
        for pid in list(self.posts):
            self._lost_post(pid)
        joins, self.joins = self.joins, {}
        for join in joins.values():
            self._finish(join, None)
