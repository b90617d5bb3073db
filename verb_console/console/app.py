"""The operator console: samples a :class:`HubView` on a timer and drives its actions."""

from __future__ import annotations

import contextlib
import os
import socket
import sys
import time
from collections.abc import Awaitable, Callable, Iterable
from functools import partial
from typing import Any, ClassVar

from textual.app import App, SystemCommand
from textual.command import Provider
from textual.css.query import NoMatches
from textual.driver import Driver
from textual.reactive import var
from textual.screen import Screen
from textual.theme import Theme

from verb_console.hub.snapshot import HubView

from . import ascii_widgets, glyphs, hangup, prefs, terminal_writer
from .bans import show_bans, start_ban
from .dialogs import BroadcastDialog, BroadcastRequest, ConfirmDialog, DetailScreen, HelpScreen
from .format import plural
from .glyphs import G
from .header import CONNECTING
from .keys import REPLACED_COMMANDS, Commands, Key, key_display, palette_keys
from .panes.base import Pane
from .panes.connections import ConnectionsPane
from .screen import MainScreen, main_screen_class
from .theme import FALLBACK_CSS, SIXTEEN_COLOURS, few_colours

# Stdin must look closed this many checks in a row before the console believes
# it, so a keystroke read mid-check is never mistaken for end-of-file. Checks are
# frequent because Textual's input thread spins while stdin is at end-of-file.
EOF_CHECKS = 4
EOF_CHECK_INTERVAL = 0.25


