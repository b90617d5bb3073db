"""The PROXY protocol decoder (PROTOCOL.md 12.4): every split, every malformation."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from verb_console.protocols.proxy import (
    V1_MAX,
    V2_MAX,
    V2_SIGNATURE,
    ProxyDecoder,
    ProxyHeader,
    ProxyHeaderError,
    encode_v1,
    encode_v2,
)

HEADERS = [
    (encode_v1(("203.0.113.7", 5555), ("10.0.0.1", 80)), ProxyHeader(1, "203.0.113.7", 5555)),
    (encode_v1(("2001:db8::7", 4000), ("2001:db8::1", 80)), ProxyHeader(1, "2001:db8::7", 4000)),
    (b"PROXY UNKNOWN whatever follows\r\n", ProxyHeader(1, None, None)),
    (b"PROXY UNKNOWN\r\n", ProxyHeader(1, None, None)),
    (encode_v2(("203.0.113.7", 5555)), ProxyHeader(2, "203.0.113.7", 5555)),
    (encode_v2(("2001:db8::7", 4000)), ProxyHeader(2, "2001:db8::7", 4000)),
    (encode_v2(("::ffff:198.51.100.4", 9)), ProxyHeader(2, "198.51.100.4", 9)),
    (encode_v2(None), ProxyHeader(2, None, None)),
    # TLVs after the addresses are skipped.
    (encode_v2(("203.0.113.7", 1), tlv=b"\x04\x00\x03abc"), ProxyHeader(2, "203.0.113.7", 1)),
    # UNSPEC and Unix-socket families keep the proxy's address.
    (V2_SIGNATURE + b"\x21\x00\x00\x00", ProxyHeader(2, None, None)),
    (V2_SIGNATURE + b"\x21\x31" + struct.pack("!H", 216) + bytes(216), ProxyHeader(2, None, None)),
]


def decode_all(chunks: list[bytes]) -> tuple[ProxyHeader, bytes]:
    decoder = ProxyDecoder()
    found = None
    rest = b""
    for chunk in chunks:
        if found is not None:
            rest += chunk
            continue
        found = decoder.receive(chunk)
        if found is not None:
            found, rest = found
    assert found is not None
    return found, rest


@pytest.mark.parametrize(("raw", "header"), HEADERS)
def test_each_header_is_read_whole_and_what_follows_is_given_back(
    raw: bytes, header: ProxyHeader
) -> None:
    assert decode_all([raw + b"12\n{...}"]) == (header, b"12\n{...}")


@settings(max_examples=100, deadline=None)
@given(st.sampled_from(HEADERS), st.binary(max_size=40), st.data())
def test_any_split_of_the_bytes_reads_the_same(case, after: bytes, data) -> None:
    raw, header = case
    stream = raw + after
    cuts = sorted(data.draw(st.sets(st.integers(1, max(1, len(stream) - 1)), max_size=12)))
    chunks = [stream[a:b] for a, b in zip([0, *cuts], [*cuts, len(stream)], strict=True)]
    assert decode_all([c for c in chunks if c]) == (header, after)


@settings(max_examples=150, deadline=None)
@given(st.binary(min_size=1, max_size=700))
def test_arbitrary_bytes_give_a_header_an_error_or_a_wait_and_never_crash(blob: bytes) -> None:
    decoder = ProxyDecoder()
    try:
        found = decoder.receive(blob)
    except ProxyHeaderError as exc:
        assert "\n" not in str(exc)
        return
    if found is None:
        # Waiting only while it could still be a header within the limits.
        assert decoder.buffered < V2_MAX


BAD = [
    b"GET / HTTP/1.1\r\n",
    b"12\n{}",
    b"PROXY TCP5 1.2.3.4 5.6.7.8 1 2\r\n",
    b"PROXY TCP4 1.2.3.4 5.6.7.8 1\r\n",
    b"PROXY TCP4 1.2.3.400 5.6.7.8 1 2\r\n",
    b"PROXY TCP4 2001:db8::1 5.6.7.8 1 2\r\n",
    b"PROXY TCP6 1.2.3.4 ::1 1 2\r\n",
    b"PROXY TCP4 1.2.3.4 5.6.7.8 65536 2\r\n",
    b"PROXY TCP4 1.2.3.4 5.6.7.8 01 2\r\n",
    b"PROXY TCP4 1.2.3.4 5.6.7.8 -1 2\r\n",
    b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n",
    b"PROXY TCP4 1.2.3.4  5.6.7.8 1 2\r\n",
    b"PROXY " + b"A" * V1_MAX,
    V2_SIGNATURE + b"\x11\x11\x00\x0c" + bytes(12),  # version 1 in a v2 header
    V2_SIGNATURE + b"\x22\x11\x00\x0c" + bytes(12),  # command 2
    V2_SIGNATURE + b"\x21\x41\x00\x00",  # family 4
    V2_SIGNATURE + b"\x21\x11\x00\x08" + bytes(8),  # IPv4 with 8 bytes of addresses
    V2_SIGNATURE + b"\x21\x21\x00\x0c" + bytes(12),  # IPv6 with 12
    V2_SIGNATURE + b"\x21\x11" + struct.pack("!H", V2_MAX - 15) + bytes(12),  # too long
    b"\r\n\r\n\x00\r\nQUIX\n" + bytes(8),
]


@pytest.mark.parametrize("raw", BAD)
def test_a_malformed_forged_or_too_long_header_is_an_error(raw: bytes) -> None:
    with pytest.raises(ProxyHeaderError):
        decode_all([raw + b"\r\n" * 60])


@pytest.mark.parametrize("raw", BAD)
def test_the_error_shows_fed_a_byte_at_a_time(raw: bytes) -> None:
    decoder = ProxyDecoder()
    with pytest.raises(ProxyHeaderError):
        for i in range(len(raw)):
            decoder.receive(raw[i : i + 1])
        decoder.receive(b"\r\n" * 60)


def test_a_v1_line_at_the_limit_is_read_and_one_byte_more_is_refused() -> None:
    line = encode_v1(("203.0.113.7", 1), ("10.0.0.1", 2))
    pad = V1_MAX - len(b"PROXY UNKNOWN \r\n")
    assert decode_all([b"PROXY UNKNOWN " + b"x" * pad + b"\r\n"])[0].address is None
    with pytest.raises(ProxyHeaderError):
        ProxyDecoder().receive(b"PROXY UNKNOWN " + b"x" * (pad + 1) + b"\r\n")
    assert len(line) < V1_MAX


def test_a_v2_header_of_536_bytes_is_read_and_537_refused() -> None:
    ok = encode_v2(("203.0.113.7", 1), tlv=b"\x04" + struct.pack("!H", V2_MAX - 28 - 3))
    ok += bytes(V2_MAX - len(ok))
    assert len(ok) == V2_MAX
    assert decode_all([ok])[0] == ProxyHeader(2, "203.0.113.7", 1)
    too_long = V2_SIGNATURE + b"\x21\x11" + struct.pack("!H", V2_MAX - 16 + 1)
    with pytest.raises(ProxyHeaderError):
        ProxyDecoder().receive(too_long)
