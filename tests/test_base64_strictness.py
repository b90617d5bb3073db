"""The fast base64 decoder used for json upload chunks never accepts what the
standard library's strict decoder refuses, and decodes what it accepts the same.

It is a little stricter: padding after a complete quantum ("AAAA=") is refused
by RFC 4648 and by pybase64, but accepted by the standard library."""

from __future__ import annotations

import binascii

from hypothesis import given, settings
from hypothesis import strategies as st

from verb_console.hub.uploads.json_front import _b64decode

ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/="


def _stdlib(data: str) -> bytes | None:
    try:
        return binascii.a2b_base64(data, strict_mode=True)
    except (binascii.Error, ValueError):
        return None


def _fast(data: str) -> bytes | None:
    try:
        return _b64decode(data)
    except (binascii.Error, ValueError):
        return None


@settings(max_examples=500, deadline=None)
@given(st.text(alphabet=ALPHABET + " \n-_.é", max_size=40))
def test_whatever_the_fast_decoder_accepts_the_strict_stdlib_decoder_decodes_the_same(
    data: str,
) -> None:
    fast = _fast(data)
    if fast is not None:
        assert _stdlib(data) == fast


def test_padding_after_a_complete_quantum_is_refused() -> None:
    assert _fast("00000000=") is None
    assert _fast("0000") == _stdlib("0000")


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=300))
def test_every_valid_encoding_decodes_to_its_bytes(raw: bytes) -> None:
    assert _fast(binascii.b2a_base64(raw, newline=False).decode()) == raw
