"""Modal dialogs: confirmation, broadcast, record details and key help."""

from __future__ import annotations

import textwrap
from collections.abc import Sequence
from typing import ClassVar

from textual import on
from textual.app import App, ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.content import Content
from textual.screen import ModalScreen
from textual.widgets import Button, Footer, Input, Label, OptionList, Static

from .glyphs import G
from .keys import changing_keys, help_lines, key_display
from .panes.base import DetailFetch, DetailRows
from .rates import DIALOG_WIDTH, RateWatch, rate_lines, spark_width

DIALOG_CSS = """
    align: center middle;
    background: $background 60%;
    & > Vertical {
        width: 72;
        max-width: 100%;
        height: auto;
        max-height: 100%;
        border: round $primary;
        border-title-color: $text-primary;
        border-title-style: bold;
        background: $surface;
        padding: 0 1;
    }
    & .hint { color: $text-muted; height: auto; width: 100%; }
    & .buttons { height: auto; align-horizontal: right; margin-top: 1; }
    & .buttons Button { margin-left: 2; min-width: 10; }
    /* A list's choice while another field has the keys (a broadcast's or a ban's
       target while typing): the theme's blurred-cursor colours, both of them
       (Textual's own rule keeps the default foreground, which 16 colours draw
       light on light on a dark terminal). */
    & OptionList > .option-list--option-highlighted {
        color: $block-cursor-blurred-foreground;
    }
"""


SCROLL_BINDINGS: tuple[BindingType, ...] = (
    # The tables' movement keys scroll a dialog taller than the terminal the same way.
    Binding("down,j", "scroll('scroll_down')", "Scroll", show=False),
    Binding("up,k", "scroll('scroll_up')", "Scroll", show=False),
    Binding("pagedown,space", "scroll('scroll_page_down')", "Scroll", show=False),
    Binding("pageup", "scroll('scroll_page_up')", "Scroll", show=False),
    Binding("end,G", "scroll('scroll_end')", "Scroll", show=False),
    Binding("home,g", "scroll('scroll_home')", "Scroll", show=False),
)


def scroll(screen: ModalScreen[None], how: str) -> None:
    """Scroll a dialog's :class:`VerticalScroll` (``how``: ``scroll_down``, ``scroll_end``...)."""
    getattr(screen.query_one(VerticalScroll), how)(animate=False)


class ConfirmDialog(ModalScreen[bool]):
    """Ask a yes/no question; ``y`` answers yes, ``n`` or Escape answers no."""

    DEFAULT_CSS = "ConfirmDialog {" + DIALOG_CSS + "& #question { text-style: bold; } }"

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("y", "answer(True)", "Yes"),
        Binding("n,escape", "answer(False)", "No"),
    ]

    def __init__(self, question: str, detail: str = "", *, danger: bool = False) -> None:
        super().__init__()
        self.question = question
        self.detail = detail
        self.danger = danger

    def compose(self) -> ComposeResult:
        with Vertical() as box:
            box.border_title = "Confirm"
            yield Label(self.question, id="question", markup=False)
            if self.detail:
                yield Label(self.detail, classes="hint", markup=False)
            with Horizontal(classes="buttons"):
                yield Button("Yes (y)", id="yes", variant="error" if self.danger else "primary")
                yield Button("No (n)", id="no")
        # The dialog's own keys, not those of the screen underneath.
        yield Footer(compact=True)

    def on_mount(self) -> None:
        self.query_one("#no", Button).focus()

    def action_answer(self, yes: bool) -> None:
        """Close the dialog with the answer."""
        self.dismiss(yes)

    @on(Button.Pressed)
    def _pressed(self, event: Button.Pressed) -> None:
        self.dismiss(event.button.id == "yes")


BroadcastRequest = tuple[str, str | None]
"""The text to send, and the room it is for (``None`` for every session)."""


