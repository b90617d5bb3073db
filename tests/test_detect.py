"""The ``auto`` listener's protocol detection, PROTOCOL.md section 1."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from verb_console.protocols import binary, json, mux
from verb_console.protocols.detect import detect_protocol

FUZZ = settings(max_examples=200, deadline=None)


@pytest.mark.parametrize("first", b"0123456789")
def test_a_leading_ascii_digit_is_json(first: int) -> None:
    assert detect_protocol(bytes([first])) == "json"


def test_a_json_frame_is_detected_as_json() -> None:
    assert detect_protocol(json.encode({"type": "ping"})) == "json"


def test_two_zero_bytes_are_mux() -> None:
    assert detect_protocol(b"\x00\x00") == "mux"


def test_a_mux_control_frame_is_detected_as_mux() -> None:
    frame = mux.encode_control({"type": "stream_create", "streamId": 1, "streamType": "json"})
    assert detect_protocol(frame) == "mux"


@pytest.mark.parametrize("second", [0x01, 0x10, 0x20, 0xFF])
def test_a_zero_then_a_nonzero_byte_is_binary(second: int) -> None:
    assert detect_protocol(bytes([0, second])) == "binary"


@pytest.mark.parametrize(
    "frame_type",
    [binary.HEARTBEAT, binary.DATA, binary.FILE, binary.FILE_REPLY, binary.NOTICE, binary.ERROR],
)
def test_every_binary_frame_type_is_detected_as_binary(frame_type: int) -> None:
    assert detect_protocol(binary.encode_frame(frame_type, b"x")) == "binary"


@pytest.mark.parametrize("data", [b"hello\n", b"\n", b"\r\n", b" 1", b"/", b":", b"\x01", b"\xff"])
def test_anything_else_is_echo(data: bytes) -> None:
    assert detect_protocol(data) == "echo"


def test_no_bytes_yet_needs_more() -> None:
    assert detect_protocol(b"") is None


def test_a_lone_zero_byte_needs_more() -> None:
    assert detect_protocol(b"\x00") is None


@FUZZ
@given(data=st.binary(max_size=16), more=st.binary(max_size=16))
def test_the_answer_depends_on_the_first_two_bytes_only_and_never_changes(
    data: bytes, more: bytes
) -> None:
    found = detect_protocol(data)
    assert found == detect_protocol(data[:2])
    if found is None:
        assert data in (b"", b"\x00")
    else:
        assert found in {"json", "binary", "mux", "echo"}
        assert detect_protocol(data + more) == found
