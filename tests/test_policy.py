"""Permissions (PROTOCOL.md section 12.1): the policy file, and what a session of
each user may do, over real sockets."""

from __future__ import annotations

import struct
from pathlib import Path
from typing import Any

import pytest
from helpers import JsonClient, eventually, frame
from policy_helpers import POLICY, TOKENS, login, policy_fixtures

from verb_console.cli import main
from verb_console.hub.policy import Policy, PolicyError

pytestmark = pytest.mark.timeout(60)

files, serve = policy_fixtures()


# --------------------------------------------------------------- the file


def test_a_policy_gives_named_users_their_rules_over_the_default() -> None:
    policy = Policy.parse(POLICY, "p.toml")
    alice, bob, dave = policy.rules("alice"), policy.rules("bob"), policy.rules("dave")
    assert alice.may_join("team-red") and alice.may_join("lobby")
    assert not alice.may_join("public-1") and not alice.may_join("Team-red")
    assert alice.may_publish("team-x") and not alice.may_publish("lobby")
    assert (alice.broadcast, alice.max_sessions, alice.rate) == (False, 2, 0)
    # bob's section names only private and rate: the rest is the default's.
    assert bob.may_join("public-1") and not bob.may_join("team-x")
    assert (bob.private, bob.rate, bob.broadcast) == (False, 5.0, True)
    assert dave is policy.default and not dave.may_publish("public-1")
    assert Policy.parse("").default.unrestricted
    mixed = Policy.parse('[default]\njoin = ["lobby", "team-*", "r?om-[0-9]", "*-ops"]\n').default
    joins = ["lobby", "team-", "team-x", "room-7", "rxom-0", "db-ops"]
    assert all(mixed.may_join(r) for r in joins)
    nots = ["lobby2", "Team-x", "room-a", "room-77", "ops", "db-ops-2", "xlobby"]
    assert not any(mixed.may_join(r) for r in nots)


def test_a_thousand_patterns_compile_once_per_distinct_list() -> None:
    patterns = ", ".join(f'"room-{i}-*"' for i in range(1000))
    users = "".join(f"[users.u{i}]\njoin = [{patterns}]\n" for i in range(100))
    policy = Policy.parse(users)
    matchers = {id(policy.rules(f"u{i}").may_join) for i in range(100)}
    assert len(matchers) == 1
    assert policy.rules("u7").may_join("room-999-x") and not policy.rules("u7").may_join("x")


@pytest.mark.parametrize(
    ("text", "names"),
    [
        ("[default\n", "not valid TOML"),
        ("[default]\nrate = -1\n", "default.rate: must be a number >= 0"),
        ("[default]\nmax_sessions = 1.5\n", "default.max_sessions: must be a whole number"),
        ("[default]\nmax_sessions = -2\n", "default.max_sessions: must be a whole number"),
        ("[default]\nbroadcast = 1\n", "default.broadcast: must be true or false"),
        ('[default]\njoin = "lobby"\n', "default.join: must be a list of non-empty strings"),
        ("[default]\njoin = [1]\n", "default.join: must be a list"),
        ("[default]\nsubscribe = []\n", "default.subscribe: unknown key"),
        ("[groups.a]\n", "groups: unknown key"),
        ("[users.alice]\nrate = true\n", "users.alice.rate: must be a number"),
        ("[users.alice]\nfly = true\n", "users.alice.fly: unknown key"),
        ('[users."a b"]\n', "users.a b: a user name"),
        ("users = 3\n", "users: must be a table"),
    ],
)
def test_a_malformed_policy_is_one_line_naming_the_file_and_key(text: str, names: str) -> None:
    with pytest.raises(PolicyError) as caught:
        Policy.parse(text, "/etc/p.toml")
    message = str(caught.value)
    assert message.startswith("policy file /etc/p.toml: ")
    assert names in message and "\n" not in message


