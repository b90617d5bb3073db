"""The kept orders of hub/order.py against a plain sort of the same sessions (issue 21).

Sessions come and go, their counters move (each noting itself on the Changes,
as a session does when it reads or writes), a mux connection's streams move
with their connection, unsent output drains with no mark; after every step each
kept order, read at any offset and in either direction, is exactly what
``sorted`` gives for every session.
"""

from __future__ import annotations

import asyncio
import itertools
from dataclasses import dataclass, field

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from verb_console.hub.order import Changes, Orders


@dataclass(eq=False)
class Fake:
    """A session as the orders see it: an id, a flag, figures, and maybe streams."""

    id: str
    changes: Changes[Fake]
    msgs_in: int = 0
    idle: int = 0
    unsent: int = 0
    streams: list[Fake] = field(default_factory=list)
    parent: Fake | None = None
    touched: bool = False

    def moved(self) -> None:
        self.changes.mark(self)


def _idle(s: Fake) -> int:
    # A stream's idle time is its connection's, as a mux stream's is.
    return s.parent.idle if s.parent is not None else s.idle


def _unsent(s: Fake) -> int:
    return s.unsent + (s.parent.unsent if s.parent is not None else 0)


KEYS = {"id": lambda s: s.id, "msgs_in": lambda s: s.msgs_in, "idle": _idle, "unsent": _unsent}
FILTERS = {"": None, "even": lambda s: s.msgs_in % 2 == 0}

ids = st.integers(0, 40).map(lambda n: f"10.0.0.{n}:{1000 + n}")


