"""Many nodes as one server, joined through Redis (PROTOCOL.md section 10).

:class:`RedisBus` implements the hub's :class:`~verb_console.hub.bus.Bus`:
publishing to the other nodes, the directory of sessions and room members,
node liveness and the Redis link. The hub never imports this package.
"""

from .base import NodeNameTaken
from .directory import Directory
from .node import RedisBus, valid_node_name

__all__ = ["Directory", "NodeNameTaken", "RedisBus", "valid_node_name"]
