"""The console's drawing characters, with an ASCII set for terminals that lack the others.

The Linux virtual console (``TERM=linux``) and terminals in a non-UTF-8 locale
turn block elements, bullets and arrows into ``_``; there the console draws
with :data:`ASCII` instead. :func:`use_ascii` switches the set for the process.
"""

from __future__ import annotations

import locale
import os
import sys
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
)

G = replace(UNICODE)
"""The set in use; read its fields when drawing (``G.sep``), never copy them at import."""


def use_ascii(on: bool) -> None:
    """Draw with ASCII only (``True``) or with the Unicode set (``False``)."""
    chosen = ASCII if on else UNICODE
    for name in Glyphs.__slots__:
        setattr(G, name, getattr(chosen, name))


def ascii_wanted(environ: dict[str, str] | None = None) -> bool:
    """Whether this terminal needs ASCII: ``TERM=linux``, or a locale that is not UTF-8.

    ``VERB_CONSOLE_ASCII=1`` forces ASCII and ``=0`` forces Unicode.
    """
    env = os.environ if environ is None else environ
    forced = env.get("VERB_CONSOLE_ASCII")
    if forced in ("0", "1"):
        return forced == "1"
    if env.get("TERM") == "linux":
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
