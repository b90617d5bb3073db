"""The ``mux`` codec of PROTOCOL.md section 4."""

from __future__ import annotations

from itertools import pairwise
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from verb_console.protocols.errors import ProtocolError
from verb_console.protocols.mux import (
    HEADER_SIZE,
    MuxDecoder,
    MuxFrame,
    encode_chunked,
    encode_control,
    encode_frame,
    parse_control,
    validate_control,
)

FUZZ = settings(max_examples=200, deadline=None)

frames_st = st.lists(
    st.builds(MuxFrame, stream_id=st.integers(0, 0xFFFFFFFF), payload=st.binary(max_size=64)),
    max_size=8,
)
json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=10,
)


def encode_all(frames: list[MuxFrame]) -> bytes:
    return b"".join(encode_frame(f.stream_id, f.payload) for f in frames)


def split_at(data: bytes, cuts: list[int]) -> list[bytes]:
    bounds = [0, *sorted(cuts), len(data)]
    return [data[a:b] for a, b in pairwise(bounds)]


def feed_all(decoder: MuxDecoder, pieces: list[bytes]) -> list[MuxFrame]:
    out: list[MuxFrame] = []
    for piece in pieces:
        out += decoder.feed(piece)
    return out


def control_error(payload: bytes) -> str:
    with pytest.raises(ProtocolError) as info:
        validate_control(parse_control(payload))
    return info.value.code


# Encoding, pinned to the byte.


def test_a_data_frame_is_stream_id_then_length_then_payload() -> None:
    assert encode_frame(3, b"hello") == b"\x00\x00\x00\x03\x00\x00\x00\x05hello"


def test_stream_ids_use_all_four_bytes_big_endian() -> None:
    assert encode_frame(0x01020304, b"") == b"\x01\x02\x03\x04\x00\x00\x00\x00"


def test_a_control_frame_is_one_compact_json_object_on_stream_zero() -> None:
    assert encode_control({"type": "ping"}) == b"\x00\x00\x00\x00\x00\x00\x00\x0f" + (
        b'{"type":"ping"}'
    )


@pytest.mark.parametrize("stream_id", [-1, 2**32])
def test_a_stream_id_outside_u32_cannot_be_encoded(stream_id: int) -> None:
    with pytest.raises(ValueError):
        encode_frame(stream_id, b"")
    with pytest.raises(ValueError):
        encode_chunked(stream_id, b"x")


def test_chunked_data_is_cut_into_frames_of_at_most_max_payload_bytes() -> None:
    assert encode_chunked(5, b"abcde", max_payload=2) == [
        b"\x00\x00\x00\x05\x00\x00\x00\x02ab",
        b"\x00\x00\x00\x05\x00\x00\x00\x02cd",
        b"\x00\x00\x00\x05\x00\x00\x00\x01e",
    ]


def test_chunked_data_that_fits_is_one_frame() -> None:
    assert encode_chunked(1, b"abcd", max_payload=4) == [encode_frame(1, b"abcd")]


def test_chunking_nothing_gives_no_frames() -> None:
    assert encode_chunked(1, b"") == []


def test_by_default_no_chunk_exceeds_64_kib() -> None:
    frames = encode_chunked(7, b"z" * (64 * 1024 * 2 + 1))
    assert [len(f) - HEADER_SIZE for f in frames] == [65536, 65536, 1]


def test_a_max_payload_below_one_is_refused() -> None:
    with pytest.raises(ValueError):
        encode_chunked(1, b"x", max_payload=0)


# Decoding.


def test_one_whole_frame_decodes_to_its_stream_and_payload() -> None:
    decoder = MuxDecoder()
    assert decoder.feed(b"\x00\x00\x00\x09\x00\x00\x00\x02hi") == [MuxFrame(9, b"hi")]
    assert decoder.buffered == 0
    assert decoder.error is None


def test_many_frames_in_one_read_all_come_out_in_order() -> None:
    frames = [MuxFrame(0, b'{"type":"ping"}'), MuxFrame(1, b""), MuxFrame(3, b"x")]
    assert MuxDecoder().feed(encode_all(frames)) == frames


def test_a_partial_frame_waits_for_the_rest() -> None:
    decoder = MuxDecoder()
    assert decoder.feed(b"\x00\x00\x00\x01\x00\x00") == []
    assert decoder.buffered == 6
    assert decoder.feed(b"\x00\x03ab") == []
    assert decoder.feed(b"c") == [MuxFrame(1, b"abc")]
    assert decoder.buffered == 0


def test_a_length_equal_to_the_limit_is_accepted() -> None:
    assert MuxDecoder(max_frame=3).feed(encode_frame(1, b"abc")) == [MuxFrame(1, b"abc")]


def test_a_length_above_the_limit_fails_before_the_body_arrives() -> None:
    decoder = MuxDecoder(max_frame=3)
    assert decoder.feed(b"\x00\x00\x00\x01\x00\x00\x00\x04") == []
    assert decoder.error is not None
    assert decoder.error.code == "frame_too_large"
    assert decoder.buffered == 0


