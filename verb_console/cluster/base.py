"""What a node and its link to Redis share: errors, queue markers, and the bus as the link sees it.

Kept apart from both so that :mod:`.node` builds a :class:`~.link.Link` and the
link reads its node through :class:`LinkBus`, with no import circle.
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Any, Protocol

from .directory import Change, Directory
from .history import HistoryConfig

# Queue entries that are not Redis commands: (un)subscribe a room's channel.
SUBSCRIBE = "subscribe"
UNSUBSCRIBE = "unsubscribe"


class NodeNameTaken(Exception):
    """A live node already holds this node's name."""


class ClusterUnavailable(Exception):
    """Redis could not be reached when the node started."""


class LinkBus(Protocol):
    """What the link reads of its node (``node.RedisBus``), and asks of it.

    The link never reaches the hub: it logs and learns the node's load through
    its node, and counts its own traffic (:class:`~.link.LinkStats`).
    """

    url: str
    node: str
    own_channel: bytes
    directory: Directory
    queue: deque[tuple[Any, ...]]
    wake: asyncio.Event
    wanted: dict[bytes, str]
    received: int  # messages from other nodes (read for the rate)
    history: HistoryConfig | None  # room history kept in Redis, or None

    def drop_queue(self) -> None:
        """The link is down: what is queued is dropped (and counted)."""
        ...

    def note(self, text: str) -> None:
        """A row for the server's log."""
        ...

    def load(self) -> dict[str, Any]:
        """What this node's heartbeat tells the others (sessions, rooms, users)."""
        ...

    async def sync_bans(self, client: Any) -> None:
        """On linking: take the cluster's ban list, or give it this node's."""
        ...

    def local_state(self) -> tuple[list[str], dict[str, list[str]]]: ...

    def on_message(self, channel: bytes, data: bytes) -> None: ...

    def tell_members(self, joined: list[Change], left: list[Change]) -> None: ...

    def forget_node(self, node: str, why: str) -> None: ...
