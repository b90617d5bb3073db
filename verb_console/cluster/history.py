"""Room history in Redis (PROTOCOL.md 11.2 on a cluster), after Centrifugo's Redis engine.

Each room has, in Redis:

- ``vc:h:<room>``: HASH ``e`` (the epoch) and ``o`` (the offset of its latest
  message). It expires ``--history-ttl`` after the room's last message, unless
  a node renews it while it has members there: when it is gone (expired, or
  Redis lost it) the next post or join makes a new epoch, so a ``since`` of
  the old one is never answered wrongly.
- ``vc:hl:<room>``: a LIST of the kept messages, oldest first, each
  ``<ms kept> <frame>``. Their offsets are consecutive up to the latest, so a
  recovery is one ``LRANGE`` of as many as were missed, from the end.

and for the whole cluster ``vc:hrooms`` (ZSET room -> when its oldest kept
message was kept, or earlier: it is put right when looked at),
``vc:hroombytes`` (HASH room -> its kept bytes) and ``vc:hbytes`` (all rooms'
kept bytes): past ``history_total`` the oldest messages of all rooms go first,
down to 7/8 of it. A room whose keys expired leaves the total when it posts
again, when it is the oldest, or on a node's periodic prune
(:data:`PRUNE_SCRIPT`).

:data:`POST_SCRIPT` gives a message its room's next offset, keeps it, trims
the room (``--history-size``, 1 MiB) and the total, and publishes it on the
room's channel, in one step and with no scan (a Redis stream's ``XADD`` cost
several times a list's here): two nodes posting at once get consecutive
offsets, and every subscriber sees the room's messages in offset order.
:data:`JOIN_SCRIPT` reads a room's position (and the messages after a
``since``) and publishes it on the asking node's own channel: that node reads
it on the same connection as the room's messages, after every message before
it and before any after. A kept message older than the TTL is not replayed.
Times are the posting node's clock (ms), passed in.
"""

from __future__ import annotations

import hashlib
import time
from typing import Any

from ..hub.room_history import new_epoch
from ..hub.shared_history import Position
from . import keys

META = f"{keys.PREFIX}:h:"
LIST = f"{keys.PREFIX}:hl:"
ROOMS = f"{keys.PREFIX}:hrooms"
ROOM_BYTES_KEY = f"{keys.PREFIX}:hroombytes"
TOTAL = f"{keys.PREFIX}:hbytes"
ROOM_BYTES = 1024 * 1024
"""JSON bytes of one room's history at most (as on one server)."""

_PRELUDE = f"""
local LIST, ROOMS, ROOM_BYTES, TOTAL = '{LIST}', '{ROOMS}', '{ROOM_BYTES_KEY}', '{TOTAL}'
-- Drop room r's oldest kept message; returns its size (0: none was left).
local function drop_oldest(r)
  local item = redis.call('LPOP', LIST .. r)
  if not item then return 0 end
  local size = #item - string.find(item, ' ', 1, true)
  redis.call('HINCRBY', ROOM_BYTES, r, -size)
  return size
end
-- A room whose keys expired: its bytes leave the total, and it leaves the index.
local function forget(r)
  local old = tonumber(redis.call('HGET', ROOM_BYTES, r) or '0')
  redis.call('HDEL', ROOM_BYTES, r)
  redis.call('ZREM', ROOMS, r)
  return redis.call('DECRBY', TOTAL, old)
end
"""

