"""Every state of the console legible in 16 colours, on dark and on light terminals.

A 16-colour terminal picks the shades itself, and its default foreground is light
on one terminal and dark on another: :mod:`colour_check` holds the rules. The walk
visits every pane and dialog at 80x24 in every state that changes colours
(issue 24, item 7), and two pictures of each kind of terminal are kept.
"""

from __future__ import annotations

import io
import time
from collections.abc import Awaitable, Callable, Iterator

import pytest
from colour_check import screen_illegible
from console_fake import FixedHubView, FrozenClock
from rich.console import Console
from screen_text import screen_lines
from textual._ansi_theme import ALABASTER
from textual.pilot import Pilot

from verb_console.console import VerbConsoleApp

STEPS: list[tuple[str, ...]] = [
    *((str(n),) for n in range(1, 9)),
    ("1", "space", "down", "space"),  # tagged rows, the cursor on one
    ("c", "x"),  # a warning notice (no live session selected)
    ("c",),  # closed sessions
    ("c", "p"),  # paused, with its notice
    ("p", "slash", "j", "s"),  # the filter line open
    ("escape", "escape", "enter"),  # a session's details
    ("escape", "question_mark"),  # the help
    ("escape", "b"),  # broadcast: typing, a target chosen
    ("tab",),  # broadcast: the target list focused
    ("escape", "X"),  # a dangerous confirmation
    ("n", "1", "z"),  # the ban dialog: its target list blurred, the duration typed in
    ("tab",),  # the ban dialog: the target list focused
    ("escape", "Z"),  # the bans, one highlighted
    ("escape", "3", "enter"),  # a room's details
    ("escape",),
    ("3", "tab"),  # the lower table focused, the upper blurred
    ("6",),
    ("ctrl+p",),  # the palette
    ("escape", "s"),
    ("y",),  # draining: the banner, the state
    ("s",),  # close everything now?
]


@pytest.fixture(autouse=True)
def utc() -> Iterator[None]:
    mp = pytest.MonkeyPatch()
    mp.setenv("TZ", "UTC")
    time.tzset()
    yield
    mp.undo()
    time.tzset()


def make_app(*, read_only: bool = False, ascii: bool = False) -> VerbConsoleApp:
    clock = FrozenClock()
    return VerbConsoleApp(FixedHubView(clock), clock=clock, read_only=read_only, ascii=ascii)


# TERM=linux is both: 16 colours, and ASCII drawing (buttons without their edges).
@pytest.mark.parametrize("ascii", [False, True], ids=["unicode", "ascii"])
async def test_every_pane_dialog_and_state_is_legible_in_16_colours(ascii: bool) -> None:
    app = make_app(ascii=ascii)
    bad: dict[str, list[str]] = {}
    async with app.run_test(size=(80, 24)) as pilot:
        app.theme = "verb-16"
        await pilot.pause()
        for keys in STEPS:
            await pilot.press(*keys)
            await pilot.pause()
            found = screen_illegible(app)
            if ascii:
                # And every character on screen is ASCII, in every dialog and the palette.
                found += [
                    f"not ASCII: {line!r}" for line in screen_lines(app) if not line.isascii()
                ]
            if found:
                bad[" ".join(keys)] = found
    if bad:
        pytest.fail("\n".join(f"{keys}: {sorted(set(seen))}" for keys, seen in bad.items()))


class OnLightTerminal(VerbConsoleApp):
    """The console as a light terminal shows it: pictures drawn with a light palette.

    A picture maps the 16 colours to shades with a terminal palette (dark by
    default); this one maps them as a light terminal does, default background white.
    """

    def export_screenshot(self, *, title: str | None = None, simplify: bool = False) -> str:
        console = Console(
            width=self.size.width,
            height=self.size.height,
            file=io.StringIO(),
            force_terminal=True,
            color_system="truecolor",
            record=True,
            legacy_windows=False,
            safe_box=False,
        )
        screen = self.screen._compositor.render_update(
            full=True, screen_stack=self._background_screens, simplify=simplify
        )
        console.print(screen)
        return console.export_svg(title=title or self.title, theme=ALABASTER)


def make_16_app(terminal: str) -> VerbConsoleApp:
    clock = FrozenClock()
    app_class = OnLightTerminal if terminal == "light" else VerbConsoleApp
    return app_class(FixedHubView(clock), clock=clock)


def in_16_colours(*keys: str) -> Callable[[Pilot], Awaitable[None]]:
    async def run_before(pilot: Pilot) -> None:
        pilot.app.theme = "verb-16"
        await pilot.pause()
        await pilot.press(*keys)
        await pilot.pause()

    return run_before


@pytest.mark.parametrize("terminal", ["dark", "light"])
def test_16_colours_tagged_and_paused(snap_compare, terminal) -> None:
    steps = in_16_colours("space", "down", "space", "down", "p")
    assert snap_compare(make_16_app(terminal), terminal_size=(80, 24), run_before=steps)


@pytest.mark.parametrize("terminal", ["dark", "light"])
def test_16_colours_broadcast_target(snap_compare, terminal) -> None:
    steps = in_16_colours("3", "down", "b", *"hello")
    assert snap_compare(make_16_app(terminal), terminal_size=(80, 24), run_before=steps)


@pytest.mark.parametrize("terminal", ["dark", "light"])
def test_16_colours_ban_target(snap_compare, terminal) -> None:
    # The chosen target while the duration is typed: its own foreground on grey.
    steps = in_16_colours("down", "down", "z", *"10m")
    assert snap_compare(make_16_app(terminal), terminal_size=(80, 24), run_before=steps)
