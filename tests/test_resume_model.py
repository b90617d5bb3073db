"""A Hypothesis model of session resume (PROTOCOL.md 11.1) with random drops and resumes.

The real hub, on in-memory connections (``test_hub_model.MemoryOutlet``).
Clients send private messages, broadcasts and room messages; connections drop
(a FIN or a reset), and what a connection wrote shortly before it broke may be
lost on the way; clients resume with the last ``seq`` they received. The
property: every message a session was sent arrives exactly once and in order,
or its client was told that it did not (``resume_failed``).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

from helpers import FrameSplitter, frame
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule
from test_hub_model import MemoryOutlet

from verb_console.hub import Hub
from verb_console.settings import Settings


class Client:
    """One session as its client sees it, across its connections."""

    def __init__(self, outlet: MemoryOutlet) -> None:
        self.outlet: MemoryOutlet | None = outlet
        self.splitter = FrameSplitter()
        self.id = ""
        self.token = ""
        self.got: list[tuple[int, Any]] = []  # (seq, data) of what arrived, in order
        self.replies: list[dict[str, Any]] = []

    def read(self) -> None:
        if self.outlet is None:
            return
        for body in self.splitter.feed(self.outlet.take()):
            m = json.loads(body)
            if "seq" in m and m["type"] != "resumed":
                self.got.append((m["seq"], m.get("data")))
            else:
                self.replies.append(m)


SETTINGS = Settings(resume_window=600, max_pending=700, max_per_ip=0)


class ResumeModel(RuleBasedStateMachine):
    """One hub; test_cluster_resume_model's subclass has two, and its own
    ``connect``, ``new_client``, ``resume`` and ``forget`` (which take a node)."""

    #: Loop turns each step is given (a cluster's bus and hand-overs need more).
    turns = 6

    def __init__(self) -> None:
        super().__init__()
        self.loop = asyncio.new_event_loop()
        self.clients: dict[str, Client] = {}
        # What each live session was sent, in order: the data of each delivery
        # (None for a room's notices).
        self.sent: dict[str, list[Any]] = {}
        self.counter = 0
        self.failures = {"overflow": 0, "gap": 0, "unknown": 0}
        self.start_hubs()

    def start_hubs(self) -> None:
        self.hub = Hub(SETTINGS)
        self.run(self.hub.start)

    def hubs_running(self) -> list[Hub]:
        return [self.hub]

    def teardown(self) -> None:
        try:
            for hub in self.hubs_running():
                self.run(hub.force_shutdown)
                self.loop.run_until_complete(asyncio.wait_for(hub.wait_stopped(), 10))
        finally:
            self.loop.close()

    def run(self, fn: Callable[[], Any]) -> Any:
        async def step() -> Any:
            result = fn()
            for _ in range(self.turns):
                await asyncio.sleep(0)
            return result

        return self.loop.run_until_complete(step())

    def connect(self) -> Client:
        return self.connect_to(self.hub)

    def connect_to(self, hub: Hub) -> Client:
        outlet = MemoryOutlet()
        assert hub.admit(outlet.remote_address, outlet.remote_port) is None
        self.run(lambda: hub.attach(outlet, "json"))  # type: ignore[arg-type]
        client = Client(outlet)
        client.read()
        welcome = client.replies.pop(0)
        assert welcome["type"] == "welcome"
        client.id, client.token = welcome["id"], welcome["resume"]
        return client

    def pick(self, i: int, attached: bool = False) -> Client:
        ids = sorted(k for k, c in self.clients.items() if c.outlet is not None or not attached)
        return self.clients[ids[i % len(ids)]]

    def attached(self) -> list[Client]:
        return [c for c in self.clients.values() if c.outlet is not None]

    def settle(self) -> None:
        for c in self.clients.values():
            c.read()

    def resume_on(self, c: Client, fresh: Client) -> dict[str, Any]:
        """``c`` resumes on ``fresh``'s connection with the last ``seq`` it got;
        the server's answer."""
        c.outlet = fresh.outlet
        c.splitter = fresh.splitter
        last = c.got[-1][0] if c.got else 0
        msg = {"type": "resume", "id": c.id, "token": c.token, "seq": last}
        self.run(lambda: c.outlet.feed(frame(msg)))  # type: ignore[union-attr]
        c.read()
        reply = c.replies.pop(0)
        return reply

    def joins(self, c: Client) -> None:
        """``c`` joins the room; every other session is told (a delivery with a seq)."""
        self.run(lambda: c.outlet.feed(frame({"type": "join_room", "room": "r"})))  # type: ignore[union-attr]
        self.settle()
        for other in self.clients.values():
            if other is not c:
                self.sent[other.id].append(None)  # user_joined
        c.replies.clear()

    @initialize()
    def first(self) -> None:
        self.new_client()

    @rule()
    def new_client(self) -> None:
        c = self.connect()
        self.clients[c.id] = c
        self.sent[c.id] = []
        self.joins(c)

    @precondition(lambda self: self.attached())
    @rule(i=st.integers(0, 100), j=st.integers(0, 100), kind=st.sampled_from(["private", "room"]))
    def send(self, i: int, j: int, kind: str) -> None:
        sender = self.pick(i, attached=True)
        self.counter += 1
        data = self.counter
        if kind == "private":
            target = self.pick(j)
            msg = {"type": "private", "target": target.id, "data": data}
            receivers = [target.id]
        else:
            msg = {"type": "room_message", "room": "r", "data": data}
            receivers = [k for k in self.clients if k != sender.id]
        self.run(lambda: sender.outlet.feed(frame(msg)))  # type: ignore[union-attr]
        for k in receivers:
            self.sent[k].append(data)
        self.settle()
        sender.replies.clear()

    @precondition(lambda self: self.attached())
    @rule(i=st.integers(0, 100), lost=st.integers(0, 8), reset=st.booleans())
    def drop(self, i: int, lost: int, reset: bool) -> None:
        c = self.pick(i, attached=True)
        c.read()
        # The last few deliveries written before the break never arrived.
        if lost:
            del c.got[-lost:]
        outlet = c.outlet
        c.outlet = None
        self.run(lambda: outlet.lose(error=reset))  # type: ignore[union-attr]

    @precondition(lambda self: self.clients)
    @rule(i=st.integers(0, 100))
    def resume(self, i: int) -> None:
        c = self.pick(i)
        old = c.outlet
        fresh = self.connect()
        reply = self.resume_on(c, fresh)
        if reply["type"] == "resumed":
            assert reply["id"] == c.id
            if old is not None:
                # Taken over: the old connection was closed without a word.
                assert old.destroyed or old.ended
            return
        # Told: the session is gone (it overflowed while detached) or the
        # messages after ``last`` are no longer all kept.
        assert reply["code"] == "resume_failed", reply
        assert reply["reason"] in ("overflow", "gap"), reply
        self.failures[reply["reason"]] += 1
        self.forget(c)
        self.clients[fresh.id] = fresh
        self.sent[fresh.id] = []
        # The fresh session joins the room, as a client starting afresh does.
        self.joins(fresh)

    def forget(self, c: Client) -> None:
        del self.clients[c.id]
        del self.sent[c.id]
        if c.id in self.hub.sessions:
            # A gap leaves the session detached: the client gives it up (bye is
            # not possible without a connection, so the operator ends it here).
            self.run(lambda: self.hub.operator_close(c.id))
        self.settle()

    @invariant()
    def each_message_once_and_in_order(self) -> None:
        self.settle()
        for k, c in self.clients.items():
            seqs = [s for s, _ in c.got]
            assert seqs == list(range(1, len(seqs) + 1)), (k, seqs)
            datas = [d for _, d in c.got if d is not None and type(d) is int]
            expected = [d for d in self.sent[k] if d is not None]
            if c.outlet is not None:
                # Attached: everything sent so far has arrived (user_left notes aside).
                assert datas == expected, (k, datas, expected)
            else:
                assert datas == expected[: len(datas)], (k, datas, expected)


ResumeModel.TestCase.settings = settings(
    max_examples=40,
    stateful_step_count=30,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
TestResumeModel = ResumeModel.TestCase


def test_the_model_tells_overflow_and_gap_and_holds_its_property() -> None:
    # The limit (700 bytes) is small: a scripted run reaches both failures.
    m = ResumeModel()
    try:
        m.first()
        m.new_client()
        m.drop(i=0, lost=0, reset=False)  # a detached
        for _ in range(12):
            m.send(i=0, j=0, kind="private")  # b to a, past the limit
            m.each_message_once_and_in_order()
        m.resume(i=0)
        assert m.failures["overflow"] == 1
        ids = sorted(m.clients)
        for _ in range(10):  # from the first to the second
            m.send(i=0, j=1, kind="private")
        m.each_message_once_and_in_order()
        m.drop(i=1, lost=9, reset=True)  # more lost than the ring keeps
        m.resume(i=ids.index(ids[1]))
        assert m.failures["gap"] == 1
        m.each_message_once_and_in_order()
    finally:
        m.teardown()
