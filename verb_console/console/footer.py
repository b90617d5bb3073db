"""The main screen's footer, made again only when the keys it shows change.

Textual's :class:`~textual.widgets.Footer` composes its keys afresh whenever the
screen's bindings may have changed, which is every change of focus: switching
panes moved focus to another table, so every switch mounted the footer's dozen
keys anew and styled each (40 to 100 ms of one loop turn, which the server's
sessions wait through). The keys it shows are the same on every pane, so this
footer compares what it would show with what it shows, and composes only when
they differ.
"""

from __future__ import annotations

from typing import Any

from textual.screen import Screen
from textual.widgets import Footer


class SteadyFooter(Footer):
    """A :class:`~textual.widgets.Footer` that recomposes only when its keys change."""

    _shown: Any = None

    def _keys(self, screen: Screen[Any]) -> Any:
        """What :meth:`Footer.compose` would show, as a value to compare."""
        active = screen.active_bindings
        keys = tuple(
            (b.key, b.description, b.action, b.group, enabled, tooltip)
            for (_node, b, enabled, tooltip) in active.values()
            if b.show
        )
        palette = active.get(self.app.COMMAND_PALETTE_BINDING)
        shown = palette[1:] if palette is not None else None
        return keys, shown, self.show_command_palette, self.compact

    def bindings_changed(self, screen: Screen[Any]) -> None:
        if self.is_attached and screen is self.screen and screen.app.app_focus:
            keys = self._keys(screen)
            if keys == self._shown and self._bindings_ready:
                return
            self._shown = keys
        super().bindings_changed(screen)
