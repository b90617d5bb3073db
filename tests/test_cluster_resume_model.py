"""A Hypothesis model of session resume across two nodes (PROTOCOL.md 11.1, its last
point) with random drops and resumes.

Two real hubs joined by test_cluster_model's in-memory bus, which hands sessions
over as the Redis bus does; in-memory connections as in test_resume_model.py.
Clients on either node send private messages and room messages; connections
drop (a FIN or a reset), and what a connection wrote shortly before it broke
may be lost on the way; a client resumes with the last ``seq`` it received, on
either node, so a session moves between the nodes. The property: every message
a session was sent arrives exactly once and in order, or its client was told
that it did not (``resume_failed``).
"""

from __future__ import annotations

from hypothesis import HealthCheck, Phase, settings
from hypothesis import strategies as st
from hypothesis.stateful import initialize, invariant, precondition, rule
from test_cluster_model import MemoryBus
from test_resume_model import SETTINGS, Client, ResumeModel

from verb_console.hub import Hub

NODES = ("a", "b")


class CrossNodeResumeModel(ResumeModel):
    """test_resume_model's machine (its clients, sends, drops and property) on
    two nodes: a client connects, and resumes, on either."""

    # Enough turns for the bus's deliveries and a hand-over's ask and answer.
    turns = 12

    def start_hubs(self) -> None:
        self.hubs: dict[str, Hub] = {}
        net: list[MemoryBus] = []
        for node in NODES:
            hub = Hub(SETTINGS)
            bus = MemoryBus(node, net)
            bus.hub = hub
            hub.join_cluster(bus)  # type: ignore[arg-type]
            self.run(hub.start)
            self.hubs[node] = hub
        self.moves = 0
        # The node each client's session was last held by.
        self.home: dict[str, str] = {}

    def hubs_running(self) -> list[Hub]:
        return list(self.hubs.values())

    def holder(self, sid: str) -> str | None:
        """The node that holds session ``sid`` now."""
        return next((n for n, h in self.hubs.items() if sid in h.json_sessions), None)

    def connect(self, node: str = NODES[0]) -> Client:  # type: ignore[override]
        return self.connect_to(self.hubs[node])

    @initialize()
    def first(self) -> None:
        self.new_client("a")
        self.new_client("b")

    @rule(node=st.sampled_from(NODES))
    def new_client(self, node: str) -> None:  # type: ignore[override]
        c = self.connect(node)
        self.clients[c.id] = c
        self.sent[c.id] = []
        self.home[c.id] = node
        self.joins(c)

    @precondition(lambda self: self.clients)
    @rule(i=st.integers(0, 100), node=st.sampled_from(NODES))
    def resume(self, i: int, node: str) -> None:  # type: ignore[override]
        c = self.pick(i)
        old, was = c.outlet, self.holder(c.id)
        fresh = self.connect(node)
        reply = self.resume_on(c, fresh)
        if reply["type"] == "resumed":
            assert reply["id"] == c.id
            assert self.holder(c.id) == node
            self.moves += was != node
            self.home[c.id] = node
            if old is not None:
                # Taken over: the old connection was closed without a word.
                assert old.destroyed or old.ended
            return
        # Told: the session is gone (it overflowed while detached) or the
        # messages after ``last`` are no longer all kept.
        assert reply["code"] == "resume_failed", reply
        if reply["reason"] == "unknown":
            # A session that ended (overflowed) on the other node is unknown here:
            # only the node it ended on remembers why.
            assert was is None and self.home[c.id] != node, (reply, self.home[c.id], node)
        else:
            assert reply["reason"] in ("overflow", "gap"), reply
        self.failures[reply["reason"]] += 1
        self.forget(c)
        self.clients[fresh.id] = fresh
        self.sent[fresh.id] = []
        self.home[fresh.id] = node
        # The fresh session joins the room, as a client starting afresh does.
        self.joins(fresh)

    def forget(self, c: Client) -> None:
        del self.clients[c.id]
        del self.sent[c.id]
        del self.home[c.id]
        node = self.holder(c.id)
        if node is not None:
            # A gap leaves the session detached: the client gives it up (bye is
            # not possible without a connection, so the operator ends it here).
            self.run(lambda: self.hubs[node].operator_close(c.id))
        self.settle()

    @invariant()
    def one_node_holds_each_session(self) -> None:
        # (A detached session that overflowed has ended: its client learns it on resuming.)
        for sid, c in self.clients.items():
            held = sum(sid in h.json_sessions for h in self.hubs.values())
            assert held == 1 if c.outlet is not None else held <= 1, sid


CrossNodeResumeModel.TestCase.settings = settings(
    max_examples=30,
    stateful_step_count=30,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
    # No explain phase: it retraces a failure line by line, for minutes.
    phases=[Phase.explicit, Phase.reuse, Phase.generate, Phase.shrink],
    print_blob=True,
)
TestCrossNodeResumeModel = CrossNodeResumeModel.TestCase


def test_a_session_moves_between_nodes_and_the_model_tells_overflow_and_gap() -> None:
    """A scripted run through the rules the model draws from: a session detached on
    one node resumes on the other, then back; overflow and gap are told."""
    m = CrossNodeResumeModel()
    try:
        m.first()
        ids = sorted(m.clients)  # one on a, one on b
        on_a = ids.index(next(k for k in ids if k.endswith("@a")))
        m.send(i=0, j=1, kind="private")
        m.send(i=1, j=0, kind="room")
        m.drop(i=on_a, lost=1, reset=False)
        m.send(i=0, j=on_a, kind="private")  # to the detached session, held on a
        m.resume(i=on_a, node="b")  # handed over to b, the lost one replayed
        m.each_message_once_and_in_order()
        m.send(i=0, j=on_a, kind="room")
        m.drop(i=on_a, lost=0, reset=True)
        m.resume(i=on_a, node="a")  # and back to a
        m.each_message_once_and_in_order()
        m.one_node_holds_each_session()
        assert m.moves == 2
        # Past the kept limit while detached: overflow, told.
        m.drop(i=on_a, lost=0, reset=False)
        for _ in range(12):
            m.send(i=on_a + 1, j=on_a, kind="private")
            m.each_message_once_and_in_order()
        m.resume(i=on_a, node="a")  # on the node it ended on: overflow
        assert m.failures["overflow"] == 1
        m.each_message_once_and_in_order()
        # More lost than the session keeps: gap, told.
        for _ in range(10):
            m.send(i=0, j=1, kind="private")
        victim = sorted(m.clients)[1]
        m.drop(i=1, lost=9, reset=True)
        m.resume(i=1, node="a" if m.holder(victim) == "b" else "b")
        assert m.failures["gap"] == 1
        m.each_message_once_and_in_order()
    finally:
        m.teardown()
