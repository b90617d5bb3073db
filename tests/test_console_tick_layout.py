"""A tick that changes nothing lays nothing out (issue 21: the loop stays short).

A Textual layout arranges every widget on the screen. The pane titles and the
lines over the lower tables are one line of the pane's width whatever they say,
so a new text repaints them without a layout, and an unchanged one touches
nothing: a pane's tick costs its rows, not a layout of the screen four times a
second.
"""

from __future__ import annotations

from typing import Any

import pytest
from console_fake import FixedHubView, FrozenClock
from textual.widget import Widget

from verb_console.console import VerbConsoleApp
from verb_console.console.keys import PANE_NAMES


@pytest.mark.parametrize("name", PANE_NAMES)
async def test_ticks_with_nothing_new_ask_for_no_layout(name: str, monkeypatch) -> None:
    clock = FrozenClock()
    app = VerbConsoleApp(FixedHubView(clock), clock=clock)
    asked: list[str] = []
    refresh = Widget.refresh

    def noted(self: Widget, *regions: Any, **kw: Any) -> Any:
        if kw.get("layout") or kw.get("recompose"):
            asked.append(type(self).__name__)
        return refresh(self, *regions, **kw)

    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.press(str(PANE_NAMES.index(name) + 1))
        await pilot.pause()
        assert app.main.current == name
        for _ in range(3):
            app.refresh_once()
            await pilot.pause()
        monkeypatch.setattr(Widget, "refresh", noted)
        for _ in range(4):
            app.refresh_once()
            await pilot.pause()
        monkeypatch.undo()
    assert asked == [], (name, asked)
