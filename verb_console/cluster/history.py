"""Room history in Redis (PROTOCOL.md 11.2 on a cluster), after Centrifugo's Redis engine.

Each room has, in Redis:

- ``vc:h:<room>``: HASH ``e`` (the epoch), ``o`` (the offset of its latest
  message) and ``b`` (the JSON bytes of its kept messages). It expires
  ``--history-ttl`` after the room's last message, unless a node renews it
  while it has members there: when it is gone (expired, or Redis lost it) the
  next post or join makes a new epoch, so a ``since`` of the old one is never
  answered wrongly.
- ``vc:hs:<room>``: a STREAM of the kept messages, entry id ``0-<offset>``
  (fields ``f`` the frame, ``t`` when kept, ms, ``s`` its body's size, ``g``
  its entry in the cluster's log), so a recovery is one ``XRANGE`` from the
  offset asked.

and for the whole cluster ``vc:hall``, a STREAM with one entry per kept
message, oldest first (``r`` room, ``e`` epoch, ``o`` offset, ``s`` size),
and ``vc:hbytes``, their total size: past ``history_total`` the oldest
messages of all rooms go first, down to 7/8 of it.

:data:`POST_SCRIPT` gives a message its room's next offset, keeps it, trims
the room and the cluster's total, and publishes it on the room's channel, in
one step: two nodes posting at once get consecutive offsets, and every
subscriber sees the room's messages in offset order. :data:`JOIN_SCRIPT`
reads a room's position (and the messages after a ``since``) and publishes it
on the asking node's own channel: that node reads it on the same connection
as the room's messages, after every message before it and before any after.
"""

from __future__ import annotations

import hashlib
from typing import Any

from ..hub.room_history import new_epoch
from ..hub.shared_history import Position
from . import keys

META = f"{keys.PREFIX}:h:"
STREAM = f"{keys.PREFIX}:hs:"
LOG = f"{keys.PREFIX}:hall"
TOTAL = f"{keys.PREFIX}:hbytes"
ROOM_BYTES = 1024 * 1024
"""JSON bytes of one room's history at most (as on one server)."""

POST_SCRIPT = """
local meta, stream, log, total = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local size, ttl = tonumber(ARGV[3]), tonumber(ARGV[4])
local room_max, total_max = tonumber(ARGV[5]), tonumber(ARGV[6])
if redis.call('HSETNX', meta, 'e', ARGV[2]) == 1 then
  redis.call('DEL', stream)
  redis.call('HSET', meta, 'b', 0)
elseif redis.call('EXISTS', stream) == 0 then
  redis.call('HSET', meta, 'b', 0)
end
local epoch = redis.call('HGET', meta, 'e')
local off = redis.call('HINCRBY', meta, 'o', 1)
local body = ARGV[1] .. ',"offset":' .. off .. '}'
local frame = #body .. '\\n' .. body
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local cutoff = now - ttl
local gid = redis.call('XADD', log, '*', 'r', ARGV[9], 'e', epoch, 'o', off, 's', #body)
redis.call('XADD', stream, '0-' .. off, 'f', frame, 't', now, 's', #body, 'g', gid)
local bytes = redis.call('HINCRBY', meta, 'b', #body)
local sum = redis.call('INCRBY', total, #body)
local n = redis.call('XLEN', stream)
while n > 0 do
  local head = redis.call('XRANGE', stream, '-', '+', 'COUNT', 1)[1]
  local f = head[2]
  if n <= size and bytes <= room_max and tonumber(f[4]) >= cutoff then break end
  redis.call('XDEL', stream, head[1])
  redis.call('XDEL', log, f[8])
  bytes = redis.call('HINCRBY', meta, 'b', -tonumber(f[6]))
  sum = redis.call('DECRBY', total, tonumber(f[6]))
  n = n - 1
end
local evict = sum > total_max
local goal = total_max - math.floor(total_max / 8)
while true do
  local head = redis.call('XRANGE', log, '-', '+', 'COUNT', 1)[1]
  if not head then break end
  local at = tonumber(string.match(head[1], '^(%d+)'))
  if not (evict and sum > goal) and at >= cutoff then break end
  local f = head[2]
  redis.call('XDEL', log, head[1])
  sum = redis.call('DECRBY', total, tonumber(f[8]))
  local m = ARGV[10] .. f[2]
  if redis.call('HGET', m, 'e') == f[4]
      and redis.call('XDEL', ARGV[11] .. f[2], '0-' .. f[6]) == 1 then
    redis.call('HINCRBY', m, 'b', -tonumber(f[8]))
  end
end
redis.call('PEXPIRE', meta, ttl)
redis.call('PEXPIRE', stream, ttl)
redis.call('PUBLISH', ARGV[7], ARGV[8] .. frame)
return off
"""

