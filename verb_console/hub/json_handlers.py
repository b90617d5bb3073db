"""What each ``json`` message of PROTOCOL.md section 2 does: ping, broadcast,
private and the rooms' join, leave and message.

A handler is called by :meth:`.json_session.JsonSession._step` with the session,
the parsed message and its ``ref``; it answers with ``s.reply`` or raises a
:class:`ProtocolError`, which the session turns into an ``error`` reply. The
session machinery (reading, pacing, batching replies) stays in
:mod:`.json_session`; :data:`HANDLERS` is the table it serves by default.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from ..protocols.errors import ProtocolError
from ..protocols.json import encode
from .resume import handle_bye, handle_resume
from .room_history import parse_since, position_reply
from .rooms import valid_room_name

if TYPE_CHECKING:
    from .json_session import Handler, JsonSession

_time = time.time


def _require(msg: dict[str, Any], field: str, kind: type | None = None) -> Any:
    if field not in msg:
        raise ProtocolError("bad_message", f"Missing field: {field}")
    value = msg[field]
    if kind is not None and type(value) is not kind:
        raise ProtocolError("bad_message", f"Field {field} must be a {kind.__name__}")
    return value


def _room(msg: dict[str, Any]) -> str:
    room = _require(msg, "room", str)
    if not valid_room_name(room):
        raise ProtocolError(
            "bad_room", "A room name is 1 to 64 characters with no control characters"
        )
    return room


def handle_ping(s: JsonSession, msg: dict[str, Any], ref: Any) -> None:
    s.reply({"type": "pong", "timestamp": int(_time() * 1000)}, ref)


def handle_broadcast(s: JsonSession, msg: dict[str, Any], ref: Any) -> None:
    data = _require(msg, "data")
    if s.hub.shared_history is not None:
        s.hub.shared_history.check(s)  # after its room messages still out
    f = encode({"type": "broadcast", "from": s.id, "data": data, "timestamp": int(_time() * 1000)})
    hub = s.hub
    hub.pacer.fan_out(hub.json_sessions.values(), f, s, s)
    if hub.bus is not None:
        hub.bus.broadcast(f)


def handle_private(s: JsonSession, msg: dict[str, Any], ref: Any) -> None:
    target = _require(msg, "target", str)
    data = _require(msg, "data")
    hub = s.hub
    if hub.shared_history is not None:
        hub.shared_history.check(s)
    other = hub.json_sessions.get(target)
    if other is None:
        if hub.bus is not None:
            f = encode(
                {"type": "private", "from": s.id, "data": data, "timestamp": int(_time() * 1000)}
            )
            if hub.bus.private(target, f):
                return
        raise ProtocolError("unknown_target", f"No session {target}")
    f = encode({"type": "private", "from": s.id, "data": data, "timestamp": int(_time() * 1000)})
    seq = hub.seq
    if seq is None:
        other.deliver(f)
    else:
        seq.one(other, f)  # type: ignore[arg-type]


def handle_join_room(s: JsonSession, msg: dict[str, Any], ref: Any) -> None:
    name = _room(msg)
    since = parse_since(msg) if "since" in msg else None
    hub = s.hub
    if name not in s.rooms and len(s.rooms) >= hub.settings.max_rooms:
        raise ProtocolError(
            "too_many_rooms", f"A session may be in at most {hub.settings.max_rooms} rooms"
        )
    if hub.shared_history is not None:
        # The position is the cluster's: known once the bus answers (see .shared_history).
        hub.shared_history.check(s)
        hub.shared_history.join(s, name, since, ref)
        return
    room, added = hub.rooms.join(s, name)
    bus = hub.bus
    if bus is None:
        members = sorted(room.members)
    else:
        members = sorted({*room.members, *bus.remote_members(name)})
    joined: dict[str, Any] = {"type": "joined", "room": name, "members": members}
    # With room history, its position, and what is replayed after it (see .room_history).
    replay = position_reply(hub.rooms.history, name, since, joined)
    if ref is not None:
        joined["ref"] = ref
    # Behind the fan-outs still waiting (see .pacer), as a reply to the joiner
    # alone: the user_joined of a member it lists must not come after it. The
    # replay follows it, each message with the joiner's next seq.
    pacer = hub.pacer
    pacer.reply(s, encode(joined))
    for f in replay:
        pacer.fan_out((s,), f, None, s)
    if added:
        notice = {"type": "user_joined", "connectionId": s.id, "room": name}
        hub.rooms.send(room, notice, exclude=s, origin=s)
        if bus is not None:
            bus.room_joined(name, s.id)


def handle_leave_room(s: JsonSession, msg: dict[str, Any], ref: Any) -> None:
    name = _room(msg)
    hub = s.hub
    if hub.shared_history is not None:
        hub.shared_history.check(s)
    room = hub.rooms.leave(s, name)
    if room is None:
        raise ProtocolError("not_in_room", f"Not a member of room {name}")
    s.reply({"type": "left", "room": name}, ref)
    if room.members:
        hub.rooms.send(room, {"type": "user_left", "connectionId": s.id, "room": name}, origin=s)
    if hub.bus is not None:
        hub.bus.room_left(name, s.id)


def handle_room_message(s: JsonSession, msg: dict[str, Any], ref: Any) -> None:
    name = _room(msg)
    data = _require(msg, "data")
    hub = s.hub
    room = hub.rooms.get(name)
    if room is None or s.id not in room.members:
        raise ProtocolError("not_in_room", f"Not a member of room {name}")
    room.messages += 1
    message = {"type": "room_message", "room": name, "from": s.id, "data": data}
    if hub.bus is None:
        hub.rooms.post(room, message, exclude=s, origin=s)
        return
    # One frame for the members here and, published once, for every other node's.
    message["timestamp"] = int(_time() * 1000)
    f = encode(message)
    if hub.shared_history is not None:
        # Kept and given its offset by the bus, then delivered here too.
        hub.shared_history.post(room, name, f, s)
        return
    hub.pacer.fan_out(room.members.values(), f, s, s)
    hub.bus.room_message(name, f)


def handle_auth(s: JsonSession, msg: dict[str, Any], ref: Any) -> None:
    # The first message is read by the auth gate; here the session is already in.
    if s.hub.auth is None:
        raise ProtocolError("unknown_type", "Unknown message type: auth")
    raise ProtocolError("bad_message", "Already authenticated")


HANDLERS: dict[str, Handler] = {
    "auth": handle_auth,
    "ping": handle_ping,
    "broadcast": handle_broadcast,
    "private": handle_private,
    "join_room": handle_join_room,
    "leave_room": handle_leave_room,
    "room_message": handle_room_message,
    "bye": handle_bye,
    "resume": handle_resume,
}
