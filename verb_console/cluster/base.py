"""What a node and its link to Redis share: errors, queue markers, and the bus as the link sees it.

Kept apart from both so that :mod:`.node` builds a :class:`~.link.Link` and the
link reads its node through :class:`LinkBus`, with no import circle.
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import TYPE_CHECKING, Any, Protocol

from .directory import Change, Directory

if TYPE_CHECKING:
    from ..hub.hub import Hub

# Queue entries that are not Redis commands: (un)subscribe a room's channel.
SUBSCRIBE = "subscribe"
UNSUBSCRIBE = "unsubscribe"


class NodeNameTaken(Exception):
    """A live node already holds this node's name."""


class ClusterUnavailable(Exception):
    """Redis could not be reached when the node started."""


class LinkBus(Protocol):
    """What the link reads and updates of its node (``node.RedisBus``)."""

    hub: Hub
    url: str
    node: str
    own_channel: bytes
    directory: Directory
    queue: deque[tuple[Any, ...]]
    wake: asyncio.Event
    wanted: dict[bytes, str]
    published: int
    received: int
    dropped: int
    rate_in: float
    rate_out: float

    def local_state(self) -> tuple[list[str], dict[str, list[str]]]: ...

    def on_message(self, channel: bytes, data: bytes) -> None: ...

    def tell_members(self, joined: list[Change], left: list[Change]) -> None: ...

    def forget_node(self, node: str, why: str) -> None: ...

    async def sync_bans(self, client: Any) -> None: ...

    def heartbeat_info(self) -> dict[str, Any]: ...
