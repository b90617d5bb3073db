"""A session resumed on another node keeps its user's policy (PROTOCOL.md 11.1 with
12.1): the node that adopts it counts it against ``max_sessions`` and applies its
user's rules, as the node it came from did. Real nodes in this process, a real Redis."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from helpers import JsonClient, eventually
from policy_helpers import TOKENS, login, policy_fixtures
from test_bans_cluster import linked

from verb_console.runtime import Runtime

pytestmark = pytest.mark.timeout(60)

files, serve = policy_fixtures()


@pytest.fixture
async def node(serve: Any, redis_server: Any, tmp_path: Path) -> Any:
    async def start(name: str) -> Runtime:
        return await serve(
            cluster=redis_server.url,
            node_name=name,
            resume_window=30,
            state_dir=str(tmp_path / f"state-{name}"),
        )

    return start


async def test_a_session_resumed_on_another_node_keeps_its_guard(node: Any) -> None:
    a, b = await node("a"), await node("b")
    await linked(a, b)
    old = await login(a, "alice")  # alice: max_sessions 2, may join lobby and team-*
    old.writer.transport.abort()
    await eventually(lambda: old.id in a.hub.resume.detached, timeout=5)  # type: ignore[union-attr]
    await eventually(lambda: b.hub.bus is not None and old.id in b.hub.bus.directory.sessions)

    new = await login(b, "alice")
    token = old.welcome["resume"]
    resumed = await new.request({"type": "resume", "id": old.id, "token": token, "seq": 0})
    assert resumed["type"] == "resumed", resumed

    # Her rules hold on node b: a room she may not join is refused.
    refused = await new.request({"type": "join_room", "room": "secret", "ref": 1})
    assert refused["code"] == "forbidden", refused
    # The session counts on node b (and no longer on a): one more login, then the limit.
    await eventually(lambda: a.hub.permissions.sessions_of("alice") == 1, timeout=5)
    await eventually(lambda: b.hub.permissions.sessions_of("alice") == 1, timeout=5)
    await login(b, "alice")
    third = await JsonClient.connect(b.port)
    err = await third.request({"type": "auth", "token": TOKENS["alice"]})
    assert err["code"] == "too_many_sessions", err