POST_SCRIPT = (
    _PRELUDE
    + r"""
local meta, list = KEYS[1], KEYS[2]
local size_max, ttl = tonumber(ARGV[1]), tonumber(ARGV[2])
local room_max, total_max = tonumber(ARGV[3]), tonumber(ARGV[4])
local channel, room, now = ARGV[5], ARGV[6], tonumber(ARGV[9])
local k = (#ARGV - 9) / 2
local last = redis.call('HINCRBY', meta, 'o', k)
local first = last - k + 1
if first == 1 and not redis.call('HGET', meta, 'e') then
  -- A new position (the room's was lost, or it never had one).
  redis.call('HSET', meta, 'e', ARGV[8])
  redis.call('DEL', list)
  forget(room)
end
local items, frames, added = {}, {}, 0
for i = 1, k do
  local body = ARGV[8 + 2 * i] .. ',"offset":' .. (first + i - 1) .. '}'
  items[i] = now .. ' ' .. body
  frames[i] = #body .. '\n' .. body
  added = added + #body
end
local n = redis.call('RPUSH', list, unpack(items))
if n == k then
  -- The first kept, or its list expired while the position lived on.
  forget(room)
  redis.call('ZADD', ROOMS, now, room)
end
local b = redis.call('HINCRBY', ROOM_BYTES, room, added)
-- The oldest go: past the size at once, then while over the room's bytes.
local drop, dropped = 0, 0
if n > size_max then
  drop = n - size_max
  for _, item in ipairs(redis.call('LRANGE', list, 0, drop - 1)) do
    dropped = dropped + #item - string.find(item, ' ', 1, true)
  end
end
while b - dropped > room_max and drop < n - 1 do
  local item = redis.call('LINDEX', list, drop)
  dropped = dropped + #item - string.find(item, ' ', 1, true)
  drop = drop + 1
end
if drop > 0 then
  redis.call('LTRIM', list, drop, -1)
  redis.call('HINCRBY', ROOM_BYTES, room, -dropped)
end
local sum = redis.call('INCRBY', TOTAL, added - dropped)
if sum > total_max then
  local goal = total_max - math.floor(total_max / 8)
  while sum > goal do
    local oldest = redis.call('ZRANGE', ROOMS, 0, 0, 'WITHSCORES')
    if #oldest == 0 then break end
    local r = oldest[1]
    local head = redis.call('LINDEX', LIST .. r, 0)
    if not head then
      sum = forget(r)
    else
      local at = tonumber(string.sub(head, 1, string.find(head, ' ', 1, true) - 1))
      if at > tonumber(oldest[2]) then
        redis.call('ZADD', ROOMS, at, r)  -- its score was behind: put right, look again
      else
        sum = redis.call('DECRBY', TOTAL, drop_oldest(r))
      end
    end
  end
end
redis.call('PEXPIRE', meta, ARGV[7])
redis.call('PEXPIRE', list, ttl)
for i = 1, k do
  redis.call('PUBLISH', channel, ARGV[9 + 2 * i] .. frames[i])
end
return last
"""
)

JOIN_SCRIPT = r"""
local meta, list = KEYS[1], KEYS[2]
local ttl, now = tonumber(ARGV[4]), tonumber(ARGV[7])
local epoch = redis.call('HGET', meta, 'e')
if not epoch then
  epoch = ARGV[1]
  redis.call('HSET', meta, 'e', epoch, 'o', 0)
  redis.call('DEL', list)
end
redis.call('PEXPIRE', meta, ARGV[8])
local off = tonumber(redis.call('HGET', meta, 'o'))
local rec = '-'
local frames = {}
if ARGV[2] ~= '' then
  local after = tonumber(ARGV[3])
  local ok = ARGV[2] == epoch and after <= off
  if ok and after < off then
    local want = off - after
    local items = {}
    if redis.call('LLEN', list) >= want then items = redis.call('LRANGE', list, -want, -1) end
    local first = items[1]
    if #items == want
        and tonumber(string.sub(first, 1, string.find(first, ' ', 1, true) - 1)) >= now - ttl then
      for i, item in ipairs(items) do
        local body = string.sub(item, string.find(item, ' ', 1, true) + 1)
        frames[i] = #body .. '\n' .. body
      end
    else
      ok = false
    end
  end
  rec = ok and '1' or '0'
end
redis.call('PUBLISH', ARGV[5], ARGV[6] .. epoch .. '\n' .. off .. '\n' .. rec .. '\n'
  .. table.concat(frames))
return off
"""

# Rooms scored older than ARGV[1] (ms): those whose keys expired leave the
# total, the others' scores are put right (any node, on its refresh).
PRUNE_SCRIPT = (
    _PRELUDE
    + r"""
local gone = redis.call('ZRANGEBYSCORE', ROOMS, '-inf', ARGV[1], 'LIMIT', 0, 100)
for _, r in ipairs(gone) do
  local head = redis.call('LINDEX', LIST .. r, 0)
  if not head then
    forget(r)
  else  -- its score was behind its oldest message: put right
    redis.call('ZADD', ROOMS, string.sub(head, 1, string.find(head, ' ', 1, true) - 1), r)
  end
end
return #gone
"""
)

