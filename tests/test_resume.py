"""Session resume on one server (PROTOCOL.md section 11.1), over real sockets."""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
from pathlib import Path
from typing import Any

import pytest
from helpers import JsonClient, closed_without_bytes, eventually, frame

from verb_console.runtime import Runtime

pytestmark = pytest.mark.timeout(30)

WINDOW = 5.0


@pytest.fixture
async def rserver(start_server: Any) -> Runtime:
    """A json server with resume on."""
    return await start_server(resume_window=WINDOW)


async def drop(client: JsonClient) -> None:
    """The client's connection ends without a ``bye`` (EOF)."""
    await client.close()


async def resume(
    connect: Any, port: int, old: JsonClient, seq: int, **extra: Any
) -> tuple[JsonClient, dict[str, Any]]:
    c = await connect(port)
    msg = {"type": "resume", "id": old.id, "token": old.welcome["resume"], "seq": seq, **extra}
    reply = await c.request(msg)
    return c, reply


async def test_welcome_carries_a_resume_token_of_at_least_128_random_bits(
    rserver: Runtime, connect: Any
) -> None:
    a = await connect(rserver)
    b = await connect(rserver)
    token = a.welcome["resume"]
    assert isinstance(token, str) and len(token) >= 22
    assert token != b.welcome["resume"]
    # Never shown elsewhere: not in the session's record nor the event log.
    info = rserver.hub.sessions[a.id].view.snapshot()
    assert token not in repr(info)
    assert all(token not in e.text for e in rserver.hub.events)


async def test_no_resume_token_and_no_seq_when_resume_is_off(server: Runtime, connect: Any) -> None:
    a = await connect(server)
    b = await connect(server)
    assert "resume" not in a.welcome
    await b.send({"type": "broadcast", "data": 1})
    got = await a.recv()
    assert got["type"] == "broadcast" and "seq" not in got
    reply = await a.request({"type": "resume", "id": b.id, "token": "x", "seq": 0})
    assert reply["code"] == "resume_failed" and reply["reason"] == "unknown"


async def test_seq_counts_every_delivery_caused_by_someone_else_and_no_reply(
    rserver: Runtime, connect: Any
) -> None:
    a = await connect(rserver)
    b = await connect(rserver)
    assert (await a.request({"type": "join_room", "room": "r"}))["type"] == "joined"
    await b.send({"type": "join_room", "room": "r"})
    joined = await b.recv()
    assert "seq" not in joined
    got = await a.recv()
    assert got["type"] == "user_joined" and got["seq"] == 1
    await b.send({"type": "room_message", "room": "r", "data": "hi"})
    await b.send({"type": "broadcast", "data": "all"})
    await b.send({"type": "private", "target": a.id, "data": "p"})
    kinds = []
    for n in range(2, 7):
        if n == 5:
            rserver.hub.operator_broadcast("op")
            rserver.hub.operator_broadcast("oproom", room="r")
        m = await a.recv()
        assert m["seq"] == n, m
        kinds.append(m["type"])
    assert kinds == ["room_message", "broadcast", "private", "broadcast", "room_message"]
    pong = await a.request({"type": "ping"})
    assert pong["type"] == "pong" and "seq" not in pong
    # b got the operator's two as well, numbered by its own counter.
    assert [(await b.recv())["seq"] for _ in range(2)] == [1, 2]
    await b.send({"type": "leave_room", "room": "r"})
    assert "seq" not in await b.recv()
    left = await a.recv()
    assert left["type"] == "user_left" and left["seq"] == 7


