"""The ``echo`` codec of PROTOCOL.md section 5."""

from __future__ import annotations

from itertools import pairwise

from hypothesis import given, settings
from hypothesis import strategies as st

from verb_console.protocols.echo import (
    WELCOME,
    EchoDecoder,
    encode_echo,
    encode_notice,
)
from verb_console.protocols.errors import ProtocolError

FUZZ = settings(max_examples=200, deadline=None)

lines_st = st.lists(st.binary(max_size=40).map(lambda b: b.replace(b"\n", b"")), max_size=8)


def split_at(data: bytes, cuts: list[int]) -> list[bytes]:
    bounds = [0, *sorted(cuts), len(data)]
    return [data[a:b] for a, b in pairwise(bounds)]


def feed_all(decoder: EchoDecoder, pieces: list[bytes]) -> list[bytes]:
    out: list[bytes] = []
    for piece in pieces:
        out += decoder.feed(piece)
    return out


# Encoding, pinned to the byte.


def test_the_greeting_is_the_seed_welcome_line() -> None:
    assert WELCOME == b"Welcome to TCP server!\n"


def test_an_echo_is_the_line_after_echo_colon_space() -> None:
    assert encode_echo(b"hello") == b"Echo: hello\n"
    assert encode_echo(b"") == b"Echo: \n"


def test_an_echo_keeps_a_carriage_return_verbatim() -> None:
    assert encode_echo(b"hi\r") == b"Echo: hi\r\n"


def test_a_notice_is_one_server_tagged_utf8_line() -> None:
    assert encode_notice("back in 5") == b"[server] back in 5\n"
    assert encode_notice("caf\u00e9") == b"[server] caf\xc3\xa9\n"


def test_line_breaks_in_a_notice_become_spaces() -> None:
    assert encode_notice("a\nb\r\nc\rd") == b"[server] a b c d\n"


# Decoding.


def test_each_line_comes_out_without_its_newline() -> None:
    assert EchoDecoder().feed(b"one\ntwo\n") == [b"one", b"two"]


def test_a_carriage_return_stays_in_the_line() -> None:
    assert EchoDecoder().feed(b"dos\r\n") == [b"dos\r"]


def test_an_empty_line_is_an_empty_bytes() -> None:
    assert EchoDecoder().feed(b"\n\n") == [b"", b""]


def test_an_unfinished_line_waits_for_its_newline() -> None:
    decoder = EchoDecoder()
    assert decoder.feed(b"hel") == []
    assert decoder.buffered == 3
    assert decoder.feed(b"lo\nwor") == [b"hello"]
    assert decoder.buffered == 3
    assert decoder.feed(b"ld\n") == [b"world"]
    assert decoder.buffered == 0


def test_lines_come_back_as_bytes_whatever_was_fed() -> None:
    decoder = EchoDecoder()
    decoder.feed(bytearray(b"ab"))
    lines = decoder.feed(bytearray(b"c\nd\n"))
    assert lines == [b"abc", b"d"]
    assert all(type(line) is bytes for line in lines)


def test_a_line_of_exactly_the_limit_is_accepted() -> None:
    decoder = EchoDecoder(max_line=4)
    assert decoder.feed(b"abcd") == []
    assert decoder.feed(b"\n") == [b"abcd"]
    assert decoder.error is None


def test_the_default_limit_is_65536_bytes() -> None:
    decoder = EchoDecoder()
    assert decoder.feed(b"x" * 65536 + b"\n") == [b"x" * 65536]
    assert decoder.feed(b"x" * 65537) == []
    assert decoder.error is not None


def test_a_line_over_the_limit_fails_before_its_newline_arrives() -> None:
    decoder = EchoDecoder(max_line=4)
    assert decoder.feed(b"abcd") == []
    assert decoder.error is None
    assert decoder.feed(b"e") == []
    assert isinstance(decoder.error, ProtocolError)
    assert decoder.error.code == "line_too_long"
    assert decoder.buffered == 0


def test_a_long_line_with_its_newline_in_the_same_read_still_fails() -> None:
    decoder = EchoDecoder(max_line=4)
    assert decoder.feed(b"ok\nabcde\nok\n") == [b"ok"]
    assert decoder.error is not None
    assert decoder.error.code == "line_too_long"


def test_the_carriage_return_counts_toward_the_limit() -> None:
    decoder = EchoDecoder(max_line=4)
    assert decoder.feed(b"abcd\r\n") == []
    assert decoder.error is not None


def test_after_an_error_every_feed_returns_nothing() -> None:
    decoder = EchoDecoder(max_line=2)
    decoder.feed(b"abc")
    error = decoder.error
    assert decoder.feed(b"\nok\n") == []
    assert decoder.error is error


def test_a_huge_read_without_newline_is_never_buffered() -> None:
    decoder = EchoDecoder(max_line=10)
    decoder.feed(b"x" * 100_000)
    assert decoder.error is not None
    assert decoder.buffered == 0


# Properties.


@FUZZ
@given(lines=lines_st, data=st.data())
def test_any_split_of_valid_input_gives_the_same_lines_as_one_read(
    lines: list[bytes], data: st.DataObject
) -> None:
    blob = b"".join(line + b"\n" for line in lines)
    cuts = data.draw(st.lists(st.integers(0, len(blob)), max_size=20))
    assert EchoDecoder().feed(blob) == lines
    decoder = EchoDecoder()
    assert feed_all(decoder, split_at(blob, cuts)) == lines
    assert decoder.buffered == 0
    assert decoder.error is None


@FUZZ
@given(lines=lines_st)
def test_valid_input_fed_byte_by_byte_gives_the_same_lines(lines: list[bytes]) -> None:
    blob = b"".join(line + b"\n" for line in lines)
    assert feed_all(EchoDecoder(), [blob[i : i + 1] for i in range(len(blob))]) == lines


@FUZZ
@given(
    blob=st.lists(st.sampled_from([b"\n", b"\r", b"a", b"\xff", b"xyz"]), max_size=100).map(
        b"".join
    )
    | st.binary(max_size=200),
    data=st.data(),
)
def test_random_bytes_give_only_lines_or_line_too_long(blob: bytes, data: st.DataObject) -> None:
    max_line = 8
    cuts = data.draw(st.lists(st.integers(0, len(blob)), max_size=20))
    decoder = EchoDecoder(max_line=max_line)
    out: list[bytes] = []
    for piece in split_at(blob, cuts):
        out += decoder.feed(piece)
        assert decoder.buffered <= max_line
    assert all(len(line) <= max_line and b"\n" not in line for line in out)
    consumed = b"".join(line + b"\n" for line in out)
    assert blob.startswith(consumed)
    rest = blob[len(consumed) :]
    if decoder.error is not None:
        assert isinstance(decoder.error, ProtocolError)
        assert decoder.error.code == "line_too_long"
        # The error names a real overlong line: the next one, with or without newline.
        assert len(rest.split(b"\n", 1)[0]) > max_line
    else:
        assert b"\n" not in rest
        assert decoder.buffered == len(rest)
