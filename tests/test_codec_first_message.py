"""The codecs' first message (PROTOCOL.md section 8): ``protocols.auth.FirstMessage`` says
when a session's first message is complete, in its own framing, however TCP cut it.

Each framing's decoder is the reference: on any stream cut at any points, the
first message found is the decoder's first frame (or its framing error), and
the bytes left over decode to exactly the decoder's later frames.
"""

from __future__ import annotations

import itertools
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from verb_console.protocols import binary, mux
from verb_console.protocols.auth import (
    FirstMessage,
    Opening,
    Unframed,
    encode_auth_error,
    encode_authenticated,
)
from verb_console.protocols.echo import EchoDecoder
from verb_console.protocols.errors import ProtocolError
from verb_console.protocols.json import JsonDecoder, encode

FUZZ = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
LIMIT = 48


def decoder(protocol: str) -> Any:
    if protocol == "json":
        return JsonDecoder(LIMIT)
    if protocol == "binary":
        return binary.BinaryDecoder(LIMIT)
    if protocol == "mux":
        return mux.MuxDecoder(LIMIT)
    return EchoDecoder(LIMIT)


def frames(protocol: str) -> st.SearchStrategy[bytes]:
    """One frame of ``protocol``: well formed or not, near the limit or not."""
    payload = st.binary(max_size=LIMIT + 8)
    if protocol == "json":
        return st.one_of(
            payload.map(lambda p: b"%d\n%s" % (len(p), p)),
            st.builds(
                lambda t, r: encode({"type": "auth", "token": t, "ref": r}),
                st.text(max_size=8),
                st.one_of(st.integers(-(2**63), 2**63 - 1), st.text(max_size=70), st.none()),
            ),
            st.binary(max_size=12),
        )
    if protocol == "echo":
        return st.one_of(
            payload.map(lambda p: p.replace(b"\n", b"") + b"\n"),
            st.text(max_size=10).map(lambda t: b"AUTH " + t.encode().replace(b"\n", b"") + b"\r\n"),
        )
    if protocol == "binary":
        kinds = st.sampled_from([binary.AUTH, binary.DATA, binary.HEARTBEAT, 0x7777])
        return st.builds(lambda k, p: binary.encode_frame(k, p), kinds, payload)
    streams = st.sampled_from([mux.CONTROL_STREAM, 1, 3])
    return st.builds(lambda s, p: mux.encode_frame(s, p), streams, payload)


@st.composite
def streams(draw: Any, protocol: str) -> tuple[bytes, list[bytes]]:
    blob = b"".join(draw(st.lists(frames(protocol), min_size=1, max_size=4)))
    blob += draw(st.binary(max_size=6))
    cuts = draw(st.lists(st.integers(0, len(blob)), max_size=8))
    points = sorted({0, len(blob), *cuts})
    return blob, [blob[a:b] for a, b in itertools.pairwise(points)]


def events(protocol: str, data: bytes) -> list[Any]:
    out = decoder(protocol).receive(data)
    return [bytes(e) if isinstance(e, bytearray) else e for e in out]


def same(a: list[Any], b: list[Any]) -> bool:
    def key(e: Any) -> Any:
        return ("error", e.code) if isinstance(e, ProtocolError) else e

    return [key(e) for e in a] == [key(e) for e in b]


@pytest.mark.parametrize("protocol", ["json", "binary", "mux", "echo"])
@FUZZ
@given(data=st.data())
def test_the_first_message_is_the_decoders_first_frame_however_the_stream_is_cut(
    protocol: str, data: Any
) -> None:
    blob, chunks = data.draw(streams(protocol))
    reader = FirstMessage(protocol, LIMIT)
    found = None
    fed = b""
    i = 0
    for i, chunk in enumerate(chunks):  # noqa: B007 - i is used after the loop
        fed += chunk
        found = reader.receive(chunk)
        if found is not None:
            break
    whole = events(protocol, blob)
    if found is None:
        # Incomplete to the end: the decoder found nothing either.
        assert whole == []
        assert reader.buffered == len(blob)
        return
    later = b"".join(chunks[i + 1 :])
    if isinstance(found, Unframed):
        # Every byte held goes to the session's decoder, which reports the error.
        assert found.data == fed
        assert isinstance(whole[0], ProtocolError)
        assert same(events(protocol, found.data + later), whole)
        return
    assert isinstance(found, Opening)
    assert not isinstance(whole[0], ProtocolError)
    # The bytes after the first message decode to the decoder's later events.
    assert same(events(protocol, found.rest + later), whole[1:])
    assert reader.buffered == 0


def test_a_json_auth_message_gives_its_token_and_ref_and_the_bytes_after_it() -> None:
    first = encode({"type": "auth", "token": "s3cret", "ref": 7})
    after = encode({"type": "ping"})[:5]
    reader = FirstMessage("json", 1024)
    assert reader.receive(first[:3]) is None
    assert reader.receive(first[3:] + after) == Opening(b"s3cret", 7, after)


@pytest.mark.parametrize(
    ("ref", "kept"),
    [("r" * 64, "r" * 64), ("r" * 65, None), (1.0, None), (True, None), (None, None), (-3, -3)],
    ids=["64-chars", "65-chars", "float", "bool", "null", "int"],
)
def test_the_ref_answered_follows_the_one_ref_rule(ref: Any, kept: Any) -> None:
    body = orjson.dumps({"type": "ping", "ref": ref})
    found = FirstMessage("mux", 1024).receive(mux.encode_frame(0, body))
    assert found == Opening(None, kept, b"")


def test_each_framing_tells_an_auth_message_from_any_other_first_message() -> None:
    assert FirstMessage("binary", 64).receive(binary.encode_frame(binary.AUTH, b"t")) == Opening(
        b"t", None, b""
    )
    assert FirstMessage("binary", 64).receive(binary.encode_frame(binary.DATA, b"t")) == Opening(
        None, None, b""
    )
    assert FirstMessage("echo", 64).receive(b"AUTH tok\r\nhi\n") == Opening(b"tok", None, b"hi\n")
    assert FirstMessage("echo", 64).receive(b"hello\n") == Opening(None, None, b"")
    assert FirstMessage("mux", 64).receive(mux.encode_frame(1, b"x")) == Opening(None, None, b"")
    assert FirstMessage("json", 64).receive(b"x") == Unframed(b"x")
    assert FirstMessage("json", 4).receive(b"5\n") == Unframed(b"5\n")


def test_the_replies_are_each_protocols_own_form() -> None:
    assert encode_authenticated("json", "ann", "r") == encode(
        {"type": "authenticated", "user": "ann", "ref": "r"}
    )
    assert encode_authenticated("echo", "ann") == b"OK ann\n"
    assert encode_authenticated("binary", "ann") == binary.encode_frame(
        binary.AUTH_OK, b'{"user":"ann"}'
    )
    error = ProtocolError("auth_failed", "Authentication failed")
    assert encode_auth_error("echo", error) is None
    assert encode_auth_error("mux", error, 3) == mux.encode_control(
        {"type": "error", "code": "auth_failed", "message": "Authentication failed", "ref": 3}
    )