POST_SHA = hashlib.sha1(POST_SCRIPT.encode()).hexdigest()
JOIN_SHA = hashlib.sha1(JOIN_SCRIPT.encode()).hexdigest()
PRUNE_SHA = hashlib.sha1(PRUNE_SCRIPT.encode()).hexdigest()
SCRIPTS = (POST_SCRIPT, JOIN_SCRIPT, PRUNE_SCRIPT)


def meta_key(room: str) -> str:
    return META + room


def list_key(room: str) -> str:
    return LIST + room


def now_ms() -> int:
    """This node's clock, as the scripts' times are."""
    return int(time.time() * 1000)


class HistoryConfig:
    """The bounds a node keeps its rooms' history in (its settings; the same on every node)."""

    __slots__ = ("meta_ttl_ms", "size", "total", "ttl_ms")

    def __init__(self, size: int, ttl_s: float, total: int) -> None:
        self.size = size
        self.ttl_ms = max(1, int(ttl_s * 1000))
        # A room's position lives at least as long as the nodes renew their
        # members' entries (keys.ENTRY_TTL_MS): a short TTL must not lose the
        # position of a room that has members.
        self.meta_ttl_ms = max(self.ttl_ms, keys.ENTRY_TTL_MS)
        self.total = total


def _bulk(value: Any) -> bytes:
    data = value if isinstance(value, bytes) else str(value).encode()
    return b"$%d\r\n%b\r\n" % (len(data), data)


POST = "post"
"""A queue entry ``(POST, PostCommands, room, head, frame body)``: see :class:`PostCommands`."""
GROUP = 64
"""Room messages of one room at most in one run of :data:`POST_SCRIPT`."""


class PostCommands:
    """The EVALSHAs of :data:`POST_SCRIPT`, in Redis's wire format, made fast.

    A room message is queued as a :data:`POST` entry; the writer packs the
    entries of one room that follow each other in the queue (a busy room's,
    under load) into one run of the script, up to :data:`GROUP`: one call
    instead of one each, each message still published on its own, in order.
    What is the same for every message of a room is framed once (redis-py's
    packing of a command this long cost more than the script's run).
    """

    __slots__ = ("cfg", "rooms")

    def __init__(self, cfg: HistoryConfig) -> None:
        self.cfg = cfg
        self.rooms: dict[str, tuple[bytes, bytes]] = {}

    def __call__(self, room: str, channel: bytes, head: bytes, frame: bytes) -> tuple[Any, ...]:
        """The queue entry that keeps and publishes ``frame`` (a room message
        without an offset); what it publishes is ``head`` and the frame with its offset."""
        if room not in self.rooms:
            if len(self.rooms) > 10_000:
                self.rooms.clear()
            cfg = self.cfg
            keys_part = b"$40\r\n%b\r\n$1\r\n2\r\n" % POST_SHA.encode()
            keys_part += _bulk(meta_key(room)) + _bulk(list_key(room))
            args = (cfg.size, cfg.ttl_ms, ROOM_BYTES, cfg.total, channel, room, cfg.meta_ttl_ms)
            self.rooms[room] = (keys_part, b"".join(map(_bulk, args)))
        return (POST, self, room, head, frame[frame.index(b"\n") + 1 : -1])

    def pack(self, group: list[tuple[Any, ...]], parts: list[bytes]) -> None:
        """Append one EVALSHA for ``group`` (entries of one room, in order) to ``parts``."""
        keys_part, static = self.rooms[group[0][2]]
        epoch = new_epoch().encode()
        now = b"%d" % now_ms()
        parts.append(
            b"*%d\r\n$7\r\nEVALSHA\r\n%b%b$%d\r\n%b\r\n$%d\r\n%b\r\n"
            % (14 + 2 * len(group), keys_part, static, len(epoch), epoch, len(now), now)
        )
        for item in group:
            head, prefix = item[3], item[4]
            parts.append(b"$%d\r\n%b\r\n$%d\r\n%b\r\n" % (len(prefix), prefix, len(head), head))


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
        list_key(room),
        epoch,
        since_epoch,
        str(since_offset),
        cfg.ttl_ms,
        channel,
        head,
        now_ms(),
        cfg.meta_ttl_ms,
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
    return bus.enqueue(bus.post_commands(room, keys.room_channel(room), head, frame))


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
