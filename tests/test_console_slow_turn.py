"""The header shows the last minute's slowest loop turn once one went over 20 ms
(issue 21: an operator must see it when it happens), with what it was doing."""

from __future__ import annotations

import dataclasses

from console_fake import FixedHubView, FrozenClock

from verb_console.console import VerbConsoleApp
from verb_console.hub.snapshot import Overview, TurnInfo

SIZE = (160, 30)


class TurnsView(FixedHubView):
    turns: tuple[TurnInfo, ...] = ()

    def overview(self) -> Overview:
        return dataclasses.replace(super().overview(), slowest_turns=self.turns)


async def test_a_turn_over_20_ms_is_in_the_header_with_what_it_did() -> None:
    clock = FrozenClock()
    view = TurnsView(clock)
    app = VerbConsoleApp(view, clock=clock)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.pause(0.3)
        assert "slowest turn" not in str(app.main.header.render())
        view.turns = (TurnInfo(0.012, clock(), "fan-out step"),)
        clock.advance(1.0)
        await pilot.pause(0.6)
        assert "slowest turn" not in str(app.main.header.render())  # 12 ms: fine
        view.turns = (
            TurnInfo(0.0347, clock(), "console refresh"),
            TurnInfo(0.021, clock(), ""),
        )
        clock.advance(1.0)
        await pilot.pause(0.6)
        assert "slowest turn 35 ms console refresh" in str(app.main.header.render())
        view.turns = (TurnInfo(0.05, clock(), ""),)
        clock.advance(1.0)
        await pilot.pause(0.6)
        header = str(app.main.header.render())
        assert "slowest turn 50 ms" in header and "console refresh" not in header
