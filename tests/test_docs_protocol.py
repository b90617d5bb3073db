"""docs/protocol.md cannot drift from the server: its exchanges are played against
a live server, and every error code, close reason and message type the server can
send is named on the page."""

from __future__ import annotations

import ast
import builtins
import functools
import re
from pathlib import Path

import pytest
from cluster_harness import RedisServer
from docs_exchanges import ROOT, Player, parse

from verb_console.hub.session import WIRE_REASON, CloseReason
from verb_console.protocols import binary

PAGE = ROOT / "docs" / "protocol.md"
TEXT = PAGE.read_text()
EXCHANGES = {x.name: x for x in parse(TEXT)}

# Exchanges that document a feature of the contract (PROTOCOL.md) that is not on
# main yet, by the feature. Each is expected to fail until its feature lands;
# when it passes, pytest reports it (strict xfail) and its name leaves this set.
AWAITING_FEATURE: dict[str, list[str]] = {
    "lame duck (11.3)": ["lame-duck"],
    "permissions (12.1)": ["policy"],
    "PROXY protocol (12.4)": ["proxy-v1"],
}
_AWAITING = {name: feature for feature, names in AWAITING_FEATURE.items() for name in names}


def test_the_page_has_an_exchange_for_every_protocol() -> None:
    codecs = {codec for x in EXCHANGES.values() for codec in x.codecs.values()}
    assert codecs >= {"json", "binary", "mux", "echo", "admin"}
    assert set(_AWAITING) <= set(EXCHANGES), set(_AWAITING) - set(EXCHANGES)


def test_every_example_block_is_a_checked_exchange() -> None:
    """No example on the page escapes the check: each ```text block is an exchange
    (the only other block is the policy file, included from docs/snippets)."""
    blocks = re.findall(r"^```(\w*)$", TEXT, re.M)
    openings = blocks[0::2]
    assert openings.count("text") == len(EXCHANGES)
    assert set(openings) == {"text", "toml"}


def _params() -> list[object]:
    params = []
    for name in EXCHANGES:
        marks = []
        if name in _AWAITING:
            marks.append(pytest.mark.xfail(strict=True, reason=f"awaits {_AWAITING[name]}"))
        params.append(pytest.param(name, marks=marks, id=name))
    return params


@pytest.mark.parametrize("name", _params())
async def test_exchange_against_a_live_server(name: str, tmp_path: Path) -> None:
    exchange = EXCHANGES[name]
    if "nodes" not in exchange.options:
        await Player(exchange, tmp_path).run()
        return
    redis = await RedisServer(tmp_path).start()  # a cluster's nodes share a real Redis
    try:
        await Player(exchange, tmp_path, redis.url).run()
    finally:
        await redis.kill()


# What the server can send, found in its code rather than listed by hand.
SERVER_SIDE = [
    p
    for p in (ROOT / "verb_console").rglob("*.py")
    if not {"client", "console"} & set(p.relative_to(ROOT / "verb_console").parts)
    and p.name not in {"demo.py", "testing.py", "ctl.py"}
    and p.relative_to(ROOT / "verb_console").as_posix() != "admin/client.py"
]
# Codes raised only inside the server, never sent: an upload's pending finish cut
# off by its own abort (uploads/front.py drops it before it reaches the wire).
INTERNAL_CODES = {"aborted"}


@functools.cache
def _server_nodes() -> list[ast.AST]:
    """Every syntax node of the server's modules, parsed once per test process."""
    return [node for path in SERVER_SIDE for node in ast.walk(ast.parse(path.read_text()))]


def _error_codes() -> set[str]:
    codes: set[str] = set()
    for node in _server_nodes():
        if isinstance(node, ast.Call):
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            if name.endswith("Error") and name not in vars(builtins) and node.args:
                first = node.args[0]
                if isinstance(first, ast.Constant) and re.fullmatch(
                    r"[a-z]+(_[a-z]+)*", str(first.value)
                ):
                    codes.add(first.value)
        elif isinstance(node, ast.Assign) and isinstance(node.value, ast.Dict):
            targets = [t.id for t in node.targets if isinstance(t, ast.Name)]
            if any("MESSAGES" in t for t in targets):
                codes |= {k.value for k in node.value.keys if isinstance(k, ast.Constant)}
        elif isinstance(node, ast.Dict):
            for key, value in zip(node.keys, node.values, strict=True):
                if (
                    isinstance(key, ast.Constant)
                    and key.value == "code"
                    and isinstance(value, ast.Constant)
                ):
                    codes.add(value.value)
    return codes - INTERNAL_CODES


def _message_types() -> set[str]:
    types: set[str] = set()
    for node in _server_nodes():
        if isinstance(node, ast.Dict):
            for key, value in zip(node.keys, node.values, strict=True):
                if (
                    isinstance(key, ast.Constant)
                    and key.value == "type"
                    and isinstance(value, ast.Constant)
                ):
                    types.add(value.value)
    return types


def _named(word: str) -> bool:
    return f"`{word}`" in TEXT or f'"{word}"' in TEXT


def test_the_code_search_finds_what_it_should() -> None:
    """A guard on the searches themselves: they see codes and types of every layer."""
    assert {"bad_header", "unknown_stream", "too_many_rooms", "bad_chunk"} <= _error_codes()
    assert {"auth_failed", "unknown_op", "bad_version", "forbidden"} <= _error_codes()
    assert {"welcome", "stream_created", "file_complete", "hello"} <= _message_types()


def test_every_error_code_is_named() -> None:
    missing = sorted(c for c in _error_codes() if not _named(c))
    assert not missing, f"error codes the server sends that docs/protocol.md never names: {missing}"


def test_every_message_type_is_named() -> None:
    missing = sorted(t for t in _message_types() if not _named(t))
    assert not missing, f"message types sent that docs/protocol.md never names: {missing}"


def test_every_close_reason_is_named() -> None:
    reasons = {str(r) for r in CloseReason} | set(WIRE_REASON.values())
    missing = sorted(r for r in reasons if not _named(r))
    assert not missing, f"close reasons that docs/protocol.md never names: {missing}"


def test_every_binary_frame_type_is_named() -> None:
    kinds = {
        n
        for n, v in vars(binary).items()
        if re.fullmatch(r"[A-Z][A-Z_]*", n) and isinstance(v, int) and v <= 0xFFFF
    }
    kinds -= {"HEADER_SIZE"}
    missing = sorted(k for k in kinds if k not in TEXT and k.removeprefix("FILE_") not in TEXT)
    assert not missing, f"binary constants docs/protocol.md never names: {missing}"
