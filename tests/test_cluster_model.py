"""A stateful model of two hubs joined by a bus: json sessions on either node come
and go, join and leave rooms and message each other; every message arrives once,
in the order its sender sent it, and both nodes agree on every room's members.

The hubs and their sessions are the real ones (as in test_hub_model.py, over
in-memory connections). The bus between them is :class:`MemoryBus`, an
in-memory implementation of hub/bus.py's interface that delivers on a later
loop turn, as the Redis bus does; the hubs are under test here, not the bus,
which tests/test_cluster*.py test on a real Redis.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from helpers import FrameSplitter, frame
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule
from test_hub_model import MemoryOutlet

from verb_console.cluster.directory import Directory
from verb_console.hub import Hub, handover
from verb_console.hub.shared_history import Position
from verb_console.hub.uploads import UploadStore
from verb_console.settings import Settings

ROOMS = ("lobby", "dev")


class MemoryBus:
    """hub/bus.py's interface between hubs in one process; delivers on the next loop turn."""

    def __init__(self, node: str, net: list[MemoryBus]) -> None:
        self.node = node
        self.net = net
        # Seconds before an answer to a resume's ask comes back.
        self.answer_delay = 0.0
        # Room history, shared by the nodes as Redis is: room -> [epoch, frames].
        self.kept: dict[str, list[Any]] = net[0].kept if net else {}
        self.directory = Directory(node)
        self.hub: Hub | None = None
        net.append(self)

    def others(self) -> list[MemoryBus]:
        return [b for b in self.net if b is not self]

    def later(self, fn: Callable[[], Any]) -> None:
        asyncio.get_running_loop().call_soon(fn)

    def session_started(self, session_id: str) -> None:
        for o in self.others():
            self.later(lambda o=o: o.directory.add_session(self.node, session_id))

    def session_ended(self, session_id: str) -> None:
        for o in self.others():
            self.later(lambda o=o: o.directory.remove_session(self.node, session_id))

    def broadcast(self, frame: bytes) -> None:
        for o in self.others():
            self.later(lambda o=o: o.hub and o.hub.inbound.broadcast(frame))

    def private(self, target: str, frame: bytes) -> bool:
        node = self.directory.node_of(target)
        for o in self.others():
            if o.node == node:
                self.later(lambda o=o: o.hub and o.hub.inbound.private(target, frame))
                return True
        return False

    def room_joined(self, room: str, session_id: str) -> None:
        def told(o: MemoryBus) -> None:
            if o.directory.join(self.node, room, session_id) and o.hub is not None:
                notice = {"type": "user_joined", "connectionId": session_id, "room": room}
                o.hub.inbound.room_notice(room, notice)

        for o in self.others():
            self.later(lambda o=o: told(o))

    def room_left(self, room: str, session_id: str) -> None:
        def told(o: MemoryBus) -> None:
            if o.directory.leave(self.node, room, session_id) and o.hub is not None:
                notice = {"type": "user_left", "connectionId": session_id, "room": room}
                o.hub.inbound.room_notice(room, notice)

        for o in self.others():
            self.later(lambda o=o: told(o))

    def room_message(self, room: str, frame: bytes) -> None:
        for o in self.others():
            self.later(lambda o=o: o.hub and o.hub.inbound.room(room, frame))

    def room_post(self, room: str, frame: bytes, post_id: int) -> bool:
        def step() -> None:
            frames = self.kept.setdefault(room, ["e-" + room, []])[1]
            body = frame[frame.index(b"\n") + 1 : -1] + b',"offset":%d}' % (len(frames) + 1)
            kept = b"%d\n%b" % (len(body), body)
            frames.append(kept)
            for o in self.net:
                if o.hub is None:
                    continue
                if o is not self:
                    o.hub.inbound.room(room, kept)
                elif post_id:
                    o.hub.inbound.room_kept(post_id, kept)

        self.later(step)
        return True

    def room_position(self, room: str, since: tuple[str, int] | None, join_id: int) -> bool:
        def step() -> None:
            epoch, frames = self.kept.setdefault(room, ["e-" + room, []])
            recovered, replay = None, []
            if since is not None:
                recovered = since[0] == epoch and since[1] <= len(frames)
                replay = frames[since[1] :] if recovered else []
            if self.hub is not None:
                position = Position(epoch, len(frames), recovered, replay)
                self.hub.inbound.position(join_id, position)

        self.later(step)
        return True

    def resume_ask(
        self, session_id: str, token: str, seq: int, user: str | None, ask_id: int
    ) -> list[str] | None:
        node = self.directory.node_of(session_id)
        other = next((o for o in self.others() if o.node == node and o.hub), None)
        if other is None or other.hub is None:
            return None

        def ask() -> None:
            assert other.hub is not None
            answer = other.hub.inbound.hand_over(session_id, token, seq, user, self.node)
            loop = asyncio.get_running_loop()
            loop.call_later(
                self.answer_delay, lambda: self.hub and self.hub.inbound.handed(ask_id, *answer)
            )

        self.later(ask)
        return []

    def adopted(self, session_id: str, node: str, rooms: list[str]) -> None:
        def moved(o: MemoryBus) -> None:
            o.directory.remove_session(node, session_id)
            o.directory.add_session(self.node, session_id)

        for o in self.others():
            self.later(lambda o=o: moved(o))

    def released(self, session_id: str, node: str) -> None:
        self.directory.add_session(node, session_id)

    def remote_members(self, room: str) -> Iterable[str]:
        return self.directory.members(room)

    def operator_broadcast(self, text: str, room: str | None) -> None:
        for o in self.others():
            self.later(lambda o=o: o.hub and o.hub.operator_broadcast(text, local_only=True))

    def operator_close(self, session_id: str) -> bool:
        return False

    @property
    def link_state(self) -> str:
        return "up"

    def info(self) -> dict[str, Any]:
        return {}


