"""The fast base64 decoder used for json upload chunks accepts exactly what the
standard library's strict decoder accepts, and decodes it the same."""

from __future__ import annotations

import binascii

from hypothesis import given, settings
from hypothesis import strategies as st

from verb_console.hub.uploads import _b64decode

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
def test_any_string_is_accepted_or_refused_exactly_as_by_the_strict_stdlib_decoder(
    data: str,
) -> None:
    assert _fast(data) == _stdlib(data)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=300))
def test_every_valid_encoding_decodes_to_its_bytes(raw: bytes) -> None:
    assert _fast(binascii.b2a_base64(raw, newline=False).decode()) == raw
