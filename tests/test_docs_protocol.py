"""docs/protocol.md cannot drift from the server: its exchanges are played against
a live server, and every error code, close reason and message type the server can
send is named on the page."""

from __future__ import annotations

import ast
import builtins
import functools
import re
from dataclasses import fields
from pathlib import Path

import pytest
from cluster_harness import RedisServer
from docs_exchanges import ROOT, Player, parse

from verb_console.admin.protocol import ACTION_OPS, READ_OPS
from verb_console.hub.permissions import REFUSALS
from verb_console.hub.resume import RESULTS as RESUME_RESULTS
from verb_console.hub.session import WIRE_REASON, CloseReason
from verb_console.hub.snapshot import Overview
from verb_console.protocols import binary

PAGE = ROOT / "docs" / "protocol.md"
TEXT = PAGE.read_text()
EXCHANGES = {x.name: x for x in parse(TEXT)}
ADMIN = TEXT[TEXT.index("## 15. The admin socket") :]

# Exchanges that document a feature of the contract (PROTOCOL.md) that is not on
# main yet, by the feature. Each is expected to fail until its feature lands;
# when it passes, pytest reports it (strict xfail) and its name leaves this set.
AWAITING_FEATURE: dict[str, list[str]] = {}
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


_CODE = re.compile(r"[a-z]+(_[a-z]+)*")


def _is_code(node: ast.AST | None) -> bool:
    return (
        isinstance(node, ast.Constant)
        and isinstance(node.value, str)
        and bool(_CODE.fullmatch(node.value))
    )


def _call_name(node: ast.Call) -> str:
    func = node.func
    return func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")


def error_codes(nodes: list[ast.AST]) -> set[str]:
    """The error codes that ``nodes`` can put on the wire, in the four ways the
    server writes one: an error raised with its code (``ProtocolError("bad_room",
    ...)``, ``TransferError``, ``AdminRequestError``), a ``"code": "..."`` in a
    message, a table of default texts keyed by code (``MESSAGES``), and a refusal
    returned as a ``(code, message)`` pair for the caller to send."""
    codes: set[str] = set()
    for node in nodes:
        if isinstance(node, ast.Call):
            name = _call_name(node)
            raised = name.endswith("Error") and name not in vars(builtins)
            if raised and node.args and _is_code(node.args[0]):
                codes.add(node.args[0].value)  # type: ignore[attr-defined]
        elif isinstance(node, ast.Assign) and isinstance(node.value, ast.Dict):
            targets = [t.id for t in node.targets if isinstance(t, ast.Name)]
            if any("MESSAGES" in t for t in targets):
                codes |= {k.value for k in node.value.keys if isinstance(k, ast.Constant)}
        elif isinstance(node, ast.Dict):
            for key, value in zip(node.keys, node.values, strict=True):
                if isinstance(key, ast.Constant) and key.value == "code" and _is_code(value):
                    codes.add(value.value)  # type: ignore[union-attr]
        elif isinstance(node, ast.Return) and isinstance(node.value, ast.Tuple):
            first, *rest = node.value.elts or [None]
            # ("too_many_sessions", f"User {user} has ..."): a code and its message.
            if _is_code(first) and len(rest) == 1 and isinstance(rest[0], ast.JoinedStr):
                codes.add(first.value)  # type: ignore[union-attr]
    return codes


def message_types(nodes: list[ast.AST]) -> set[str]:
    """The ``type`` of every message object written in ``nodes``."""
    types: set[str] = set()
    for node in nodes:
        if isinstance(node, ast.Dict):
            for key, value in zip(node.keys, node.values, strict=True):
                if (
                    isinstance(key, ast.Constant)
                    and key.value == "type"
                    and isinstance(value, ast.Constant)
                ):
                    types.add(value.value)
    return types


def message_fields(nodes: list[ast.AST]) -> set[str]:
    """Every field of a message object written in ``nodes`` (a dict with a
    ``type``), and the extra fields an error is raised with (``transferId=``)."""
    found: set[str] = set()
    for node in nodes:
        if isinstance(node, ast.Dict):
            keys = {k.value for k in node.keys if isinstance(k, ast.Constant)}
            if "type" in keys:
                found |= {k for k in keys if isinstance(k, str)}
        elif isinstance(node, ast.Call) and _call_name(node).endswith("Error"):
            found |= {k.arg for k in node.keywords if k.arg}
    return found


def _error_codes() -> set[str]:
    return (error_codes(_server_nodes()) | set(REFUSALS)) - INTERNAL_CODES


def _message_types() -> set[str]:
    return message_types(_server_nodes())


def _named(word: str) -> bool:
    return f"`{word}`" in TEXT or f'"{word}"' in TEXT


def test_the_code_search_finds_what_it_should() -> None:
    """A guard on the searches themselves: they see codes and types of every layer."""
    assert {"bad_header", "unknown_stream", "too_many_rooms", "bad_chunk"} <= _error_codes()
    assert {"auth_failed", "unknown_op", "bad_version", "forbidden"} <= _error_codes()
    assert {"banned", "too_many_sessions", "rate_limited"} <= _error_codes()
    assert {"welcome", "stream_created", "file_complete", "hello"} <= _message_types()