def test_frames_before_an_oversized_one_are_still_returned() -> None:
    decoder = MuxDecoder(max_frame=3)
    data = encode_frame(1, b"ok") + encode_frame(1, b"toolong") + encode_frame(1, b"ok")
    assert decoder.feed(data) == [MuxFrame(1, b"ok")]
    assert decoder.error is not None
    assert decoder.feed(encode_frame(1, b"ok")) == []


def test_chunked_output_decodes_back_to_the_original_bytes() -> None:
    data = bytes(range(256)) * 1000
    frames = MuxDecoder().feed(b"".join(encode_chunked(11, data, max_payload=1000)))
    assert {f.stream_id for f in frames} == {11}
    assert b"".join(f.payload for f in frames) == data


# Control messages.


def test_a_control_object_with_a_string_type_parses_to_a_dict() -> None:
    assert parse_control(b'{"type":"ping","x":1}') == {"type": "ping", "x": 1}


@pytest.mark.parametrize(
    "payload", [b"", b"{", b"not json", b'{"type":"ping"} x', b'{"type":"\xff"}']
)
def test_a_control_payload_that_is_not_json_is_bad_json(payload: bytes) -> None:
    with pytest.raises(ProtocolError) as info:
        parse_control(payload)
    assert info.value.code == "bad_json"


@pytest.mark.parametrize("payload", [b"[]", b'["ping"]', b'"ping"', b"1", b"null", b"true"])
def test_valid_json_that_is_not_an_object_is_bad_json(payload: bytes) -> None:
    with pytest.raises(ProtocolError) as info:
        parse_control(payload)
    assert info.value.code == "bad_json"


@pytest.mark.parametrize("payload", [b"{}", b'{"type":1}', b'{"type":null}', b'{"Type":"ping"}'])
def test_an_object_without_a_string_type_is_bad_message(payload: bytes) -> None:
    with pytest.raises(ProtocolError) as info:
        parse_control(payload)
    assert info.value.code == "bad_message"


@pytest.mark.parametrize(
    "msg",
    [
        {"type": "ping"},
        {"type": "ping", "ref": 1},
        {"type": "stream_create", "streamId": 1, "streamType": "json"},
        {"type": "stream_create", "streamId": 1, "streamType": "echo", "metadata": {}},
        {"type": "stream_create", "streamId": 2**32 - 1, "streamType": "x", "metadata": {"a": 1}},
        {"type": "stream_close", "streamId": 1},
    ],
)
def test_well_formed_control_messages_pass_unchanged(msg: dict[str, Any]) -> None:
    assert validate_control(msg) is msg


def test_stream_rules_are_left_to_the_session() -> None:
    # Id 0, even ids and unknown stream types are bad_stream / unknown_stream_type,
    # which depend on session state, not on the message's shape.
    assert validate_control({"type": "stream_create", "streamId": 0, "streamType": "nope"})
    assert validate_control({"type": "stream_close", "streamId": 2})


@pytest.mark.parametrize(
    "payload",
    [
        b'{"type":"stream_create","streamType":"json"}',
        b'{"type":"stream_create","streamId":null,"streamType":"json"}',
        b'{"type":"stream_create","streamId":"1","streamType":"json"}',
        b'{"type":"stream_create","streamId":1.0,"streamType":"json"}',
        b'{"type":"stream_create","streamId":true,"streamType":"json"}',
        b'{"type":"stream_create","streamId":false,"streamType":"json"}',
        b'{"type":"stream_create","streamId":-1,"streamType":"json"}',
        b'{"type":"stream_create","streamId":4294967296,"streamType":"json"}',
        b'{"type":"stream_create","streamId":1}',
        b'{"type":"stream_create","streamId":1,"streamType":7}',
        b'{"type":"stream_create","streamId":1,"streamType":"json","metadata":null}',
        b'{"type":"stream_create","streamId":1,"streamType":"json","metadata":[]}',
        b'{"type":"stream_close"}',
        b'{"type":"stream_close","streamId":true}',
        b'{"type":"stream_close","streamId":"3"}',
    ],
)
def test_a_missing_or_wrong_typed_field_is_bad_message(payload: bytes) -> None:
    assert control_error(payload) == "bad_message"


def test_an_unknown_control_type_is_unknown_type_with_the_documented_message() -> None:
    with pytest.raises(ProtocolError) as info:
        validate_control(parse_control(b'{"type":"dance"}'))
    assert info.value.code == "unknown_type"
    assert info.value.message == "Unknown message type: dance"


@pytest.mark.parametrize("kind", ["stream_created", "stream_closed", "pong", "error"])
def test_server_only_messages_from_a_client_are_unknown_type(kind: str) -> None:
    assert control_error(orjson.dumps({"type": kind, "streamId": 1})) == "unknown_type"


# Properties.


