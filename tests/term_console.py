"""A console on a real pty, read back through a real terminal emulator (pyte).

Every byte the console writes is fed to a ``pyte.Screen`` through a
``pyte.ByteStream``, which decodes UTF-8 and interprets the escape sequences as a
terminal would (character sets included), so :meth:`TermConsole.screen` is the
characters an operator sees. A character outside ASCII stays one: nothing is
replaced or hidden on the way. Keys are sent as the bytes a terminal of the
given ``TERM`` sends for them.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from pathlib import Path

import pyte
from ptyconsole import PtyConsole

# What the keyboard sends, by the key's tmux name. The Linux console's editing
# keys are the VT220 ones (terminfo "linux": kend=\E[4~, khome=\E[1~); xterm's
# are the normal-mode cursor-key forms.
_KEYS_COMMON: dict[str, bytes] = {
    "Enter": b"\r",
    "Escape": b"\x1b",
    "Tab": b"\t",
    "BSpace": b"\x7f",
    "Space": b" ",
    "Up": b"\x1b[A",
    "Down": b"\x1b[B",
    "Right": b"\x1b[C",
    "Left": b"\x1b[D",
    "PageUp": b"\x1b[5~",
    "PageDown": b"\x1b[6~",
}
_KEYS_BY_TERM: dict[str, dict[str, bytes]] = {
    "linux": {"Home": b"\x1b[1~", "End": b"\x1b[4~"},
    "xterm": {"Home": b"\x1b[H", "End": b"\x1b[F"},
}


def key_bytes(term: str, key: str) -> bytes:
    """The bytes a ``term`` terminal sends for ``key``: a tmux-style name
    (``Enter``, ``End``, ``C-p``) or a literal character."""
    family = "linux" if term == "linux" else "xterm"
    table = {**_KEYS_COMMON, **_KEYS_BY_TERM[family]}
    if key in table:
        return table[key]
    if len(key) == 3 and key.startswith("C-") and key[2].isalpha():
        return bytes([ord(key[2].lower()) & 0x1F])
    if len(key) == 1:
        return key.encode()
    raise ValueError(f"no bytes known for key {key!r}")


class TermConsole:
    """``python -m verb_console ARGS`` on a ``cols`` x ``rows`` pty, in ``env`` exactly."""

    def __init__(
        self,
        tmp_path: Path,
        args: Sequence[str],
        env: dict[str, str],
        cols: int = 80,
        rows: int = 24,
    ) -> None:
        # Only what is given reaches the console (env -i): no inherited locale or TERM.
        self.env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(tmp_path), **env}
        self.term = self.env.get("TERM", "")
        self._screen = pyte.Screen(cols, rows)
        self._stream = pyte.ByteStream(self._screen)
        self._fed = 0
        self.pty = PtyConsole(
            args, cols=cols, rows=rows, env=self.env, cwd=str(tmp_path), inherit_env=False
        )

    def screen(self) -> str:
        """The characters on screen now, one line per row."""
        data = self.pty.bytes_since(self._fed)
        self._fed += len(data)
        self._stream.feed(data)
        return "\n".join(line.rstrip() for line in self._screen.display) + "\n"

    def press(self, *keys: str) -> None:
        """Keys as tmux names them (``Enter``, ``C-p``, ``End``) or literal characters."""
        for key in keys:
            self.pty.type(key_bytes(self.term, key))

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
            if self.pty.proc.poll() is not None:
                raise AssertionError(f"the console exited ({self.pty.proc.returncode}):\n{screen}")
            time.sleep(0.1)

    def close(self) -> None:
        """End the console for certain (it outlives a hang-up by design) and reap it."""
        self.pty.end()


def non_ascii(screen: str) -> list[tuple[int, str]]:
    """``(line number, line)`` of every line holding a character outside ASCII."""
    return [(n, line) for n, line in enumerate(screen.splitlines(), 1) if not line.isascii()]
