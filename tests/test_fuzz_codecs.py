"""Fuzzing the codecs and whole sessions with hostile input.

The codec tests (test_codec_*.py) check each decoder on its own terms; here
every decoder is compared with a one-shot reference parser on adversarial
streams cut at random points, and then whole sessions of every protocol (the
real hub, session classes and upload store, on in-memory connections) are fed
random messages and random bytes. The only outcomes allowed are replies in the
session's own framing and the protocol's own errors: no exception escapes a
session, buffered input stays under the frame limit, and once the client is
gone nothing of it is left in the hub, the upload store or the upload
directory.
"""

from __future__ import annotations

import asyncio
import base64
import itertools
import json
import os
import shutil
import struct
import tempfile
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from helpers import FrameSplitter
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_hub_model import MemoryOutlet, split_mux

from verb_console.hub import Hub
from verb_console.hub.detect_session import DetectingSession
from verb_console.hub.uploads import UploadStore
from verb_console.protocols.binary import BinaryDecoder
from verb_console.protocols.detect import detect_protocol
from verb_console.protocols.echo import EchoDecoder
from verb_console.protocols.errors import ProtocolError
from verb_console.protocols.json import MAX_HEADER_DIGITS, JsonDecoder
from verb_console.protocols.mux import MuxDecoder
from verb_console.settings import Settings

FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
SESSION_FUZZ = settings(
    max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)

MAX_FRAME = 64
MAX_LINE = 32


def split_at(blob: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({0, len(blob), *cuts})
    return [blob[a:b] for a, b in itertools.pairwise(points)]


def cut(blob: bytes) -> st.SearchStrategy[list[bytes]]:
    return st.lists(st.integers(0, len(blob)), max_size=24).map(lambda c: split_at(blob, c))


# --------------------------------------------------------------- reference parsers


def reference_json(blob: bytes, max_frame: int) -> tuple[list[bytes], str | None, int]:
    """Bodies, the error code (or None) and the bytes a decoder holds, in one pass."""
    out: list[bytes] = []
    off = 0
    while True:
        nl = blob.find(b"\n", off)
        header = blob[off:] if nl < 0 else blob[off:nl]
        if nl < 0:
            if len(header) > MAX_HEADER_DIGITS or (header and not header.isdigit()):
                return out, "bad_header", 0
            return out, None, len(blob) - off
        if not header or len(header) > MAX_HEADER_DIGITS or not header.isdigit():
            return out, "bad_header", 0
        need = int(header)
        if need > max_frame:
            return out, "frame_too_large", 0
        if nl + 1 + need > len(blob):
            # The header is parsed and dropped; only the body so far is held.
            return out, None, len(blob) - nl - 1
        out.append(blob[nl + 1 : nl + 1 + need])
        off = nl + 1 + need


def reference_fixed(
    blob: bytes, fmt: str, max_frame: int
) -> tuple[list[tuple[int, ...]], str | None, int]:
    """binary (``>HIH``) or mux (``>II``) frames: (header fields..., payload)."""
    header = struct.Struct(fmt)
    out: list[tuple[Any, ...]] = []
    off = 0
    while len(blob) - off >= header.size:
        fields = header.unpack_from(blob, off)
        need = fields[1]  # the length is the second field of both
        if need > max_frame:
            return out, "frame_too_large", 0
        end = off + header.size + need
        if end > len(blob):
            # The header is parsed and dropped; only the payload so far is held.
            return out, None, len(blob) - off - header.size
        out.append((*fields, blob[off + header.size : end]))
        off = end
    return out, None, len(blob) - off


# --------------------------------------------------------------- codec strategies

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner),
    max_leaves=6,
)

