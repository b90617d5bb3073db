"""The ASCII fallback, in a real terminal (a pty read through pyte): every screen,
dialog and palette.

With ``TERM=linux`` (the Linux console's font has no block elements) and with the C
locale (which Python turns into C.UTF-8 before the console looks: PEP 538), what
the terminal shows holds no character outside ASCII (issue 24, item 6).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from term_console import TermConsole, non_ascii

pytestmark = pytest.mark.timeout(120)

TITLES = ("CONNECTIONS", "THROTTLE", "ROOMS", "STREAMS", "TRANSFERS", "LOG", "TAP", "CLUSTER")


def visit_every_screen(console: TermConsole) -> dict[str, str]:
    """Each pane, a detail dialog, the help (top and end), the broadcast and confirm
    dialogs, a notification and the command palette: the screen of each, by name."""
    seen: dict[str, str] = {"start": console.wait_for("CONNECTIONS")}
    console.wait_for("json")  # the demo's clients are in
    for n, title in enumerate(TITLES, 1):
        console.press(str(n))
        seen[title] = console.wait_for(f" {title} ")
    console.press("1", "Enter")
    seen["detail"] = console.wait_for("esc close")
    console.escape("esc close")
    console.press("?")
    seen["help"] = console.wait_for("Keys")
    console.press("End")
    seen["help end"] = console.wait_for("command palette")
    console.escape("command palette")
    console.press("b")
    seen["broadcast"] = console.wait_for("message to send")
    console.escape("message to send")
    console.press("s")
    seen["confirm"] = console.wait_for("Shut down gracefully?")
    console.press("n", "p")
    seen["notice"] = console.wait_for("Live view paused")
    console.press("p", "C-p")
    # The palette as it opens, its placeholder on show, then with a search typed.
    seen["palette empty"] = console.wait_for("Search for commands")
    console.press(*"sort")
    seen["palette"] = console.wait_for("Sort by")
    console.escape("Sort by")
    return seen


@pytest.mark.parametrize(
    "env",
    [
        {"TERM": "linux", "LANG": "C.UTF-8"},
        # The C locale, as given: Python coerces it to C.UTF-8 itself.
        {"TERM": "xterm-256color", "LANG": "C"},
    ],
    ids=["TERM=linux", "LANG=C"],
)
def test_every_screen_is_pure_ascii(tmp_path: Path, env: dict[str, str]) -> None:
    run = tmp_path / "run"
    run.mkdir()
    env = {**env, "XDG_RUNTIME_DIR": str(run), "XDG_CONFIG_HOME": str(tmp_path)}
    args = ["--port", "0", "--demo", "--upload-dir", str(tmp_path / "up")]
    console = TermConsole(tmp_path, args, env)
    try:
        seen = visit_every_screen(console)
    finally:
        console.close()
    bad = {name: non_ascii(screen) for name, screen in seen.items() if non_ascii(screen)}
    assert not bad, bad


def test_the_c_locale_is_judged_as_given_not_as_python_coerced_it() -> None:
    from verb_console.console.glyphs import ascii_wanted, given_c_locale

    # LANG=C, as Python leaves it after PEP 538's coercion: LC_CTYPE=C.UTF-8, UTF-8 mode on.
    coerced = {"TERM": "xterm-256color", "LANG": "C", "LC_CTYPE": "C.UTF-8"}
    assert given_c_locale(coerced, utf8_mode=True)
    assert ascii_wanted(coerced, utf8_mode=True)
    # UTF-8 mode asked for, or a UTF-8 locale given: Unicode.
    assert not ascii_wanted({**coerced, "PYTHONUTF8": "1"}, utf8_mode=True)
    assert not ascii_wanted({"TERM": "xterm", "LC_CTYPE": "C.UTF-8"}, utf8_mode=False)


def test_a_process_given_the_c_locale_draws_in_ascii() -> None:
    """Judged in real interpreters started with exactly that environment (env -i):
    PEP 538 coerces LANG=C, and LC_ALL=C turns UTF-8 mode on, before the console looks.
    glyphs.py is loaded alone (it needs only the standard library), to stay quick."""
    import subprocess
    import sys

    import verb_console.console.glyphs as glyphs

    code = (
        "import importlib.util as u, sys; s = u.spec_from_file_location('g', sys.argv[1]);"
        " m = sys.modules['g'] = u.module_from_spec(s); s.loader.exec_module(m);"
        " print(m.ascii_wanted())"
    )
    base = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "TERM": "xterm-256color"}
    cases = [
        ({"LC_ALL": "C"}, "True"),
        ({"LANG": "C"}, "True"),
        ({"LC_ALL": "POSIX", "LANG": "C.UTF-8"}, "True"),
        ({}, "True"),  # no locale at all is the C locale
        ({"LC_ALL": "C.UTF-8"}, "False"),
        ({"LANG": "en_US.UTF-8", "LC_ALL": "C.UTF-8"}, "False"),
    ]
    for given, wanted in cases:
        out = subprocess.run(
            [sys.executable, "-c", code, glyphs.__file__],
            env={**base, **given},
            capture_output=True,
            text=True,
        )
        assert out.stdout.strip() == wanted, (given, out)


def test_the_terminal_shows_unicode_where_it_is_wanted_and_close_ends_the_console(
    tmp_path: Path,
) -> None:
    """Guards the test above: on a Unicode terminal the emulator does see the
    console's non-ASCII glyphs, and close() leaves no console running (it keeps
    serving after a hang-up by design)."""
    env = {"TERM": "xterm-256color", "LANG": "C.UTF-8", "XDG_CONFIG_HOME": str(tmp_path)}
    args = ["--port", "0", "--demo", "--upload-dir", str(tmp_path / "up")]
    console = TermConsole(tmp_path, args, env)
    try:
        screen = console.wait_for("CONNECTIONS")
    finally:
        console.close()
    assert non_ascii(screen), screen
    assert console.pty.proc.returncode is not None
    with pytest.raises(ProcessLookupError):
        os.killpg(console.pty.proc.pid, 0)
