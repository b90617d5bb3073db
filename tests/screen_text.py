"""The text a console's screen shows now, line by line, for tests that read it."""

from __future__ import annotations

from textual.app import App


def screen_lines(app: App[object]) -> list[str]:
    """Every line of the topmost screen as drawn (dialogs over the screen beneath)."""
    strips = app.screen._compositor.render_strips()
    return [strip.text for strip in strips]


def screen_text(app: App[object]) -> str:
    """The screen as one string, lines joined by newlines."""
    return "\n".join(screen_lines(app))
