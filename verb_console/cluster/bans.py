"""Bans across the cluster (PROTOCOL.md 12.3): given to Redis, told to every node.

Each ban or unban made on a node is kept by the hub (``Banning.unsent``, and in
the state file) until the cluster has it. While the link is up it is given at
once; a change made while the link is down is given when the link is back,
before the node takes the cluster's list, so no resync drops it. Each change is
set in Redis and told to every node in one Lua step (``keys.BAN_SCRIPT``,
``keys.UNBAN_SCRIPT``); a newer ban of the same target held there wins.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import orjson

from ..hub.bans import Ban, BanError
from ..units import plural
from . import keys
from .link import COMMAND_TIMEOUT_S

__all__ = ["ClusterBans"]

log = logging.getLogger("verb_console.cluster")


class ClusterBans:
    """One node's side of the cluster's bans (its ``RedisBus`` is ``bus``)."""

    def __init__(self, bus: Any) -> None:
        self.bus = bus
        self._giving: asyncio.Task[None] | None = None
        self._give_again = False

    def changed(self, kind: str, ban: Ban) -> None:
        """A ban made or lifted here: given to the cluster (kept in Redis, told to
        every node) now if the link is up, else when it is back (:meth:`sync`)."""
        if self.bus.link.state != "up":
            self.bus.hub.event(
                "operator",
                f"{kind} {ban.target}: kept for the cluster until the Redis link is back",
            )
            return
        if self._giving is not None and not self._giving.done():
            self._give_again = True
            return
        self._giving = asyncio.get_running_loop().create_task(self._give_while_up())

    async def _give_while_up(self) -> None:
        while True:
            self._give_again = False
            client = self.bus.link.client
            if client is None or self.bus.link.state != "up":
                return  # the relink gives what is still kept
            try:
                await asyncio.wait_for(self.give(client), COMMAND_TIMEOUT_S * 2)
            except Exception as exc:  # kept: the next link gives it
                log.warning("cluster: could not give the bans to Redis: %s", exc)
                return
            if not self._give_again:
                return

    async def give(self, client: Any) -> int:
        """Give the cluster the ban changes made here that it does not have, each
        set in Redis and told to every node in one step; returns how many were news."""
        banning = self.bus.hub.banning
        changes = list(banning.unsent.values())
        if not changes:
            return 0
        pipe = client.pipeline(transaction=False)
        for change in changes:
            ban = change.ban
            event = orjson.dumps({"o": change.kind, "b": ban.to_wire(), "n": self.bus.node})
            if change.kind == "ban":
                body = orjson.dumps(ban.to_wire())
                args = (ban.target, body, int(ban.created), event)
                pipe.eval(keys.BAN_SCRIPT, 2, keys.BANS, keys.MEMBERS, *args)
            else:
                pipe.eval(
                    keys.UNBAN_SCRIPT, 2, keys.BANS, keys.MEMBERS, ban.target, change.at, event
                )
        news = sum(1 for r in await pipe.execute() if r == 1)
        banning.given(changes)
        return news

    async def sync(self, client: Any) -> None:
        """On linking: give the cluster what was banned or lifted here while the
        link was down, then take the cluster's ban list (a node back from a
        restart or a cut applies what was banned meanwhile); the first node to
        hold a list gives the cluster its own."""
        banning = self.bus.hub.banning
        if not await client.exists(keys.BANS_KEPT):
            pipe = client.pipeline(transaction=False)
            for ban in banning.live():
                # A change kept for the cluster is given below, and told to the
                # nodes that took the list before this one wrote it.
                if ban.target not in banning.unsent:
                    pipe.hset(keys.BANS, ban.target, orjson.dumps(ban.to_wire()))
            pipe.set(keys.BANS_KEPT, b"1")
            await pipe.execute()
        given = 0
        while True:
            version = banning.unsent_version
            given += await self.give(client)
            raw: dict[bytes, bytes] = await client.hgetall(keys.BANS)
            # A change made during these awaits is given too before the list is taken.
            if banning.unsent_version == version and not banning.unsent:
                break
        if given:
            self.bus.hub.event(
                "operator",
                f"cluster: gave {plural(given, 'ban change')} made while the link was down",
            )
        bans = []
        for target, body in raw.items():
            try:
                bans.append(Ban.from_wire(orjson.loads(body)))
            except (BanError, KeyError, TypeError, ValueError, orjson.JSONDecodeError) as exc:
                log.warning("cluster: skipped a malformed ban %r: %s", target, exc)
        banning.replace(bans, "from the cluster")