class BroadcastDialog(ModalScreen[BroadcastRequest | None]):
    """Type a message; Enter sends it to every session or to the chosen room.

    The targets are a short list inside the dialog, not a dropdown: a dropdown
    spilled over the border, and Enter on it reopened it instead of sending.
    """

    DEFAULT_CSS = (
        "BroadcastDialog {"
        + DIALOG_CSS
        + "& Input { margin: 1 0 0 0; }"
        + " & OptionList { margin: 1 0 0 0; height: auto; max-height: 6; }"
        + " }"
    )

    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape", "cancel", "Cancel")]

    def __init__(self, rooms: Sequence[str], room: str | None = None) -> None:
        super().__init__()
        self.rooms = sorted(rooms)
        self.room = room if room in self.rooms else None

    def compose(self) -> ComposeResult:
        with Vertical() as box:
            box.border_title = "Broadcast"
            yield Input(placeholder="message to send", id="text", compact=True)
            targets = OptionList(
                # Plain text: a room name is never read as markup.
                Content("every session"),
                *(Content(f"room {r}") for r in self.rooms),
                id="room",
                compact=True,
            )
            targets.highlighted = self.rooms.index(self.room) + 1 if self.room else 0
            yield targets
            yield Label(f"enter send {G.sep} tab, up/down: room {G.sep} esc cancel", classes="hint")
        # The dialog's own keys, not those of the screen underneath.
        yield Footer(compact=True)

    def on_mount(self) -> None:
        self.query_one("#text", Input).focus()

    @property
    def target(self) -> str | None:
        """The room chosen, or ``None`` for every session."""
        index = self.query_one("#room", OptionList).highlighted or 0
        return self.rooms[index - 1] if index > 0 else None

    @on(Input.Submitted)
    @on(OptionList.OptionSelected)
    def _submit(self) -> None:
        text = self.query_one("#text", Input).value
        if not text.strip():
            self.notify("Type a message first.", severity="warning")
            self.query_one("#text", Input).focus()
            return
        self.dismiss((text, self.target))

    def action_cancel(self) -> None:
        """Close without sending."""
        self.dismiss(None)


class DetailScreen(ModalScreen[None]):
    """Every field of one record, re-read on each refresh while it is open.

    A session's or room's dialog also draws its rates (``rates``): the server
    samples them once a second from when the dialog opens until it closes.
    """

    DEFAULT_CSS = (
        "DetailScreen {"
        + DIALOG_CSS
        + "& VerticalScroll { height: auto; max-height: 1fr; } & #fields { width: 100%; }"
        + " & #rates { width: 100%; height: auto; margin-top: 1; } }"
    )

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape,enter,q", "close", "Close"),
        *SCROLL_BINDINGS,
    ]

    def __init__(self, title: str, fetch: DetailFetch, rates: RateWatch | None = None) -> None:
        super().__init__()
        self.title_text = title
        self.fetch = fetch
        self.rates = rates
        self._rows: DetailRows | None = None
        self._rates_key: tuple[int, int] | None = None
        self.gone = False

    def compose(self) -> ComposeResult:
        with Vertical() as box:
            box.border_title = self.title_text
            # In the border, so a short terminal never cuts it off: the fields scroll instead.
            box.border_subtitle = "esc close"
            with VerticalScroll():
                # Filled in before the first paint, so the box has its final size at once.
                yield Static(self._next_content() or "", id="fields")
            if self.rates is not None:
                yield Static(self._rates_content(DIALOG_WIDTH) or "", id="rates")
        # The dialog's own keys, not those of the screen underneath.
        yield Footer(compact=True)

    def reload(self) -> None:
        """Fetch the record again; keep the last values (marked gone) once it disappears."""
        content = self._next_content()
        if content is not None:
            self.query_one("#fields", Static).update(content)
        if self.rates is not None:
            rates = self.query_one("#rates", Static)
            drawn = self._rates_content(rates.content_region.width or DIALOG_WIDTH)
            if drawn is not None:
                rates.update(drawn)

    def on_resize(self) -> None:
        self._rates_key = None
        self.reload()

    def on_mount(self) -> None:
        if self.rates is not None:
            self.rates.open()

    def on_unmount(self) -> None:
        # The server stops sampling (after a while) once nobody looks.
        if self.rates is not None:
            self.rates.close()

    def _rates_content(self, width: int) -> Content | None:
        """The rate sparklines, or ``None`` if no sample came since they were drawn."""
        assert self.rates is not None
        series = self.rates.series(max(1, spark_width(width)))
        key = (series.seq, width)
        if key == self._rates_key:
            return None
        self._rates_key = key
        return rate_lines(series, width)

    def _next_content(self) -> Content | None:
        """The fields as they are now, or ``None`` if nothing changed."""
        rows = self.fetch()
        if rows is None:
            if self.gone:
                return None
            self.gone = True
            if self._rows is None:
                return Content("(no longer present)")
            rows = [*self._rows, ("", "no longer present: last values shown")]
        if rows == self._rows:
            return None
        self._rows = rows
        width = max((len(label) for label, _ in rows), default=0)
        lines = [
            Content.assemble((label.ljust(width), "$text-muted"), "  ", value)
            for label, value in rows
        ]
        return Content("\n").join(lines)

    def action_scroll(self, how: str) -> None:
        """Scroll the fields (``scroll_down``, ``scroll_page_up``, ``scroll_end``...)."""
        scroll(self, how)

    def action_close(self) -> None:
        """Close the details."""
        self.dismiss(None)


