"""Bans and max_sessions across a cluster (PROTOCOL.md 12.1, 12.3), with a real Redis."""

from __future__ import annotations

import asyncio
import json
import signal
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


def targets(rt: Runtime) -> list[str]:
    return [x.target for x in rt.hub.banning.live()]


def link_down(*nodes: Runtime) -> Any:
    return lambda: all(n.hub.bus is not None and n.hub.bus.link_state != "up" for n in nodes)


async def test_a_ban_and_an_unban_made_while_redis_is_down_reach_every_node_when_it_is_back(
    node, redis_server: Any
) -> None:
    a, b = await node("a"), await node("b")
    await linked(a, b)
    a.hub.banning.ban("127.0.0.5", "ctl")
    await eventually(lambda: targets(b) == ["127.0.0.5"], timeout=5)
    bob_on_b = await login(b, "bob")
    await redis_server.kill()
    await eventually(link_down(a, b), timeout=10)
    a.hub.banning.ban("user:bob", "ctl", "10m")
    a.hub.banning.unban("127.0.0.5", "console")
    assert any("kept for the cluster until the Redis link is back" in e.text for e in a.hub.events)
    assert targets(b) == ["127.0.0.5"]  # b cannot know yet
    # Redis comes back empty; both nodes link again.
    await redis_server.start()
    await linked(a, b)
    await eventually(lambda: targets(b) == ["user:bob"], timeout=10)
    assert await bob_on_b.recv(timeout=5) == {"type": "closing", "reason": "banned"}
    # a kept them (no resync dropped them) and gave them up once the cluster had them.
    assert targets(a) == ["user:bob"]
    await eventually(lambda: not a.hub.banning.unsent, timeout=5)
    redis = redis_server.client()
    assert await redis.hkeys("vc:bans") == [b"user:bob"]
    await redis.aclose()
    assert any("made while the link was down" in e.text for e in a.hub.events)


async def test_changes_made_while_redis_is_frozen_are_given_over_what_redis_kept(
    node, redis_server: Any
) -> None:
    a, b = await node("a"), await node("b")
    await linked(a, b)
    a.hub.banning.ban("127.0.0.6", "ctl")
    b.hub.banning.ban("127.0.0.7", "ctl")
    both = ["127.0.0.6", "127.0.0.7"]
    await eventually(lambda: sorted(targets(a)) == sorted(targets(b)) == both, timeout=5)
    # Stopped, not killed: Redis keeps its data, the nodes find their links dead.
    redis_server.signal(signal.SIGSTOP)
    try:
        await eventually(link_down(a, b), timeout=15)
        b.hub.banning.unban("127.0.0.6", "ctl")
        b.hub.banning.ban("user:carol", "ctl")
        a.hub.banning.ban("127.0.0.8", "ctl", "1h")
    finally:
        redis_server.signal(signal.SIGCONT)
    await linked(a, b)
    want = ["127.0.0.7", "user:carol", "127.0.0.8"]
    await eventually(lambda: sorted(targets(a)) == sorted(targets(b)) == sorted(want), timeout=10)
    await eventually(lambda: not a.hub.banning.unsent and not b.hub.banning.unsent, timeout=5)
    redis = redis_server.client()
    assert sorted(await redis.hkeys("vc:bans")) == sorted(t.encode() for t in want)
    await redis.aclose()


async def test_a_ban_made_while_redis_is_down_survives_a_restart_and_reaches_the_cluster(
    node, redis_server: Any, tmp_path: Path
) -> None:
    a, b = await node("a"), await node("b")
    await linked(a, b)
    await redis_server.kill()
    await eventually(link_down(a), timeout=10)
    a.hub.banning.ban("user:bob", "ctl")
    assert a.hub.banning.store is not None
    await a.hub.banning.store.wait_saved()
    saved = json.loads(a.hub.banning.store.path.read_text())
    assert [c["b"]["target"] for c in saved["unsent"]] == ["user:bob"]
    a.hub.force_shutdown()
    await a.hub.wait_stopped()
    await redis_server.start()
    await linked(b)
    assert targets(b) == []
    # a comes back with its state directory, and gives the cluster what it kept.
    a2 = await node("a")
    await linked(a2, b)
    await eventually(lambda: targets(b) == ["user:bob"], timeout=10)
    assert targets(a2) == ["user:bob"]
    await eventually(lambda: not a2.hub.banning.unsent, timeout=5)
    assert a2.hub.banning.store is not None
    await a2.hub.banning.store.wait_saved()
    assert "unsent" not in json.loads(a2.hub.banning.store.path.read_text())