async def test_a_dropped_session_is_resumed_with_its_missed_messages_in_order(
    rserver: Runtime, connect: Any
) -> None:
    a = await connect(rserver)
    b = await connect(rserver)
    await a.request({"type": "join_room", "room": "r"})
    await b.request({"type": "join_room", "room": "r"})
    assert (await a.recv())["seq"] == 1
    await drop(a)
    await eventually(lambda: rserver.hub.resume is not None and a.id in rserver.hub.resume.detached)
    # Still a member and a private-message target; b notices nothing.
    for i in range(3):
        await b.send({"type": "room_message", "room": "r", "data": i})
    await b.send({"type": "private", "target": a.id, "data": "p"})
    await b.expect_nothing(0.1)
    c, reply = await resume(connect, rserver.port, a, 1, ref=7)
    assert reply == {"type": "resumed", "id": a.id, "seq": 5, "replayed": 4, "ref": 7}
    got = [await c.recv() for _ in range(4)]
    assert [m["seq"] for m in got] == [2, 3, 4, 5]
    assert [m["data"] for m in got] == [0, 1, 2, "p"]
    assert all(m["from"] == b.id for m in got)
    # The connection is session a now: same id, rooms and counter.
    await b.send({"type": "room_message", "room": "r", "data": "new"})
    m = await c.recv()
    assert m["seq"] == 6 and m["data"] == "new"
    await c.send({"type": "room_message", "room": "r", "data": "back"})
    m = await b.recv()
    assert m["from"] == a.id and m["data"] == "back"
    assert c.id not in rserver.hub.sessions
    assert a.id in rserver.hub.sessions


async def test_a_resume_replays_only_what_came_after_the_seq_given(
    rserver: Runtime, connect: Any
) -> None:
    a = await connect(rserver)
    b = await connect(rserver)
    for i in range(3):
        await b.send({"type": "private", "target": a.id, "data": i})
    assert [(await a.recv())["seq"] for _ in range(3)] == [1, 2, 3]
    await drop(a)
    await eventually(lambda: a.id in rserver.hub.resume.detached)  # type: ignore[union-attr]
    # Delivered just before the break: kept for a replay too (the last 10 s).
    c, reply = await resume(connect, rserver.port, a, 1)
    assert reply["replayed"] == 2 and reply["seq"] == 3
    assert [(await c.recv())["data"] for _ in range(2)] == [1, 2]
    await c.expect_nothing(0.1)


async def test_bye_ends_the_session_for_good(rserver: Runtime, connect: Any) -> None:
    a = await connect(rserver)
    b = await connect(rserver)
    await a.request({"type": "join_room", "room": "r"})
    await b.request({"type": "join_room", "room": "r"})
    await a.recv()
    await b.send({"type": "bye"})
    await b.expect_eof()
    left = await a.recv()
    assert left["type"] == "user_left" and left["connectionId"] == b.id
    _, reply = await resume(connect, rserver.port, b, 0)
    assert reply["code"] == "resume_failed" and reply["reason"] == "unknown"


async def test_bye_with_resume_off_closes_as_the_client_would(
    server: Runtime, connect: Any
) -> None:
    a = await connect(server)
    await a.send({"type": "bye"})
    await a.expect_eof()
    await eventually(lambda: a.id not in server.hub.sessions)
    assert server.hub.closed_log[-1].reason == "client_closed"


async def test_resume_failures_keep_the_fresh_session(rserver: Runtime, connect: Any) -> None:
    a = await connect(rserver)
    await drop(a)
    await eventually(lambda: a.id in rserver.hub.resume.detached)  # type: ignore[union-attr]
    c = await connect(rserver)
    reply = await c.request({"type": "resume", "id": "nobody:1", "token": "t", "seq": 0})
    assert reply["type"] == "error" and reply["code"] == "resume_failed"
    assert reply["reason"] == "unknown"
    # A second resume is after another message.
    again = {"type": "resume", "id": a.id, "token": a.welcome["resume"], "seq": 0}
    reply = await c.request(again)
    assert reply["code"] == "bad_message"
    assert (await c.request({"type": "ping"}))["type"] == "pong"
    # The fresh session is a session like any other.
    d = await connect(rserver)
    await d.send({"type": "private", "target": c.id, "data": "x"})
    assert (await c.recv())["data"] == "x"


