"""Switching panes leaves the footer's keys as they are (issue 21: the loop stays short).

Textual's footer composed its keys afresh on every change of focus, and every
pane switch moves focus to another table: a dozen widgets mounted and styled in
one loop turn that the server's sessions wait through. The keys are the same on
every pane, so the footer keeps its widgets, and composes only when they change.
"""

from __future__ import annotations

from console_fake import FixedHubView, FrozenClock
from textual.widgets._footer import FooterKey

from verb_console.console import VerbConsoleApp


def _keys(app: VerbConsoleApp) -> list[FooterKey]:
    return list(app.screen.query(FooterKey))


def _shown(app: VerbConsoleApp) -> list[str]:
    """What the screen's bindings say the footer shows, as Textual's footer reads them."""
    return [b.description for (_n, b, _e, _t) in app.screen.active_bindings.values() if b.show]


async def test_switching_panes_keeps_the_footer_s_keys_and_what_they_say() -> None:
    clock = FrozenClock()
    app = VerbConsoleApp(FixedHubView(clock), clock=clock)
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.pause()
        first = _keys(app)
        assert [k.description for k in first if k.description][: len(_shown(app))] == _shown(app)
        for key in "2345671":
            await pilot.press(key)
            await pilot.pause()
            # The same widgets: nothing was mounted for the switch.
            assert [id(k) for k in _keys(app)] == [id(k) for k in first]
            labels = [k.description for k in _keys(app) if k.description]
            assert labels[: len(_shown(app))] == _shown(app)


async def test_the_footer_composes_again_when_its_keys_change() -> None:
    clock = FrozenClock()
    app = VerbConsoleApp(FixedHubView(clock), clock=clock)
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.pause()
        tables = [k.description for k in _keys(app)]
        assert "Broadcast" in tables
        # The filter's input takes focus: the footer shows its keys instead.
        await pilot.press("slash")
        for _ in range(3):
            await pilot.pause()
        typing = [k.description for k in _keys(app)]
        assert "Broadcast" not in typing and "Clear filter" in typing
        assert [d for d in typing if d][: len(_shown(app))] == _shown(app)
        # And the tables' keys again once it is left.
        await pilot.press("escape")
        for _ in range(3):
            await pilot.pause()
        assert [k.description for k in _keys(app)] == tables
