"""Banning from the console (PROTOCOL.md 12.3): ``z`` on the selected session, a
confirmation naming target and duration, and the Bans view (``Z``) lifting one.
A real server hosted by the console, a real client, Textual's pilot."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from helpers import JsonClient, eventually
from textual.widgets import Input, Label

from verb_console.console.bans import BanDialog, BansScreen
from verb_console.console.dialogs import ConfirmDialog
from verb_console.console.panes.connections import ConnectionsPane
from verb_console.console.run import build_app
from verb_console.settings import Settings

pytestmark = pytest.mark.timeout(60)
SIZE = (120, 40)


async def test_z_bans_the_selected_sessions_address_after_naming_it_and_Z_lifts_it(
    tmp_path: Path,
) -> None:
    settings = Settings(
        port=0,
        protocol="json",
        upload_dir=str(tmp_path / "up"),
        state_dir=str(tmp_path / "state"),
        max_per_ip=0,
    )
    app, runtime = build_app(settings)
    async with app.run_test(size=SIZE) as pilot:
        await eventually(lambda: runtime.server is not None)
        client = await JsonClient.connect(runtime.port, source_ip="127.0.0.2")
        pane = app.main.pane("connections")
        assert isinstance(pane, ConnectionsPane)
        await eventually(lambda: pane.selected_session_id() == client.id)
        await pilot.press("z")
        await eventually(lambda: isinstance(app.screen, BanDialog))
        app.screen.query_one("#duration", Input).value = "10m"
        await pilot.press("enter")
        await eventually(lambda: isinstance(app.screen, ConfirmDialog))
        question = app.screen.query_one("#question", Label)
        assert str(question.render()) == "Ban 127.0.0.2 for 10m?"
        await pilot.press("y")
        assert await client.recv() == {"type": "closing", "reason": "banned"}
        [ban] = runtime.hub.banning.live()
        assert (ban.target, ban.by) == ("127.0.0.2", "console")
        assert ban.expires is not None and ban.expires - ban.created == 600
        assert any(e.text == "ban 127.0.0.2 (10m) by console" for e in runtime.hub.events)
        # The Bans view lists it; enter asks to lift it, y lifts it.
        await pilot.press("Z")
        await eventually(lambda: isinstance(app.screen, BansScreen))
        await pilot.press("enter")
        await eventually(lambda: isinstance(app.screen, ConfirmDialog))
        assert str(app.screen.query_one("#question", Label).render()) == (
            "Lift the ban of 127.0.0.2?"
        )
        await pilot.press("y")
        await eventually(lambda: not runtime.hub.banning.live())
        back = await JsonClient.connect(runtime.port, source_ip="127.0.0.2")
        assert back.welcome["type"] == "welcome"
        await back.close()
        runtime.hub.force_shutdown()
        await asyncio.wait_for(runtime.hub.wait_stopped(), 10)


async def test_a_bad_duration_is_said_in_the_dialog_and_nothing_is_banned(
    tmp_path: Path,
) -> None:
    settings: Any = Settings(
        port=0,
        protocol="json",
        upload_dir=str(tmp_path / "up"),
        state_dir=str(tmp_path / "state"),
        max_per_ip=0,
    )
    app, runtime = build_app(settings)
    async with app.run_test(size=SIZE) as pilot:
        await eventually(lambda: runtime.server is not None)
        client = await JsonClient.connect(runtime.port, source_ip="127.0.0.3")
        pane = app.main.pane("connections")
        assert isinstance(pane, ConnectionsPane)
        await eventually(lambda: pane.selected_session_id() == client.id)
        await pilot.press("z")
        await eventually(lambda: isinstance(app.screen, BanDialog))
        app.screen.query_one("#duration", Input).value = "1 week"
        await pilot.press("enter")
        await pilot.pause()
        assert isinstance(app.screen, BanDialog)
        await pilot.press("escape")
        await eventually(lambda: not isinstance(app.screen, BanDialog))
        assert runtime.hub.banning.live() == []
        await client.close()
        runtime.hub.force_shutdown()
        await asyncio.wait_for(runtime.hub.wait_stopped(), 10)
