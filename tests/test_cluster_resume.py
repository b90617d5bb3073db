"""Session resume across the nodes of a cluster (PROTOCOL.md 11.1, its last point),
on real nodes and a real Redis: a session detached on one node resumes on another
under the same id; bad tokens and foreign ids fail cleanly; a node killed during
the hand-over ends in ``resume_failed`` rather than a hang."""

from __future__ import annotations

import asyncio
import signal
import time
from typing import Any

import test_cluster_history
from cluster_harness import NodeProcess
from helpers import JsonClient
from test_cluster import knows, linked, next_of, wait_for

# The fixtures: nodes with the test's arguments, and clients closed after the test.
node = test_cluster_history.node
client = test_cluster_history.client

WINDOW = ("--resume-window", "30")


async def detached_on(n: NodeProcess, client: Any, peer: JsonClient) -> JsonClient:
    """A client of node ``n`` in room ``r`` with ``peer``, whose connection is then cut."""
    c = await client(n.port)
    await linked(c, peer)
    await c.request({"type": "join_room", "room": "r"})
    await next_of(peer, "user_joined", connectionId=c.id)
    c.writer.transport.abort()
    return c


async def test_a_session_detached_on_one_node_resumes_on_another(node: Any, client: Any) -> None:
    a, b = await node("a", *WINDOW), await node("b", *WINDOW)
    cb = await client(b.port)
    await cb.request({"type": "join_room", "room": "r"})
    old = await detached_on(a, client, cb)
    await wait_for(lambda: knows(cb, old.id), 5)
    # Delivered to it while detached, on node a: kept for the resume.
    await cb.send({"type": "private", "target": old.id, "data": "while away"})
    await cb.send({"type": "room_message", "room": "r", "data": "room while away"})
    await cb.expect_nothing(0.3)  # a detached session is still a member: nobody is told

    new = await client(b.port)
    token = old.welcome["resume"]
    started = time.monotonic()
    resumed = await new.request({"type": "resume", "id": old.id, "token": token, "seq": 1})
    took = time.monotonic() - started
    # seq 1 was linked()'s probe, read; 2 the probe of knows() after the cut.
    assert resumed == {"type": "resumed", "id": old.id, "seq": 4, "replayed": 3}, resumed
    replay = [await new.recv() for _ in range(3)]
    assert [(m["type"], m["data"], m["seq"]) for m in replay] == [
        ("private", "?", 2),
        ("private", "while away", 3),
        ("room_message", "room while away", 4),
    ]
    assert took < 10  # an answer, not a timeout (the bench measures the time)

    # The same session on node b: its rooms, its counter; the members saw nothing.
    await cb.send({"type": "room_message", "room": "r", "data": "hello again"})
    got = await next_of(new, "room_message")
    assert (got["data"], got["seq"]) == ("hello again", 5)
    await new.send({"type": "room_message", "room": "r", "data": "back"})
    got = await next_of(cb, "room_message")
    assert got["from"] == old.id
    await new.send({"type": "private", "target": cb.id, "data": "p"})
    assert (await next_of(cb, "private"))["from"] == old.id
    await cb.send({"type": "private", "target": old.id, "data": "to b"})
    got = await next_of(new, "private")
    assert (got["data"], got["seq"]) == ("to b", 6)
    await cb.expect_nothing(0.5)  # no user_left, no user_joined
    left = await cb.request({"type": "join_room", "room": "r"})
    assert left["members"] == sorted([cb.id, old.id])