def test_the_command_line_refuses_a_policy_without_auth_or_a_malformed_one(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], files: tuple[Path, Path]
) -> None:
    auth, policy = files
    assert main(["--headless", "--port", "0", "--policy", str(policy)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--policy needs --auth-file" in err
    policy.write_text("[users.alice]\nrate = -3\n")
    assert (
        main(["--headless", "--port", "0", "--auth-file", str(auth), "--policy", str(policy)]) == 2
    )
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert f"policy file {policy}: users.alice.rate: must be a number >= 0" in err
    missing = tmp_path / "none.toml"
    assert (
        main(["--headless", "--port", "0", "--auth-file", str(auth), "--policy", str(missing)]) == 2
    )
    assert f"policy file {missing}" in capsys.readouterr().err


# --------------------------------------------------------------- refusals


async def test_a_join_no_pattern_allows_is_forbidden_and_the_session_goes_on(serve) -> None:
    rt = await serve()
    alice = await login(rt, "alice")
    err = await alice.request({"type": "join_room", "room": "public-1", "ref": "j1"})
    assert (err["type"], err["code"], err["ref"]) == ("error", "forbidden", "j1")
    assert "join_room" in err["message"] and "public-1" in err["message"]
    joined = await alice.request({"type": "join_room", "room": "team-red", "ref": 2})
    assert (joined["type"], joined["room"], joined["ref"]) == ("joined", "team-red", 2)
    assert rt.hub.rooms.get("public-1") is None
    # The cached answer is the same the second time.
    again = await alice.request({"type": "join_room", "room": "public-1"})
    assert again["code"] == "forbidden"
    session = rt.hub.sessions[alice.id]
    assert session.guard is not None and session.guard.refused["forbidden"] == 2
    assert rt.hub.permissions.totals["forbidden"] == 2


async def test_publish_broadcast_and_private_are_refused_by_the_rules(serve) -> None:
    rt = await serve()
    alice = await login(rt, "alice")
    bob = await login(rt, "bob")
    carol = await login(rt, "carol")
    for c in (alice, bob, carol):
        assert (await c.request({"type": "join_room", "room": "lobby"}))["type"] == "joined"
    await alice.recv(), await alice.recv(), await bob.recv()  # user_joined notices
    # alice may join lobby but publish only to team-*.
    err = await alice.request({"type": "room_message", "room": "lobby", "data": 1, "ref": 7})
    assert (err["code"], err["ref"]) == ("forbidden", 7)
    assert "room_message" in err["message"] and "lobby" in err["message"]
    err = await alice.request({"type": "broadcast", "data": "hi", "ref": "b"})
    assert (err["code"], err["ref"]) == ("forbidden", "b") and "broadcast" in err["message"]
    err = await bob.request({"type": "private", "target": carol.id, "data": 1, "ref": 3})
    assert (err["code"], err["ref"]) == ("forbidden", 3) and "private" in err["message"]
    await carol.expect_nothing()
    # What the rules allow still works.
    await carol.send({"type": "room_message", "room": "lobby", "data": "ok"})
    assert (await alice.recv())["data"] == "ok"
    await alice.send({"type": "private", "target": carol.id, "data": "p"})
    assert (await carol.recv())["data"] == "p"
    assert rt.hub.permissions.totals["forbidden"] == 3


async def test_a_user_who_may_do_everything_keeps_the_sessions_own_handlers(
    serve, tmp_path: Path
) -> None:
    rt = await serve()
    rt.hub.permissions.policy = Policy.parse("[users.carol]\nmax_sessions = 5\n")
    carol = await login(rt, "carol")
    session: Any = rt.hub.sessions[carol.id]
    assert session.guard is not None
    assert session.handlers is session.guard.base


async def test_max_sessions_refuses_the_next_authentication_without_counting_brute_force(
    serve,
) -> None:
    rt = await serve()
    first = await login(rt, "alice")
    second = await login(rt, "alice")
    third = await JsonClient.connect(rt.port)
    err = await third.request({"type": "auth", "token": TOKENS["alice"], "ref": "x"})
    assert (err["type"], err["code"], err["ref"]) == ("error", "too_many_sessions", "x")
    assert await third.recv() == {"type": "closing", "reason": "auth_failed"}
    await third.expect_eof()
    assert rt.hub.auth_failures.failures("127.0.0.1") == 0
    assert rt.hub.permissions.totals["too_many_sessions"] == 1
    # Another user is not affected; a session that ends frees its place.
    await login(rt, "bob")
    await first.close()
    await eventually(lambda: rt.hub.permissions.by_user.get("alice") == 1)
    await login(rt, "alice")
    await second.close()


async def test_mux_streams_count_against_max_sessions_and_the_connection_does_not(
    serve,
) -> None:
    rt = await serve(protocol="mux")
    client = await JsonClient.connect(rt.port, welcome=False)

    def mux(sid: int, message: Any) -> bytes:
        body = frame(message) if sid else __import__("json").dumps(message).encode()
        return struct.pack(">II", sid, len(body)) + body

    async def control() -> Any:
        sid, n = struct.unpack(">II", await client.reader.readexactly(8))
        body = await client.reader.readexactly(n)
        assert sid == 0
        return __import__("json").loads(body)

    await client.send_raw(mux(0, {"type": "auth", "token": TOKENS["alice"]}))
    assert (await control())["type"] == "authenticated"
    for sid in (1, 3, 5):
        create = {"type": "stream_create", "streamId": sid, "streamType": "echo", "metadata": {}}
        await client.send_raw(mux(0, create))
    replies = []
    while len(replies) < 3:
        sid, n = struct.unpack(">II", await client.reader.readexactly(8))
        body = await client.reader.readexactly(n)
        if sid == 0:
            replies.append(__import__("json").loads(body))
    assert [r["type"] for r in replies] == ["stream_created", "stream_created", "error"]
    assert (replies[2]["code"], replies[2]["streamId"]) == ("too_many_sessions", 5)
    assert rt.hub.permissions.by_user["alice"] == 2


async def test_a_rate_limited_session_is_refused_counted_and_never_closed(serve) -> None:
    rt = await serve()
    bob = await login(rt, "bob")
    carol = await login(rt, "carol")
    # rate 5: the bucket holds 10 at the start. Pings take none.
    burst = b"".join(frame({"type": "broadcast", "data": i, "ref": i}) for i in range(14))
    burst += b"".join(frame({"type": "ping"}) for _ in range(20))
    await bob.send_raw(burst + frame({"type": "ping", "ref": "end"}))
    replies = [await bob.recv()]
    while replies[-1].get("ref") != "end":
        replies.append(await bob.recv())
    assert sum(r["type"] == "pong" for r in replies) == 21
    limited = [r for r in replies if r["type"] == "error"]
    assert all(r["code"] == "rate_limited" for r in limited)
    assert len(limited) >= 3  # a slow machine may refill a token or so meanwhile
    got = []
    while len(got) < 14 - len(limited):
        got.append((await carol.recv())["data"])
    assert got == list(range(len(got)))
    session = rt.hub.sessions[bob.id]
    assert session.guard is not None
    assert session.guard.refused["rate_limited"] == len(limited)
    assert rt.hub.permissions.totals["rate_limited"] == len(limited)
    # Still served: pings at once, and a message once the bucket has refilled.
    assert (await bob.request({"type": "ping"}))["type"] == "pong"
    await eventually(lambda: session.guard is not None and session.guard.take())
    assert not session.closing
