"""Textual's own drawing characters, swapped for ASCII where the terminal needs it.

Scrollbar ends and the command palette's search icon are not styled by CSS:
they are class-level defaults of Textual's widgets, so they are switched here,
for the process, beside :func:`.glyphs.use_ascii`. Borders, the footer's
separator and the buttons' edges are switched by the app's ``-ascii`` CSS.
"""

from __future__ import annotations

from typing import Any

from textual.command import SearchIcon
from textual.scrollbar import ScrollBar, ScrollBarRender


class AsciiScrollBarRender(ScrollBarRender):
    """A scrollbar drawn in colour alone: its thumb is a run of blank cells."""

    VERTICAL_BARS = [" "] * 8
    HORIZONTAL_BARS = [" "] * 8


_ICON: Any = SearchIcon.__dict__["icon"]
_UNICODE_ICON: str = _ICON._default


def use_ascii(on: bool) -> None:
    """Draw scrollbars and the palette's search icon with ASCII only (``True``) or not."""
    ScrollBar.renderer = AsciiScrollBarRender if on else ScrollBarRender
    # The icon is a reactive whose default every new palette takes.
    _ICON._default = ">" if on else _UNICODE_ICON