@FUZZ
@given(frames=frames_st, data=st.data())
def test_any_split_of_valid_input_gives_the_same_frames_as_one_read(
    frames: list[MuxFrame], data: st.DataObject
) -> None:
    blob = encode_all(frames)
    cuts = data.draw(st.lists(st.integers(0, len(blob)), max_size=20))
    assert MuxDecoder().feed(blob) == frames
    decoder = MuxDecoder()
    assert feed_all(decoder, split_at(blob, cuts)) == frames
    assert decoder.buffered == 0
    assert decoder.error is None


@FUZZ
@given(frames=frames_st)
def test_valid_input_fed_byte_by_byte_gives_the_same_frames(frames: list[MuxFrame]) -> None:
    blob = encode_all(frames)
    assert feed_all(MuxDecoder(), [blob[i : i + 1] for i in range(len(blob))]) == frames


@FUZZ
@given(
    stream_id=st.integers(0, 0xFFFFFFFF),
    data=st.binary(max_size=200),
    max_payload=st.integers(1, 70),
)
def test_chunking_keeps_every_byte_in_order_within_the_limit(
    stream_id: int, data: bytes, max_payload: int
) -> None:
    frames = MuxDecoder().feed(b"".join(encode_chunked(stream_id, data, max_payload)))
    assert all(f.stream_id == stream_id for f in frames)
    assert all(0 < len(f.payload) <= max_payload for f in frames)
    assert b"".join(f.payload for f in frames) == data


@FUZZ
@given(blob=st.binary(max_size=300), data=st.data())
def test_random_bytes_give_only_frames_or_frame_too_large(blob: bytes, data: st.DataObject) -> None:
    max_frame = 32
    cuts = data.draw(st.lists(st.integers(0, len(blob)), max_size=20))
    decoder = MuxDecoder(max_frame=max_frame)
    out: list[MuxFrame] = []
    for piece in split_at(blob, cuts):
        out += decoder.feed(piece)
        assert decoder.buffered < HEADER_SIZE + max_frame
    assert all(len(f.payload) <= max_frame for f in out)
    consumed = encode_all(out)
    assert blob.startswith(consumed)
    if decoder.error is not None:
        assert isinstance(decoder.error, ProtocolError)
        assert decoder.error.code == "frame_too_large"
        assert decoder.buffered == 0
    else:
        assert decoder.buffered == len(blob) - len(consumed)


@FUZZ
@given(payload=st.binary(max_size=64) | json_values.map(orjson.dumps))
def test_any_control_payload_gives_a_message_or_a_control_error(payload: bytes) -> None:
    try:
        msg = validate_control(parse_control(payload))
    except ProtocolError as exc:
        assert exc.code in {"bad_json", "bad_message", "unknown_type"}
    else:
        assert msg["type"] in {"ping", "stream_create", "stream_close"}


@FUZZ
@given(
    kind=st.sampled_from(["ping", "stream_create", "stream_close", "other"]),
    fields=st.dictionaries(
        st.sampled_from(["streamId", "streamType", "metadata"]),
        st.integers(-1, 2**32) | st.text(max_size=4) | st.just({}) | json_values,
    ),
)
def test_any_object_with_a_known_type_validates_or_is_bad_message(
    kind: str, fields: dict[str, Any]
) -> None:
    msg = {"type": kind, **fields}
    try:
        validate_control(parse_control(orjson.dumps(msg)))
    except ProtocolError as exc:
        assert exc.code == ("unknown_type" if kind == "other" else "bad_message")
    else:
        sid = msg.get("streamId")
        if kind != "ping":
            assert type(sid) is int
            assert 0 <= sid < 2**32


def _per_stream_bytes(runs: list[tuple[int, bytes, int]]) -> dict[int, bytes]:
    out: dict[int, bytes] = {}
    for sid, payload, _ in runs:
        out[sid] = out.get(sid, b"") + payload
    return out


@FUZZ
@given(frames=frames_st, data=st.data())
def test_runs_carry_every_stream_s_bytes_and_frame_count_in_order(
    frames: list[MuxFrame], data: st.DataObject
) -> None:
    blob = encode_all(frames)
    cuts = data.draw(st.lists(st.integers(0, len(blob)), max_size=20))
    decoder = MuxDecoder()
    runs: list[tuple[int, bytes, int]] = []
    for piece in split_at(blob, cuts):
        runs += decoder.feed_runs(piece)
    expected: dict[int, bytes] = {}
    for f in frames:
        expected[f.stream_id] = expected.get(f.stream_id, b"") + f.payload
    assert _per_stream_bytes(runs) == {k: v for k, v in expected.items()}
    assert sum(count for _, _, count in runs) == len(frames)
    # Control frames are never joined: each is one JSON object.
    assert all(count == 1 for sid, _, count in runs if sid == 0)


def test_consecutive_frames_of_one_stream_come_as_one_run() -> None:
    blob = encode_all(
        [MuxFrame(1, b"ab"), MuxFrame(1, b"cd"), MuxFrame(3, b"x"), MuxFrame(1, b"e")]
    )
    assert MuxDecoder().feed_runs(blob) == [(1, b"abcd", 2), (3, b"x", 1), (1, b"e", 1)]
