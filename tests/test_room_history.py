"""Room history and recovery on one server (PROTOCOL.md section 11.2), over real sockets."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from verb_console.hub.room_history import HistoryStore
from verb_console.protocols.json import encode
from verb_console.runtime import Runtime

pytestmark = pytest.mark.timeout(30)


async def members(server: Runtime, connect: Any, room: str = "r", n: int = 2) -> list[Any]:
    clients = [await connect(server) for _ in range(n)]
    for i, c in enumerate(clients):
        assert (await c.request({"type": "join_room", "room": room}))["type"] == "joined"
        for earlier in clients[:i]:
            assert (await earlier.recv())["type"] == "user_joined"
    return clients


async def test_room_messages_carry_offsets_and_joined_the_position(
    server: Runtime, connect: Any
) -> None:
    a, b = await members(server, connect)
    for i in range(3):
        await a.send({"type": "room_message", "room": "r", "data": i})
        assert (await b.recv())["offset"] == i + 1
    server.hub.operator_broadcast("op", room="r")
    assert (await b.recv())["offset"] == 4
    assert (await a.recv())["offset"] == 4
    epoch = (await b.request({"type": "join_room", "room": "r"}))["epoch"]
    c = await connect(server)
    joined = await c.request({"type": "join_room", "room": "r"})
    assert joined["offset"] == 4 and joined["epoch"] == epoch
    other = await c.request({"type": "join_room", "room": "other"})
    assert other["offset"] == 0 and other["epoch"] != joined["epoch"]


async def test_a_join_with_since_recovers_what_was_missed_in_order(
    server: Runtime, connect: Any
) -> None:
    a, b = await members(server, connect)
    await a.send({"type": "room_message", "room": "r", "data": "seen"})
    seen = await b.recv()
    assert (await b.request({"type": "leave_room", "room": "r"}))["type"] == "left"
    assert (await a.recv())["type"] == "user_left"
    for i in range(5):
        await a.send({"type": "room_message", "room": "r", "data": i})
    await asyncio.sleep(0.05)
    epoch = (await a.request({"type": "join_room", "room": "r"}))["epoch"]
    since = {"epoch": epoch, "offset": seen["offset"]}
    reply = await b.request({"type": "join_room", "room": "r", "since": since, "ref": 1})
    assert reply["recovered"] is True and reply["offset"] == 6 and reply["ref"] == 1
    got = [await b.recv() for _ in range(5)]
    assert [m["data"] for m in got] == list(range(5))
    assert [m["offset"] for m in got] == [2, 3, 4, 5, 6]
    assert all(m["from"] == a.id and "seq" not in m for m in got)
    # Then the new ones.
    await a.recv()  # user_joined
    await a.send({"type": "room_message", "room": "r", "data": "new"})
    assert (await b.recv())["offset"] == 7


async def test_since_at_the_latest_offset_recovers_nothing_and_above_it_is_a_hole(
    server: Runtime, connect: Any
) -> None:
    a, b = await members(server, connect)
    await a.send({"type": "room_message", "room": "r", "data": 1})
    m = await b.recv()
    epoch = (await b.request({"type": "join_room", "room": "r"}))["epoch"]
    reply = await b.request(
        {"type": "join_room", "room": "r", "since": {"epoch": epoch, "offset": m["offset"]}}
    )
    assert reply["recovered"] is True
    await b.expect_nothing(0.1)
    reply = await b.request(
        {"type": "join_room", "room": "r", "since": {"epoch": epoch, "offset": 9}}
    )
    assert reply["recovered"] is False
    reply = await b.request(
        {"type": "join_room", "room": "r", "since": {"epoch": "x", "offset": 0}}
    )
    assert reply["recovered"] is False
    await b.expect_nothing(0.1)


async def test_joining_again_with_since_replays_too(server: Runtime, connect: Any) -> None:
    a, b = await members(server, connect)
    for i in range(3):
        await a.send({"type": "room_message", "room": "r", "data": i})
    got = [await b.recv() for _ in range(3)]
    epoch = (await b.request({"type": "join_room", "room": "r"}))["epoch"]
    reply = await b.request(
        {"type": "join_room", "room": "r", "since": {"epoch": epoch, "offset": 1}}
    )
    assert reply["recovered"] is True
    again = [await b.recv() for _ in range(2)]
    assert again == got[1:]
    await a.expect_nothing(0.1)


@pytest.mark.parametrize(
    "since",
    [
        None,
        1,
        "e",
        [],
        {"epoch": 1, "offset": 0},
        {"offset": 0},
        {"epoch": "e"},
        {"epoch": "e", "offset": -1},
        {"epoch": "e", "offset": 1.0},
        {"epoch": "e", "offset": True},
        {"epoch": "e", "offset": "1"},
    ],
)
async def test_a_malformed_since_is_bad_message(server: Runtime, connect: Any, since: Any) -> None:
    c = await connect(server)
    reply = await c.request({"type": "join_room", "room": "r", "since": since, "ref": 2})
    assert reply["type"] == "error" and reply["code"] == "bad_message" and reply["ref"] == 2
    assert server.hub.rooms.get("r") is None


async def test_history_outlives_the_last_member_and_a_restart_changes_the_epoch(
    start_server: Any, connect: Any
) -> None:
    first = await start_server()
    a, b = await members(first, connect)
    await a.send({"type": "room_message", "room": "r", "data": "x"})
    m = await b.recv()
    epoch = (await b.request({"type": "join_room", "room": "r"}))["epoch"]
    await a.close()
    await b.close()
    c = await connect(first)
    since = {"epoch": epoch, "offset": 0}
    reply = await c.request({"type": "join_room", "room": "r", "since": since})
    assert reply["recovered"] is True and reply["epoch"] == epoch
    assert (await c.recv())["data"] == m["data"]
    second = await start_server()
    d = await connect(second)
    reply = await d.request({"type": "join_room", "room": "r", "since": since})
    assert reply["recovered"] is False and reply["epoch"] != epoch and reply["offset"] == 0


async def test_history_size_zero_has_no_positions(start_server: Any, connect: Any) -> None:
    server = await start_server(history_size=0)
    a, b = await members(server, connect)
    joined = await a.request({"type": "join_room", "room": "r"})
    assert "epoch" not in joined and "offset" not in joined
    await a.send({"type": "room_message", "room": "r", "data": 1})
    assert "offset" not in await b.recv()
    reply = await b.request(
        {"type": "join_room", "room": "r", "since": {"epoch": "e", "offset": 0}}
    )
    assert reply["recovered"] is False


async def test_kept_messages_are_bounded_by_count_and_a_recovery_past_them_is_a_hole(
    start_server: Any, connect: Any
) -> None:
    server = await start_server(history_size=3)
    a, b = await members(server, connect)
    epoch = (await b.request({"type": "join_room", "room": "r"}))["epoch"]
    for i in range(5):
        await a.send({"type": "room_message", "room": "r", "data": i})
    for _ in range(5):
        await b.recv()
    reply = await b.request(
        {"type": "join_room", "room": "r", "since": {"epoch": epoch, "offset": 1}}
    )
    assert reply["recovered"] is False and reply["epoch"] == epoch
    reply = await b.request(
        {"type": "join_room", "room": "r", "since": {"epoch": epoch, "offset": 2}}
    )
    assert reply["recovered"] is True
    assert [(await b.recv())["data"] for _ in range(3)] == [2, 3, 4]


async def test_with_resume_on_a_recovered_message_gets_a_new_seq(
    start_server: Any, connect: Any
) -> None:
    server = await start_server(resume_window=5)
    a, b = await members(server, connect)
    await a.send({"type": "room_message", "room": "r", "data": 1})
    first = await b.recv()
    epoch = (await b.request({"type": "join_room", "room": "r"}))["epoch"]
    reply = await b.request(
        {"type": "join_room", "room": "r", "since": {"epoch": epoch, "offset": 0}}
    )
    assert reply["recovered"] is True and "seq" not in reply
    again = await b.recv()
    assert again["seq"] == first["seq"] + 1
    assert {k: v for k, v in again.items() if k != "seq"} == {
        k: v for k, v in first.items() if k != "seq"
    }


def frame_of(room: str, data: Any) -> tuple[dict[str, Any], Any]:
    return {"type": "room_message", "room": room, "from": "x", "data": data, "timestamp": 1}, encode


def test_the_store_keeps_at_most_a_mebibyte_per_room_and_its_total_oldest_first() -> None:
    store = HistoryStore(size=10_000, ttl=300, total=3 * 1024 * 1024)
    for _ in range(300):
        store.keep("big", *frame_of("big", "x" * 10_000))
        assert store.rooms["big"].bytes <= 1024 * 1024
    assert store.rooms["big"].offset == 300
    for name in ("a", "b", "c"):
        for _ in range(100):
            store.keep(name, *frame_of(name, "y" * 10_000))
    assert store.bytes <= store.total
    # The oldest went first: all of "big", then some of "a"; "c", the newest, is whole.
    assert not store.rooms["big"].entries
    assert 0 < len(store.rooms["a"].entries) < 100
    assert len(store.rooms["c"].entries) == 100
    # Dropping old messages keeps the epoch.
    epoch = store.rooms["big"].epoch
    store.keep("big", *frame_of("big", 1))
    assert store.rooms["big"].epoch == epoch


def test_a_room_with_no_member_and_no_message_for_the_ttl_gets_a_new_epoch() -> None:
    store = HistoryStore(size=10, ttl=0.05, total=1 << 20)
    store.keep("r", *frame_of("r", 1))
    epoch = store.rooms["r"].epoch
    store.sweep({"r"})
    assert store.rooms["r"].epoch == epoch
    import time

    time.sleep(0.06)
    store.sweep(set())  # the message expired: idle from now
    assert "r" in store.rooms
    time.sleep(0.06)
    store.sweep({"r"})  # a member came back in time
    store.sweep(set())
    assert "r" in store.rooms
    time.sleep(0.06)
    store.sweep(set())
    assert "r" not in store.rooms
    assert store.position("r").epoch != epoch
