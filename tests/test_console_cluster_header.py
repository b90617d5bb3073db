"""The console's header names the cluster node and its Redis link (and nothing without one)."""

from __future__ import annotations

import dataclasses

from console_fake import FixedHubView, FrozenClock

from verb_console.console import VerbConsoleApp
from verb_console.hub.snapshot import Overview

SIZE = (120, 30)


class NodeView(FixedHubView):
    link = "up"

    def overview(self) -> Overview:
        return dataclasses.replace(super().overview(), node="node-a", link=self.link)


async def test_the_header_shows_the_node_name_and_the_link_state() -> None:
    clock = FrozenClock()
    view = NodeView(clock)
    app = VerbConsoleApp(view, clock=clock)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause(0.3)
        assert "node node-a redis up" in str(app.main.header.render())
        view.link = "down"
        clock.advance(1.0)
        await pilot.pause(0.6)
        assert "node node-a redis down" in str(app.main.header.render())


async def test_a_single_server_header_has_no_node() -> None:
    clock = FrozenClock()
    app = VerbConsoleApp(FixedHubView(clock), clock=clock)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause(0.3)
        assert "node " not in str(app.main.header.render())
