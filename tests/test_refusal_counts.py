"""Refusals counted per session and in total (PROTOCOL.md 12.1, 12.3), read where the
console reads them: the live view's session records and overview, an attached
view over the admin socket, and ``ctl status``. A real server with an auth file
and a policy, real clients refused on the wire."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from typing import Any

import pytest
from helpers import JsonClient, eventually, frame
from policy_helpers import TOKENS, login, policy_fixtures

from verb_console.admin.client import AdminClient
from verb_console.admin.ctl import main as ctl_main
from verb_console.admin.remote_view import RemoteHubView
from verb_console.hub.snapshot import Refusals
from verb_console.hub.view import LiveHubView
from verb_console.runtime import Runtime

pytestmark = [
    pytest.mark.skipif(sys.platform != "linux", reason="Unix sockets with SO_PEERCRED"),
    pytest.mark.timeout(60),
]

files, serve = policy_fixtures()


async def refused_on_the_wire(rt: Runtime) -> dict[str, Any]:
    """alice is forbidden twice, bob rate limited, a third alice too many, carol banned.

    Returns the clients left live and how many of bob's messages were refused.
    """
    alice = await login(rt, "alice")
    bob = await login(rt, "bob")
    carol = await login(rt, "carol")
    anonymous = await JsonClient.connect(rt.port)  # no user: no policy to refuse it
    for room in ("public-1", "public-2"):
        err = await alice.request({"type": "join_room", "room": room})
        assert err["code"] == "forbidden", err
    # bob's rate is 5 a second: his bucket holds 10, and a burst of 14 outruns it.
    burst = b"".join(frame({"type": "broadcast", "data": i}) for i in range(14))
    await bob.send_raw(burst + frame({"type": "ping", "ref": "end"}))
    replies = [await bob.recv()]
    while replies[-1].get("ref") != "end":
        replies.append(await bob.recv())
    limited = sum(r.get("code") == "rate_limited" for r in replies)
    assert limited >= 3  # a slow machine may refill a token or so meanwhile
    # alice's max_sessions is 2: her third session is refused.
    second = await login(rt, "alice")
    third = await JsonClient.connect(rt.port)
    err = await third.request({"type": "auth", "token": TOKENS["alice"]})
    assert err["code"] == "too_many_sessions", err
    # A banned user's next authentication is refused.
    rt.hub.banning.ban("user:carol", "test")
    await eventually(lambda: carol.id not in rt.hub.sessions)
    again = await JsonClient.connect(rt.port)
    err = await again.request({"type": "auth", "token": TOKENS["carol"]})
    assert err["code"] == "banned", err
    return {
        "alice": alice,
        "bob": bob,
        "anonymous": anonymous,
        "second": second,
        "limited": limited,
    }


async def test_the_live_view_counts_each_session_s_refusals_and_the_overview_all(
    serve, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    admin = tmp_path / "admin.sock"
    rt = await serve(admin_socket=str(admin), state_dir=str(tmp_path / "state"))
    view = LiveHubView(rt.hub)
    assert view.overview().refusals == Refusals()
    # An order kept from before the refusals follows them (a refused message
    # marks its session changed, as any message does).
    assert view.session_page("refused", True).rows == ()
    got = await refused_on_the_wire(rt)
    alice, bob, anonymous = got["alice"], got["bob"], got["anonymous"]
    limited = got["limited"]
    assert view.overview().refusals == Refusals(
        forbidden=2, rate_limited=limited, banned=1, too_many_sessions=1
    )
    assert view.overview().refusals.total == 4 + limited
    refused = {s.id: s.refused for s in view.session_page("refused", True).rows}
    assert refused[alice.id] == 2 and refused[bob.id] == limited
    assert refused[anonymous.id] == 0 and sum(refused.values()) == 2 + limited
    page = view.session_page("refused", True)
    assert [s.id for s in page.rows[:2]] == [bob.id, alice.id]
    session = view.session(alice.id)
    assert session is not None and session.refused == 2
    # The Connections pane's filter and the server's agree on the column.
    kept = view.session_page("id", False, "refused>0")
    assert sorted(s.id for s in kept.rows) == sorted([alice.id, bob.id])

    # ctl status gives the same figures, from the overview.
    async with await AdminClient.connect(admin) as client:
        status = await client.request("status")
    assert status["refusals"] == {
        "forbidden": 2,
        "rate_limited": limited,
        "banned": 1,
        "too_many_sessions": 1,
    }
    code = await asyncio.to_thread(ctl_main, ["--admin-socket", str(admin), "status"])
    out = capsys.readouterr().out
    assert code == 0
    line = f"refusals: forbidden: 2  rate limited: {limited}  banned: 1  too many sessions: 1"
    assert line in out.splitlines(), out


async def test_an_attached_view_shows_the_same_refusals(serve, tmp_path: Path) -> None:
    admin = tmp_path / "admin.sock"
    rt = await serve(admin_socket=str(admin), state_dir=str(tmp_path / "state"))
    view = RemoteHubView(admin, interval=0.05)
    task = asyncio.create_task(view.run())
    try:
        await eventually(lambda: view.connected, timeout=5)
        got = await refused_on_the_wire(rt)
        alice, bob, limited = got["alice"], got["bob"], got["limited"]
        want = Refusals(forbidden=2, rate_limited=limited, banned=1, too_many_sessions=1)
        await eventually(lambda: view.overview().refusals == want, timeout=5)
        assert rt.hub.overview().refusals == want

        def counts() -> dict[str, int]:
            return {s.id: s.refused for s in view.session_page("refused", True).rows}

        await eventually(lambda: counts().get(bob.id) == limited, timeout=5)
        assert counts()[alice.id] == 2
        session = view.session(alice.id)
        assert session is not None and session.refused == 2
    finally:
        view.stop()
        await asyncio.wait_for(task, 5)
