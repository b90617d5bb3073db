"""Bans and max_sessions across a cluster (PROTOCOL.md 12.1, 12.3), with a real Redis."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest
from helpers import JsonClient, eventually, open_raw
from policy_helpers import TOKENS, login, policy_fixtures

from verb_console.runtime import Runtime

pytestmark = pytest.mark.timeout(60)

files, serve = policy_fixtures()


@pytest.fixture
async def node(serve, redis_server: Any, tmp_path: Path) -> Any:
    async def start(name: str, **overrides: Any) -> Runtime:
        overrides.setdefault("state_dir", str(tmp_path / f"state-{name}"))
        return await serve(cluster=redis_server.url, node_name=name, **overrides)

    return start


async def linked(*nodes: Runtime) -> None:
    await eventually(
        lambda: all(n.hub.bus is not None and n.hub.bus.link_state == "up" for n in nodes)
    )
    names = {n.hub.node for n in nodes}
    await eventually(
        lambda: all(set(n.hub.bus.directory.nodes) >= names - {n.hub.node} for n in nodes),  # type: ignore[union-attr]
        timeout=10,
    )


async def test_a_ban_made_on_one_node_holds_on_every_node_within_a_second(node) -> None:
    a, b = await node("a"), await node("b")
    await linked(a, b)
    bob_on_b = await login(b, "bob")
    made = time.monotonic()
    a.hub.banning.ban("user:bob", "ctl", "10m")
    assert await bob_on_b.recv(timeout=1.5) == {"type": "closing", "reason": "banned"}
    assert time.monotonic() - made < 1.0 + 0.5  # the message takes a moment to read
    assert [x.target for x in b.hub.banning.live()] == ["user:bob"]
    assert any(e.text == "ban user:bob (10m) by ctl on node a" for e in b.hub.events)
    refused = await JsonClient.connect(b.port)
    assert (await refused.request({"type": "auth", "token": TOKENS["bob"]}))["code"] == "banned"
    # Lifted on b: lifted on a too.
    b.hub.banning.unban("user:bob", "console")
    await eventually(lambda: not a.hub.banning.live(), timeout=2)
    assert any(e.text == "unban user:bob by node b" for e in a.hub.events)
    await login(a, "bob")


async def test_a_node_restarted_during_a_ban_applies_it_when_it_rejoins(
    node, tmp_path: Path
) -> None:
    a, b = await node("a"), await node("b")
    await linked(a, b)
    b.hub.force_shutdown()
    await b.hub.wait_stopped()
    a.hub.banning.ban("127.0.0.2", "ctl")
    # b comes back with a state directory of its own that never heard of the ban.
    b2 = await node("b", state_dir=str(tmp_path / "fresh"))
    await linked(a, b2)
    await eventually(lambda: [x.target for x in b2.hub.banning.live()] == ["127.0.0.2"])
    reader, _ = await asyncio.open_connection(sock=await open_raw(b2.port, source_ip="127.0.0.2"))
    assert await asyncio.wait_for(reader.read(1), 5) == b""
    assert b2.hub.banning.store is not None
    await b2.hub.banning.store.wait_saved()
    assert "127.0.0.2" in b2.hub.banning.store.path.read_text()


async def test_max_sessions_counts_the_users_sessions_on_every_node(node) -> None:
    a, b = await node("a"), await node("b")
    await linked(a, b)
    # alice may have 2 sessions: one here, one there.
    one = await login(a, "alice")
    two = await login(b, "alice")
    # Each node hears the other's count with its next heartbeat (every second).
    await eventually(lambda: a.hub.permissions.sessions_of("alice") == 2, timeout=5)
    third = await JsonClient.connect(a.port)
    err = await third.request({"type": "auth", "token": TOKENS["alice"]})
    assert err["code"] == "too_many_sessions"
    await two.close()
    await eventually(lambda: a.hub.permissions.sessions_of("alice") == 1, timeout=5)
    await login(a, "alice")
    await one.close()