class Peer:
    def __init__(self, outlet: MemoryOutlet, sid: str) -> None:
        self.outlet, self.id = outlet, sid
        self.splitter = FrameSplitter()

    def messages(self) -> list[dict[str, Any]]:
        return [json.loads(b) for b in self.splitter.feed(self.outlet.take())]


def two_nodes(
    root: Path, settings: Settings, start: Callable[[Hub], Any]
) -> tuple[dict[str, Hub], list[MemoryBus], list[UploadStore]]:
    """Nodes a and b, each with its upload store under ``root``, on one in-memory
    bus; ``start`` starts each hub (``Hub.start`` inside a running loop)."""
    hubs: dict[str, Hub] = {}
    net: list[MemoryBus] = []
    stores: list[UploadStore] = []
    for node in ("a", "b"):
        store = UploadStore(root / node, per_session_limit=2)
        store.prepare()
        stores.append(store)
        hub = Hub(settings, store)
        bus = MemoryBus(node, net)
        bus.hub = hub
        hub.join_cluster(bus)  # type: ignore[arg-type]
        start(hub)
        hubs[node] = hub
    return hubs, net, stores


class TwoNodeModel(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.loop = asyncio.new_event_loop()
        self.dir = Path(tempfile.mkdtemp(prefix="cluster-model-"))
        self.hubs, _net, self.stores = two_nodes(
            self.dir, Settings(max_rooms=2, max_per_ip=0), lambda hub: self.run(hub.start)
        )
        self.peers: dict[str, Peer] = {}
        self.rooms: dict[str, set[str]] = {}
        # Every room message each room was sent: (from, data), offset = index + 1.
        self.log: dict[str, list[tuple[str, int]]] = {}
        self.sent = 0

    def teardown(self) -> None:
        try:
            for hub in self.hubs.values():
                self.run(hub.force_shutdown)
                self.loop.run_until_complete(asyncio.wait_for(hub.wait_stopped(), 10))
            for store in self.stores:
                self.loop.run_until_complete(store.aclose())
        finally:
            self.loop.close()
            shutil.rmtree(self.dir, ignore_errors=True)

    def run(self, fn: Callable[[], Any]) -> Any:
        async def step() -> Any:
            result = fn()
            for _ in range(8):
                await asyncio.sleep(0)
            return result

        return self.loop.run_until_complete(step())

    def pick(self, i: int) -> Peer:
        return self.peers[sorted(self.peers)[i % len(self.peers)]]

    def send(self, peer: Peer, msg: dict[str, Any]) -> None:
        self.run(lambda: peer.outlet.feed(frame(msg)))

    @initialize()
    def first(self) -> None:
        self.connect("a")
        self.connect("b")

    @rule(node=st.sampled_from(["a", "b"]))
    def connect(self, node: str) -> None:
        hub, outlet = self.hubs[node], MemoryOutlet()
        assert hub.admit(outlet.remote_address, outlet.remote_port) is None
        self.run(lambda: hub.attach(outlet, "json"))  # type: ignore[arg-type]
        peer = Peer(outlet, f"{outlet.id}@{node}")
        welcome = peer.messages()
        assert [m["type"] for m in welcome] == ["welcome"] and welcome[0]["id"] == peer.id
        self.peers[peer.id] = peer

    @precondition(lambda self: self.peers)
    @rule(i=st.integers(0, 1000), room=st.sampled_from(ROOMS))
    def join(self, i: int, room: str) -> None:
        peer = self.pick(i)
        mine = [r for r, m in self.rooms.items() if peer.id in m]
        if room not in mine and len(mine) >= 2:
            return  # too_many_rooms, as test_hub_model.py checks
        before = set(self.rooms.get(room, set()))
        self.send(peer, {"type": "join_room", "room": room})
        self.rooms.setdefault(room, set()).add(peer.id)
        reply = peer.messages()
        assert reply == [
            {
                "type": "joined",
                "room": room,
                "members": sorted(self.rooms[room]),
                "epoch": "e-" + room,
                "offset": len(self.log.get(room, [])),
            }
        ]
        for other in before - {peer.id}:
            got = [(m["type"], m["connectionId"]) for m in self.peers[other].messages()]
            assert got == ([] if peer.id in before else [("user_joined", peer.id)])

    @precondition(lambda self: self.peers)
    @rule(i=st.integers(0, 1000), room=st.sampled_from(ROOMS))
    def leave(self, i: int, room: str) -> None:
        peer = self.pick(i)
        if peer.id not in self.rooms.get(room, set()):
            return
        self.send(peer, {"type": "leave_room", "room": room})
        assert peer.messages() == [{"type": "left", "room": room}]
        self.left(peer.id, room)

    def left(self, sid: str, room: str) -> None:
        self.rooms[room].discard(sid)
        for other in self.rooms[room]:
            got = [(m["type"], m["connectionId"]) for m in self.peers[other].messages()]
            assert got == [("user_left", sid)]
        if not self.rooms[room]:
            del self.rooms[room]

    @precondition(lambda self: self.peers)
    @rule(i=st.integers(0, 1000), room=st.sampled_from(ROOMS), n=st.integers(1, 3))
    def room_messages(self, i: int, room: str, n: int) -> None:
        peer = self.pick(i)
        members = self.rooms.get(room, set())
        if peer.id not in members:
            return
        first = self.sent
        self.sent += n
        data = b"".join(
            frame({"type": "room_message", "room": room, "data": k})
            for k in range(first, self.sent)
        )
        self.run(lambda: peer.outlet.feed(data))
        assert peer.messages() == []
        log = self.log.setdefault(room, [])
        base = len(log)
        log.extend((peer.id, k) for k in range(first, self.sent))
        want = [("room_message", peer.id, k, base + 1 + k - first) for k in range(first, self.sent)]
        for other in members - {peer.id}:
            got = [
                (m["type"], m["from"], m["data"], m["offset"]) for m in self.peers[other].messages()
            ]
            assert got == want  # each once, in the order sent, with the room's offsets

    @precondition(lambda self: self.log)
    @rule(i=st.integers(0, 1000), j=st.integers(0, 1000), back=st.integers(0, 5))
    def recover(self, i: int, j: int, back: int) -> None:
        """A join with ``since`` replays, in order, what the room was sent after it,
        whichever node the room's messages came from."""
        peer = self.pick(i)
        room = sorted(self.log)[j % len(self.log)]
        mine = [r for r, m in self.rooms.items() if peer.id in m]
        if room not in mine and len(mine) >= 2:
            return
        log = self.log[room]
        after = max(0, len(log) - back)
        before = set(self.rooms.get(room, set()))
        since = {"epoch": "e-" + room, "offset": after}
        self.send(peer, {"type": "join_room", "room": room, "since": since})
        self.rooms.setdefault(room, set()).add(peer.id)
        got = peer.messages()
        assert got[0]["type"] == "joined" and got[0]["recovered"] is True
        assert got[0]["offset"] == len(log)
        replay = [(m["from"], m["data"], m["offset"]) for m in got[1:]]
        assert replay == [(f, d, k + 1) for k, (f, d) in enumerate(log) if k >= after]
        for other in before - {peer.id}:
            notices = [(m["type"], m["connectionId"]) for m in self.peers[other].messages()]
            assert notices == ([] if peer.id in before else [("user_joined", peer.id)])

    @precondition(lambda self: any(len(m) > 1 for m in self.rooms.values()))
    @rule(i=st.integers(0, 1000), j=st.integers(1, 1000), room=st.sampled_from(ROOMS))
    def room_message_then_private(self, i: int, j: int, room: str) -> None:
        """A room message then a private to a member: they arrive in the order sent."""
        members = self.rooms.get(room, set())
        if len(members) < 2:
            return
        ids = sorted(members)
        peer = self.peers[ids[i % len(ids)]]
        target = self.peers[ids[(i + j % (len(ids) - 1) + 1) % len(ids)]]
        k = self.sent
        self.sent += 2
        log = self.log.setdefault(room, [])
        log.append((peer.id, k))
        data = frame({"type": "room_message", "room": room, "data": k}) + frame(
            {"type": "private", "target": target.id, "data": k + 1}
        )
        self.run(lambda: peer.outlet.feed(data))
        got = [(m["type"], m["data"]) for m in target.messages()]
        assert got == [("room_message", k), ("private", k + 1)]
        for other in members - {peer.id, target.id}:
            assert [m["data"] for m in self.peers[other].messages()] == [k]

    @precondition(lambda self: self.peers)
    @rule(i=st.integers(0, 1000), j=st.integers(0, 1000), n=st.integers(1, 3))
    def privates(self, i: int, j: int, n: int) -> None:
        peer, target = self.pick(i), self.pick(j)
        first = self.sent
        self.sent += n
        data = b"".join(
            frame({"type": "private", "target": target.id, "data": k})
            for k in range(first, self.sent)
        )
        self.run(lambda: peer.outlet.feed(data))
        got = [(m["type"], m["from"], m["data"]) for m in target.messages()]
        assert got == [("private", peer.id, k) for k in range(first, self.sent)]
        if target is not peer:
            assert peer.messages() == []

    @precondition(lambda self: len(self.peers) > 1)
    @rule(i=st.integers(0, 1000))
    def dies(self, i: int) -> None:
        peer = self.pick(i)
        del self.peers[peer.id]
        self.run(peer.outlet.lose)
        # One user_left per room it was in, to each member left in that room.
        want: dict[str, list[tuple[str, str, str]]] = {}
        for room in sorted(r for r, m in self.rooms.items() if peer.id in m):
            self.rooms[room].discard(peer.id)
            for other in self.rooms[room]:
                want.setdefault(other, []).append(("user_left", peer.id, room))
            if not self.rooms[room]:
                del self.rooms[room]
        for other, notices in want.items():
            got = [(m["type"], m["connectionId"], m["room"]) for m in self.peers[other].messages()]
            assert sorted(got) == notices

    @invariant()
    def both_nodes_agree_on_every_room(self) -> None:
        for hub in self.hubs.values():
            assert hub.bus is not None
            seen: dict[str, set[str]] = {}
            for name, room in hub.rooms.rooms.items():
                seen[name] = set(room.members)
            for name in ROOMS:
                remote = set(hub.bus.remote_members(name))
                if remote:
                    seen.setdefault(name, set()).update(remote)
            assert seen == self.rooms

    @invariant()
    def each_node_knows_every_live_session(self) -> None:
        for node, hub in self.hubs.items():
            assert isinstance(hub.bus, MemoryBus)
            local = {s for s in self.peers if s.endswith("@" + node)}
            assert set(hub.json_sessions) == local
            assert set(hub.bus.directory.sessions) == set(self.peers) - local


TestTwoNodeModel = TwoNodeModel.TestCase
TestTwoNodeModel.settings = settings(
    max_examples=40,
    stateful_step_count=30,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)


def test_a_node_s_messages_keep_their_order_while_its_fan_outs_wait(tmp_path: Path) -> None:
    """Another node's broadcasts wait in the pacer's fan-out FIFO when a turn's
    budget is spent; its private messages must not pass them (they did: a
    private was delivered at once, ahead of the broadcasts still waiting)."""

    async def scenario() -> None:
        hubs, _net, stores = two_nodes(
            tmp_path, Settings(max_per_ip=0, turn_budget=8, turn_share=4), Hub.start
        )

        async def settle() -> None:
            for _ in range(400):
                await asyncio.sleep(0)

        def connect(node: str) -> Peer:
            outlet = MemoryOutlet()
            assert hubs[node].admit(outlet.remote_address, outlet.remote_port) is None
            hubs[node].attach(outlet, "json")  # type: ignore[arg-type]
            return Peer(outlet, f"{outlet.id}@{node}")

        sender = connect("a")
        receiver = connect("b")
        bystanders = [connect("b") for _ in range(40)]
        await settle()
        receiver.messages()
        n = 60
        data = b"".join(
            frame({"type": "broadcast", "data": i})
            if i % 2
            else frame({"type": "private", "target": receiver.id, "data": i})
            for i in range(n)
        )
        sender.outlet.feed(data)
        await settle()
        got = [m["data"] for m in receiver.messages() if m.get("from") == sender.id]
        assert got == list(range(n))
        for b in bystanders[:3]:
            seen = [m["data"] for m in b.messages() if m.get("from") == sender.id]
            assert seen == list(range(1, n, 2))
        for hub in hubs.values():
            hub.force_shutdown()
            await asyncio.wait_for(hub.wait_stopped(), 10)
        for store in stores:
            await store.aclose()

    asyncio.run(scenario())


def test_a_room_message_out_to_the_bus_is_not_passed_by_the_sender_s_next(
    tmp_path: Path,
) -> None:
    """A room message waits for the bus to give it its offset; the sender's next
    messages to members of its node (a private, a broadcast) must not pass it,
    while its next room messages need not wait (they are pipelined)."""

    async def scenario() -> None:
        hubs, _net, stores = two_nodes(tmp_path, Settings(max_per_ip=0), Hub.start)

        async def settle() -> None:
            for _ in range(50):
                await asyncio.sleep(0)

        def connect(node: str) -> Peer:
            outlet = MemoryOutlet()
            assert hubs[node].admit(outlet.remote_address, outlet.remote_port) is None
            hubs[node].attach(outlet, "json")  # type: ignore[arg-type]
            return Peer(outlet, f"{outlet.id}@{node}")

        sender, here, there = connect("a"), connect("a"), connect("b")
        await settle()
        for p in (sender, here, there):
            p.outlet.feed(frame({"type": "join_room", "room": "r"}))
            await settle()
        for p in (sender, here, there):
            p.messages()
        sender.outlet.feed(
            b"".join(
                [
                    frame({"type": "room_message", "room": "r", "data": 0}),
                    frame({"type": "room_message", "room": "r", "data": 1}),
                    frame({"type": "private", "target": here.id, "data": 2}),
                    frame({"type": "broadcast", "data": 3}),
                    frame({"type": "private", "target": there.id, "data": 4}),
                ]
            )
        )
        await settle()
        got = [(m["type"], m["data"], m.get("offset")) for m in here.messages()]
        assert got == [
            ("room_message", 0, 1),
            ("room_message", 1, 2),
            ("private", 2, None),
            ("broadcast", 3, None),
        ]
        got = [(m["type"], m["data"]) for m in there.messages()]
        assert got == [("room_message", 0), ("room_message", 1), ("broadcast", 3), ("private", 4)]
        for hub in hubs.values():
            hub.force_shutdown()
            await asyncio.wait_for(hub.wait_stopped(), 10)
        for store in stores:
            await store.aclose()

    asyncio.run(scenario())


def test_a_hand_over_answered_after_the_timeout_is_kept_detached(
    tmp_path: Path, monkeypatch: Any
) -> None:
    """A resume on node b of node a's session: answered in time, the session goes
    on at b; answered too late, the client was told ``unknown`` and the session
    is kept detached at b (not lost), where a second resume gets it."""
    monkeypatch.setattr(handover, "HANDOVER_TIMEOUT_S", 0.2)

    async def scenario() -> None:
        hubs, net, stores = two_nodes(tmp_path, Settings(max_per_ip=0, resume_window=30), Hub.start)

        async def settle() -> None:
            for _ in range(50):
                await asyncio.sleep(0)

        def connect(node: str) -> tuple[Peer, dict[str, Any]]:
            outlet = MemoryOutlet()
            assert hubs[node].admit(outlet.remote_address, outlet.remote_port) is None
            hubs[node].attach(outlet, "json")  # type: ignore[arg-type]
            peer = Peer(outlet, f"{outlet.id}@{node}")
            return peer, peer.messages()[0]

        async def resume(welcome: dict[str, Any]) -> list[dict[str, Any]]:
            p, _ = connect("b")
            ask = {"type": "resume", "id": welcome["id"], "token": welcome["resume"], "seq": 0}
            p.outlet.feed(frame(ask))
            await asyncio.sleep(0.4)
            await settle()
            return p.messages()

        for late in (False, True):
            net[1].answer_delay = 0.3 if late else 0.0
            old, welcome = connect("a")
            await settle()
            old.outlet.lose()  # detached at a
            await settle()
            got = await resume(welcome)
            if not late:
                assert [m["type"] for m in got] == ["resumed"]
                assert welcome["id"] in hubs["b"].json_sessions
                continue
            assert (got[0]["code"], got[0]["reason"]) == ("resume_failed", "unknown")
            assert welcome["id"] in hubs["b"].resume.detached  # type: ignore[union-attr]
            assert welcome["id"] not in hubs["a"].json_sessions
            again = await resume(welcome)
            assert [m["type"] for m in again] == ["resumed"]
        for hub in hubs.values():
            hub.force_shutdown()
            await asyncio.wait_for(hub.wait_stopped(), 10)
        for store in stores:
            await store.aclose()

    asyncio.run(scenario())