JOIN_SCRIPT = """
local meta, stream = KEYS[1], KEYS[2]
local ttl = tonumber(ARGV[4])
if redis.call('HSETNX', meta, 'e', ARGV[1]) == 1 then
  redis.call('HSET', meta, 'o', 0, 'b', 0)
  redis.call('DEL', stream)
end
redis.call('PEXPIRE', meta, ttl)
local epoch = redis.call('HGET', meta, 'e')
local off = tonumber(redis.call('HGET', meta, 'o'))
local rec = '-'
local frames = {}
if ARGV[2] ~= '' then
  local after = tonumber(ARGV[3])
  local ok = ARGV[2] == epoch and after <= off
  if ok and after < off then
    local first = '0-' .. (after + 1)
    local entries = redis.call('XRANGE', stream, first, '+')
    local t = redis.call('TIME')
    local cutoff = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000) - ttl
    if #entries == off - after and entries[1][1] == first
        and tonumber(entries[1][2][4]) >= cutoff then
      for i, e in ipairs(entries) do frames[i] = e[2][2] end
    else
      ok = false
    end
  end
  rec = ok and '1' or '0'
end
redis.call('PUBLISH', ARGV[5], ARGV[6] .. epoch .. '\\n' .. off .. '\\n' .. rec .. '\\n'
  .. table.concat(frames))
return off
"""

POST_SHA = hashlib.sha1(POST_SCRIPT.encode()).hexdigest()
JOIN_SHA = hashlib.sha1(JOIN_SCRIPT.encode()).hexdigest()
SCRIPTS = (POST_SCRIPT, JOIN_SCRIPT)


def meta_key(room: str) -> str:
    return META + room


def stream_key(room: str) -> str:
    return STREAM + room


class HistoryConfig:
    """The bounds a node keeps its rooms' history in (its settings; the same on every node)."""

    __slots__ = ("size", "total", "ttl_ms")

    def __init__(self, size: int, ttl_s: float, total: int) -> None:
        self.size = size
        self.ttl_ms = max(1, int(ttl_s * 1000))
        self.total = total


def post_command(
    cfg: HistoryConfig,
    room: str,
    channel: bytes,
    head: bytes,
    frame: bytes,
    epoch: str,
) -> tuple[Any, ...]:
    """The EVALSHA that keeps and publishes ``frame`` (a room message without an
    offset); what it publishes is ``head`` and the frame with its offset."""
    prefix = frame[frame.index(b"\n") + 1 : -1]
    return (
        "EVALSHA",
        POST_SHA,
        4,
        meta_key(room),
        stream_key(room),
        LOG,
        TOTAL,
        prefix,
        epoch,
        cfg.size,
        cfg.ttl_ms,
        ROOM_BYTES,
        cfg.total,
        channel,
        head,
        room,
        META,
        STREAM,
    )


def join_command(
    cfg: HistoryConfig,
    room: str,
    since: tuple[str, int] | None,
    channel: bytes,
    head: bytes,
    epoch: str,
) -> tuple[Any, ...]:
    """The EVALSHA that publishes ``room``'s position to ``channel`` after ``head``."""
    since_epoch, since_offset = since if since is not None else ("", 0)
    return (
        "EVALSHA",
        JOIN_SHA,
        2,
        meta_key(room),
        stream_key(room),
        epoch,
        since_epoch,
        str(since_offset),
        cfg.ttl_ms,
        channel,
        head,
    )


def parse_position(data: bytes) -> Position:
    """What :data:`JOIN_SCRIPT` published after its head: epoch, offset, recovered, frames."""
    epoch, offset, rec, rest = data.split(b"\n", 3)
    frames: list[bytes] = []
    at = 0
    while at < len(rest):
        nl = rest.index(b"\n", at)
        end = nl + 1 + int(rest[at:nl])
        frames.append(rest[at:end])
        at = end
    recovered = None if rec == b"-" else rec == b"1"
    return Position(epoch.decode(), int(offset), recovered, frames)


# ``bus`` below is the node's RedisBus (not imported: .node imports this module).


def post(bus: Any, room: str, frame: bytes, post_id: int) -> bool:
    """The bus's ``room_post``: the room message kept and published in one step."""
    cfg = bus.history
    if cfg is None or bus.link.state != "up" or len(frame) > bus.max_message:
        bus.dropped += 1
        return False
    head = b"%b %d\n" % (bus.node_b, post_id)
    return bus.enqueue(post_command(cfg, room, keys.room_channel(room), head, frame, new_epoch()))


def ask_position(bus: Any, room: str, since: tuple[str, int] | None, join_id: int) -> bool:
    """The bus's ``room_position``: read after subscribing, so no message is missed."""
    cfg = bus.history
    if cfg is None or bus.link.state != "up" or len(bus.queue) >= bus.queue_limit:
        return False
    bus.want(room)
    head = b"J%d\n" % join_id
    if not bus.enqueue(join_command(cfg, room, since, bus.own_channel, head, new_epoch())):
        return False
    bus.joins[join_id] = room
    return True