# Pieces of a json-framed stream: good frames, frames at and over the limit,
# headers of every bad kind, and raw bytes.
json_pieces = st.one_of(
    st.binary(max_size=MAX_FRAME).map(lambda b: b"%d\n%s" % (len(b), b)),
    st.binary(min_size=MAX_FRAME, max_size=MAX_FRAME).map(lambda b: b"%d\n%s" % (len(b), b)),
    st.integers(MAX_FRAME + 1, 10**10 - 1).map(lambda n: b"%d\n" % n),
    st.integers(0, 20).map(lambda n: b"0" * (MAX_HEADER_DIGITS - 2) + b"%02d\n" % n),
    st.sampled_from([b"\n", b"12345678901\n", b"-1\n", b"+1\n", b" 1\n", b"1 \n", b"\xd9\xa1\n"]),
    st.binary(max_size=16),
)
fixed_pieces = st.one_of(
    st.binary(max_size=MAX_FRAME).flatmap(
        lambda p: st.integers(0, 0xFFFF).map(lambda t: struct.pack(">HIH", t, len(p), 0) + p)
    ),
    st.sampled_from([0xFFFFFFFF, MAX_FRAME + 1, MAX_FRAME, 0x80000000]).map(
        lambda n: struct.pack(">HIH", 0x10, n, 0)
    ),
    st.binary(max_size=12),
)


@FUZZ
@given(pieces=st.lists(json_pieces, max_size=8), data=st.data())
def test_the_json_decoder_agrees_with_a_one_shot_parse_however_the_stream_is_cut(
    pieces: list[bytes], data: st.DataObject
) -> None:
    blob = b"".join(pieces)
    bodies, code, rest = reference_json(blob, MAX_FRAME)
    decoder = JsonDecoder(MAX_FRAME)
    got: list[bytes] = []
    for piece in data.draw(cut(blob)):
        got += decoder.feed(piece)
        # Never more than one frame in progress: its header and part of its body.
        assert decoder.buffered <= MAX_HEADER_DIGITS + 1 + MAX_FRAME
    assert got == bodies
    if code is None:
        assert decoder.error is None
        assert decoder.buffered == rest
    else:
        assert isinstance(decoder.error, ProtocolError)
        assert decoder.error.code == code
        assert decoder.buffered == 0
        assert decoder.feed(b"5\nhello") == []


@FUZZ
@given(blob=st.binary(max_size=400), data=st.data())
def test_random_bytes_give_the_json_decoder_only_bodies_or_a_framing_error(
    blob: bytes, data: st.DataObject
) -> None:
    decoder = JsonDecoder(MAX_FRAME)
    got: list[bytes] = []
    for piece in data.draw(cut(blob)):
        got += decoder.feed(piece)
        assert decoder.buffered <= MAX_HEADER_DIGITS + 1 + MAX_FRAME
    assert all(len(b) <= MAX_FRAME for b in got)
    assert got == reference_json(blob, MAX_FRAME)[0]
    assert decoder.error is None or decoder.error.code in {"bad_header", "frame_too_large"}


@FUZZ
@given(pieces=st.lists(fixed_pieces, max_size=8), data=st.data())
def test_the_binary_decoder_agrees_with_a_one_shot_parse_however_the_stream_is_cut(
    pieces: list[bytes], data: st.DataObject
) -> None:
    blob = b"".join(pieces)
    frames, code, rest = reference_fixed(blob, ">HIH", MAX_FRAME)
    decoder = BinaryDecoder(MAX_FRAME)
    got = []
    for piece in data.draw(cut(blob)):
        got += decoder.feed(piece)
        assert decoder.buffered < 8 + MAX_FRAME
    assert [(f.type, len(f.payload), f.flags, f.payload) for f in got] == frames
    assert (decoder.error.code if decoder.error else None) == code
    assert decoder.buffered == rest


@FUZZ
@given(pieces=st.lists(fixed_pieces, max_size=8), data=st.data())
def test_the_mux_decoder_agrees_with_a_one_shot_parse_however_the_stream_is_cut(
    pieces: list[bytes], data: st.DataObject
) -> None:
    blob = b"".join(pieces)
    frames, code, rest = reference_fixed(blob, ">II", MAX_FRAME)
    decoder = MuxDecoder(MAX_FRAME)
    got = []
    for piece in data.draw(cut(blob)):
        got += decoder.feed(piece)
        assert decoder.buffered < 8 + MAX_FRAME
    assert [(f.stream_id, len(f.payload), f.payload) for f in got] == frames
    assert (decoder.error.code if decoder.error else None) == code
    assert decoder.buffered == rest


