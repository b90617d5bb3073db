"""Making and lifting bans, and closing what a new ban covers (PROTOCOL.md 12.3).

:class:`Banning` is the hub's part: the :class:`~.bans.BanList` its accept and
authentication ask, the store that keeps it across restarts, and the pass that
closes the live sessions a new ban covers. That pass walks the sessions in
bounded slices, a turn of the event loop each (:mod:`.session_pass`), so a ban
over ten thousand sessions never holds the loop past its 20 ms budget.
Listeners (the cluster) hear every change made here, and changes from other
nodes come in through :meth:`Banning.apply_remote`. On a cluster node each
change made here is also kept in :attr:`Banning.unsent` (and in the state
file) until the cluster has it: one made while the node's Redis link is down
reaches the other nodes when the link is back, even across a restart.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

from ..units import plural
from .ban_store import BanStore
from .bans import Ban, BanChange, BanList, format_duration, parse_duration, parse_target
from .session import CloseReason, Session
from .session_pass import SessionPass

__all__ = ["BanPass", "Banning"]

# (kind, ban): kind "ban" or "unban"; the cluster publishes them.
Listener = Callable[[str, Ban], None]


class BanPass(SessionPass):
    """Closes, a bounded slice per turn, the live sessions that fall under one ban."""

    label = "ban pass"

    def __init__(self, hub: Any, ban: Ban, match: Callable[[str, str | None], bool]) -> None:
        super().__init__(hub)
        self.ban = ban
        self.match = match
        self.closed = 0

    def visit(self, session: Session) -> bool:
        if not self.match(session.address, session.user):
            return False
        session.close(CloseReason.BANNED)
        self.closed += 1
        return True

    def finished(self) -> None:
        if self.closed:
            closed = plural(self.closed, "live session")
            self.hub.event("operator", f"ban {self.ban.target}: closed {closed}")


class Banning:
    """The bans of one server: asked at accept and authentication, kept in a file."""

    def __init__(self, hub: Any) -> None:
        self.hub = hub
        self.list = BanList()
        self.store: BanStore | None = None
        self.listeners: list[Listener] = []
        self.passes: list[BanPass] = []
        # Connections refused at accept because their address is banned.
        self.refused = 0
        # A cluster node's changes made here that the cluster does not have yet,
        # by target (the latest change of each); kept only when keeps_unsent.
        self.keeps_unsent = False
        self.unsent: dict[str, BanChange] = {}
        # Bumped with each change kept, so the cluster can tell one came meanwhile.
        self.unsent_version = 0

    # ----------------------------------------------------------- start
    def open(self, state_dir: str) -> None:
        """Load the bans kept in ``state_dir`` (a corrupted file: none, said in the log)."""
        self.store = BanStore(state_dir)
        bans, problem = self.store.load()
        if problem is not None:
            self.hub.event("error", f"bans: {problem}")
        self.unsent = {c.ban.target: c for c in self.store.unsent}
        now = time.time()
        for ban in bans:
            if ban.live(now):
                self.list.add(ban)
        if bans:
            loaded = plural(len(self.list), "ban")
            self.hub.event("server", f"bans: {loaded} loaded from {self.store.path}")

    # ----------------------------------------------------------- accept and auth
    def refuses(self, ip: str) -> bool:
        """Whether a new connection from ``ip`` is refused (counted when it is)."""
        if self.list.bans and self.list.address_banned(ip) is not None:
            self.refused += 1
            self.hub.permissions.totals["banned"] += 1
            return True
        return False

    # ----------------------------------------------------------- changes
    def ban(self, target: str, by: str, duration: str | None = None) -> Ban:
        """Ban ``target`` (parsed; raises BanError) for ``duration`` (None: until
        unbanned), close what it covers, keep it and tell the cluster."""
        canonical = parse_target(target)
        seconds = parse_duration(duration) if duration else None
        now = time.time()
        ban = Ban(canonical, by, now, None if seconds is None else now + seconds)
        self._keep(BanChange("ban", ban, now))
        self._apply(ban, by)
        for listener in self.listeners:
            listener("ban", ban)
        return ban

    def unban(self, target: str, by: str) -> Ban | None:
        """Lift the ban of ``target``; None when there was none."""
        ban = self.list.remove(parse_target(target))
        if ban is None:
            return None
        self.hub.event("operator", f"unban {ban.target} by {by}")
        self._keep(BanChange("unban", ban, time.time()))
        self._save()
        for listener in self.listeners:
            listener("unban", ban)
        return ban

    def _keep(self, change: BanChange) -> None:
        if self.keeps_unsent:
            self.unsent.pop(change.ban.target, None)
            self.unsent[change.ban.target] = change
            self.unsent_version += 1

    def given(self, changes: list[BanChange]) -> None:
        """The cluster has ``changes``: they are no longer kept (unless a later
        change of the same target came meanwhile)."""
        kept = len(self.unsent)
        for change in changes:
            if self.unsent.get(change.ban.target) is change:
                del self.unsent[change.ban.target]
        if len(self.unsent) != kept:
            self._save()

    def apply_remote(self, kind: str, ban: Ban, node: str) -> None:
        """A change made on another node."""
        if kind == "ban":
            held = self.list.bans.get(ban.target)
            if held is not None and held.to_wire() == ban.to_wire():
                return  # already held (told again when a node gives what it kept)
            self._apply(ban, f"{ban.by} on node {node}")
        elif self.list.remove(ban.target) is not None:
            self.hub.event("operator", f"unban {ban.target} by node {node}")
            self._save()

    def replace(self, bans: list[Ban], why: str) -> None:
        """Hold exactly the cluster's list (read whole when a node links)."""
        before = {b.target for b in self.list.live()}
        now = time.time()
        self.list.replace(b for b in bans if b.live(now))
        for ban in self.list.live():
            if ban.target not in before:
                self.hub.event("operator", f"ban {ban.target} by {ban.by} ({why})")
                self._enforce(ban)
        self._save()

    def _apply(self, ban: Ban, by: str) -> None:
        self.list.add(ban)
        left = None if ban.expires is None else ban.expires - ban.created
        self.hub.event("operator", f"ban {ban.target} ({format_duration(left)}) by {by}")
        self._save()
        self._enforce(ban)

    def _enforce(self, ban: Ban) -> None:
        done = BanPass(self.hub, ban, self.list.matcher(ban))
        self.passes = [p for p in self.passes if not p.done.is_set()]
        self.passes.append(done)
        done.start()

    def _save(self) -> None:
        store = self.store
        if store is None:
            return
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            return
        store.save(self.list.live(), self._saved, list(self.unsent.values()))

    def _saved(self, error: str | None) -> None:
        if error is not None:
            self.hub.event("error", f"bans: {error}; they hold until the server stops")

    def live(self) -> list[Ban]:
        return self.list.live()