class OrderModel(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.changes: Changes[Fake] = Changes()
        self.live: dict[str, Fake] = {}
        self.orders = Orders(
            self.live, self.changes, lambda s: list(s.streams), lambda s: _unsent(s) > 0
        )
        self.asked: set[tuple[str, str]] = set()

    def _add(self, session: Fake) -> None:
        self.live[session.id] = session
        session.moved()

    @rule(sid=ids, streams=st.integers(0, 3))
    def connect(self, sid: str, streams: int) -> None:
        if sid in self.live:
            return
        conn = Fake(sid, self.changes)
        self._add(conn)
        for n in range(streams):
            stream = Fake(f"{sid}#{n + 1}", self.changes, parent=conn)
            conn.streams.append(stream)
            self._add(stream)

    @precondition(lambda self: self.live)
    @rule(data=st.data())
    def close(self, data: st.DataObject) -> None:
        sid = data.draw(st.sampled_from(sorted(self.live)))
        session = self.live.pop(sid)
        session.moved()
        for stream in session.streams:
            if self.live.get(stream.id) is stream:
                del self.live[stream.id]
                stream.moved()

    @precondition(lambda self: self.live)
    @rule(data=st.data())
    def hand_over(self, data: st.DataObject) -> None:
        # A detected protocol: a new session under the same id, only it marked.
        sid = data.draw(st.sampled_from(sorted(self.live)))
        old = self.live[sid]
        if old.streams or old.parent is not None:
            return
        self._add(Fake(sid, self.changes, msgs_in=old.msgs_in + 7, idle=old.idle))

    @precondition(lambda self: self.live)
    @rule(data=st.data(), n=st.integers(1, 5))
    def read(self, data: st.DataObject, n: int) -> None:
        session = self.live[data.draw(st.sampled_from(sorted(self.live)))]
        session.msgs_in += n
        session.idle = data.draw(st.integers(0, 50))
        session.moved()

    @precondition(lambda self: self.live)
    @rule(data=st.data(), size=st.integers(1, 3000))
    def write(self, data: st.DataObject, size: int) -> None:
        session = self.live[data.draw(st.sampled_from(sorted(self.live)))]
        session.unsent += size
        session.moved()

    @rule()
    def drain(self) -> None:
        # The socket sends what was pending: no session notes it.
        for session in self.live.values():
            session.unsent = 0

    @rule(sort=st.sampled_from(sorted(KEYS)), kept=st.sampled_from(sorted(FILTERS)))
    def ask(self, sort: str, kept: str) -> None:
        self.orders.get((sort, kept), KEYS[sort], FILTERS[kept])
        self.asked.add((sort, kept))

    @invariant()
    def every_order_is_a_plain_sort(self) -> None:
        if not self.asked:
            return
        # A tick: whatever changed is taken in (unbudgeted, as a quiet server's tick is).
        self.orders.sync(budget=None)
        for sort, kept in self.asked:
            order = self.orders.get((sort, kept), KEYS[sort], FILTERS[kept])
            keep = FILTERS[kept]
            rows = [s for s in self.live.values() if keep is None or keep(s)]
            want = [s.id for s in sorted(rows, key=lambda s: (KEYS[sort](s), s.id))]
            assert len(order) == len(want)
            assert order.ids(0, len(want) + 5) == want
            assert order.ids(0, len(want) + 5, reverse=True) == want[::-1]
            assert order.ids(2, 3) == want[2:5]
            assert order.ids(2, 3, reverse=True) == want[::-1][2:5]


TestOrderModel = OrderModel.TestCase
TestOrderModel.settings = settings(max_examples=25, stateful_step_count=20, deadline=None)


def test_a_budgeted_sync_catches_up_over_several_ticks() -> None:
    changes: Changes[Fake] = Changes()
    live = {f"s{n:03}": Fake(f"s{n:03}", changes) for n in range(100)}
    orders = Orders(live, changes)
    order = orders.get("msgs_in", KEYS["msgs_in"])
    for n, session in enumerate(live.values()):
        session.msgs_in = 100 - n
        session.moved()
    orders.sync(budget=30)  # a broadcast's worth of changes: a part a tick
    assert len(changes.items) == 70
    while changes.items:
        orders.sync(budget=30)
    want = sorted(live, key=lambda i: (live[i].msgs_in, i))
    assert order.ids(0, 100) == want


def test_marks_stop_when_no_order_is_asked_for() -> None:
    changes: Changes[Fake] = Changes()
    live = {"a": Fake("a", changes)}
    live["a"].moved()
    assert changes.items == []  # off: nothing is kept for nobody
    orders = Orders(live, changes)
    orders.get("id", KEYS["id"])
    live["a"].moved()
    assert changes.items == [live["a"]]
    orders.orders["id"].used -= 3600  # no console asked for an hour
    orders.sync()
    assert not changes.on and changes.items == [] and not orders.orders


async def test_orders_no_console_asks_for_are_dropped_by_themselves() -> None:
    # An attached console goes away: with no more asks, the orders still sync
    # once a second (ended sessions are let go of), drop themselves when idle,
    # and the sessions stop marking.
    changes: Changes[Fake] = Changes()
    live = {"a": Fake("a", changes)}
    orders = Orders(live, changes)
    orders.get("id", KEYS["id"])
    gone = live.pop("a")
    gone.moved()
    assert changes.items == [gone]
    await asyncio.sleep(1.3)
    assert changes.items == [] and orders.orders["id"].ids(0, 5) == []
    orders.orders["id"].used -= 3600
    await asyncio.sleep(1.2)
    assert not changes.on and not orders.orders


async def test_a_new_order_is_built_a_step_a_loop_turn_and_keeps_what_changes_meanwhile() -> None:
    # 12,000 sessions: a new order takes BUILD_STEP of them in per loop turn, so
    # no turn does the whole sort; pages read the part built so far, and what
    # changes during the build (moves, closes, new sessions, a hand-over) ends
    # up exactly as a plain sort of the sessions says.
    from verb_console.hub.order import BUILD_STEP

    changes: Changes[Fake] = Changes()
    live = {f"s{n:05}": Fake(f"s{n:05}", changes, msgs_in=n % 97) for n in range(12_000)}
    orders = Orders(live, changes)
    key = KEYS["msgs_in"]
    order = orders.get("msgs_in", key, FILTERS["even"])
    assert order.building and len(order.held) <= BUILD_STEP
    sizes = [len(order.held)]
    # Meanwhile: a session already in the order moves, one not yet in moves out
    # of the filter, some close, a new one comes, one is handed over (same id).
    first, late = live["s00000"], live["s11998"]
    first.msgs_in = 1000
    first.moved()
    late.msgs_in = 3  # odd: filtered out
    late.moved()
    for sid in ("s00002", "s11996"):
        live.pop(sid).moved()
    live["new"] = Fake("new", changes, msgs_in=4)
    live["new"].moved()
    live["s11990"] = Fake("s11990", changes, msgs_in=8)
    live["s11990"].moved()
    orders.sync()
    while order.building:
        await asyncio.sleep(0)
        sizes.append(len(order.held))
    assert all(b - a <= BUILD_STEP + 10 for a, b in itertools.pairwise(sizes))
    assert len(sizes) > 2  # it took more than one turn
    want = sorted((s for s in live.values() if s.msgs_in % 2 == 0), key=lambda s: (key(s), s.id))
    assert order.ids(0, len(live)) == [s.id for s in want]
    assert len(order) == len(want)


async def test_a_sync_re_keys_a_bounded_number_a_turn_and_the_rest_in_the_next() -> None:
    # A touched mux stream re-keys its connection's streams; a connection of
    # 2,500 streams whose idle time moves must not be re-keyed in one turn.
    from verb_console.hub.order import SYNC_WORK

    changes: Changes[Fake] = Changes()
    live: dict[str, Fake] = {}
    conn = live["c"] = Fake("c", changes, idle=5)
    for n in range(2_500):
        stream = Fake(f"c#{n:04}", changes, parent=conn, msgs_in=n)
        conn.streams.append(stream)
        live[stream.id] = stream
    orders = Orders(live, changes, lambda s: list(s.streams))
    key = KEYS["idle"]
    order = orders.get("idle", key)
    re_keyed = [0]
    update = order.update

    def counted(session: Fake, alive: bool) -> None:
        re_keyed[0] += 1
        update(session, alive)

    order.update = counted  # type: ignore[method-assign]
    conn.idle = 1
    conn.moved()  # the connection touched: its idle moved, and its streams with it
    orders.sync()
    assert 0 < re_keyed[0] <= SYNC_WORK
    turns = 1
    while orders._left:
        before = re_keyed[0]
        await asyncio.sleep(0)
        assert re_keyed[0] - before <= SYNC_WORK
        turns += 1
    assert turns >= 3
    want = sorted(live.values(), key=lambda s: (key(s), s.id))
    assert order.ids(0, len(live)) == [s.id for s in want]