async def test_bad_and_foreign_tokens_across_nodes(node: Any, client: Any) -> None:
    a, b = await node("a", *WINDOW), await node("b", *WINDOW)
    cb = await client(b.port)
    await cb.request({"type": "join_room", "room": "r"})
    old = await detached_on(a, client, cb)
    token = old.welcome["resume"]

    async def resume(sid: str, tok: str) -> dict[str, Any]:
        c = await client(b.port)
        return await c.request({"type": "resume", "id": sid, "token": tok, "seq": 0})

    wrong = await resume(old.id, token[:-2] + ("AA" if not token.endswith("AA") else "BB"))
    assert (wrong["code"], wrong["reason"]) == ("resume_failed", "bad_token")
    foreign = await resume(cb.id, token)  # another session's id, this session's token
    assert (foreign["code"], foreign["reason"]) == ("resume_failed", "bad_token")
    nobody = await resume("10.9.9.9:1@a", token)
    assert (nobody["code"], nobody["reason"]) == ("resume_failed", "unknown")
    no_node = await resume("10.9.9.9:1@zz", token)
    assert (no_node["code"], no_node["reason"]) == ("resume_failed", "unknown")
    # Nothing was touched: the session is still there, and resumes with its token.
    good = await resume(old.id, token)
    assert (good["type"], good["id"]) == ("resumed", old.id)
    # And it was moved: a second resume from another node must ask node b now.
    ca = await client(a.port)
    again = await ca.request({"type": "resume", "id": old.id, "token": token, "seq": 0})
    assert again["type"] == "resumed", again


async def test_a_node_killed_during_a_hand_over(node: Any, client: Any) -> None:
    a, b = await node("a", *WINDOW), await node("b", *WINDOW)
    cb = await client(b.port)
    await cb.request({"type": "join_room", "room": "r"})
    old = await detached_on(a, client, cb)
    await wait_for(lambda: knows(cb, old.id), 5)
    a.proc.send_signal(signal.SIGSTOP)  # it will never answer the ask
    new = await client(b.port)
    ask = {"type": "resume", "id": old.id, "token": old.welcome["resume"], "seq": 0}
    await new.send(ask | {"ref": 1})
    await new.send({"type": "ping", "ref": 2})  # waits behind the resume, in order
    a.kill()
    failed = await new.recv(15)
    assert (failed["type"], failed["code"], failed["reason"], failed["ref"]) == (
        "error",
        "resume_failed",
        "unknown",
        1,
    )
    pong = await new.recv()
    assert (pong["type"], pong["ref"]) == ("pong", 2)
    # The connection is the fresh session it was: it can start afresh.
    joined = await new.request({"type": "join_room", "room": "r"})
    assert joined["type"] == "joined" and new.id in joined["members"]
    assert (await next_of(cb, "user_joined"))["connectionId"] == new.id


async def test_room_messages_sent_during_the_hand_over_arrive_once(node: Any, client: Any) -> None:
    """Node a is slow to answer (frozen for a moment): the room's messages sent
    meanwhile reach node a after it let the session go, and node b before the
    session lived there; the resumed client gets each once, in order, after
    the replay."""
    a, b = await node("a", *WINDOW), await node("b", *WINDOW)
    cb = await client(b.port)
    await cb.request({"type": "join_room", "room": "r"})
    old = await detached_on(a, client, cb)
    await cb.send({"type": "room_message", "room": "r", "data": "before"})
    await cb.request({"type": "ping"})
    await asyncio.sleep(0.2)  # node a has it in the session's ring
    a.proc.send_signal(signal.SIGSTOP)
    try:
        new = await client(b.port)
        ask = {"type": "resume", "id": old.id, "token": old.welcome["resume"], "seq": 0}
        await new.send(ask)
        await asyncio.sleep(0.3)  # the ask is out, waiting for node a
        for i in range(5):
            await cb.send({"type": "room_message", "room": "r", "data": i})
        await cb.request({"type": "ping"})
    finally:
        a.proc.send_signal(signal.SIGCONT)
    resumed = await new.recv(10)
    assert resumed["type"] == "resumed", resumed
    got = [await new.recv() for _ in range(resumed["replayed"] + 5)]
    rooms = [(m["data"], m["offset"]) for m in got if m["type"] == "room_message"]
    assert rooms == [("before", 1), (0, 2), (1, 3), (2, 4), (3, 5), (4, 6)]
    seqs = [m["seq"] for m in got]
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs)))
    await new.expect_nothing(0.5)  # nothing twice
