"""Whether text stays legible in 16 colours on a dark and on a light terminal.

With 16 colours the terminal chooses the actual shades: its default foreground
and background are light on dark on one terminal and dark on light on another,
and ``white`` text vanishes on the second as ``black`` does on the first. So:

- on the default background, text is never white, bright white, bright yellow or
  black: :data:`VANISH_ON_DEFAULT`;
- on a coloured background, text has a colour of its own (never the default, which
  is light on one terminal and dark on the other), and one that contrasts with it
  in the Linux console's palette (:data:`VGA`), by WCAG's ratio at least 3;
- a coloured background is never white or bright white: a highlight of either
  does not show on a light terminal, whose background is white.
"""

from __future__ import annotations

from rich.color import Color, ColorType
from rich.segment import Segment
from textual.app import App

VGA = [
    (0, 0, 0), (170, 0, 0), (0, 170, 0), (170, 85, 0),
    (0, 0, 170), (170, 0, 170), (0, 170, 170), (170, 170, 170),
    (85, 85, 85), (255, 85, 85), (85, 255, 85), (255, 255, 85),
    (85, 85, 255), (255, 85, 255), (85, 255, 255), (255, 255, 255),
]  # fmt: skip
"""The Linux console's 16 colours (the terminal ``TERM=linux`` names)."""
VANISH_ON_DEFAULT = {0, 7, 11, 15}
"""Black (on dark terminals), white, bright yellow, bright white (on light ones)."""


def _luminance(rgb: tuple[int, int, int]) -> float:
    def channel(c: int) -> float:
        v = c / 255
        return v / 12.92 if v <= 0.03928 else ((v + 0.055) / 1.055) ** 2.4

    r, g, b = map(channel, rgb)
    return 0.2126 * r + 0.7152 * g + 0.0722 * b


def contrast(a: int, b: int) -> float:
    """WCAG's contrast ratio of two of the 16 colours."""
    la, lb = sorted((_luminance(VGA[a]), _luminance(VGA[b])), reverse=True)
    return (la + 0.05) / (lb + 0.05)


def _legible(fg: int | None, bg: int | None) -> bool:
    if bg is None:
        return fg not in VANISH_ON_DEFAULT
    return bg not in (7, 15) and fg is not None and contrast(fg, bg) >= 3


def _index(color: Color | None) -> int | None:
    """The colour's number of the 16, or None for the terminal's default."""
    if color is None or color.type == ColorType.DEFAULT:
        return None
    assert color.type in (ColorType.STANDARD, ColorType.WINDOWS), color  # no 256/true colour
    assert color.number is not None
    return color.number


def illegible(segments: list[Segment]) -> list[str]:
    """Every run of text drawn in colours some 16-colour terminal cannot show apart."""
    bad = []
    for seg in segments:
        style = seg.style
        if style is None or not any(ch.isalnum() for ch in seg.text):
            continue
        fg, bg = _index(style.color), _index(style.bgcolor)
        if style.reverse:
            fg, bg = bg, fg
        if not _legible(fg, bg):
            bad.append(f"{seg.text.strip()!r}: {fg} on {bg}")
    return bad


def screen_illegible(app: App[object]) -> list[str]:
    """:func:`illegible` over every line of the screen on show."""
    bad = []
    for strip in app.screen._compositor.render_strips():
        bad += illegible(list(strip))
    return bad
