"""Textual's own drawing characters, swapped for ASCII where the terminal needs it.

Scrollbar ends, the command palette's search icon and its placeholder are not styled by CSS:
they are class-level defaults of Textual's widgets, so they are switched here,
for the process, beside :func:`.glyphs.use_ascii`. Borders, the footer's
separator and the buttons' edges are switched by the app's ``-ascii`` CSS.
"""

from __future__ import annotations

from typing import Any

from textual.command import CommandPalette, SearchIcon
from textual.scrollbar import ScrollBar, ScrollBarRender


class AsciiScrollBarRender(ScrollBarRender):
    """A scrollbar drawn in colour alone: its thumb is a run of blank cells."""

    VERTICAL_BARS = [" "] * 8
    HORIZONTAL_BARS = [" "] * 8


_ICON: Any = SearchIcon.__dict__["icon"]
_UNICODE_ICON: str = _ICON._default
# The palette's placeholder ends in an ellipsis; the app opens it with the default.
_PALETTE_DEFAULTS: dict[str, Any] = CommandPalette.__init__.__kwdefaults__ or {}
_UNICODE_PLACEHOLDER: str = _PALETTE_DEFAULTS.get("placeholder", "")


def use_ascii(on: bool) -> None:
    """Draw scrollbars and the palette's icon and placeholder in ASCII only (``True``) or not."""
    ScrollBar.renderer = AsciiScrollBarRender if on else ScrollBarRender
    # The icon is a reactive whose default every new palette takes.
    _ICON._default = ">" if on else _UNICODE_ICON
    if _UNICODE_PLACEHOLDER:
        ascii_text = _UNICODE_PLACEHOLDER.replace("\u2026", "...")
        _PALETTE_DEFAULTS["placeholder"] = ascii_text if on else _UNICODE_PLACEHOLDER
