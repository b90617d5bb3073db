"""The console shows refusals (PROTOCOL.md 12.1): their total in the header, once
there are some, and each session's own in the Connections pane's REFUSED column
and its detail dialog. A real server with a policy hosted by the console, real
clients refused on the wire, Textual's pilot."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

import pytest
from console_fake import FixedHubView, FrozenClock
from helpers import eventually
from policy_helpers import POLICY, TOKENS, login, write_auth
from screen_text import screen_lines, screen_text

from verb_console.console import VerbConsoleApp
from verb_console.console.dialogs import DetailScreen
from verb_console.console.panes.connections import ConnectionsPane
from verb_console.console.run import build_app
from verb_console.hub.snapshot import Refusals
from verb_console.settings import Settings

pytestmark = pytest.mark.timeout(60)
# Wide enough for the USER and REFUSED columns, which hide first when narrow.
SIZE = (140, 40)


async def test_the_header_totals_refusals_and_the_connections_pane_shows_each_session_s(
    tmp_path: Path,
) -> None:
    auth, policy = tmp_path / "tokens", tmp_path / "policy.toml"
    write_auth(auth, TOKENS)
    policy.write_text(POLICY)
    settings = Settings(
        port=0,
        protocol="json",
        upload_dir=str(tmp_path / "up"),
        state_dir=str(tmp_path / "state"),
        max_per_ip=0,
        auth_file=str(auth),
        policy=str(policy),
    )
    app, runtime = build_app(settings)
    async with app.run_test(size=SIZE) as pilot:
        await eventually(lambda: runtime.server is not None)
        alice = await login(runtime, "alice")
        carol = await login(runtime, "carol")
        pane = app.main.pane("connections")
        assert isinstance(pane, ConnectionsPane)
        await eventually(lambda: {alice.id, carol.id} <= {r.id for r in pane.table.rows})
        # None refused yet: the header says nothing of refusals.
        assert "refused" not in screen_lines(app)[1]
        for room in ("public-1", "public-2"):
            assert (await alice.request({"type": "join_room", "room": room}))["code"] == "forbidden"
        await eventually(lambda: "refused 2" in screen_lines(app)[1])

        def cells(session_id: str) -> list[str]:
            line = next(x for x in screen_lines(app) if x.startswith(session_id + " "))
            return line.split()

        labels = [pane.table.columns[i].label for i, _ in pane.table._layout(pane.table._width)]
        assert labels[-2:] == ["USER", "REFUSED"]
        await eventually(lambda: cells(alice.id)[-2:] == ["alice", "2"])
        assert cells(carol.id)[-2:] == ["carol", "0"]
        # The filter reads the column as the server does: only alice is left, and
        # her details say how many of her requests were refused.
        await pilot.press("slash", *"refused>0", "enter")
        await eventually(lambda: [r.id for r in pane.table.rows] == [alice.id])
        await pilot.press("enter")
        await eventually(lambda: isinstance(app.screen, DetailScreen))
        await eventually(lambda: re.search(r"Refused requests +2\b", screen_text(app)) is not None)
        runtime.hub.force_shutdown()
        await asyncio.wait_for(runtime.hub.wait_stopped(), 10)


@pytest.mark.parametrize("size", [(80, 24), (120, 40)], ids=["80x24", "120x40"])
async def test_the_header_makes_room_for_refusals_at_80_columns(size: tuple[int, int]) -> None:
    """The fixed hub's counts fill an 80-column line: the refusals take the peak's place."""
    clock = FrozenClock()
    view = FixedHubView(clock)
    app = VerbConsoleApp(view, clock=clock)
    async with app.run_test(size=size) as pilot:
        await pilot.pause()
        before = screen_lines(app)[1]
        assert "refused" not in before and "peak 1,842" in before
        view.refusals = Refusals(forbidden=1200, rate_limited=34)
        app.refresh_once()
        await pilot.pause()
        line = screen_lines(app)[1]
        assert "refused 1,234" in line and "rejected 17" in line
        assert len(line.rstrip()) <= size[0]
        # The peak gives way only where the line is short of room.
        assert ("peak 1,842" in line) == (size[0] > 80)
