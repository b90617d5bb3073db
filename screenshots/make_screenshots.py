"""Save an SVG of every console pane, the help screen and the broadcast dialog.

The console runs in demo mode (``verb-console --demo``): a real server on a free
loopback port with simulated json, echo, binary, mux and upload clients, so each
pane shows live traffic. Run from the repository root::

    python screenshots/make_screenshots.py [--settle SECONDS] [--out DIR]

The files are named after what they show (``connections.svg`` ... ``tap.svg``,
``help.svg``, ``broadcast.svg``, and ``session.svg`` and ``room.svg``, the detail
dialogs with their rate sparklines); their content changes from run to run because
the traffic and the clock are real.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from verb_console.console.dialogs import BroadcastDialog, DetailScreen, HelpScreen
from verb_console.console.glyphs import use_ascii
from verb_console.console.run import build_app
from verb_console.console.screen import PANES
from verb_console.settings import Settings

SIZE = (120, 40)
HERE = Path(__file__).resolve().parent


def portable(path: Path) -> None:
    """Make an SVG read the same in every renderer, not only in browsers.

    Textual writes spaces as no-break spaces in text that relies on
    ``textLength`` to keep its cells; renderers that ignore ``textLength`` (rsvg,
    many image viewers) draw those spaces narrower, so labels run into values.
    Plain spaces under ``xml:space="preserve"`` keep their width everywhere.
    """
    svg = path.read_text(encoding="utf-8")
    svg = svg.replace("&#160;", " ").replace("<svg ", '<svg xml:space="preserve" ', 1)
    path.write_text(svg, encoding="utf-8")


async def make_screenshots(out_dir: Path, settle: float) -> list[Path]:
    """Run the demo console, save one SVG per view, shut the server down; returns the files."""
    out_dir.mkdir(parents=True, exist_ok=True)
    # As in ``verb-console``: the terminal belongs to the UI, and the hub logs
    # connection errors (demo clients hanging up) to the Log pane itself.
    logging.getLogger("verb_console").addHandler(logging.NullHandler())
    logging.getLogger("verb_console").propagate = False
    app, runtime = build_app(Settings(demo=True, port=0, grace_period=2.0))
    # Pictures for a README: Unicode glyphs and the default theme, whatever this
    # terminal is and whatever theme its user saved.
    app.ascii = False
    use_ascii(False)
    os.environ["XDG_CONFIG_HOME"] = tempfile.mkdtemp(prefix="verb-console-shots-")
    saved: list[Path] = []

    def save(name: str) -> None:
        path = Path(app.save_screenshot(filename=f"{name}.svg", path=str(out_dir)))
        portable(path)
        saved.append(path)

    async def until(check: Callable[[], bool], timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while not check():
            if time.monotonic() > deadline:
                return False
            await asyncio.sleep(0.05)
        return True

    def uploading() -> bool:
        return any(t.state == "active" for t in app.main.pane("transfers").table.rows)

    async with app.run_test(size=SIZE) as pilot:
        if not await until(lambda: runtime.server is not None, 10):
            raise RuntimeError("the server did not start listening")
        # Let the simulated clients connect, chat, join rooms and upload.
        await pilot.pause(settle)
        try:
            for n, (name, _) in enumerate(PANES, 1):
                await pilot.press(str(n))
                await pilot.pause(0.6)  # at least two refreshes at 4 Hz
                if name == "transfers":
                    # Uploads come and go; catch one under way so its progress bar shows.
                    await until(uploading, 20)
                save(name)

            await pilot.press("1", "question_mark")
            await pilot.pause(0.3)
            assert isinstance(app.screen, HelpScreen)
            save("help")
            await pilot.press("escape")

            # The busiest session's details, and a room's, once their rates have
            # had some seconds to draw (the server samples them while they show).
            for name, keys in (("session", ("1", "M", "home", "enter")), ("room", ("3", "enter"))):
                await pilot.press(*keys)
                await pilot.pause(12.0)
                assert isinstance(app.screen, DetailScreen)
                save(name)
                await pilot.press("escape")

            await pilot.press("1", "b", *"Maintenance at 18:00 UTC, please reconnect after")
            await pilot.pause(0.3)
            assert isinstance(app.screen, BroadcastDialog)
            save("broadcast")
            await pilot.press("escape")
        finally:
            runtime.hub.force_shutdown()
            await asyncio.wait_for(runtime.hub.wait_stopped(), 10)
            await pilot.pause(0.5)
    return saved


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--settle", type=float, default=8.0, help="seconds of demo traffic first")
    parser.add_argument("--out", type=Path, default=HERE, help="where the SVGs go")
    args = parser.parse_args()
    for path in asyncio.run(make_screenshots(args.out, args.settle)):
        print(path)


if __name__ == "__main__":
    main()
