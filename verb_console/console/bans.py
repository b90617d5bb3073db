"""Banning from the console (PROTOCOL.md 12.3): the ban dialog for the selected
session, and the Bans view that lists the bans and lifts one.

The dialog only gathers the target (the session's address or its user) and the
duration; the app then asks for a confirmation naming both, as every other
destructive action does, before the view makes the ban.
"""

from __future__ import annotations

from typing import Any, ClassVar

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical
from textual.content import Content
from textual.screen import ModalScreen
from textual.widgets import Footer, Input, Label, OptionList

from ..hub.bans import BanError, format_duration, parse_duration
from .dialogs import DIALOG_CSS, ConfirmDialog
from .format import fmt_duration
from .glyphs import G

__all__ = ["BanDialog", "BanRequest", "BansScreen", "ban_question", "show_bans", "start_ban"]

BanRequest = tuple[str, str | None]
"""The target, and the duration (``None``: until unbanned)."""


def ban_question(target: str, duration: str | None) -> str:
    """The confirmation's question, naming the target and the duration."""
    how_long = f"for {duration}" if duration else "until unbanned"
    return f"Ban {target} {how_long}?"


class BanDialog(ModalScreen[BanRequest | None]):
    """Choose what to ban of the selected session, and for how long."""

    DEFAULT_CSS = (
        "BanDialog {"
        + DIALOG_CSS
        + "& Input { margin: 1 0 0 0; } & OptionList { margin: 1 0 0 0; height: auto; } }"
    )

    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape", "cancel", "Cancel")]

    def __init__(self, session_id: str, address: str, user: str | None) -> None:
        super().__init__()
        self.session_id = session_id
        self.targets = [address] + ([f"user:{user}"] if user else [])

    def compose(self) -> ComposeResult:
        with Vertical() as box:
            box.border_title = f"Ban (session {self.session_id})"
            yield OptionList(*(Content(t) for t in self.targets), id="target", compact=True)
            yield Input(
                placeholder="for how long: 30s, 10m, 2h, 7d; empty: until unbanned",
                id="duration",
                compact=True,
            )
            yield Label(
                f"enter next {G.sep} tab, up/down: target {G.sep} esc cancel", classes="hint"
            )
        yield Footer(compact=True)

    def on_mount(self) -> None:
        self.query_one("#target", OptionList).highlighted = 0
        self.query_one("#duration", Input).focus()

    @on(Input.Submitted)
    @on(OptionList.OptionSelected)
    def _submit(self) -> None:
        duration = self.query_one("#duration", Input).value.strip() or None
        if duration is not None:
            try:
                parse_duration(duration)
            except BanError as exc:
                self.notify(str(exc), severity="warning")
                return
        index = self.query_one("#target", OptionList).highlighted or 0
        self.dismiss((self.targets[index], duration))

    def action_cancel(self) -> None:
        self.dismiss(None)


def ban_line(ban: dict[str, Any], now: float) -> str:
    expires = ban["expires"]
    # Time left is read as a clock's is: the two largest units (2h59m), not 10799s.
    left = "until unbanned" if expires is None else f"{fmt_duration(max(0, expires - now))} left"
    return f"{ban['target']}  by {ban['by']}  {left}"


class BansScreen(ModalScreen[str | None]):
    """The live bans; Enter (or ``u``) picks one to lift, Escape closes."""

    DEFAULT_CSS = (
        "BansScreen {"
        + DIALOG_CSS
        + "& OptionList { margin: 1 0 0 0; height: auto; max-height: 16; } }"
    )

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("u", "lift", "Lift"),
        Binding("escape", "cancel", "Close"),
    ]

    def __init__(self, bans: list[dict[str, Any]], now: float) -> None:
        super().__init__()
        self.bans = bans
        self.now = now

    def compose(self) -> ComposeResult:
        with Vertical() as box:
            box.border_title = f"Bans ({len(self.bans)})"
            if self.bans:
                lines = [Content(ban_line(b, self.now)) for b in self.bans]
                yield OptionList(*lines, id="bans", compact=True)
            else:
                yield Label("No bans.", id="none")
            yield Label(f"u or enter: lift the ban {G.sep} esc close", classes="hint")
        yield Footer(compact=True)

    def on_mount(self) -> None:
        if self.bans:
            self.query_one("#bans", OptionList).focus()

    @on(OptionList.OptionSelected)
    def action_lift(self) -> None:
        if not self.bans:
            return
        index = self.query_one("#bans", OptionList).highlighted or 0
        self.dismiss(self.bans[index]["target"])

    def action_cancel(self) -> None:
        self.dismiss(None)


def start_ban(app: Any) -> None:
    """``z``: ban the selected session's address or user, after a confirmation
    that names the target and the duration."""
    if app.read_only:
        app.notify("Read-only console: banning is disabled.", severity="warning")
        return
    pane = app.main.pane("connections")
    item = None if app.main.current != "connections" else pane.live_table.cursor_item
    if item is None or pane.showing_closed:
        app.notify("Select a live session first (1 Connections).", severity="warning")
        return

    def confirmed(request: BanRequest, yes: bool | None) -> None:
        if not yes:
            return
        target, duration = request
        try:
            app.view.operator_ban(target, duration)
        except (BanError, PermissionError) as exc:
            app.notify(str(exc), severity="error")
            return
        app.notify(f"Banned {target} ({format_duration(_seconds(duration))}).")
        app.refresh_once()

    def chosen(request: BanRequest | None) -> None:
        if request is None:
            return
        app.push_screen(
            ConfirmDialog(
                ban_question(*request),
                "Its live sessions are closed now, and new ones refused.",
                danger=True,
            ),
            lambda yes: confirmed(request, yes),
        )

    app.push_screen(BanDialog(item.id, item.address, item.user), chosen)


def _seconds(duration: str | None) -> int | None:
    return parse_duration(duration) if duration else None


def show_bans(app: Any) -> None:
    """``Z``: the Bans view; the ban picked there is lifted after a confirmation."""

    def lift(target: str | None) -> None:
        if target is None:
            return
        if app.read_only:
            app.notify("Read-only console: lifting a ban is disabled.", severity="warning")
            return

        def confirmed(yes: bool | None) -> None:
            if yes:
                app.view.operator_unban(target)
                app.notify(f"Lifted the ban of {target}.")

        app.push_screen(ConfirmDialog(f"Lift the ban of {target}?"), confirmed)

    app.push_screen(BansScreen(app.view.bans(), app.clock()), lift)