@FUZZ
@given(
    blob=st.lists(
        st.sampled_from([b"\n", b"\r\n", b"x", b"\xff", b"\x00", b"y" * 31, b"z" * 33]),
        max_size=40,
    ).map(b"".join),
    data=st.data(),
)
def test_the_echo_decoder_agrees_with_splitting_on_newlines_however_the_stream_is_cut(
    blob: bytes, data: st.DataObject
) -> None:
    *lines, tail = blob.split(b"\n")
    expected: list[bytes] = []
    failed = False
    for line in lines:
        if len(line) > MAX_LINE:
            failed = True
            break
        expected.append(line)
    failed = failed or len(tail) > MAX_LINE
    decoder = EchoDecoder(MAX_LINE)
    got: list[bytes] = []
    for piece in data.draw(cut(blob)):
        got += decoder.feed(piece)
        assert decoder.buffered <= MAX_LINE
    assert got == expected
    assert (decoder.error is not None) == failed
    if not failed:
        assert decoder.buffered == len(tail)


@FUZZ
@given(first=st.binary(min_size=2, max_size=2), more=st.binary(max_size=32))
def test_detection_depends_on_the_first_two_bytes_only(first: bytes, more: bytes) -> None:
    kind = detect_protocol(first + more)
    assert kind == detect_protocol(first)
    assert kind in {"json", "binary", "mux", "echo"}
    assert detect_protocol(first[:1]) in {kind, None}


# --------------------------------------------------------------- whole sessions

_EXECUTOR = ThreadPoolExecutor(max_workers=2, thread_name_prefix="fuzz-upload")

ALLOWED_REASONS = {"client_closed", "protocol_error", "frame_too_large"}


def session_settings() -> Settings:
    return Settings(
        max_frame=512,
        max_line=MAX_LINE,
        max_per_ip=0,
        max_rooms=2,
        max_streams=3,
        max_transfers=2,
        max_file_size=64,
    )


def check_buffers(hub: Hub) -> None:
    s = hub.settings
    for session in hub.sessions.values():
        decoder: Any = getattr(session, "decoder", None)
        if isinstance(decoder, JsonDecoder):
            assert decoder.buffered <= MAX_HEADER_DIGITS + 1 + s.max_frame
        elif isinstance(decoder, BinaryDecoder | MuxDecoder):
            assert decoder.buffered < 8 + s.max_frame
        elif isinstance(decoder, EchoDecoder):
            assert decoder.buffered <= s.max_line
        if isinstance(session, DetectingSession):
            assert len(session._buf) <= 1


def parse_output(kind: str, data: bytes) -> list[Any]:
    """The server's bytes in the protocol's framing; fails on anything malformed."""
    if kind == "json":
        msgs = [json.loads(b) for b in FrameSplitter().feed(data)]
        assert all(isinstance(m, dict) and isinstance(m.get("type"), str) for m in msgs)
        return msgs
    if kind == "echo":
        assert data.startswith(b"Welcome to TCP server!\n")
        lines = data.split(b"\n")
        assert lines[-1] == b""
        assert all(ln.startswith((b"Echo: ", b"[server] ", b"Welcome")) for ln in lines[:-1])
        return lines[:-1]
    if kind == "binary":
        out = []
        off = 0
        while off < len(data):
            t, n, flags = struct.unpack_from(">HIH", data, off)
            payload = data[off + 8 : off + 8 + n]
            assert len(payload) == n
            if t in (0x21, 0x30, 0xFF):
                assert isinstance(json.loads(payload), dict)
            else:
                assert t in (0x02, 0x10)
            out.append((t, flags, payload))
            off += 8 + n
        return out
    assert kind == "mux"
    frames = split_mux(data)
    for sid, payload in frames:
        if sid == 0:
            assert isinstance(json.loads(payload)["type"], str)
    return frames


_UPLOAD_DIR = Path(tempfile.mkdtemp(prefix="fuzz-uploads-"))


@pytest.fixture(scope="module", autouse=True)
def _remove_upload_dir() -> Iterator[None]:
    yield
    shutil.rmtree(_UPLOAD_DIR, ignore_errors=True)


