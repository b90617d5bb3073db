"""Every pane at 80x24, 120x40 and 200x60, in the default theme and in 16 colours.

The fixed fake hub and a frozen clock; for each pane the tab bar shows every tab
(the Cluster tab too, on a single server), the pane's title names it,
and its table's header and first row are drawn within the screen's width.
"""

from __future__ import annotations

import pytest
from console_fake import FixedHubView, FrozenClock
from textual.widgets import Static

from verb_console.console import VerbConsoleApp
from verb_console.console.keys import PANE_NAMES

SIZES = [(80, 24), (120, 40), (200, 60)]


@pytest.mark.parametrize("theme", ["default", "verb-16"])
@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
async def test_every_pane_is_whole_at_each_size(size: tuple[int, int], theme: str) -> None:
    clock = FrozenClock()
    app = VerbConsoleApp(FixedHubView(clock), clock=clock)
    async with app.run_test(size=size) as pilot:
        if theme != "default":
            app.theme = theme
        for n, name in enumerate(PANE_NAMES, 1):
            await pilot.press(str(n))
            await pilot.pause()
            main = app.main
            assert main.current == name
            tabs = str(main.query_one("#tabs", Static).render())
            for m, other in enumerate(PANE_NAMES, 1):
                assert f"{m} {other.title()}" in tabs, (size, other, tabs)
            pane = main.pane(name)
            assert pane.region.width == size[0]
            assert pane._title_text.lstrip().upper().startswith(pane.label.upper()), name
            table = pane.table
            assert table.region.width <= size[0]
            header = table.render_line(0).text
            assert header.strip(), (name, size)
            assert len(header) <= size[0]
            if table.rows:
                assert table.render_line(1).text.strip(), (name, size)
