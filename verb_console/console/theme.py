"""The console's looks for plainer terminals: a theme for 16 colours, CSS for ASCII."""

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


FALLBACK_CSS = """
    VerbConsoleApp.-ascii ModalScreen > Vertical { border: ascii $primary; }
    /* Textual's own widgets draw with block elements; in ASCII they draw with none. */
    VerbConsoleApp.-ascii FooterKey.-command-palette { border-left: none; }
    VerbConsoleApp.-ascii Button, VerbConsoleApp.-ascii Button:focus,
    VerbConsoleApp.-ascii Button:hover, VerbConsoleApp.-ascii Button.-active {
        border: none; height: 1; min-width: 8; padding: 0 1;
    }
    VerbConsoleApp.-ascii Toast { border-left: none; }
    VerbConsoleApp.-ascii CommandPalette #--input { border: ascii $foreground 50%; }
    VerbConsoleApp.-ascii CommandPalette #--input.--list-visible { border-bottom: none; }
    VerbConsoleApp.-ascii Input { border: ascii $border-blurred; }
    VerbConsoleApp.-ascii Input.-textual-compact { border: none; }
    VerbConsoleApp.-ascii CommandList { border-bottom: ascii $foreground 50%; }
    VerbConsoleApp.-ascii CommandList:focus { border: blank; }
    /* A cut line ends where it is cut: the ellipsis is not ASCII. */
    VerbConsoleApp.-ascii * { text-overflow: clip !important; }
    VerbConsoleApp.-sixteen MainScreen #drain { color: ansi_black; }
    /* A notice is drawn on black: its text is white, not the terminal's default. */
    VerbConsoleApp.-sixteen Toast { background: ansi_black; color: ansi_bright_white; }
    VerbConsoleApp.-sixteen Toast.-information .toast--title { color: ansi_bright_green; }
    VerbConsoleApp.-sixteen Toast.-warning .toast--title { color: ansi_bright_yellow; }
    VerbConsoleApp.-sixteen Toast.-error .toast--title { color: ansi_bright_red; }
    /* 16 colours have no translucent tint: a tagged row is black on cyan. */
    VerbConsoleApp.-sixteen LiveTable > .live-table--tagged {
        background: ansi_cyan; color: ansi_black;
    }
"""
"""The app's CSS for an ASCII terminal (``-ascii``) and for the 16-colour theme (``-sixteen``)."""