def fuzz_session(kind: str, chunks: list[bytes]) -> bytes:
    """Feed ``chunks`` to a fresh ``kind`` session, hang up, and check nothing is left."""
    directory = _UPLOAD_DIR

    async def main() -> bytes:
        store = UploadStore(directory, max_file_size=64, per_session_limit=2, executor=_EXECUTOR)
        store.prepare()
        hub = Hub(session_settings(), store)
        hub.start()
        outlet = MemoryOutlet()
        assert hub.admit(outlet.remote_address, outlet.remote_port) is None
        hub.attach(outlet, kind)  # type: ignore[arg-type]
        for chunk in chunks:
            outlet.feed(chunk)
            check_buffers(hub)
            await asyncio.sleep(0)
        await store.wait_idle()
        for _ in range(3):
            await asyncio.sleep(0)
        output = bytes(outlet.output)
        reasons = {c.reason for c in hub.closed_log}
        assert reasons <= ALLOWED_REASONS, reasons
        outlet.lose()
        await asyncio.sleep(0)
        await store.wait_idle()
        await asyncio.sleep(0)
        # Nothing of the client is left.
        assert hub.sessions == {} and hub.connections == {} and hub.json_sessions == {}
        assert len(hub.rooms) == 0
        assert store.active_count == 0
        assert not [n for n in os.listdir(directory) if n.startswith(".")]
        assert {c.reason for c in hub.closed_log} <= ALLOWED_REASONS
        hub.force_shutdown()
        await asyncio.wait_for(hub.wait_stopped(), 5)
        await store.aclose()
        return output

    try:
        return asyncio.run(main())
    finally:
        # Completed uploads go, so that every example starts from an empty directory.
        for name in os.listdir(directory):
            os.unlink(directory / name)


def jframe(obj: Any) -> bytes:
    body = json.dumps(obj).encode()
    return b"%d\n%s" % (len(body), body)


MESSAGE_TYPES = [
    "ping",
    "broadcast",
    "private",
    "join_room",
    "leave_room",
    "room_message",
    "file_start",
    "file_chunk",
    "file_end",
    "file_abort",
    "nope",
]
json_messages = st.fixed_dictionaries(
    {"type": st.sampled_from(MESSAGE_TYPES) | json_values},
    optional={
        "ref": st.integers(-5, 5) | st.text(max_size=70) | json_values,
        "room": st.sampled_from(["a", "b", "c", "", "\x7f"]) | json_values,
        "data": json_values
        | st.binary(max_size=70).map(lambda b: base64.b64encode(b).decode())
        | st.sampled_from(["!!", "QQ", "QQ=="]),
        "target": st.sampled_from(["10.0.0.1:1", "server"]) | json_values,
        "transferId": st.sampled_from(["t", "u"]) | json_values,
        "filename": st.sampled_from(["f.txt", "g", "../x", ".h", "a/b", "nul\x00"]) | json_values,
        "fileSize": st.integers(-1, 80) | json_values,
        "chunkSize": st.integers(-1, 10) | json_values,
        "chunkIndex": st.integers(-1, 3) | json_values,
        "sha256": st.sampled_from(["0" * 64, "xyz"]) | json_values,
    },
)
json_stream_pieces = st.one_of(
    json_messages.map(jframe),
    json_messages.map(jframe),
    json_messages.map(jframe),
    st.binary(max_size=20).map(lambda b: b"%d\n%s" % (len(b), b)),
    st.sampled_from([b"99999\n", b"x\n", b"\n", b'15\n{"type":"ping"}', b"100000\n["]),
    st.binary(max_size=8),
)


@SESSION_FUZZ
@given(pieces=st.lists(json_stream_pieces, max_size=12), data=st.data())
def test_a_json_session_fed_hostile_messages_answers_in_frames_and_leaves_nothing(
    pieces: list[bytes], data: st.DataObject
) -> None:
    blob = b"".join(pieces)
    output = fuzz_session("json", data.draw(cut(blob)))
    msgs = parse_output("json", output)
    assert msgs[0]["type"] == "welcome"
    if msgs[-1]["type"] == "closing":
        assert msgs[-1]["reason"] == "protocol_error"
        assert msgs[-2]["code"] in {"bad_header", "frame_too_large"}


def bframe(t: int, payload: bytes = b"", flags: int = 0) -> bytes:
    return struct.pack(">HIH", t, len(payload), flags) + payload


