"""The names this cluster uses in Redis, and the directory it keeps there.

Channels (pub/sub):
  ``vc:m``          membership and node events, every node (small, rare: joins, leaves, heartbeats)
  ``vc:b``          client broadcasts, every node
  ``vc:r:<room>``   room messages, only the nodes that have members of the room
  ``vc:n:<node>``   one node's own: private messages, operator closes, its liveness probe

Keys (the directory; any node prunes entries whose expiry has passed):
  ``vc:hb:<node>``  the node's heartbeat (a token, with a TTL): a live node holds its name
  ``vc:nodes``      HASH node -> its last figures
  ``vc:sessions``   HASH session id -> node, with ``vc:sx`` ZSET session id -> expiry (ms)
  ``vc:rm:<room>``  HASH member id -> node, with ``vc:rx:<room>`` ZSET member id -> expiry (ms)
  ``vc:rooms``      ZSET room -> expiry (ms)
  ``vc:bans``       HASH ban target -> the ban (JSON), with the marker ``vc:bans:kept``
"""

from __future__ import annotations

PREFIX = "vc"
MEMBERS = f"{PREFIX}:m".encode()
BROADCAST = f"{PREFIX}:b".encode()
NODES = f"{PREFIX}:nodes"
SESSIONS = f"{PREFIX}:sessions"
SESSIONS_EXPIRY = f"{PREFIX}:sx"
ROOMS = f"{PREFIX}:rooms"
# The cluster's bans (PROTOCOL.md 12.3): HASH target -> the ban as JSON; the
# marker says the hash is the cluster's list (an empty hash is then no bans).
BANS = f"{PREFIX}:bans"
BANS_KEPT = f"{PREFIX}:bans:kept"

# Give the cluster a ban made on a node (KEYS: the bans, the members channel;
# ARGV: target, the ban as JSON, its creation time, the event telling every
# node). A newer ban of the same target already held wins; an identical one is
# no news. Set and told in one step, so no node can miss it.
BAN_SCRIPT = """
local old = redis.call('HGET', KEYS[1], ARGV[1])
if old == ARGV[2] then return 0 end
if old then
  local ok, held = pcall(cjson.decode, old)
  if ok and type(held) == 'table' and tonumber(held['created'])
     and tonumber(held['created']) > tonumber(ARGV[3]) then return 0 end
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('PUBLISH', KEYS[2], ARGV[4])
return 1
"""

# Give the cluster an unban made on a node (ARGV: target, when it was lifted,
# the event): a ban of the target made after that time stays.
UNBAN_SCRIPT = """
local old = redis.call('HGET', KEYS[1], ARGV[1])
if not old then return 0 end
local ok, held = pcall(cjson.decode, old)
if ok and type(held) == 'table' and tonumber(held['created'])
   and tonumber(held['created']) > tonumber(ARGV[2]) then return 0 end
redis.call('HDEL', KEYS[1], ARGV[1])
redis.call('PUBLISH', KEYS[2], ARGV[3])
return 1
"""

# How long a heartbeat lives, and directory entries between refreshes.
HEARTBEAT_TTL_MS = 3000
ENTRY_TTL_MS = 15000

# Leave a room in the directory: drop the member, and the room once it has none.
LEAVE_SCRIPT = """
redis.call('HDEL', KEYS[1], ARGV[1])
redis.call('ZREM', KEYS[2], ARGV[1])
if redis.call('HLEN', KEYS[1]) == 0 then redis.call('ZREM', KEYS[3], ARGV[2]) end
return 0
"""

# Prune what has expired from one HASH + expiry ZSET pair (any reader may).
PRUNE_SCRIPT = """
local gone = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', ARGV[1])
for _, id in ipairs(gone) do redis.call('HDEL', KEYS[1], id) end
if #gone > 0 then redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', ARGV[1]) end
return #gone
"""


# Rooms no node renewed: prune their expired members, and the room once empty.
PRUNE_ROOMS_SCRIPT = """
local rooms = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1])
for _, room in ipairs(rooms) do
  local h, z = 'vc:rm:' .. room, 'vc:rx:' .. room
  local gone = redis.call('ZRANGEBYSCORE', z, '-inf', ARGV[1])
  for _, id in ipairs(gone) do redis.call('HDEL', h, id) end
  redis.call('ZREMRANGEBYSCORE', z, '-inf', ARGV[1])
  if redis.call('HLEN', h) == 0 then redis.call('ZREM', KEYS[1], room) end
end
return #rooms
"""


def node_channel(node: str) -> bytes:
    return f"{PREFIX}:n:{node}".encode()


def room_channel(room: str) -> bytes:
    return f"{PREFIX}:r:".encode() + room.encode()


ROOM_CHANNEL_PREFIX = f"{PREFIX}:r:".encode()


def heartbeat_key(node: str) -> str:
    return f"{PREFIX}:hb:{node}"


def room_key(room: str) -> str:
    return f"{PREFIX}:rm:{room}"


def room_expiry_key(room: str) -> str:
    return f"{PREFIX}:rx:{room}"
