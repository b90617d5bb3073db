"""Revocation on reload (PROTOCOL.md section 12.2), over real sockets."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Any

import pytest
from helpers import JsonClient, eventually
from policy_helpers import TOKENS, login, policy_fixtures, write_auth

from verb_console.admin.client import AdminClient
from verb_console.hub import revocation
from verb_console.runtime import Runtime

pytestmark = pytest.mark.timeout(60)

files, serve = policy_fixtures()


async def reloaded(rt: Runtime) -> None:
    assert rt.reload() == []
    assert rt.revocation is not None
    await asyncio.wait_for(rt.revocation.done.wait(), 5)


async def test_a_user_with_no_token_left_is_closed_with_auth_revoked(
    serve, files: tuple[Path, Path]
) -> None:
    rt = await serve()
    bob = await login(rt, "bob")
    alice = await login(rt, "alice")
    write_auth(files[0], {"alice": TOKENS["alice"], "carol": TOKENS["carol"]})
    await reloaded(rt)
    assert await bob.recv() == {"type": "closing", "reason": "auth_revoked"}
    await bob.expect_eof()
    assert (await alice.request({"type": "ping"}))["type"] == "pong"
    await eventually(lambda: any(c.reason == "auth_revoked" for c in rt.hub.closed_log))
    assert any("revoked 1 session of bob" in e.text for e in rt.hub.events)
    # The token no longer authenticates.
    again = await JsonClient.connect(rt.port)
    assert (await again.request({"type": "auth", "token": TOKENS["bob"]}))["code"] == "auth_failed"


async def test_a_room_the_policy_no_longer_allows_is_left_with_reason_revoked(
    serve, files: tuple[Path, Path]
) -> None:
    rt = await serve()
    alice = await login(rt, "alice")
    carol = await login(rt, "carol")
    assert (await alice.request({"type": "join_room", "room": "lobby"}))["type"] == "joined"
    assert (await alice.request({"type": "join_room", "room": "team-a"}))["type"] == "joined"
    assert (await carol.request({"type": "join_room", "room": "lobby"}))["type"] == "joined"
    assert (await alice.recv())["type"] == "user_joined"
    # alice may now join only team-*, and bob is now limited to 1 message a second.
    files[1].write_text('[users.alice]\njoin = ["team-*"]\npublish = ["team-*"]\n')
    await reloaded(rt)
    assert await alice.recv() == {"type": "left", "room": "lobby", "reason": "revoked"}
    notice = await carol.recv()
    assert (notice["type"], notice["connectionId"], notice["room"]) == (
        "user_left",
        alice.id,
        "lobby",
    )
    assert rt.hub.sessions[alice.id].rooms == {"team-a"}
    err = await alice.request({"type": "join_room", "room": "lobby", "ref": 1})
    assert err["code"] == "forbidden"
    # carol was under the default's publish = ["lobby"]; now the default allows all.
    await carol.send({"type": "join_room", "room": "elsewhere"})
    assert (await carol.recv())["type"] == "joined"
    assert any("1 room membership revoked" in e.text for e in rt.hub.events)


async def test_new_rates_apply_from_the_reload_on(serve, files: tuple[Path, Path]) -> None:
    rt = await serve()
    carol = await login(rt, "carol")
    files[1].write_text("[users.carol]\nrate = 1\n")
    await reloaded(rt)
    burst = [{"type": "join_room", "room": "lobby", "ref": i} for i in range(4)]
    for message in burst:
        await carol.send(message)
    replies = [await carol.recv() for _ in burst]
    assert [r["type"] for r in replies][:2] == ["joined", "joined"]
    assert [r.get("code") for r in replies][2:] == ["rate_limited", "rate_limited"]


async def test_a_reload_in_a_storm_of_joins_leaves_no_one_where_they_may_not_be(
    serve, files: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Small chunks, so the pass spans many turns while the joins go on.
    monkeypatch.setattr(revocation, "CHUNK", 3)
    rt = await serve()
    clients = [await login(rt, "carol") for _ in range(12)]
    stop = asyncio.Event()

    async def storm(c: JsonClient) -> None:
        i = 0
        while not stop.is_set():
            await c.send({"type": "join_room", "room": f"public-{i % 5}"})
            await c.send({"type": "leave_room", "room": f"public-{(i + 2) % 5}"})
            i += 1
            await asyncio.sleep(0)

    async def drain(c: JsonClient) -> None:
        with __import__("contextlib").suppress(Exception):
            while True:
                await c.recv(timeout=30)

    tasks = [asyncio.create_task(storm(c)) for c in clients]
    readers = [asyncio.create_task(drain(c)) for c in clients]
    await asyncio.sleep(0.2)
    files[1].write_text('[default]\njoin = ["public-1", "lobby"]\n')
    await reloaded(rt)
    await asyncio.sleep(0.2)
    stop.set()
    await asyncio.gather(*tasks)
    await asyncio.sleep(0.1)
    for c in clients:
        session: Any = rt.hub.sessions[c.id]
        assert session.rooms <= {"public-1"}, session.rooms
        assert not session.closing
    for r in readers:
        r.cancel()


# --------------------------------------------------------------- off the loop


async def test_ctl_reload_reads_the_policy_off_the_loop_which_serves_on_meanwhile(
    serve, files: tuple[Path, Path], tmp_path: Path
) -> None:
    rt = await serve()
    alice = await login(rt, "alice")
    assert (await alice.request({"type": "join_room", "room": "lobby"}))["type"] == "joined"
    # The policy is now a FIFO: reading it blocks until something writes it, as a
    # slow read or a long parse would hold whoever reads it.
    files[1].unlink()
    os.mkfifo(files[1])
    admin = await AdminClient.connect(rt.admin_path)
    reload = asyncio.create_task(admin.request("reload"))
    await asyncio.sleep(0.2)
    assert not reload.done()
    # Meanwhile the server goes on: it answers, and the old policy still holds.
    assert (await alice.request({"type": "ping"}, timeout=2))["type"] == "pong"
    err = await alice.request({"type": "join_room", "room": "lobby-2"}, timeout=2)
    assert err["code"] == "forbidden"

    def write() -> None:
        with open(files[1], "w") as fifo:
            fifo.write('[users.alice]\njoin = ["team-*"]\n')

    await asyncio.to_thread(write)
    assert await asyncio.wait_for(reload, 5) == {"errors": []}
    assert rt.revocation is not None
    await asyncio.wait_for(rt.revocation.done.wait(), 5)
    # Applied: alice is out of the room the new policy refuses her.
    assert await alice.recv() == {"type": "left", "room": "lobby", "reason": "revoked"}
    assert (await alice.request({"type": "join_room", "room": "team-x"}))["type"] == "joined"
    await admin.aclose()


async def test_a_bad_policy_on_ctl_reload_is_refused_in_one_line_and_the_old_one_stays(
    serve, files: tuple[Path, Path]
) -> None:
    rt = await serve()
    alice = await login(rt, "alice")
    before = rt.hub.permissions.policy
    files[1].write_text('[users.alice]\njoin = ["team-*"]\nrate = -1\n')
    admin = await AdminClient.connect(rt.admin_path)
    reply = await admin.request("reload")
    (error,) = reply["errors"]
    assert error == (
        f"policy: kept the previous policy: policy file {files[1]}: users.alice.rate:"
        " must be a number >= 0, got -1"
    )
    assert "\n" not in error
    assert rt.hub.permissions.policy is before
    # The old policy still holds: alice may join lobby, and nobody was touched.
    assert (await alice.request({"type": "join_room", "room": "lobby"}))["type"] == "joined"
    assert any(e.text == "reload: reload 1 failed" for e in rt.hub.events)
    await admin.aclose()
