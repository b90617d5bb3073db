"""The json codec's message check, parse_message (PROTOCOL.md section 2)."""

from __future__ import annotations

import pytest

from verb_console.protocols import ProtocolError
from verb_console.protocols.json import encode_error, parse_message


def test_a_message_comes_back_with_its_type_and_ref() -> None:
    assert parse_message(b'{"type":"ping","ref":7}') == ({"type": "ping", "ref": 7}, "ping", 7)
    assert parse_message(bytearray(b'{"type":"ping"}')) == ({"type": "ping"}, "ping", None)


@pytest.mark.parametrize(
    ("body", "code", "message"),
    [
        (b"{", "bad_json", "Body is not valid UTF-8 JSON"),
        (b'"\xff"', "bad_json", "Body is not valid UTF-8 JSON"),
        (b"[1]", "bad_message", "A message must be a JSON object"),
        (b'{"type":"ping","ref":null}', "bad_message", "ref must be a string"),
        (b'{"type":"ping","ref":1.5}', "bad_message", "ref must be a string"),
        (b'{"type":"ping","ref":"' + b"r" * 65 + b'"}', "bad_message", "ref must be a string"),
        (b'{"ref":1}', "bad_message", "A message needs a string type"),
        (b'{"type":3}', "bad_message", "A message needs a string type"),
    ],
)
def test_a_body_that_is_not_a_client_message_is_refused_with_its_code(
    body: bytes, code: str, message: str
) -> None:
    with pytest.raises(ProtocolError) as info:
        parse_message(body)
    assert info.value.code == code
    assert info.value.message.startswith(message)


def test_a_typeless_message_s_error_answers_its_ref_and_a_bad_ref_is_not_echoed() -> None:
    with pytest.raises(ProtocolError) as typeless:
        parse_message(b'{"ref":"a"}')
    body = (
        b'{"type":"error","code":"bad_message","message":"A message needs a string type","ref":"a"}'
    )
    assert encode_error(typeless.value) == b"%d\n%s" % (len(body), body)
    with pytest.raises(ProtocolError) as bad_ref:
        parse_message(b'{"type":"ping","ref":[1]}')
    assert "ref" not in bad_ref.value.as_message()
