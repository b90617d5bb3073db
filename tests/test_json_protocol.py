"""The ``json`` protocol over real sockets: PROTOCOL.md sections 2, 2.1 and 2.2."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
from helpers import JsonClient, eventually, frame, raw_frame, wire_fixtures

from verb_console import __version__

pytestmark = pytest.mark.timeout(30)

# Every test here runs in plaintext, over TLS, and over TLS on uvloop.
wire, event_loop_policy = wire_fixtures()


def assert_recent_timestamp(value: Any) -> None:
    assert type(value) is int
    assert abs(value - time.time() * 1000) < 5000


async def expect_protocol_error(client: JsonClient, code: str) -> None:
    """The framing-error sequence: error, closing(protocol_error), then the close."""
    error = await client.recv()
    assert error["type"] == "error"
    assert error["code"] == code
    assert isinstance(error["message"], str) and error["message"]
    assert "ref" not in error
    assert await client.recv() == {"type": "closing", "reason": "protocol_error"}
    await client.expect_eof()


# 2.1 Session start


async def test_the_welcome_carries_the_client_address_as_id_and_the_configured_max_frame(
    start_server, connect
) -> None:
    runtime = await start_server(max_frame=4096)
    client = await connect(runtime)
    assert client.welcome == {
        "type": "welcome",
        "id": client.local_id,
        "server": "verb-console",
        "version": __version__,
        "maxFrameBytes": 4096,
    }
    assert client.id in runtime.hub.sessions


async def test_two_clients_get_distinct_session_ids(server, connect) -> None:
    a = await connect(server)
    b = await connect(server)
    assert a.id != b.id
    assert a.id.startswith("127.0.0.1:") and b.id.startswith("127.0.0.1:")


# ping and ref


async def test_a_ping_without_ref_gets_a_pong_with_a_timestamp_and_no_ref(server, connect) -> None:
    client = await connect(server)
    pong = await client.request({"type": "ping"})
    assert set(pong) == {"type", "timestamp"}
    assert pong["type"] == "pong"
    assert_recent_timestamp(pong["timestamp"])


@pytest.mark.parametrize("ref", ["r-1", "x" * 64, "", 7, 0, -3, 2**62])
async def test_a_ping_ref_that_is_a_short_string_or_an_integer_is_copied_into_the_pong(
    server, connect, ref: Any
) -> None:
    client = await connect(server)
    pong = await client.request({"type": "ping", "ref": ref})
    assert pong["type"] == "pong"
    assert pong["ref"] == ref
    assert type(pong["ref"]) is type(ref)


@pytest.mark.parametrize("ref", ["x" * 65, None, 1.0, True, [1], {"a": 1}])
async def test_a_ref_that_is_not_a_short_string_or_an_integer_is_bad_message_without_ref(
    server, connect, ref: Any
) -> None:
    client = await connect(server)
    error = await client.request({"type": "ping", "ref": ref})
    assert error["type"] == "error"
    assert error["code"] == "bad_message"
    assert "ref" not in error
    # The connection stays open.
    assert (await client.request({"type": "ping", "ref": 1}))["ref"] == 1


async def test_a_ref_is_counted_in_characters_not_bytes(server, connect) -> None:
    client = await connect(server)
    ref = "é" * 64  # 128 bytes of UTF-8, 64 characters
    assert (await client.request({"type": "ping", "ref": ref}))["ref"] == ref


# broadcast


async def test_a_broadcast_reaches_every_other_json_session_and_not_the_sender(
    server, connect
) -> None:
    sender = await connect(server)
    a = await connect(server)
    b = await connect(server)
    data = {"text": "héllo", "n": [1, 2, None]}
    await sender.send({"type": "broadcast", "data": data, "ref": "b1"})
    for other in (a, b):
        message = await other.recv()
        assert set(message) == {"type", "from", "data", "timestamp"}
        assert message["type"] == "broadcast"
        assert message["from"] == sender.id
        assert message["data"] == data
        assert_recent_timestamp(message["timestamp"])
    await sender.expect_nothing()


async def test_a_broadcast_cannot_forge_its_from_field(server, connect) -> None:
    sender = await connect(server)
    other = await connect(server)
    await sender.send({"type": "broadcast", "data": 1, "from": "server"})
    assert (await other.recv())["from"] == sender.id


@pytest.mark.parametrize("data", [None, 0, "", [], {}, False])
async def test_any_json_value_is_valid_broadcast_data(server, connect, data: Any) -> None:
    sender = await connect(server)
    other = await connect(server)
    await sender.send({"type": "broadcast", "data": data})
    message = await other.recv()
    assert "data" in message and message["data"] == data


# private


async def test_a_private_message_reaches_only_its_target(server, connect) -> None:
    sender = await connect(server)
    target = await connect(server)
    bystander = await connect(server)
    await sender.send({"type": "private", "target": target.id, "data": "psst", "ref": 9})
    message = await target.recv()
    assert set(message) == {"type", "from", "data", "timestamp"}
    assert message["type"] == "private"
    assert message["from"] == sender.id
    assert message["data"] == "psst"
    assert_recent_timestamp(message["timestamp"])
    await bystander.expect_nothing(0.1)
    await sender.expect_nothing(0.1)


async def test_a_private_message_to_an_unknown_target_is_unknown_target(server, connect) -> None:
    sender = await connect(server)
    error = await sender.request({"type": "private", "target": "10.9.9.9:1", "data": 1, "ref": "p"})
    assert error["type"] == "error"
    assert error["code"] == "unknown_target"
    assert error["ref"] == "p"


async def test_a_private_message_to_a_session_that_left_is_unknown_target(server, connect) -> None:
    sender = await connect(server)
    gone = await connect(server)
    gone_id = gone.id
    await gone.close()
    await eventually(lambda: gone_id not in server.hub.sessions)
    error = await sender.request({"type": "private", "target": gone_id, "data": 1})
    assert error["code"] == "unknown_target"


# rooms


async def test_joining_a_room_replies_joined_with_sorted_members_and_tells_the_others(
    server, connect
) -> None:
    clients = [await connect(server) for _ in range(3)]
    for i, client in enumerate(clients):
        joined = await client.request({"type": "join_room", "room": "lobby", "ref": i})
        assert joined == {
            "type": "joined",
            "room": "lobby",
            "members": sorted(c.id for c in clients[: i + 1]),
            # The room's position (PROTOCOL.md 11.2): no message yet.
            "epoch": joined["epoch"],
            "offset": 0,
            "ref": i,
        }
        assert isinstance(joined["epoch"], str) and joined["epoch"]
        for earlier in clients[:i]:
            note = await earlier.recv()
            assert set(note) == {"type", "connectionId", "room", "timestamp"}
            assert note["type"] == "user_joined"
            assert note["connectionId"] == client.id
            assert note["room"] == "lobby"
            assert_recent_timestamp(note["timestamp"])
    assert sorted(server.hub.rooms.get("lobby").members) == sorted(c.id for c in clients)


async def test_joining_a_room_again_replies_joined_and_notifies_nobody(server, connect) -> None:
    a = await connect(server)
    b = await connect(server)
    await a.request({"type": "join_room", "room": "r"})
    await b.request({"type": "join_room", "room": "r"})
    assert (await a.recv())["type"] == "user_joined"
    again = await b.request({"type": "join_room", "room": "r"})
    epoch = again.pop("epoch")
    assert again == {"type": "joined", "room": "r", "members": sorted([a.id, b.id]), "offset": 0}
    assert isinstance(epoch, str)
    await a.expect_nothing()


async def test_leaving_a_room_replies_left_and_tells_the_remaining_members(server, connect) -> None:
    a = await connect(server)
    b = await connect(server)
    await a.request({"type": "join_room", "room": "r"})
    await b.request({"type": "join_room", "room": "r"})
    await a.recv()  # user_joined
    left = await b.request({"type": "leave_room", "room": "r", "ref": "L"})
    assert left == {"type": "left", "room": "r", "ref": "L"}
    note = await a.recv()
    assert set(note) == {"type", "connectionId", "room", "timestamp"}
    assert note["type"] == "user_left"
    assert note["connectionId"] == b.id
    assert note["room"] == "r"
    assert list(server.hub.rooms.get("r").members) == [a.id]


async def test_the_last_member_leaving_deletes_the_room(server, connect) -> None:
    a = await connect(server)
    await a.request({"type": "join_room", "room": "solo"})
    assert server.hub.rooms.get("solo") is not None
    assert (await a.request({"type": "leave_room", "room": "solo"}))["type"] == "left"
    assert server.hub.rooms.get("solo") is None
    assert "solo" not in server.hub.rooms.rooms


async def test_leaving_a_room_one_is_not_in_is_not_in_room(server, connect) -> None:
    a = await connect(server)
    b = await connect(server)
    error = await a.request({"type": "leave_room", "room": "nowhere", "ref": 3})
    assert error["type"] == "error"
    assert error["code"] == "not_in_room"
    assert error["ref"] == 3
    await b.request({"type": "join_room", "room": "theirs"})
    assert (await a.request({"type": "leave_room", "room": "theirs"}))["code"] == "not_in_room"
    assert list(server.hub.rooms.get("theirs").members) == [b.id]


async def test_a_room_message_reaches_only_the_other_members(server, connect) -> None:
    sender = await connect(server)
    member = await connect(server)
    outsider = await connect(server)
    await sender.request({"type": "join_room", "room": "r"})
    await member.request({"type": "join_room", "room": "r"})
    await sender.recv()  # user_joined
    await sender.send({"type": "room_message", "room": "r", "data": {"k": 1}, "ref": "m"})
    message = await member.recv()
    assert set(message) == {"type", "room", "from", "data", "timestamp", "offset"}
    assert message["offset"] == 1
    assert message["type"] == "room_message"
    assert message["room"] == "r"
    assert message["from"] == sender.id
    assert message["data"] == {"k": 1}
    assert_recent_timestamp(message["timestamp"])
    await sender.expect_nothing(0.1)
    await outsider.expect_nothing(0.1)


async def test_a_room_message_from_a_non_member_is_not_in_room(server, connect) -> None:
    member = await connect(server)
    outsider = await connect(server)
    await member.request({"type": "join_room", "room": "r"})
    error = await outsider.request({"type": "room_message", "room": "r", "data": 1, "ref": 5})
    assert (error["type"], error["code"], error["ref"]) == ("error", "not_in_room", 5)
    error = await outsider.request({"type": "room_message", "room": "nope", "data": 1})
    assert error["code"] == "not_in_room"
    await member.expect_nothing(0.1)


@pytest.mark.parametrize(
    "room",
    ["", "x" * 65, "a\x00b", "tab\there", "new\nline", "del\x7f", "c1\x85"],
    ids=["empty", "65-chars", "nul", "tab", "newline", "del", "c1-control"],
)
@pytest.mark.parametrize("kind", ["join_room", "leave_room", "room_message"])
async def test_a_bad_room_name_is_bad_room(server, connect, room: str, kind: str) -> None:
    client = await connect(server)
    error = await client.request({"type": kind, "room": room, "data": 1, "ref": "q"})
    assert error["type"] == "error"
    assert error["code"] == "bad_room"
    assert error["ref"] == "q"
    assert len(server.hub.rooms) == 0


async def test_a_room_name_of_64_characters_even_non_ascii_is_accepted(server, connect) -> None:
    client = await connect(server)
    for name in ("x" * 64, "é" * 64, "a b", "☃"):
        assert (await client.request({"type": "join_room", "room": name}))["type"] == "joined"


@pytest.mark.parametrize("room", [5, None, ["r"], {"r": 1}, True])
async def test_a_room_that_is_not_a_string_is_bad_message(server, connect, room: Any) -> None:
    client = await connect(server)
    error = await client.request({"type": "join_room", "room": room})
    assert error["code"] == "bad_message"


async def test_the_33rd_room_is_too_many_rooms(server, connect) -> None:
    client = await connect(server)
    for i in range(32):
        assert (await client.request({"type": "join_room", "room": f"r{i}"}))["type"] == "joined"
    error = await client.request({"type": "join_room", "room": "r32", "ref": 33})
    assert (error["code"], error["ref"]) == ("too_many_rooms", 33)
    assert server.hub.rooms.get("r32") is None
    # Rejoining a room one is already in is not a 33rd room.
    assert (await client.request({"type": "join_room", "room": "r0"}))["type"] == "joined"
    # Leaving one makes room for another.
    await client.request({"type": "leave_room", "room": "r0"})
    assert (await client.request({"type": "join_room", "room": "r32"}))["type"] == "joined"


async def test_when_a_session_ends_the_other_members_of_its_rooms_get_user_left(
    server, connect
) -> None:
    stayer = await connect(server)
    leaver = await connect(server)
    for room in ("a", "b"):
        await stayer.request({"type": "join_room", "room": room})
        await leaver.request({"type": "join_room", "room": room})
        await stayer.recv()  # user_joined
    await leaver.request({"type": "join_room", "room": "alone"})
    leaver_id = leaver.id
    await leaver.close()
    notes = [await stayer.recv(), await stayer.recv()]
    assert sorted(n["room"] for n in notes) == ["a", "b"]
    for note in notes:
        assert note["type"] == "user_left"
        assert note["connectionId"] == leaver_id
        assert_recent_timestamp(note["timestamp"])
    assert server.hub.rooms.get("alone") is None
    assert list(server.hub.rooms.get("a").members) == [stayer.id]


# message errors keep the connection open


@pytest.mark.parametrize(
    "body",
    [b"{", b"not json", b"", b"{'a': 1}", b'{"type":"ping"} x', b'"\xff"', b'{"type":"\xc3("}'],
    ids=["truncated", "word", "empty", "single-quotes", "trailing", "bad-utf8", "bad-utf8-2"],
)
async def test_an_invalid_json_body_is_bad_json_and_the_connection_stays_open(
    server, connect, body: bytes
) -> None:
    client = await connect(server)
    await client.send_raw(raw_frame(body))
    error = await client.recv()
    assert error["type"] == "error"
    assert error["code"] == "bad_json"
    assert (await client.request({"type": "ping", "ref": 1}))["type"] == "pong"


@pytest.mark.parametrize(
    ("message", "why"),
    [
        ([1, 2], "array"),
        ("ping", "string"),
        (3, "number"),
        (None, "null"),
        ({}, "no type"),
        ({"data": 1}, "no type with data"),
        ({"type": 5}, "numeric type"),
        ({"type": None}, "null type"),
        ({"type": ["ping"]}, "list type"),
        ({"type": "broadcast"}, "broadcast without data"),
        ({"type": "private", "data": 1}, "private without target"),
        ({"type": "private", "target": "x"}, "private without data"),
        ({"type": "private", "target": 5, "data": 1}, "non-string target"),
        ({"type": "join_room"}, "join without room"),
        ({"type": "leave_room"}, "leave without room"),
        ({"type": "room_message", "room": "r"}, "room message without data"),
        ({"type": "room_message", "data": 1}, "room message without room"),
    ],
)
async def test_a_malformed_message_is_bad_message_and_the_connection_stays_open(
    server, connect, message: Any, why: str
) -> None:
    client = await connect(server)
    await client.send(message)
    error = await client.recv()
    assert error["type"] == "error", why
    assert error["code"] == "bad_message", why
    assert (await client.request({"type": "ping"}))["type"] == "pong"


async def test_a_bad_message_with_a_valid_ref_carries_the_ref(server, connect) -> None:
    client = await connect(server)
    error = await client.request({"type": "broadcast", "ref": "no-data"})
    assert (error["code"], error["ref"]) == ("bad_message", "no-data")
    error = await client.request({"type": 1, "ref": 2})
    assert (error["code"], error["ref"]) == ("bad_message", 2)


async def test_an_unknown_type_is_unknown_type_naming_the_type(server, connect) -> None:
    client = await connect(server)
    error = await client.request({"type": "dance", "ref": "d"})
    assert error == {
        "type": "error",
        "code": "unknown_type",
        "message": "Unknown message type: dance",
        "ref": "d",
    }
    error = await client.request({"type": ""})
    assert error == {"type": "error", "code": "unknown_type", "message": "Unknown message type: "}


async def test_a_ref_is_never_copied_into_messages_delivered_to_others(server, connect) -> None:
    a = await connect(server)
    b = await connect(server)
    await a.request({"type": "join_room", "room": "r", "ref": "j1"})
    await b.request({"type": "join_room", "room": "r", "ref": "j2"})
    received = [await a.recv()]  # user_joined
    await a.send({"type": "broadcast", "data": 1, "ref": "b"})
    await a.send({"type": "private", "target": b.id, "data": 1, "ref": "p"})
    await a.send({"type": "room_message", "room": "r", "data": 1, "ref": "m"})
    received += [await b.recv() for _ in range(3)]
    await b.request({"type": "leave_room", "room": "r", "ref": "l"})
    received.append(await a.recv())  # user_left
    assert [m["type"] for m in received] == [
        "user_joined",
        "broadcast",
        "private",
        "room_message",
        "user_left",
    ]
    assert all("ref" not in m for m in received)


async def test_json_nested_100000_levels_deep_is_bad_json_and_the_server_keeps_serving(
    server, connect
) -> None:
    client = await connect(server)
    other = await connect(server)
    await client.send_raw(raw_frame(b"[" * 100_000 + b"]" * 100_000))
    error = await client.recv(5)
    assert (error["type"], error["code"]) == ("error", "bad_json")
    await client.send_raw(raw_frame(b'{"a":' * 100_000 + b"1" + b"}" * 100_000))
    assert (await client.recv(5))["code"] == "bad_json"
    assert (await client.request({"type": "ping"}))["type"] == "pong"
    assert (await other.request({"type": "ping"}))["type"] == "pong"


# framing


async def test_frames_split_byte_by_byte_are_parsed(server, connect) -> None:
    client = await connect(server)
    data = frame({"type": "ping", "ref": "split"}) + frame({"type": "ping", "ref": 2})
    for i in range(len(data)):
        await client.send_raw(data[i : i + 1])
        await asyncio.sleep(0.002)
    assert (await client.recv())["ref"] == "split"
    assert (await client.recv())["ref"] == 2


async def test_many_frames_in_one_write_are_all_answered_in_order(server, connect) -> None:
    client = await connect(server)
    await client.send_raw(b"".join(frame({"type": "ping", "ref": i}) for i in range(500)))
    refs = [(await client.recv())["ref"] for _ in range(500)]
    assert refs == list(range(500))


async def test_a_header_in_one_read_and_the_body_in_many_is_parsed(server, connect) -> None:
    client = await connect(server)
    other = await connect(server)
    body = frame({"type": "broadcast", "data": "z" * 3000})
    header, rest = body.split(b"\n", 1)
    await client.send_raw(header + b"\n")
    await asyncio.sleep(0.02)
    for i in range(0, len(rest), 500):
        await client.send_raw(rest[i : i + 500])
        await asyncio.sleep(0.005)
    assert (await other.recv())["data"] == "z" * 3000


async def test_the_frame_length_counts_utf8_bytes_not_characters(server, connect) -> None:
    sender = await connect(server)
    other = await connect(server)
    body = '{"type":"broadcast","data":"ééé☃"}'.encode()
    await sender.send_raw(b"%d\n%s" % (len(body), body))
    assert (await other.recv())["data"] == "ééé☃"


async def test_leading_zeros_and_ten_digit_headers_are_valid(server, connect) -> None:
    client = await connect(server)
    body = b'{"type":"ping","ref":1}'
    await client.send_raw(b"%010d\n%s" % (len(body), body))
    assert (await client.recv())["ref"] == 1


@pytest.mark.parametrize(
    "header",
    [b"\n", b"12a\n", b"-5\n", b" 5\n", b"+5\n", b"5 \n", b"12345678901\n", b"x", b"00000000000"],
    ids=[
        "empty",
        "letter",
        "minus",
        "space",
        "plus",
        "trailing-space",
        "11-digits",
        "garbage",
        "11-digits-no-newline",
    ],
)
async def test_a_bad_header_is_bad_header_then_closing_then_close(
    server, connect, header: bytes
) -> None:
    client = await connect(server)
    client_id = client.id
    await client.send_raw(header)
    await expect_protocol_error(client, "bad_header")
    await eventually(lambda: client_id not in server.hub.sessions)
    assert server.hub.closed_log[-1].reason == "protocol_error"


async def test_frames_before_a_bad_header_in_the_same_read_are_still_answered(
    server, connect
) -> None:
    client = await connect(server)
    await client.send_raw(frame({"type": "ping", "ref": "first"}) + b"oops\n")
    assert (await client.recv())["ref"] == "first"
    await expect_protocol_error(client, "bad_header")


async def test_a_too_large_frame_is_refused_as_soon_as_its_header_arrives(
    start_server, connect
) -> None:
    runtime = await start_server(max_frame=1000)
    client = await connect(runtime)
    client_id = client.id
    await client.send_raw(b"1001\n")  # the body is never sent
    error = await client.recv()
    assert error["code"] == "frame_too_large"
    assert error["type"] == "error"
    assert await client.recv() == {"type": "closing", "reason": "protocol_error"}
    await client.expect_eof()
    await eventually(lambda: client_id not in runtime.hub.sessions)
    closed = runtime.hub.closed_log[-1]
    assert (closed.id, closed.reason) == (client_id, "frame_too_large")


async def test_a_frame_of_exactly_the_max_frame_size_is_accepted(start_server, connect) -> None:
    runtime = await start_server(max_frame=1000)
    sender = await connect(runtime)
    other = await connect(runtime)
    prefix, suffix = b'{"type":"broadcast","data":"', b'"}'
    body = prefix + b"y" * (1000 - len(prefix) - len(suffix)) + suffix
    await sender.send_raw(raw_frame(body))
    assert len((await other.recv())["data"]) == 1000 - len(prefix) - len(suffix)


async def test_a_framing_error_ends_only_that_connection(server, connect) -> None:
    bad = await connect(server)
    good = await connect(server)
    await bad.send_raw(b"zz\n")
    await expect_protocol_error(bad, "bad_header")
    assert (await good.request({"type": "ping"}))["type"] == "pong"