async def test_a_wrong_token_is_bad_token_and_counts_as_an_auth_failure(
    rserver: Runtime, connect: Any
) -> None:
    a = await connect(rserver)
    b = await connect(rserver)
    await drop(a)
    await eventually(lambda: a.id in rserver.hub.resume.detached)  # type: ignore[union-attr]
    for token in ["forged", b.welcome["resume"], a.welcome["resume"][:-1]]:
        c = await connect(rserver)
        reply = await c.request({"type": "resume", "id": a.id, "token": token, "seq": 0})
        assert reply["code"] == "resume_failed" and reply["reason"] == "bad_token"
        await c.close()
    # Five wrong tokens within the window: the address is refused at accept.
    for _ in range(2):
        c = await connect(rserver)
        await c.request({"type": "resume", "id": a.id, "token": "x", "seq": 0})
        await c.close()
    reader, writer = await asyncio.open_connection("127.0.0.1", rserver.port)
    assert await closed_without_bytes(reader)
    writer.close()
    # The session itself is untouched.
    assert a.id in rserver.hub.resume.detached  # type: ignore[union-attr]


@pytest.mark.parametrize(
    "bad",
    [
        {"id": 1, "token": "t", "seq": 0},
        {"token": "t", "seq": 0},
        {"id": "x", "token": None, "seq": 0},
        {"id": "x", "token": "t", "seq": -1},
        {"id": "x", "token": "t", "seq": 1.5},
        {"id": "x", "token": "t", "seq": True},
        {"id": "x", "token": "t"},
    ],
)
async def test_a_malformed_resume_is_bad_message(
    rserver: Runtime, connect: Any, bad: dict[str, Any]
) -> None:
    c = await connect(rserver)
    reply = await c.request({"type": "resume", **bad})
    assert reply["type"] == "error" and reply["code"] == "bad_message"
    assert (await c.request({"type": "ping"}))["type"] == "pong"


async def test_resume_after_another_message_is_bad_message(rserver: Runtime, connect: Any) -> None:
    a = await connect(rserver)
    await drop(a)
    await eventually(lambda: a.id in rserver.hub.resume.detached)  # type: ignore[union-attr]
    c = await connect(rserver)
    await c.request({"type": "ping"})
    reply = await c.request({"type": "resume", "id": a.id, "token": a.welcome["resume"], "seq": 0})
    assert reply["code"] == "bad_message"
    assert a.id in rserver.hub.resume.detached  # type: ignore[union-attr]


async def test_a_seq_beyond_what_is_kept_is_gap_and_the_session_stays_detached(
    start_server: Any, connect: Any
) -> None:
    rserver = await start_server(resume_window=WINDOW)
    a = await connect(rserver)
    b = await connect(rserver)
    await drop(a)
    await eventually(lambda: a.id in rserver.hub.resume.detached)
    await b.send({"type": "private", "target": a.id, "data": 1})
    await eventually(lambda: rserver.hub.sessions[a.id].seq == 1)  # type: ignore[attr-defined]
    _, reply = await resume(connect, rserver.port, a, 5)
    assert reply["reason"] == "gap"
    assert a.id in rserver.hub.resume.detached
    _, reply = await resume(connect, rserver.port, a, 0)
    assert reply["type"] == "resumed" and reply["replayed"] == 1


async def test_a_detached_session_ends_after_the_window_and_is_expired_then_unknown(
    start_server: Any, connect: Any
) -> None:
    rserver = await start_server(resume_window=0.3)
    a = await connect(rserver)
    b = await connect(rserver)
    await a.request({"type": "join_room", "room": "r"})
    await b.request({"type": "join_room", "room": "r"})
    await a.recv()
    await drop(a)
    await b.expect_nothing(0.15)
    left = await b.recv(2)
    assert left["type"] == "user_left" and left["connectionId"] == a.id
    closed = [c for c in rserver.hub.closed_log if c.id == a.id]
    assert closed and closed[-1].reason == "detached_timeout"
    _, reply = await resume(connect, rserver.port, a, 0)
    assert reply["reason"] == "expired"
    await asyncio.sleep(1.1)
    _, reply = await resume(connect, rserver.port, a, 0)
    assert reply["reason"] == "unknown"


