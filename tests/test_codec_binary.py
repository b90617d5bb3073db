"""The ``binary`` codec of PROTOCOL.md section 3."""

from __future__ import annotations

from itertools import pairwise

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from verb_console.protocols.binary import (
    DATA,
    ERROR,
    FILE,
    FILE_ABORT,
    FILE_CHUNK,
    FILE_END,
    FILE_REPLY,
    FILE_START,
    HEADER_SIZE,
    HEARTBEAT,
    HEARTBEAT_ACK,
    NOTICE,
    BinaryDecoder,
    BinaryFrame,
    encode_frame,
    encode_json,
)
from verb_console.protocols.errors import ProtocolError

FUZZ = settings(max_examples=200, deadline=None)

frames_st = st.lists(
    st.builds(
        BinaryFrame,
        type=st.integers(0, 0xFFFF),
        flags=st.integers(0, 0xFFFF),
        payload=st.binary(max_size=64),
    ),
    max_size=8,
)


def encode_all(frames: list[BinaryFrame]) -> bytes:
    return b"".join(encode_frame(f.type, f.payload, f.flags) for f in frames)


def split_at(data: bytes, cuts: list[int]) -> list[bytes]:
    bounds = [0, *sorted(cuts), len(data)]
    return [data[a:b] for a, b in pairwise(bounds)]


def feed_all(decoder: BinaryDecoder, pieces: list[bytes]) -> list[BinaryFrame]:
    out: list[BinaryFrame] = []
    for piece in pieces:
        out += decoder.feed(piece)
    return out


# Encoding, pinned to the byte.


def test_the_protocol_constants_have_their_documented_values() -> None:
    assert (HEARTBEAT, HEARTBEAT_ACK, DATA, FILE) == (0x0001, 0x0002, 0x0010, 0x0020)
    assert (FILE_REPLY, NOTICE, ERROR) == (0x0021, 0x0030, 0x00FF)
    assert (FILE_START, FILE_CHUNK, FILE_END, FILE_ABORT) == (1, 2, 4, 8)
    assert HEADER_SIZE == 8


def test_a_heartbeat_ack_is_a_big_endian_header_then_pong() -> None:
    assert encode_frame(0x0002, b"pong") == b"\x00\x02\x00\x00\x00\x04\x00\x00pong"


def test_a_heartbeat_with_no_payload_is_just_the_header() -> None:
    assert encode_frame(HEARTBEAT) == b"\x00\x01\x00\x00\x00\x00\x00\x00"


def test_flags_go_in_the_last_two_header_bytes() -> None:
    assert encode_frame(FILE, b"ab", FILE_CHUNK) == b"\x00\x20\x00\x00\x00\x02\x00\x02ab"
    assert encode_frame(0xABCD, b"", 0x1234) == b"\xab\xcd\x00\x00\x00\x00\x12\x34"


def test_the_length_is_a_four_byte_big_endian_count() -> None:
    frame = encode_frame(DATA, b"x" * 0x010203)
    assert frame[:8] == b"\x00\x10\x00\x01\x02\x03\x00\x00"
    assert len(frame) == 8 + 0x010203


def test_a_json_frame_carries_the_compact_serialization() -> None:
    assert (
        encode_json(ERROR, {"code": "unknown_type", "message": "m"})
        == b"\x00\xff\x00\x00\x00\x25\x00\x00" + b'{"code":"unknown_type","message":"m"}'
    )


def test_a_json_frame_has_no_flags_and_decodes_back_to_the_object() -> None:
    obj = {"type": "file_start_ack", "transferId": "t\u00e9", "status": "ready"}
    [frame] = BinaryDecoder().feed(encode_json(FILE_REPLY, obj))
    assert frame.type == FILE_REPLY
    assert frame.flags == 0
    assert orjson.loads(frame.payload) == obj


@pytest.mark.parametrize(("type_", "flags"), [(-1, 0), (0x10000, 0), (DATA, -1), (DATA, 0x10000)])
def test_a_type_or_flags_outside_u16_cannot_be_encoded(type_: int, flags: int) -> None:
    with pytest.raises(ValueError):
        encode_frame(type_, b"", flags)


# Decoding.


def test_one_whole_frame_decodes_to_its_type_flags_and_payload() -> None:
    decoder = BinaryDecoder()
    assert decoder.feed(b"\x00\x10\x00\x00\x00\x03\x00\x07abc") == [BinaryFrame(DATA, 7, b"abc")]
    assert decoder.buffered == 0
    assert decoder.error is None


def test_the_payload_comes_back_as_bytes() -> None:
    [frame] = BinaryDecoder().feed(bytearray(encode_frame(DATA, b"abc")))
    assert type(frame.payload) is bytes


def test_many_frames_in_one_read_all_come_out_in_order() -> None:
    frames = [BinaryFrame(HEARTBEAT, 0, b""), BinaryFrame(DATA, 1, b"x"), BinaryFrame(DATA, 0, b"")]
    assert BinaryDecoder().feed(encode_all(frames)) == frames


def test_a_partial_header_waits_for_the_rest() -> None:
    decoder = BinaryDecoder()
    assert decoder.feed(b"\x00\x10\x00\x00\x00") == []
    assert decoder.buffered == 5
    assert decoder.feed(b"\x02\x00\x00h") == []
    assert decoder.feed(b"i") == [BinaryFrame(DATA, 0, b"hi")]
    assert decoder.buffered == 0


