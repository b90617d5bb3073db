"""The live sessions in a console's order, kept up to date from what changed.

A console shows one page of the sessions, sorted by a column and maybe
filtered, several times a second. Sorting every session each time costs work
in proportion to the sessions (50 ms at 100,000), on the loop that serves them.
Instead each order is a sorted list of ``(key, id)`` pairs, and a tick moves
only the sessions whose figures changed since the last: a session puts itself
on :class:`Changes` when it reads, writes, comes or goes (a flag, so once per
tick however busy), and :meth:`Orders.sync` re-keys just those. A tick then
costs the changes plus the page, never the number of sessions.

``sortedcontainers.SortedList`` holds each order: its slices by position are
``O(log n + k)``, which a page at any offset needs, and a plain sorted Python
list would make every move ``O(n)``.

A new order (a console's first page, another sort or filter) takes every
session in: at 100,000 that is 150 ms of keys and sorting. So it is built
:data:`BUILD_STEP` sessions a loop turn, one callback after another; pages
asked for meanwhile read the part built so far (:attr:`Order.building`), and
changes during the build are kept as in a built order.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Generic, Protocol, TypeVar

from sortedcontainers import SortedList


class Changing(Protocol):
    """What a session (or a room) gives :class:`Changes`: its id and a flag."""

    @property
    def id(self) -> str: ...

    touched: bool


S = TypeVar("S", bound=Changing)


class Changes(Generic[S]):
    """The sessions touched since the last :meth:`take`, each once.

    Off (nothing kept, nothing marked) while no order is kept, so a server no
    console looks at pays one attribute test per read or write.
    """

    __slots__ = ("items", "on")

    def __init__(self) -> None:
        self.on = False
        self.items: list[S] = []

    def mark(self, session: S) -> None:
        """What the hot path does inline: note ``session`` once until the next take."""
        if self.on and not session.touched:
            session.touched = True
            self.items.append(session)

    def mark_all(self, sessions: Iterable[S]) -> None:
        """:meth:`mark` each of ``sessions`` (a fan-out's recipients, in one pass after it)."""
        if self.on:
            items = self.items
            for s in sessions:
                if not s.touched:
                    s.touched = True
                    items.append(s)

    def take(self, budget: int | None = None) -> list[S]:
        """Up to ``budget`` of the touched sessions (all if None), their flags cleared."""
        items = self.items
        if budget is None or len(items) <= budget:
            self.items = []
            taken = items
        else:
            taken, self.items = items[:budget], items[budget:]
        for s in taken:
            s.touched = False
        return taken

    def stop(self) -> None:
        """Turn marking off and forget what was marked."""
        self.on = False
        self.take()


#: Sessions a new order takes in per loop turn while it is built.
BUILD_STEP = 5_000


class Order(Generic[S]):
    """The sessions ``keep`` passes, as ``(key(session), id)`` in a sorted list."""

    def __init__(
        self,
        key: Callable[[S], Any],
        keep: Callable[[S], bool] | None,
        sessions: Iterable[S],
    ) -> None:
        self.key = key
        self.keep = keep
        self.held: dict[str, tuple[Any, str]] = {}
        held = self.held
        for s in sessions if keep is None else filter(keep, sessions):
            held[s.id] = (key(s), s.id)
        self.sorted: SortedList = SortedList(held.values())
        self.used = time.monotonic()
        #: Sessions still to be taken in while the order is built (see the module docs).
        self.building: list[S] = []

    def take_in(self, live: Mapping[str, S], count: int) -> None:
        """Take ``count`` more of :attr:`building` in: those still live, not yet
        held (a change since the build began put them in already), and kept."""
        part, self.building = self.building[:count], self.building[count:]
        held, key, keep = self.held, self.key, self.keep
        pairs = []
        for s in part:
            sid = s.id
            if sid in held or live.get(sid) is not s or (keep is not None and not keep(s)):
                continue
            pair = held[sid] = (key(s), sid)
            pairs.append(pair)
        self.sorted.update(pairs)

    def update(self, session: S, live: bool) -> None:
        """Put ``session`` where its key now says (or take it out: gone, or filtered out)."""
        sid = session.id
        old = self.held.get(sid)
        new = None
        if live and (self.keep is None or self.keep(session)):
            new = (self.key(session), sid)
        if old == new:
            return
        if old is not None:
            self.sorted.remove(old)
            del self.held[sid]
        if new is not None:
            self.sorted.add(new)
            self.held[sid] = new

    def __len__(self) -> int:
        return len(self.sorted)

    def position(self, session_id: str, reverse: bool = False) -> int | None:
        """Where ``session_id`` is in the order (counted from the end if ``reverse``)."""
        pair = self.held.get(session_id)
        if pair is None:
            return None
        at = self.sorted.index(pair)
        return len(self.sorted) - 1 - at if reverse else at

    def ids(self, offset: int, limit: int, reverse: bool = False) -> list[str]:
        """The ids at positions ``[offset, offset + limit)``, from the end if ``reverse``."""
        n = len(self.sorted)
        if reverse:
            stop = max(0, n - offset)
            pairs = self.sorted[max(0, stop - limit) : stop]
            pairs.reverse()
        else:
            pairs = self.sorted[offset : offset + limit]
        return [p[1] for p in pairs]


# An order no one has asked for in this long is dropped (a console went away).
IDLE_ORDER_S = 30.0
# Sessions re-keyed per sync at most: after a broadcast to everyone, the order
# catches up over a few ticks instead of holding the loop for one long one.
SYNC_BUDGET = 20_000
# Sessions re-keyed in one loop turn at most: a touched mux stream re-keys its
# connection's 256 streams (they share its idle time and unsent bytes), and
# sessions with unsent output are looked at again each sync, so at 100,000
# sessions one sync could re-key 40,000 in a turn (240 ms). The rest of a sync
# goes on in the turns that follow, this many a turn.
SYNC_WORK = 1_000


class Orders(Generic[S]):
    """Every order a console asked for, kept in step with one registry of sessions.

    ``expand`` gives the other sessions whose keys move with a touched one (a
    mux connection's streams share its socket's idle time and unsent bytes);
    ``recheck`` says whether a session must be looked at again next tick even
    untouched (its unsent output drains with no event of the hub's).
    """

    def __init__(
        self,
        sessions: Mapping[str, S],
        changes: Changes[S],
        expand: Callable[[S], Iterable[S]] | None = None,
        recheck: Callable[[S], bool] | None = None,
    ) -> None:
        self.sessions = sessions
        self.changes = changes
        self.expand = expand
        self.recheck = recheck
        self.orders: dict[Any, Order[S]] = {}
        self._again: list[S] = []
        self._left: list[S] = []  # touched, not yet re-keyed: the rest of a sync
        self._going_on = False
        self._timer: asyncio.TimerHandle | None = None

    def get(
        self, name: Any, key: Callable[[S], Any], keep: Callable[[S], bool] | None = None
    ) -> Order[S]:
        """The order called ``name``, brought up to date (built on first use)."""
        order = self.orders.get(name)
        if order is None:
            first = not self.orders
            if first:
                # Marks start now: the build below sees everything before them.
                self.changes.take()
                self.changes.on = True
            sessions = list(self.sessions.values())
            # With no order kept until now, what drains unmarked (unsent output)
            # must be looked at from the first tick on; the orders kept already
            # look at it again each sync.
            order = self.orders[name] = self._build(key, keep, sessions, first)
            if self._timer is None:
                self._keep_syncing()
        else:
            self.sync()
        order.used = time.monotonic()
        return order

    def _build(
        self,
        key: Callable[[S], Any],
        keep: Callable[[S], bool] | None,
        sessions: list[S],
        recheck: bool,
    ) -> Order[S]:
        """A new order: whole at once when small or with no loop (a model test),
        else the first :data:`BUILD_STEP` now and the rest a step a loop turn;
        with ``recheck``, the sessions with unsent output are noted as it goes."""
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            loop = None
        unsent = self.recheck if recheck else None
        if loop is None or len(sessions) <= BUILD_STEP:
            if unsent is not None:
                held = {s.id for s in self._again}
                self._again += [s for s in sessions if s.id not in held and unsent(s)]
            return Order(key, keep, sessions)
        order: Order[S] = Order(key, keep, ())
        order.building = sessions
        live = self.sessions

        def step() -> None:
            if unsent is not None:
                self._again += [s for s in order.building[:BUILD_STEP] if unsent(s)]
            order.take_in(live, BUILD_STEP)
            if order.building:
                loop.call_soon(step)

        step()
        return order

    def _keep_syncing(self) -> None:
        """Sync once a second while any order is kept, asked for or not: the
        touched sessions (ended ones too) are let go of, and orders no console
        asks for any more are dropped, which turns the marks off."""
        self._timer = None
        if not self.orders:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # no loop (a model test): syncs come with each get
            return
        self._timer = loop.call_later(1.0, self._tick)

    def _tick(self) -> None:
        self.sync()
        self._keep_syncing()

    def _go_on(self) -> None:
        """The rest of a sync, a turn later (see :data:`SYNC_WORK`)."""
        self._going_on = False
        if self._left:
            self.sync()

    def sync(self, budget: int | None = SYNC_BUDGET, work: int | None = SYNC_WORK) -> None:
        """Re-key the sessions touched since the last sync (up to ``budget`` of them
        taken, and ``work`` re-keyed in this call: the rest goes on a turn later)."""
        orders = list(self.orders.values())
        idle = time.monotonic() - IDLE_ORDER_S
        if any(o.used < idle for o in orders):
            self.orders = {n: o for n, o in self.orders.items() if o.used >= idle}
            orders = list(self.orders.values())
            if not orders:
                self.changes.stop()
                self._again = []
                self._left = []
                return
        touched = self._left + self.changes.take(budget)
        self._left = []
        if self._again:
            touched += self._again
            self._again = []
        if not touched:
            return
        expand, recheck, live = self.expand, self.recheck, self.sessions
        seen: set[str] = set()
        again = []
        done = 0
        for at, s in enumerate(touched):
            if self._left or (work is not None and done >= work):
                if not self._left:
                    self._left = touched[at:]
                break
            # By id: a session handed over to its detected protocol keeps the id.
            current = live.get(s.id)
            group: Iterable[S] = (s,) if current is None else (current,)
            if current is not None and expand is not None:
                group = (current, *expand(current))
            for n, one in enumerate(group):
                if work is not None and done >= work:
                    # A group past the turn's share: its rest a turn later (each
                    # on its own, and what expands with it has been done).
                    self._left = [*tuple(group)[n:], *touched[at + 1 :]]
                    break
                sid = one.id
                if sid in seen:
                    continue
                seen.add(sid)
                done += 1
                alive = live.get(sid) is one
                for order in orders:
                    order.update(one, alive)
                if alive and recheck is not None and recheck(one):
                    again.append(one)
        self._again = again
        if self._left and not self._going_on:
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:  # no loop (a model test): the next sync goes on
                return
            self._going_on = True
            loop.call_soon(self._go_on)