async def test_a_detached_session_over_the_output_limit_ends_as_overflow(
    start_server: Any, connect: Any
) -> None:
    rserver = await start_server(resume_window=WINDOW, max_pending=4096)
    a = await connect(rserver)
    b = await connect(rserver)
    await a.request({"type": "join_room", "room": "r"})
    await b.request({"type": "join_room", "room": "r"})
    await a.recv()
    await drop(a)
    await eventually(lambda: a.id in rserver.hub.resume.detached)
    for _ in range(5):
        await b.send({"type": "room_message", "room": "r", "data": "x" * 1000})
    left = await b.recv()
    assert left["type"] == "user_left" and left["connectionId"] == a.id
    _, reply = await resume(connect, rserver.port, a, 0)
    assert reply["reason"] == "overflow"
    assert rserver.hub.stats.slow_consumers == 1


async def test_a_resume_takes_over_a_session_still_attached(rserver: Runtime, connect: Any) -> None:
    # The old connection is half-open as far as the server knows: it never saw
    # it end. The resume closes it without a word and carries on.
    a = await connect(rserver)
    b = await connect(rserver)
    await b.send({"type": "private", "target": a.id, "data": 1})
    assert (await a.recv())["seq"] == 1
    c, reply = await resume(connect, rserver.port, a, 0)
    assert reply["type"] == "resumed" and reply["replayed"] == 1
    assert (await c.recv())["data"] == 1
    await a.expect_eof()
    await b.send({"type": "private", "target": a.id, "data": 2})
    m = await c.recv()
    assert m["seq"] == 2 and m["data"] == 2
    await asyncio.sleep(0.1)
    assert a.id in rserver.hub.sessions and a.id not in rserver.hub.resume.detached  # type: ignore[union-attr]


async def test_the_same_session_resumed_from_two_connections_at_once(
    rserver: Runtime, connect: Any
) -> None:
    a = await connect(rserver)
    b = await connect(rserver)
    await drop(a)
    await eventually(lambda: a.id in rserver.hub.resume.detached)  # type: ignore[union-attr]
    c1 = await connect(rserver)
    c2 = await connect(rserver)
    msg = frame({"type": "resume", "id": a.id, "token": a.welcome["resume"], "seq": 0})
    c1.writer.write(msg)
    c2.writer.write(msg)
    r1, r2 = await asyncio.gather(c1.recv(), c2.recv())
    # Both succeed, one after the other; the later one holds the session.
    assert r1["type"] == r2["type"] == "resumed"
    ends = await asyncio.gather(c1.expect_eof(0.5), c2.expect_eof(0.5), return_exceptions=True)
    assert sum(e is None for e in ends) == 1
    holder = c2 if ends[0] is None else c1
    await b.send({"type": "private", "target": a.id, "data": "x"})
    assert (await holder.recv())["data"] == "x"


async def test_with_auth_a_session_of_another_user_is_forbidden(
    start_server: Any, connect: Any, tmp_path: Path
) -> None:
    path = tmp_path / "tokens"
    path.write_text(
        "".join(
            f"{u}:{hashlib.sha256(t.encode()).hexdigest()}\n"
            for u, t in (("alice", "ta"), ("bob", "tb"))
        )
    )
    rserver = await start_server(resume_window=WINDOW, auth_file=str(path))
    a = await connect(rserver)
    assert (await a.request({"type": "auth", "token": "ta"}))["type"] == "authenticated"
    await drop(a)
    await eventually(lambda: a.id in rserver.hub.resume.detached)
    c = await connect(rserver)
    await c.request({"type": "auth", "token": "tb"})
    msg = {"type": "resume", "id": a.id, "token": a.welcome["resume"], "seq": 0}
    reply = await c.request(msg)
    assert reply["reason"] == "forbidden"
    d = await connect(rserver)
    await d.request({"type": "auth", "token": "ta"})
    reply = await d.request(msg)
    assert reply["type"] == "resumed"


