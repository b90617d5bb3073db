"""The one error family: what an error carries, how it is framed, and how a codec reports one."""

from __future__ import annotations

import pytest

from verb_console import client
from verb_console.hub.uploads import TransferError
from verb_console.protocols import ProtocolError, ServerError
from verb_console.protocols import binary as b
from verb_console.protocols import json as j
from verb_console.protocols import mux as m
from verb_console.protocols.echo import EchoDecoder


def test_an_error_message_puts_type_code_message_ref_then_the_extras_in_that_order() -> None:
    err = ProtocolError("unknown_transfer", "Transfer not found", transferId="t1")
    assert list(err.as_message(ref=7)) == ["type", "code", "message", "ref", "transferId"]
    assert err.as_message() == {
        "type": "error",
        "code": "unknown_transfer",
        "message": "Transfer not found",
        "transferId": "t1",
    }


def test_a_json_error_frame_is_byte_for_byte_the_protocol_s() -> None:
    err = ProtocolError("not_in_room", "Not a member of room r")
    body = b'{"type":"error","code":"not_in_room","message":"Not a member of room r","ref":"a"}'
    assert j.encode_error(err, "a") == b"%d\n%s" % (len(body), body)


def test_a_binary_error_frame_carries_only_code_and_message() -> None:
    err = ProtocolError("unknown_type", "Unknown message type: 0x7777", transferId="ignored")
    payload = b'{"code":"unknown_type","message":"Unknown message type: 0x7777"}'
    assert b.encode_error(err) == b.encode_frame(b.ERROR, payload)


def test_a_mux_control_error_names_its_stream_last() -> None:
    err = ProtocolError("unknown_stream", "Stream 5 is not open", streamId=5)
    assert err.stream_id == 5
    assert m.encode_control(err.as_message()) == m.encode_frame(
        0, b'{"type":"error","code":"unknown_stream","message":"Stream 5 is not open","streamId":5}'
    )


def test_an_upload_error_is_a_protocol_error_whose_transfer_is_an_extra() -> None:
    err = TransferError("file_exists", transfer_id="t2")
    assert isinstance(err, ProtocolError)
    assert (err.code, err.message, err.transfer_id) == ("file_exists", "File already exists", "t2")
    assert err.extra == {"transferId": "t2"}
    err.transfer_id = None
    assert err.extra == {} and err.transfer_id is None
    assert (
        repr(TransferError("aborted", "x", "t")) == "TransferError('aborted', 'x', transferId='t')"
    )


def test_the_clients_raise_one_server_error_built_from_the_reply() -> None:
    reply = {"type": "error", "code": "bad_stream", "message": "no", "streamId": 3, "ref": 1}
    err = ServerError.from_reply(reply)
    assert isinstance(err, ProtocolError)
    assert (err.code, err.message, err.stream_id, err.reply) == ("bad_stream", "no", 3, reply)
    assert err.extra == {"streamId": 3, "ref": 1}
    assert str(err) == "bad_stream: no"
    assert client.ServerError is ServerError
    assert client.MuxError is ServerError


@pytest.mark.parametrize(
    ("decoder", "good", "bad", "frames", "code"),
    [
        (j.JsonDecoder(4), b"2\nab", b"5\nhello", [b"ab"], "frame_too_large"),
        (j.JsonDecoder(), b"2\nab", b"x\n", [b"ab"], "bad_header"),
        (b.BinaryDecoder(4), b.encode_frame(b.DATA, b"ab"), b.encode_frame(b.DATA, b"hello"),
         [b.BinaryFrame(b.DATA, 0, b"ab")], "frame_too_large"),
        (m.MuxDecoder(4), m.encode_frame(1, b"ab"), m.encode_frame(1, b"hello"),
         [m.MuxFrame(1, b"ab")], "frame_too_large"),
        (EchoDecoder(4), b"ab\n", b"hello\n", [b"ab"], "line_too_long"),
    ],
)  # fmt: skip
def test_a_codec_reports_a_framing_error_as_the_event_after_the_frames_before_it(
    decoder: object, good: bytes, bad: bytes, frames: list[object], code: str
) -> None:
    events = decoder.receive(good + bad + good)  # type: ignore[attr-defined]
    assert events[:-1] == frames
    assert isinstance(events[-1], ProtocolError) and events[-1].code == code
    assert decoder.error is events[-1]  # type: ignore[attr-defined]
    # Reported once: the stream cannot be trusted past it.
    assert decoder.receive(good) == []  # type: ignore[attr-defined]
    assert decoder.feed(good) == []  # type: ignore[attr-defined]


def test_mux_runs_end_with_the_framing_error() -> None:
    decoder = m.MuxDecoder(4)
    data = m.encode_frame(1, b"ab") + m.encode_frame(1, b"cd") + m.encode_frame(3, b"hello")
    runs = decoder.feed_runs(data)
    assert runs[:-1] == [(1, b"abcd", 2)]
    assert isinstance(runs[-1], ProtocolError) and runs[-1].code == "frame_too_large"
    assert decoder.feed_runs(m.encode_frame(1, b"ab")) == []


def test_feed_gives_the_frames_alone_and_keeps_the_error_aside() -> None:
    decoder = j.JsonDecoder(4)
    assert decoder.feed(b"2\nab5\nhello") == [b"ab"]
    assert decoder.error is not None and decoder.error.code == "frame_too_large"
