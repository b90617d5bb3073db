"""Bans (PROTOCOL.md section 12.3): targets, expiry, the state file, and bans
enforced at accept and at authentication, over real sockets."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from helpers import JsonClient, closed_without_bytes, eventually, open_raw
from policy_helpers import TOKENS, login, policy_fixtures

from verb_console.admin.ctl import main as ctl_main
from verb_console.hub import banning as banning_module
from verb_console.hub.ban_store import BanStore
from verb_console.hub.bans import Ban, BanChange, BanError, BanList, parse_duration, parse_target
from verb_console.runtime import Runtime

pytestmark = pytest.mark.timeout(60)

files, serve = policy_fixtures()


@pytest.fixture
async def banned_server(serve, tmp_path: Path) -> Any:
    async def start(**overrides: Any) -> Runtime:
        overrides.setdefault("state_dir", str(tmp_path / "state"))
        return await serve(**overrides)

    return start


# --------------------------------------------------------------- targets and expiry


@pytest.mark.parametrize(
    ("text", "canonical"),
    [
        ("203.0.113.7", "203.0.113.7"),
        ("2001:DB8:0::1", "2001:db8::1"),
        ("203.0.113.9/24", "203.0.113.0/24"),
        ("2001:db8::/48", "2001:db8::/48"),
        ("user:alice", "user:alice"),
    ],
)
def test_a_target_is_an_address_a_network_or_a_user(text: str, canonical: str) -> None:
    assert parse_target(text) == canonical


@pytest.mark.parametrize(
    "text", ["203.0.113", "host.example", "10.0.0.0/33", "2001:db8::/129", "user:", "user:a b", ""]
)
def test_a_target_that_does_not_parse_is_one_line_saying_which(text: str) -> None:
    with pytest.raises(BanError) as caught:
        parse_target(text)
    assert "\n" not in str(caught.value) and repr(text.removeprefix("user:")) in str(caught.value)


def test_durations_are_seconds_minutes_hours_or_days() -> None:
    assert [parse_duration(d) for d in ("30s", "10m", "2h", "7d")] == [30, 600, 7200, 604800]
    for bad in ("", "10", "1w", "-5m", "0s", "1.5h", "m"):
        with pytest.raises(BanError):
            parse_duration(bad)


def test_the_list_matches_addresses_networks_and_users_until_each_ends() -> None:
    now = [1000.0]
    bans = BanList(clock=lambda: now[0])
    bans.add(Ban("203.0.113.7", "ctl", 1000, 1030))
    bans.add(Ban("198.51.100.0/24", "ctl", 1000, None))
    bans.add(Ban("2001:db8::/48", "ctl", 1000, None))
    bans.add(Ban("user:bob", "ctl", 1000, 1060))
    assert bans.address_banned("203.0.113.7") == "203.0.113.7"
    assert bans.address_banned("203.0.113.8") is None
    assert bans.address_banned("198.51.100.200") == "198.51.100.0/24"
    assert bans.address_banned("2001:db8:0:ffff::5") == "2001:db8::/48"
    assert bans.address_banned("2001:db9::1") is None
    assert bans.user_banned("bob") and not bans.user_banned("alice")
    now[0] = 1031
    assert bans.address_banned("203.0.113.7") is None
    assert [b.target for b in bans.live()] == ["198.51.100.0/24", "2001:db8::/48", "user:bob"]
    now[0] = 1061
    assert not bans.user_banned("bob")
    assert len(bans) == 2


# --------------------------------------------------------------- the state file


def test_the_state_file_is_written_whole_and_read_back(tmp_path: Path) -> None:
    store = BanStore(str(tmp_path / "state"))
    bans = [Ban("203.0.113.7", "ctl", 1000.0, None), Ban("user:bob", "console", 1001.0, 2000.0)]
    store.write(bans)
    assert [p.name for p in store.path.parent.iterdir()] == ["bans.json"]
    loaded, problem = store.load()
    assert problem is None
    assert [b.to_wire() for b in loaded] == [b.to_wire() for b in bans]
    assert store.unsent == []


def test_changes_not_yet_given_to_the_cluster_are_kept_in_the_state_file(tmp_path: Path) -> None:
    store = BanStore(str(tmp_path))
    ban = Ban("user:bob", "ctl", 1001.0, None)
    lifted = Ban("203.0.113.7", "ctl", 1000.0, None)
    unsent = [BanChange("ban", ban, 1001.0), BanChange("unban", lifted, 1002.5)]
    store.write([ban], unsent)
    loaded, problem = BanStore(str(tmp_path)).load()
    assert problem is None and [b.target for b in loaded] == ["user:bob"]
    again = BanStore(str(tmp_path))
    again.load()
    assert again.unsent == unsent


@pytest.mark.parametrize(
    "body",
    [
        b"{not json",
        b"[]",
        b'{"bans": [{"target": "nope", "by": "x", "created": 1, "expires": null}]}',
        b'{"bans": [], "unsent": [{"o": "maybe", "b": {}, "at": 1}]}',
        b'{"bans": [], "unsent": {}}',
    ],
)
def test_a_corrupted_state_file_gives_no_bans_and_says_why(tmp_path: Path, body: bytes) -> None:
    (tmp_path / "bans.json").write_bytes(body)
    bans, problem = BanStore(str(tmp_path)).load()
    assert bans == []
    assert problem is not None and "corrupted" in problem and "starting with no bans" in problem


async def test_a_corrupted_state_file_at_start_is_said_and_the_server_runs(
    banned_server, tmp_path: Path
) -> None:
    state = tmp_path / "state"
    state.mkdir()
    (state / "bans.json").write_text("{garbage")
    rt = await banned_server()
    assert any("corrupted" in e.text and e.kind == "error" for e in rt.hub.events)
    assert rt.hub.banning.live() == []
    await login(rt, "alice")


async def test_an_unwritable_state_dir_is_said_and_the_ban_still_holds(
    banned_server, tmp_path: Path
) -> None:
    if os.geteuid() == 0:
        # root writes anywhere: a file where the directory should be is unwritable for all.
        (tmp_path / "blocked").write_text("a file, not a directory")
        rt = await banned_server(state_dir=str(tmp_path / "blocked" / "state"))
    else:
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o500)
        rt = await banned_server(state_dir=str(locked / "state"))
    rt.hub.banning.ban("127.0.0.2", "ctl")
    assert rt.hub.banning.store is not None
    await rt.hub.banning.store.wait_saved()
    assert any(e.kind == "error" and "cannot save bans" in e.text for e in rt.hub.events)
    reader, _ = await asyncio.open_connection(sock=await open_raw(rt.port, source_ip="127.0.0.2"))
    assert await closed_without_bytes(reader)
    await login(rt, "alice")


async def test_bans_survive_a_restart(start_server, files, tmp_path: Path) -> None:
    settings: dict[str, Any] = {
        "auth_file": str(files[0]),
        "state_dir": str(tmp_path / "state"),
        "upload_dir": str(tmp_path / "up"),
        "max_per_ip": 0,
    }
    first = await start_server(**settings)
    first.hub.banning.ban("user:bob", "ctl", "1h")
    first.hub.banning.ban("127.0.0.2/32", "ctl")
    assert first.hub.banning.store is not None
    await first.hub.banning.store.wait_saved()
    first.hub.force_shutdown()
    await first.hub.wait_stopped()
    second = await start_server(**settings)
    assert {b.target for b in second.hub.banning.live()} == {"user:bob", "127.0.0.2/32"}
    client = await JsonClient.connect(second.port)
    err = await client.request({"type": "auth", "token": TOKENS["bob"]})
    assert err["code"] == "banned"


# --------------------------------------------------------------- enforced


async def test_a_banned_address_is_refused_at_accept_and_its_live_sessions_closed(
    banned_server,
) -> None:
    rt = await banned_server()
    victim = await JsonClient.connect(rt.port, source_ip="127.0.0.2")
    bystander = await login(rt, "alice")
    rt.hub.banning.ban("127.0.0.0/30", "ctl", "10m")
    # 127.0.0.1 is in 127.0.0.0/30 too: the bystander's address is 127.0.0.1.
    assert await victim.recv() == {"type": "closing", "reason": "banned"}
    await victim.expect_eof()
    assert await bystander.recv() == {"type": "closing", "reason": "banned"}
    reader, _ = await asyncio.open_connection(sock=await open_raw(rt.port, source_ip="127.0.0.2"))
    assert await closed_without_bytes(reader)
    await eventually(lambda: rt.hub.banning.refused == 1)
    assert rt.hub.permissions.totals["banned"] == 1
    # Another address is served; lifting the ban lets the address in again.
    other = await JsonClient.connect(rt.port, source_ip="127.0.0.5")
    assert (await other.request({"type": "auth", "token": TOKENS["carol"]}))["type"] == (
        "authenticated"
    )
    assert rt.hub.banning.unban("127.0.0.0/30", "ctl") is not None
    back = await JsonClient.connect(rt.port, source_ip="127.0.0.2")
    assert back.welcome["type"] == "welcome"
    texts = [e.text for e in rt.hub.events]
    assert "ban 127.0.0.0/30 (10m) by ctl" in texts
    assert "unban 127.0.0.0/30 by ctl" in texts


async def test_a_banned_user_gets_error_banned_then_closing_and_no_brute_force_count(
    banned_server,
) -> None:
    rt = await banned_server()
    live = await login(rt, "bob")
    alice = await login(rt, "alice")
    rt.hub.banning.ban("user:bob", "console")
    assert await live.recv() == {"type": "closing", "reason": "banned"}
    client = await JsonClient.connect(rt.port)
    err = await client.request({"type": "auth", "token": TOKENS["bob"], "ref": 4})
    assert (err["type"], err["code"], err["ref"]) == ("error", "banned", 4)
    assert await client.recv() == {"type": "closing", "reason": "banned"}
    await client.expect_eof()
    assert rt.hub.auth_failures.failures("127.0.0.1") == 0
    assert (await alice.request({"type": "ping"}))["type"] == "pong"
    assert rt.hub.permissions.totals["banned"] == 1


async def test_a_ban_over_many_sessions_closes_them_in_slices_each_after_the_last_ones_closes(
    banned_server, monkeypatch: pytest.MonkeyPatch
) -> None:
    rt = await banned_server()
    clients = [await JsonClient.connect(rt.port, source_ip="127.0.0.3") for _ in range(150)]
    keep = await JsonClient.connect(rt.port, source_ip="127.0.0.4")
    # At each slice: the sessions the pass had closed before, and those still in the hub.
    seen: list[tuple[int, int]] = []
    visited: list[Any] = []
    slice_ = banning_module.BanPass._slice

    def noted(self: Any) -> None:
        if not visited:  # the pass's list, before its slots are emptied
            visited.extend(self._todo)
        gone = [s for s in visited[: self._at] if s.closing]
        seen.append((len(gone), sum(1 for s in gone if s.id in rt.hub.sessions)))
        slice_(self)

    monkeypatch.setattr(banning_module.BanPass, "_slice", noted)
    rt.hub.banning.ban("127.0.0.3", "ctl")
    done = rt.hub.banning.passes[-1]
    assert not done.done.is_set()  # not in one turn
    assert sum(1 for s in rt.hub.sessions.values() if s.closing) < 150
    await asyncio.wait_for(done.done.wait(), 10)
    assert done.closed == 150 and done.turns >= 3
    # Every slice after the first ran once the closes of the slices before it
    # had been seen through (their connections gone from the hub): a slice and
    # the aftermath of its closes never share a turn.
    assert seen[0] == (0, 0)
    assert all(closed > 0 and still == 0 for closed, still in seen[1:]), seen
    for c in clients[:3]:
        assert await c.recv() == {"type": "closing", "reason": "banned"}
    assert keep.id in rt.hub.sessions
    assert any(e.text == "ban 127.0.0.3: closed 150 live sessions" for e in rt.hub.events)


# --------------------------------------------------------------- ctl


def ctl(admin: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "verb_console", "ctl", "--admin-socket", admin, *args],
        capture_output=True,
        text=True,
        timeout=20,
        stdin=subprocess.DEVNULL,
    )


async def test_ctl_bans_unbans_and_lists_and_refuses_what_does_not_parse(
    banned_server, capsys: pytest.CaptureFixture[str]
) -> None:
    rt = await banned_server()
    admin = str(rt.admin_path)

    async def run(*args: str) -> tuple[int, str, str]:
        code = await asyncio.to_thread(ctl_main, ["--admin-socket", admin, *args])
        out, err = capsys.readouterr()
        return code, out, err

    # Once from a shell, as an operator would.
    made = await asyncio.to_thread(ctl, admin, "ban", "2001:db8::/48", "--for", "2h")
    assert made.returncode == 0 and made.stdout.strip() == "banned 2001:db8::/48 (2h)", made
    assert (await run("ban", "user:bob"))[:2] == (0, "banned user:bob (until unbanned)\n")
    code, out, _ = await run("--json", "bans")
    bans = json.loads(out)
    assert [(b["target"], b["by"]) for b in bans] == [("2001:db8::/48", "ctl"), ("user:bob", "ctl")]
    assert bans[0]["expires"] - bans[0]["created"] == 7200 and bans[1]["expires"] is None
    assert abs(bans[0]["created"] - time.time()) < 60
    _, text, _ = await run("bans")
    assert "TARGET" in text and "user:bob" in text and "until unbanned" in text
    for bad in (["ban", "10.0.0.0/33"], ["ban", "nobody"], ["ban", "10.0.0.1", "--for", "1w"]):
        code, out, err = await run(*bad)
        assert (code, out) == (1, ""), err
        assert len(err.strip().splitlines()) == 1, err
    assert len(rt.hub.banning.live()) == 2
    assert (await run("unban", "user:bob"))[:2] == (0, "unbanned user:bob\n")
    code, _, err = await run("unban", "user:bob")
    assert code == 1 and "no ban of user:bob" in err
    _, out, _ = await run("--json", "status")
    assert json.loads(out)["refusals"] == {
        "forbidden": 0,
        "rate_limited": 0,
        "banned": 0,
        "too_many_sessions": 0,
    }
    assert "ban 2001:db8::/48 (2h) by ctl" in [e.text for e in rt.hub.events]