async def test_resume_and_more_messages_in_one_read(rserver: Runtime, connect: Any) -> None:
    a = await connect(rserver)
    await drop(a)
    await eventually(lambda: a.id in rserver.hub.resume.detached)  # type: ignore[union-attr]
    c = await connect(rserver)
    msg = {"type": "resume", "id": a.id, "token": a.welcome["resume"], "seq": 0}
    data = frame(msg) + frame({"type": "ping", "ref": 1}) + frame({"type": "ping"})[:3]
    await c.send_raw(data)
    assert (await c.recv())["type"] == "resumed"
    assert (await c.recv())["ref"] == 1
    await c.send_raw(frame({"type": "ping"})[3:])
    assert (await c.recv())["type"] == "pong"


async def test_the_token_is_never_logged(rserver: Runtime, connect: Any, caplog: Any) -> None:
    caplog.set_level("DEBUG")
    a = await connect(rserver)
    await drop(a)
    await eventually(lambda: a.id in rserver.hub.resume.detached)  # type: ignore[union-attr]
    await resume(connect, rserver.port, a, 0)
    assert a.welcome["resume"] not in caplog.text
    assert re.search("resumed", caplog.text)
    assert json.dumps(a.welcome["resume"]) not in repr(rserver.hub.closed_log)


async def test_seq_goes_up_by_one_across_widths_and_any_data(
    rserver: Runtime, connect: Any
) -> None:
    a = await connect(rserver)
    b = await connect(rserver)
    data = ["%d %s %%", "x" * 9, {"k": "}"}, 1.5]
    for i in range(120):
        await b.send({"type": "broadcast", "data": data[i % 4]})
    got = [await a.recv() for _ in range(120)]
    assert [m["seq"] for m in got] == list(range(1, 121))
    assert [m["data"] for m in got] == [data[i % 4] for i in range(120)]


def test_a_ring_keeps_the_last_ten_seconds_and_no_more_than_the_limit() -> None:
    from collections import deque
    from types import SimpleNamespace

    from verb_console.hub.seq import RING_SECONDS, retime

    s = SimpleNamespace(
        seq=0, ring=deque(), ring_bytes=0, marks=deque(), mark_at=float("-inf"), detached=None
    )

    def deliver(at: float, size: int = 10) -> None:
        s.seq += 1
        s.ring.append(b"x" * size)
        s.ring_bytes += size
        retime(s, at, 1000)  # type: ignore[arg-type]

    for i in range(300):  # ten a second for 30 s
        deliver(i / 10)
        first = s.seq - len(s.ring) + 1
        # Every delivery of the last RING_SECONDS is kept, and little more.
        assert first <= max(1, s.seq - RING_SECONDS * 10 + 1)
        assert len(s.ring) <= (RING_SECONDS + 2) * 10
    # Nothing more for a while: a sweep empties the ring.
    retime(s, 100.0, 1000, delivered=False)  # type: ignore[arg-type]
    assert not s.ring and s.ring_bytes == 0
    # The byte limit holds whatever the time.
    for _ in range(200):
        deliver(200.0)
    assert s.ring_bytes <= 1000 and len(s.ring) == 100


async def test_the_operator_sees_a_detached_session_its_time_left_and_what_is_kept(
    rserver: Runtime, connect: Any
) -> None:
    import time

    a = await connect(rserver)
    b = await connect(rserver)
    assert rserver.hub.sessions[a.id].view.snapshot().detached_until is None
    await drop(a)
    await eventually(lambda: a.id in rserver.hub.resume.detached)  # type: ignore[union-attr]
    await b.send({"type": "private", "target": a.id, "data": "x" * 100})
    await eventually(lambda: rserver.hub.sessions[a.id].view.snapshot().kept > 100)
    info = rserver.hub.sessions[a.id].view.snapshot()
    assert time.time() < info.detached_until <= time.time() + WINDOW  # type: ignore[operator]
    # The rooms show their position.
    await b.request({"type": "join_room", "room": "r"})
    await b.send({"type": "room_message", "room": "r", "data": 1})
    await b.request({"type": "ping"})
    (room,) = rserver.hub.rooms_info()
    assert room.epoch and room.offset == 1 and room.history == 1 and room.history_bytes > 0