def help_keys(attached: bool = False) -> tuple[tuple[str, str], ...]:
    """The help screen's lines, made from the console's key table."""
    return (
        *help_lines(attached),
        (App.COMMAND_PALETTE_BINDING, "command palette: every action by name"),
    )


HELP_KEYS = help_keys()
"""The help screen's lines of a console that hosts its server."""
HELP_KEY_WIDTH = 11
HELP_TEXT_WIDTH = 52


class HelpScreen(ModalScreen[None]):
    """Every key, in a box that scrolls where the terminal is too short (80x24)."""

    DEFAULT_CSS = (
        "HelpScreen {"
        + DIALOG_CSS
        + "& VerticalScroll { height: auto; max-height: 1fr; }"
        + " & Static { text-wrap: nowrap; } }"
    )

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape,question_mark,q,enter", "close", "Close"),
        *SCROLL_BINDINGS,
    ]

    def __init__(self, read_only: bool = False, attached: bool = False) -> None:
        super().__init__()
        self.read_only = read_only
        self.attached = attached

    def compose(self) -> ComposeResult:
        lines = []
        for keys, text in help_keys(self.attached):
            wrapped = textwrap.wrap(text, HELP_TEXT_WIDTH)
            if len(keys) > HELP_KEY_WIDTH:
                # A long run of keys takes a line of its own; its meaning goes below.
                lines.append(Content.styled(keys, "bold $text-accent"))
                keys = ""
            lines.append(
                Content.assemble(
                    (keys.ljust(HELP_KEY_WIDTH), "bold $text-accent"), "  ", wrapped[0]
                )
            )
            lines.extend(Content(" " * (HELP_KEY_WIDTH + 2) + more) for more in wrapped[1:])
        if self.read_only:
            refused = ", ".join(changing_keys())
            lines[:0] = [
                Content.styled(f"read-only: {refused} are disabled", "$text-warning"),
                Content(""),
            ]
        with Vertical() as box:
            box.border_title = "Keys"
            # In the border, so a short terminal never cuts it off: the keys scroll instead.
            box.border_subtitle = f"{key_display('up,down')} PgDn End scroll {G.sep} esc close"
            with VerticalScroll():
                yield Static(Content("\n").join(lines))
        # The dialog's own keys, not those of the screen underneath.
        yield Footer(compact=True)

    def action_scroll(self, how: str) -> None:
        """Scroll the list of keys (``scroll_down``, ``scroll_page_up``, ``scroll_end``...)."""
        scroll(self, how)

    def action_close(self) -> None:
        """Close the help."""
        self.dismiss(None)
