"""The console's own theme, for terminals that show only 16 colours."""

from __future__ import annotations

from textual.theme import Theme

SIXTEEN_COLOURS = Theme(
    name="verb-16",
    ansi=True,
    primary="ansi_blue",
    secondary="ansi_cyan",
    warning="ansi_yellow",
    error="ansi_red",
    success="ansi_green",
    # Not yellow: DRAINING (warning) must not look like the VERB label (accent).
    accent="ansi_cyan",
    foreground="ansi_default",
    background="ansi_default",
    surface="ansi_default",
    panel="ansi_default",
    boost="ansi_default",
    dark=True,
    variables={
        "ansi-background": "ansi_black",
        "ansi-foreground": "ansi_white",
        "border-blurred": "ansi_black",
        "block-cursor-foreground": "ansi_bright_white",
        "block-cursor-background": "ansi_blue",
        # Grey, not white: a light terminal's background is white, and a blurred
        # cursor (the broadcast target while typing) would not show on it.
        "block-cursor-blurred-foreground": "ansi_bright_white",
        "block-cursor-blurred-background": "ansi_bright_black",
        "input-cursor-background": "ansi_black",
        "input-cursor-foreground": "ansi_bright_white",
        "input-selection-background": "ansi_bright_blue",
        "input-selection-foreground": "ansi_black",
        "screen-selection-background": "ansi_bright_blue",
        "screen-selection-foreground": "ansi_black",
        # The tab bar's labels are links: the terminal's own foreground, not the stock
        # ANSI link blue (the current tab is white on blue) nor white (gone on a light
        # terminal).
        "link-color": "ansi_default",
        "link-color-hover": "ansi_bright_white",
        "link-background-hover": "ansi_blue",
    },
)
"""The theme for terminals with 16 colours: the terminal's own, chosen to stay distinct."""


def few_colours(color_system: str | None, term: str) -> bool:
    """Whether a terminal (Rich's detected colour system, ``$TERM``) has 16 colours or fewer."""
    return term == "linux" or color_system in ("standard", "windows")