binary_frames = st.one_of(
    st.just(bframe(0x01)),
    st.binary(max_size=20).map(lambda p: bframe(0x10, p, 7)),
    st.fixed_dictionaries(
        {
            "transferId": st.sampled_from(["t", "u"]) | json_values,
            "filename": st.sampled_from(["b.bin", "../x"]) | json_values,
            "fileSize": st.integers(-1, 80) | json_values,
        }
    ).map(lambda o: bframe(0x20, json.dumps(o).encode(), 1)),
    st.binary(max_size=40).map(lambda p: bframe(0x20, p, 2)),
    st.sampled_from([1, 2, 4, 8, 3, 0]).map(lambda f: bframe(0x20, b"", f)),
    st.integers(0, 0xFFFF).map(bframe),
    st.just(struct.pack(">HIH", 0x10, 0xFFFFFFFF, 0)),
    st.binary(max_size=8),
)


@SESSION_FUZZ
@given(pieces=st.lists(binary_frames, max_size=12), data=st.data())
def test_a_binary_session_fed_hostile_frames_answers_in_frames_and_leaves_nothing(
    pieces: list[bytes], data: st.DataObject
) -> None:
    output = fuzz_session("binary", data.draw(cut(b"".join(pieces))))
    parse_output("binary", output)


@SESSION_FUZZ
@given(
    blob=st.lists(
        st.sampled_from([b"\n", b"\r\n", b"hi", b"\xff\xfe", b"\x00", b"y" * 40]), max_size=30
    ).map(b"".join),
    data=st.data(),
)
def test_an_echo_session_fed_any_bytes_echoes_lines_and_leaves_nothing(
    blob: bytes, data: st.DataObject
) -> None:
    output = fuzz_session("echo", data.draw(cut(blob)))
    lines = parse_output("echo", output)
    sent = blob.split(b"\n")[:-1]
    echoed = [ln[len(b"Echo: ") :] for ln in lines if ln.startswith(b"Echo: ")]
    # Every line up to the first one over the limit is echoed verbatim, in order.
    assert echoed == sent[: len(echoed)]
    if len(echoed) < len(sent):
        assert len(sent[len(echoed)]) > MAX_LINE


def mframe(sid: int, payload: bytes) -> bytes:
    return struct.pack(">II", sid, len(payload)) + payload


stream_ids = st.sampled_from([0, 1, 2, 3, 5, 7, 2**32 - 1]) | st.integers(0, 2**32 - 1)
control_messages = st.one_of(
    st.builds(
        lambda sid, kind: {"type": "stream_create", "streamId": sid, "streamType": kind},
        stream_ids,
        st.sampled_from(["json", "binary", "echo", "mux", "auto", ""]),
    ),
    stream_ids.map(lambda sid: {"type": "stream_close", "streamId": sid}),
    st.just({"type": "ping", "ref": 1}),
    st.fixed_dictionaries({"type": json_values, "streamId": json_values}),
)
mux_pieces = st.one_of(
    control_messages.map(lambda m: mframe(0, json.dumps(m).encode())),
    control_messages.map(lambda m: mframe(0, json.dumps(m).encode())),
    st.tuples(st.sampled_from([1, 3, 5, 9]), json_stream_pieces | binary_frames).map(
        lambda t: mframe(t[0], t[1])
    ),
    st.tuples(st.sampled_from([1, 3]), st.binary(max_size=30)).map(lambda t: mframe(*t)),
    st.binary(max_size=12).map(lambda p: mframe(0, p)),
    st.just(struct.pack(">II", 1, 0xFFFFFFFF)),
)


@SESSION_FUZZ
@given(pieces=st.lists(mux_pieces, max_size=14), data=st.data())
def test_a_mux_connection_fed_hostile_frames_answers_in_frames_and_leaves_nothing(
    pieces: list[bytes], data: st.DataObject
) -> None:
    output = fuzz_session("mux", data.draw(cut(b"".join(pieces))))
    parse_output("mux", output)


@SESSION_FUZZ
@given(
    first=st.sampled_from([b"1", b"\x00\x01", b"\x00\x00", b"\x00", b"e", b"\xff"]),
    rest=st.lists(json_stream_pieces | binary_frames | mux_pieces, max_size=8),
    data=st.data(),
)
def test_an_auto_connection_fed_any_first_bytes_is_served_and_leaves_nothing(
    first: bytes, rest: list[bytes], data: st.DataObject
) -> None:
    blob = first + b"".join(rest)
    output = fuzz_session("auto", data.draw(cut(blob)))
    kind = detect_protocol(blob)
    if kind is None:
        assert output == b""
    else:
        parse_output(kind, output)