class VerbConsoleApp(App[int]):
    """The live operator console for one hub.

    The hub never calls the console: every ``1 / refresh_hz`` seconds the
    console reads the view and repaints what changed. Operator actions are the
    only calls the other way.
    """

    TITLE = "verb console"
    ENABLE_COMMAND_PALETTE = True
    COMMANDS: ClassVar[set[type[Provider] | Callable[[], type[Provider]]]] = {Commands}

    CSS = FALLBACK_CSS

    paused: var[bool] = var(False, init=False)
    """Panes keep their values while paused; the header keeps ticking."""

    def __init__(
        self,
        view: HubView,
        *,
        refresh_hz: float = 4.0,
        read_only: bool = False,
        clock: Callable[[], float] = time.time,
        startup: Callable[[], Awaitable[None]] | None = None,
        on_hangup: str = "drain",
        after_hangup: Callable[[], None] | None = None,
        attached: bool = False,
        ascii: bool | None = None,
        turns: Any = None,
    ) -> None:
        super().__init__()
        # The hub's TurnClock when the console shares the server's loop: a slow
        # turn spent sampling the view is then named "console refresh".
        self.turns = turns
        self.register_theme(SIXTEEN_COLOURS)
        # ASCII for TERM=linux and non-UTF-8 locales, unless the caller decides.
        self.ascii = glyphs.ascii_wanted() if ascii is None else ascii
        glyphs.use_ascii(self.ascii)
        ascii_widgets.use_ascii(self.ascii)
        self.view = view
        self.refresh_hz = refresh_hz
        self.read_only = read_only
        self.clock = clock
        self.startup = startup
        # What the server does once the terminal has gone: "drain" it, or "keep"
        # it serving with no UI (then ``after_hangup`` sends its log elsewhere).
        self.on_hangup = on_hangup
        self.after_hangup = after_hangup
        # Attached to a server in another process (verb-console attach): q only
        # detaches, and the server stopping is not the end of the console.
        self.attached = attached
        self.terminal_gone = False
        self._remove_sighup: Callable[[], None] = lambda: None
        self._eof_seen = 0
        self._exiting = False

        self._main = main_screen_class(read_only, attached)(view, clock)

    @property
    def main(self) -> MainScreen:
        """The main screen (under any open dialog)."""
        return self._main

    async def on_mount(self) -> None:
        self.set_class(self.ascii, "-ascii")
        saved = prefs.load().get("theme")
        if isinstance(saved, str) and saved in self.available_themes:
            self.theme = saved
        elif self.few_colours:
            self.theme = SIXTEEN_COLOURS.name
        self.set_class(self.theme == SIXTEEN_COLOURS.name, "-sixteen")
        self.theme_changed_signal.subscribe(self, self._theme_changed)
        self._remove_sighup = hangup.install_sighup(self.terminal_went_away)
        await self.push_screen(self._main)
        # A remote view reports refusals that arrive after the action returned.
        self.view.set_notifier(lambda message, severity: self.notify(message, severity=severity))
        if self.startup is not None:
            try:
                await self.startup()
            except Exception as error:
                self.exit(1, return_code=1, message=f"startup failed: {error}")
                return
        self.refresh_once()
        self.set_interval(1.0 / self.refresh_hz, self.refresh_once)
        if not self.is_headless:
            self.set_interval(EOF_CHECK_INTERVAL, self._check_stdin)

    def get_driver_class(self) -> type[Driver]:
        # The terminal must never hold up the event loop, and so the server.
        return terminal_writer.driver_class(self) or super().get_driver_class()

    def _theme_changed(self, theme: Theme) -> None:
        self.set_class(theme.name == SIXTEEN_COLOURS.name, "-sixteen")
        prefs.save(theme=theme.name)

    @property
    def few_colours(self) -> bool:
        """Whether the terminal shows only 16 colours (or 8), as TERM=linux does.

        Never for a headless app (tests), whose console has no terminal to ask.
        """
        if self.is_headless:
            return False
        return few_colours(self.console.color_system, os.environ.get("TERM", ""))

    def deliver_screenshot(
        self,
        filename: str | None = None,
        path: str | None = None,
        time_format: str | None = None,
    ) -> str | None:
        """Save screenshots in the working directory (a server may have no ~/Downloads)."""
        return super().deliver_screenshot(filename, path or os.getcwd(), time_format)

    def on_unmount(self) -> None:
        self._remove_sighup()

    # ----- the tick -----------------------------------------------------------

    def refresh_once(self) -> None:
        """One sample of the view: header always, the pane on show unless paused."""
        if self._exiting:
            return
        if self.terminal_gone:
            # Nothing is drawn any more; only notice the end of the server.
            if self.view.overview().state == "stopped":
                self._exiting = True
                self.exit(0, return_code=0)
            return
        main = self.main
        if not main.is_mounted or not main.is_attached:
            return
        timed = self.turns.doing("console refresh") if self.turns else contextlib.nullcontext()
        try:
            with timed:
                self._sample(main)
        except NoMatches:
            # Only a tick that lands while the app tears the screen down gets here:
            # the widgets are gone and there is nothing left to update.
            return

    def _sample(self, main: MainScreen) -> None:
        now = self.clock()
        overview = self.view.overview()
        if self.attached:
            main.header.attached_to = self._attached_to()
        main.header.update_overview(overview, self.paused, self.read_only)
        main.show_state(overview, now, self.read_only)
        if overview.state == "stopped" and not self.attached:
            self._exiting = True
            self.exit(0, return_code=0)
            return
        # The log is collected even while hidden or paused so no event is missed.
        main.pane("log").collect()  # type: ignore[attr-defined]
        if self.paused:
            return
        main.refresh_active(now)
        if isinstance(self.screen, DetailScreen):
            self.screen.reload()

    def server_identity(self) -> dict[str, object]:
        """Which server this console shows, for exports: host, process, listeners, node."""
        overview = self.view.overview()
        pid = self.view.server_pid
        return {
            # An attached console reaches its server over a Unix socket: the same host.
            "host": socket.gethostname(),
            "pid": pid,
            "listeners": list(overview.listeners),
            "node": overview.node or None,
            "version": overview.version,
            "attached": self.attached,
        }

    def _attached_to(self) -> str:
        """The server an attached console shows: its pid, else the admin socket it tries."""
        pid = self.view.server_pid
        return f"pid {pid}" if pid is not None else f"{CONNECTING} {getattr(self.view, 'path', '')}"

    # ----- terminal going away ------------------------------------------------

    def terminal_went_away(self) -> None:
        """Let go of the terminal; then drain the server, or keep it serving headless.

        Either way the app exits once the server has stopped.
        """
        if self.terminal_gone:
            return
        self.terminal_gone = True
        self._remove_sighup()
        if not self.is_headless:
            hangup.release_terminal(getattr(self, "_driver", None))
        if self.attached:
            # The server runs elsewhere: an attached console just goes.
            self._exiting = True
            self.exit(0, return_code=0)
            return
        if self.on_hangup == "keep":
            if self.after_hangup is not None:
                self.after_hangup()
            return
        if self.view.overview().state == "running":
            self.view.begin_shutdown()

    def _check_stdin(self) -> None:
        stdin = sys.__stdin__
        if stdin is None or self.terminal_gone:
            return
        try:
            fd = stdin.fileno()
        except (OSError, ValueError):
            self._eof_seen = EOF_CHECKS
        else:
            self._eof_seen = self._eof_seen + 1 if hangup.stdin_at_eof(fd) else 0
        if self._eof_seen >= EOF_CHECKS:
            self.terminal_went_away()

    # ----- operator actions ---------------------------------------------------

    def _refuse_if_read_only(self, what: str) -> bool:
        if self.read_only:
            self.notify(f"Read-only console: {what} is disabled.", severity="warning")
            return True
        return False

    def action_broadcast(self) -> None:
        """Ask for a message and send it to every session or one room."""
        if self._refuse_if_read_only("broadcast"):
            return
        rooms = [r.name for r in self.view.rooms()]
        selected = None
        if self.main.current == "rooms":
            item = self.main.pane("rooms").table.cursor_item
            selected = getattr(item, "name", None)

        def send(request: BroadcastRequest | None) -> None:
            if request is None:
                return
            text, room = request
            count = self.view.operator_broadcast(text, room)
            where = f"room {room}" if room else "every session"
            self.notify(f"Broadcast to {where}: {plural(count, 'session')}.")

        self.push_screen(BroadcastDialog(rooms, selected), send)

    def action_close_session(self) -> None:
        """Close the session under the cursor, after confirmation."""
        if self._refuse_if_read_only("closing sessions"):
            return
        session_id = self.main.active_pane.selected_session_id()
        if session_id is None:
            self.notify("Select a live session first (1 Connections).", severity="warning")
            return

        def close(yes: bool | None) -> None:
            if not yes:
                return
            if self.view.operator_close(session_id):
                self.notify(f"Closed session {session_id}.")
            else:
                self.notify(f"Session {session_id} had already gone.", severity="warning")
            self.refresh_once()

        self.push_screen(
            ConfirmDialog(f"Close session {session_id}?", self._close_consequence(session_id)),
            close,
        )

    def action_ban(self) -> None:
        """Ban the selected session's address or user (asks first)."""
        start_ban(self)

    def action_bans(self) -> None:
        """The Bans view: the live bans, and lifting one."""
        show_bans(self)

    def action_close_many(self) -> None:
        """Close the tagged sessions, else the filtered ones, else the selected address's."""
        if self._refuse_if_read_only("closing sessions"):
            return
        pane = self.main.pane("connections")
        assert isinstance(pane, ConnectionsPane)
        self.main.current = "connections"
        table = pane.live_table
        if pane.showing_closed:
            pane.showing_closed = False
        ids: list[str] = []
        if table.tagged:
            ids = [s.id for s in table.tagged_items()]
            what = f"the {plural(len(ids), 'tagged session')}"
        elif table.filter_text:
            ids = [s.id for s in table.rows]
            quoted = f"{G.open_quote}{table.filter_text}{G.close_quote}"
            what = f"the {plural(len(ids), 'session')} the filter {quoted} shows"
        else:
            item = table.cursor_item
            if item is None:
                self.notify("Select a live session first.", severity="warning")
                return
            address = item.address
            count = sum(1 for s in table.rows if s.address == address and s.parent is None)
            self.push_screen(
                ConfirmDialog(
                    f"Close every connection from {address}?",
                    f"{plural(count, 'connection')} from {address}, with any mux streams,"
                    " are disconnected now (tag rows with space, or filter with /, to choose"
                    " others).",
                    danger=True,
                ),
                lambda yes: self._close_address(address) if yes else None,
            )
            return
        if not ids:
            self.notify("Nothing to close: the filter shows no sessions.", severity="warning")
            return

        def close(yes: bool | None) -> None:
            if not yes:
                return
            closed = sum(1 for i in ids if self.view.operator_close(i))
            table.tagged.clear()
            self.notify(f"Closed {plural(closed, 'session')} of {len(ids):,}.")
            self.refresh_once()

        self.push_screen(
            ConfirmDialog(
                f"Close {what}?",
                "It is disconnected now." if len(ids) == 1 else "They are disconnected now.",
                danger=True,
            ),
            close,
        )

    def _close_address(self, address: str) -> None:
        closed = self.view.operator_close_ip(address)
        self.notify(f"Closed {plural(closed, 'connection')} from {address}.")
        self.refresh_once()

    def _close_consequence(self, session_id: str) -> str:
        """What closing ``session_id`` does, including a mux connection's streams."""
        for mux in self.view.mux_connections():
            if mux.id == session_id:
                streams = plural(len(mux.streams), "mux stream")
                return f"The client is disconnected now, and its {streams} close with it."
            if any(s.session_id == session_id for s in mux.streams):
                return f"Only this stream closes; the mux connection {mux.id} stays open."
        return "The client is disconnected now."

    def action_shutdown(self) -> None:
        """Begin a graceful shutdown; during the drain, offer to close everything now."""
        if self._refuse_if_read_only("shutdown"):
            return
        self._confirm_shutdown()

    def _confirm_shutdown(self) -> None:
        state = self.view.overview().state
        if state == "draining":
            self._offer_force()
            return
        if state != "running":
            return

        def begin(yes: bool | None) -> None:
            if yes:
                self.view.begin_shutdown()
                self.refresh_once()

        self.push_screen(
            ConfirmDialog(
                "Shut down gracefully?",
                "New connections are refused; sessions get the grace period to finish.",
            ),
            begin,
        )

    def _offer_force(self) -> None:
        def force(yes: bool | None) -> None:
            if yes:
                self.view.force_shutdown()
                self.refresh_once()

        sessions = self.view.overview().sessions
        self.push_screen(
            ConfirmDialog(
                "Close everything now?",
                f"{plural(sessions, 'session')} still draining: "
                + ("it is cut off at once." if sessions == 1 else "they are cut off at once."),
                danger=True,
            ),
            force,
        )

    def action_force_shutdown(self) -> None:
        """Close every session now (only offered while draining)."""
        if self._refuse_if_read_only("forced shutdown"):
            return
        if self.view.overview().state != "draining":
            self.notify("Start a graceful shutdown (s) first.", severity="warning")
            return
        self._offer_force()

    def action_quit_console(self) -> None:
        """Quit: the server this console hosts drains first; an attached console detaches.

        Also when read-only: quitting stops the server running in this process,
        and a graceful drain is kinder to its clients than cutting them off.
        """
        if self.attached:
            self._exiting = True
            self.exit(0, return_code=0)
            return
        self._confirm_shutdown()

    async def action_quit(self) -> None:
        """Route ctrl+q through the same confirmation and graceful shutdown as ``q``."""
        self.action_quit_console()

    def action_pause(self) -> None:
        """Freeze or resume the panes; the header keeps ticking."""
        self.paused = not self.paused

    def watch_paused(self, paused: bool) -> None:
        for pane in self.main.query(Pane):
            pane.set_paused(paused)
        self.notify("Live view paused." if paused else "Live view resumed.", timeout=2)
        self.refresh_once()

    def action_help(self) -> None:
        """Show every key."""
        self.push_screen(HelpScreen(self.read_only, self.attached))

    # ----- command palette ----------------------------------------------------

    def get_system_commands(self, screen: Screen) -> Iterable[SystemCommand]:
        yield from (
            c for c in super().get_system_commands(screen) if c.title not in REPLACED_COMMANDS
        )
        for key in palette_keys(self.attached):
            shown = key_display(key.keys)
            where = "" if key.scope in ("screen", "table") else f"{key.scope.title()}: "
            yield SystemCommand(
                key.title,
                f"{where}{key.help}" + (f" ({shown})" if shown else ""),
                partial(self._run_key, key),
            )

    async def _run_key(self, key: Key) -> None:
        """Run a key's action from the palette, where pressing the key would run it."""
        main = self.main
        if key.scope == "table":
            namespace: object = main.active_pane.table
        elif key.scope == "screen":
            namespace = main
        else:
            main.current = key.scope
            namespace = main.pane(key.scope)
        await self.run_action(key.action, namespace)  # type: ignore[arg-type]
