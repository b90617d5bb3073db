"""The console's drawing characters, with an ASCII set for terminals that lack the others.

The Linux virtual console (``TERM=linux``) and terminals in a non-UTF-8 locale
turn block elements, bullets and arrows into ``_``; there the console draws
with :data:`ASCII` instead. :func:`use_ascii` switches the set for the process.
"""

from __future__ import annotations

import locale
import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass, replace


@dataclass(slots=True)
class Glyphs:
    spark: str = "▁▂▃▄▅▆▇█"
    """Eight sparkline heights, lowest first."""
    dot: str = "●"
    pause: str = "⏸"
    up: str = "▲"
    down: str = "▼"
    more: str = "…"
    sep: str = "·"
    full: str = "█"
    empty: str = "░"
    at_most: str = "≤"
    open_quote: str = "“"
    close_quote: str = "”"
    key_up: str = "↑"
    key_down: str = "↓"


UNICODE = Glyphs()
ASCII = Glyphs(
    spark="_.-:=+*#",
    dot="*",
    pause="||",
    up="^",
    down="v",
    more="~",
    sep="|",
    full="#",
    empty=".",
    at_most="<=",
    open_quote='"',
    close_quote='"',
    key_up="Up",
    key_down="Down",
)

G = replace(UNICODE)
"""The set in use; read its fields when drawing (``G.sep``), never copy them at import."""


def use_ascii(on: bool) -> None:
    """Draw with ASCII only (``True``) or with the Unicode set (``False``)."""
    chosen = ASCII if on else UNICODE
    for name in Glyphs.__slots__:
        setattr(G, name, getattr(chosen, name))


def given_c_locale(environ: Mapping[str, str] | None = None, utf8_mode: bool | None = None) -> bool:
    """Whether the process was started in the C (or POSIX) locale, before Python changed it.

    Given ``LANG=C`` (and no ``LC_ALL``), Python coerces the locale to C.UTF-8
    (PEP 538: it sets ``LC_CTYPE=C.UTF-8`` in the environment) and turns on its
    UTF-8 mode (PEP 540) before any code runs, so the environment then looks
    UTF-8. The UTF-8 mode gives it away: it is on though nobody asked for it
    (no ``PYTHONUTF8``, no ``-X utf8``) only when the locale given was C or POSIX.
    ``utf8_mode`` stands for ``sys.flags.utf8_mode`` (tests pass it).
    """
    env = os.environ if environ is None else environ
    if utf8_mode is None:
        # An environment passed in is judged alone; this process's own, with its flag.
        utf8_mode = environ is None and bool(sys.flags.utf8_mode)
    mode = utf8_mode
    asked = "PYTHONUTF8" in env or "utf8" in getattr(sys, "_xoptions", {})
    return mode and not asked


def ascii_wanted(environ: Mapping[str, str] | None = None, utf8_mode: bool | None = None) -> bool:
    """Whether this terminal needs ASCII: ``TERM=linux``, or a locale that is not UTF-8.

    The locale judged is the one the process was given (:func:`given_c_locale`).
    ``VERB_CONSOLE_ASCII=1`` forces ASCII and ``=0`` forces Unicode.
    """
    env = os.environ if environ is None else environ
    forced = env.get("VERB_CONSOLE_ASCII")
    if forced in ("0", "1"):
        return forced == "1"
    if env.get("TERM") == "linux":
        return True
    if given_c_locale(environ, utf8_mode):
        return True
    encoding = ""
    for name in ("LC_ALL", "LC_CTYPE", "LANG"):
        value = env.get(name)
        if value:
            encoding = value.rpartition(".")[2] if "." in value else value
            break
    if not encoding:
        encoding = getattr(sys.stdout, "encoding", None) or locale.getpreferredencoding(False)
    return encoding.lower().replace("-", "").replace("_", "") not in ("utf8", "utf8mb4")
