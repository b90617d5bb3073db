"""A console run in a real terminal emulator, tmux, whose screen a test reads back.

tmux interprets every byte the console writes, as a terminal would, and
``capture-pane`` returns the characters on screen: what an operator sees. Each
instance has its own tmux server (its socket under the test's ``tmp_path``).
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
import time
from pathlib import Path


class TmuxConsole:
    """``python -m verb_console ARGS`` in a detached tmux session of ``cols`` x ``rows``."""

    def __init__(
        self,
        tmp_path: Path,
        args: list[str],
        env: dict[str, str],
        cols: int = 80,
        rows: int = 24,
    ) -> None:
        self.socket = str(tmp_path / "tmux.sock")
        # Only what is given reaches the console: no inherited locale or TERM.
        base = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(tmp_path)}
        inner = " ".join(f"{k}={shlex.quote(v)}" for k, v in {**base, **env}.items())
        command = f"env -i {inner} {shlex.quote(sys.executable)} -m verb_console " + " ".join(
            map(shlex.quote, args)
        )
        self._tmux("new-session", "-d", "-x", str(cols), "-y", str(rows), command)
        self._tmux("set-option", "-g", "remain-on-exit", "on")

    def _tmux(self, *args: str) -> str:
        # -u: this side reads the pane as UTF-8, so no character is hidden as "_".
        done = subprocess.run(
            ["tmux", "-u", "-S", self.socket, "-f", "/dev/null", *args],
            capture_output=True,
            text=True,
            timeout=20,
            env={**os.environ, "LANG": "C.UTF-8"},
        )
        if done.returncode != 0:
            raise AssertionError(f"tmux {args[0]}: {done.stderr.strip()}")
        return done.stdout

    def screen(self) -> str:
        """The characters on screen now, one line per row."""
        return self._tmux("capture-pane", "-p")

    def press(self, *keys: str) -> None:
        """Keys as tmux names them (``Enter``, ``C-p``, ``End``) or literal characters."""
        self._tmux("send-keys", *keys)

    def escape(self, gone: str, timeout: float = 20.0) -> None:
        """Escape, then wait until ``gone`` has left the screen (the dialog it closes).

        A key sent right after Escape would read as alt+key.
        """
        self.press("Escape")
        deadline = time.monotonic() + timeout
        while gone in self.screen():
            if time.monotonic() > deadline:
                raise AssertionError(f"{gone!r} still shown after escape:\n{self.screen()}")
            time.sleep(0.1)

    def wait_for(self, text: str, timeout: float = 20.0) -> str:
        """The screen once ``text`` is on it (AssertionError with the screen after ``timeout``)."""
        deadline = time.monotonic() + timeout
        while True:
            screen = self.screen()
            if text in screen:
                return screen
            if time.monotonic() > deadline:
                raise AssertionError(f"{text!r} never shown; the screen:\n{screen}")
            time.sleep(0.1)

    def close(self) -> None:
        """End the tmux server, and the console with it."""
        subprocess.run(["tmux", "-S", self.socket, "kill-server"], capture_output=True, timeout=20)


def non_ascii(screen: str) -> list[tuple[int, str]]:
    """``(line number, line)`` of every line holding a character outside ASCII."""
    return [(n, line) for n, line in enumerate(screen.splitlines(), 1) if not line.isascii()]