# A module the server does not have: each way of sending a code, a type or a field.
_NEW_CODE = """
def handle(session, msg, user):
    if msg.get("x"):
        raise ProtocolError("brand_new_code", "text", ticketId=1)
    session.send({"type": "error", "code": "another_new_code", "message": "m"})
    session.send({"type": "brand_new_type", "newField": 1})
    return "refused_new_code", f"User {user} may not"
"""


def test_a_new_code_type_or_field_would_be_found() -> None:
    """The searches read the code, not a list kept by hand: a module that sends a
    code, a type or a field the page has never heard of is caught."""
    nodes = list(ast.walk(ast.parse(_NEW_CODE)))
    codes = error_codes(nodes)
    assert {"brand_new_code", "another_new_code", "refused_new_code"} <= codes
    assert "brand_new_type" in message_types(nodes)
    assert {"newField", "ticketId"} <= message_fields(nodes)
    assert not any(_named(word) for word in [*codes, "brand_new_type", "newField"])


def test_every_error_code_is_named() -> None:
    missing = sorted(c for c in _error_codes() if not _named(c))
    assert not missing, f"error codes the server sends that docs/protocol.md never names: {missing}"


def test_every_error_code_is_in_a_table_of_codes() -> None:
    """Each code is where a client author looks it up: section 14's table, or
    the admin socket's codes in section 15."""
    listed = TEXT[TEXT.index("## 14. Every error code") : TEXT.index("## 15.")]
    admin = ADMIN[ADMIN.index("Admin error codes") :].split("\n\n")[0]
    named = set(re.findall(r"`(\w+)`", listed + admin))
    missing = sorted(_error_codes() - named)
    assert not missing, f"codes in neither section 14 nor section 15's list: {missing}"


def test_every_message_type_is_named() -> None:
    missing = sorted(t for t in _message_types() if not _named(t))
    assert not missing, f"message types sent that docs/protocol.md never names: {missing}"


def test_every_message_field_is_named() -> None:
    missing = sorted(f for f in message_fields(_server_nodes()) if not _named(f))
    assert not missing, f"message fields sent that docs/protocol.md never names: {missing}"


def test_every_resume_failure_reason_is_named() -> None:
    reasons = set(RESUME_RESULTS) - {"resumed"}
    missing = sorted(r for r in reasons if not _named(r))
    assert not missing, f"resume_failed reasons docs/protocol.md never names: {missing}"


def test_every_admin_operation_is_documented() -> None:
    """Each op the admin socket serves has its row in section 15's table, and
    the table names no op the server does not serve."""
    rows = re.findall(r"^\| (`[a-z_]+`(?:, `[a-z_]+`)*) \|", ADMIN, re.M)
    documented = {op for row in rows for op in re.findall(r"`([a-z_]+)`", row)}
    assert documented == READ_OPS | ACTION_OPS


def test_every_admin_argument_is_named() -> None:
    """Every argument the admin socket reads from a request (``args["key"]``,
    ``args.get("limit", ...)``) is named in section 15."""
    read: set[str] = set()
    for path in (ROOT / "verb_console" / "admin").glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Subscript) and getattr(node.value, "id", "") == "args":
                key = node.slice
            elif (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr == "get"
                and getattr(node.func.value, "id", "") == "args"
                and node.args
            ):
                key = node.args[0]
            else:
                continue
            if isinstance(key, ast.Constant):
                read.add(key.value)
    assert {"key", "members_from", "target", "final", "have"} <= read
    missing = sorted(k for k in read if f"`{k}`" not in ADMIN)
    assert not missing, f"admin arguments section 15 never names: {missing}"


def test_every_overview_field_is_named() -> None:
    """``status`` answers the server's overview: the admin section names each field."""
    missing = sorted(f.name for f in fields(Overview) if f"`{f.name}`" not in ADMIN)
    assert not missing, f"overview fields section 15 never names: {missing}"


def test_every_close_reason_is_named() -> None:
    reasons = {str(r) for r in CloseReason} | set(WIRE_REASON.values())
    missing = sorted(r for r in reasons if not _named(r))
    assert not missing, f"close reasons that docs/protocol.md never names: {missing}"


def test_every_close_reason_has_its_row() -> None:
    """Section 13 has one row per close reason, and says what the client received:
    the ``closing`` reason the server sends for it (WIRE_REASON), or none."""
    section = TEXT[TEXT.index("## 13. Why a session ended") : TEXT.index("## 14.")]
    rows = dict(re.findall(r"^\| `(\w+)` \| [^|]+ \| ([^|]+) \|$", section, re.M))
    assert set(rows) == {str(r) for r in CloseReason}
    for reason, received in rows.items():
        wire = WIRE_REASON.get(CloseReason(reason))
        if wire is None:
            assert "`closing`" not in received, reason
        else:
            assert f"`closing` `{wire}`" in received, reason


def test_every_binary_frame_type_is_named() -> None:
    kinds = {
        n
        for n, v in vars(binary).items()
        if re.fullmatch(r"[A-Z][A-Z_]*", n) and isinstance(v, int) and v <= 0xFFFF
    }
    kinds -= {"HEADER_SIZE"}
    missing = sorted(k for k in kinds if k not in TEXT and k.removeprefix("FILE_") not in TEXT)
    assert not missing, f"binary constants docs/protocol.md never names: {missing}"