def test_a_frame_fed_byte_by_byte_comes_out_once_at_its_last_byte() -> None:
    data = encode_frame(FILE, b"chunk", FILE_CHUNK)
    decoder = BinaryDecoder()
    results = [decoder.feed(data[i : i + 1]) for i in range(len(data))]
    assert results[:-1] == [[]] * (len(data) - 1)
    assert results[-1] == [BinaryFrame(FILE, FILE_CHUNK, b"chunk")]


def test_an_unknown_type_is_returned_not_rejected() -> None:
    decoder = BinaryDecoder()
    assert decoder.feed(encode_frame(0x7777, b"?")) == [BinaryFrame(0x7777, 0, b"?")]
    assert decoder.error is None


def test_a_length_equal_to_the_limit_is_accepted() -> None:
    decoder = BinaryDecoder(max_frame=4)
    assert decoder.feed(encode_frame(DATA, b"abcd")) == [BinaryFrame(DATA, 0, b"abcd")]
    assert decoder.error is None


def test_a_length_above_the_limit_fails_before_the_body_arrives() -> None:
    decoder = BinaryDecoder(max_frame=4)
    assert decoder.feed(b"\x00\x10\x00\x00\x00\x05\x00\x00") == []
    assert isinstance(decoder.error, ProtocolError)
    assert decoder.error.code == "frame_too_large"
    assert decoder.buffered == 0


def test_a_huge_declared_length_is_never_buffered() -> None:
    decoder = BinaryDecoder()
    decoder.feed(b"\x00\x10\xff\xff\xff\xff\x00\x00" + b"x" * 1000)
    assert decoder.error is not None
    assert decoder.error.code == "frame_too_large"
    assert decoder.buffered == 0


def test_frames_before_an_oversized_one_are_still_returned() -> None:
    decoder = BinaryDecoder(max_frame=4)
    data = encode_frame(HEARTBEAT) + encode_frame(DATA, b"toolong") + encode_frame(HEARTBEAT)
    assert decoder.feed(data) == [BinaryFrame(HEARTBEAT, 0, b"")]
    assert decoder.error is not None
    assert decoder.error.code == "frame_too_large"


def test_after_an_error_every_feed_returns_nothing() -> None:
    decoder = BinaryDecoder(max_frame=1)
    decoder.feed(encode_frame(DATA, b"xx"))
    error = decoder.error
    assert decoder.feed(encode_frame(HEARTBEAT)) == []
    assert decoder.error is error
    assert decoder.buffered == 0


def test_a_one_mebibyte_frame_in_64_kib_reads_completes_on_the_last_read() -> None:
    payload = bytes(range(256)) * 4096
    data = encode_frame(FILE, payload, FILE_CHUNK) + encode_frame(HEARTBEAT)
    decoder = BinaryDecoder()
    step = 64 * 1024
    out: list[BinaryFrame] = []
    for i in range(0, len(data), step):
        got = decoder.feed(data[i : i + step])
        out += got
        # Nothing is held beyond the one frame in progress.
        assert decoder.buffered <= HEADER_SIZE + len(payload)
    assert out == [BinaryFrame(FILE, FILE_CHUNK, payload), BinaryFrame(HEARTBEAT, 0, b"")]
    assert decoder.buffered == 0


# Properties.


@FUZZ
@given(frames=frames_st, data=st.data())
def test_any_split_of_valid_input_gives_the_same_frames_as_one_read(
    frames: list[BinaryFrame], data: st.DataObject
) -> None:
    blob = encode_all(frames)
    cuts = data.draw(st.lists(st.integers(0, len(blob)), max_size=20))
    assert BinaryDecoder().feed(blob) == frames
    decoder = BinaryDecoder()
    assert feed_all(decoder, split_at(blob, cuts)) == frames
    assert decoder.buffered == 0
    assert decoder.error is None


@FUZZ
@given(frames=frames_st)
def test_valid_input_fed_byte_by_byte_gives_the_same_frames(frames: list[BinaryFrame]) -> None:
    blob = encode_all(frames)
    decoder = BinaryDecoder()
    assert feed_all(decoder, [blob[i : i + 1] for i in range(len(blob))]) == frames


@FUZZ
@given(blob=st.binary(max_size=300), data=st.data())
def test_random_bytes_give_only_frames_or_frame_too_large(blob: bytes, data: st.DataObject) -> None:
    max_frame = 32
    cuts = data.draw(st.lists(st.integers(0, len(blob)), max_size=20))
    decoder = BinaryDecoder(max_frame=max_frame)
    out: list[BinaryFrame] = []
    for piece in split_at(blob, cuts):
        out += decoder.feed(piece)
        assert decoder.buffered < HEADER_SIZE + max_frame
    assert all(len(f.payload) <= max_frame for f in out)
    # The frames returned are exactly a prefix of what was sent.
    consumed = encode_all(out)
    assert blob.startswith(consumed)
    if decoder.error is not None:
        assert isinstance(decoder.error, ProtocolError)
        assert decoder.error.code == "frame_too_large"
        assert decoder.buffered == 0
    else:
        assert decoder.buffered == len(blob) - len(consumed)
