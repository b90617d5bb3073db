"""Every key of the console, written once.

The Textual bindings of the screen, the tables and the panes are made from
:data:`KEYS`, and so are the help screen's lines and the command palette's
entries: a key added here shows up in all three, and none of them can drift.
"""

from __future__ import annotations

from dataclasses import dataclass

from textual.binding import Binding, BindingType
from textual.command import Hit, Hits
from textual.system_commands import SystemCommandsProvider

from .glyphs import G

PANE_NAMES: tuple[str, ...] = (
    "connections",
    "throttle",
    "rooms",
    "streams",
    "transfers",
    "log",
    "tap",
    "cluster",
)
"""The panes in the order of their digits; the pane classes carry the same names."""


@dataclass(frozen=True, slots=True)
class Key:
    """One key (or several Textual key names for one action) and how it is described."""

    keys: str
    """Textual key names, comma-separated."""
    action: str
    """The action, run in the namespace of :attr:`scope` (``app.`` reaches the app)."""
    help: str
    """The help screen's line; keys with one :attr:`group` share the group's line."""
    footer: str = ""
    """The footer's short label; empty keeps the key out of the footer."""
    title: str = ""
    """The command palette's entry; empty keeps the key out of the palette."""
    scope: str = "screen"
    """``screen`` (the main screen), ``table`` (every table) or a pane's name."""
    changes: bool = False
    """Changes the server: hidden from the footer of a read-only console."""
    group: str = ""


_PANE_LIST = "show a pane: " + ", ".join(name.title() for name in PANE_NAMES)

KEYS: tuple[Key, ...] = (
    *(
        Key(str(n), f"show_pane('{name}')", _PANE_LIST, title=f"Show {name.title()}", group="panes")
        for n, name in enumerate(PANE_NAMES, 1)
    ),
    Key("up,k", "cursor(-1)", "move the cursor", scope="table", group="move"),
    Key("down,j", "cursor(1)", "move the cursor", scope="table", group="move"),
    Key("pageup", "page(-1)", "move the cursor", scope="table", group="move"),
    Key("pagedown", "page(1)", "move the cursor", scope="table", group="move"),
    Key("home,g", "jump(0)", "move the cursor", scope="table", group="move"),
    Key("end,G", "jump(-1)", "move the cursor", scope="table", group="move"),
    Key("enter", "detail", "details of the selected row", title="Details"),
    Key(
        "less_than_sign",
        "sort_column(-1)",
        "sort by the previous / next column, reverse the order",
        title="Sort by the previous column",
        scope="table",
        group="sort",
    ),
    Key(
        "greater_than_sign",
        "sort_column(1)",
        "sort by the previous / next column, reverse the order",
        title="Sort by the next column",
        scope="table",
        group="sort",
    ),
    Key(
        "r",
        "reverse_sort",
        "sort by the previous / next column, reverse the order",
        title="Reverse the sort order",
        scope="table",
        group="sort",
    ),
    *(
        Key(
            key,
            f"sort_named('{labels}')",
            "sort largest first by uptime/age, idle, messages in, bytes out, unsent",
            title=f"Sort by {labels.split(',')[0]}",
            scope="table",
            group="sort1",
        )
        for key, labels in (
            ("T", "uptime,age,closed,time"),
            ("I", "idle"),
            ("M", "msg in,messages,frm in"),
            ("B", "bytes out,size"),
            ("U", "unsent"),
        )
    ),
    Key(
        "c",
        "toggle_closed",
        "live / recently closed sessions",
        title="Live / closed sessions",
        scope="connections",
    ),
    Key(
        "space",
        "toggle_tag",
        "tag / untag the session (for X)",
        title="Tag the session",
        scope="connections",
    ),
    Key("tab", "app.focus_next", "move to the lower table", scope="rooms"),
    Key("tab", "app.focus_next", "move to the lower table", scope="streams"),
    Key("t", "toggle_tail", "pause / follow the tail", title="Follow the log tail", scope="log"),
    Key(
        "b",
        "app.broadcast",
        "broadcast a message to every session or one room",
        "Broadcast",
        "Broadcast",
        changes=True,
    ),
    Key(
        "x",
        "app.close_session",
        "close the selected session (asks first)",
        "Close",
        "Close session",
        changes=True,
    ),
    Key(
        "X",
        "app.close_many",
        "close many: the tagged sessions, else those the filter shows, else all "
        "of the selected address (asks first, says how many)",
        title="Close many sessions",
        changes=True,
    ),
    Key(
        "z",
        "app.ban",
        "ban the session's address or its user (asks first)",
        title="Ban the session's address or user",
        changes=True,
    ),
    Key("Z", "app.bans", "the bans; lift one", title="Bans"),
    Key(
        "s",
        "app.shutdown",
        "graceful shutdown (asks first); again to close all now",
        "Shutdown",
        "Shut down gracefully",
        changes=True,
    ),
    Key(
        "",
        "app.force_shutdown",
        "close every session now (while draining)",
        title="Close everything now",
        changes=True,
    ),
    Key(
        "slash",
        "filter",
        "filter: words, field:value (proto:mux room:lobby), idle>60; esc clears",
        "Filter",
        "Filter",
        group="filter",
    ),
    Key("escape", "clear_filter", "clear the filter", title="Clear the filter", group="filter"),
    Key(
        "e",
        "export('csv')",
        "export the table on show, as filtered and sorted, to CSV / JSON",
        title="Export the table to CSV",
        group="export",
    ),
    Key(
        "E",
        "export('json')",
        "export the table on show, as filtered and sorted, to CSV / JSON",
        title="Export the table to JSON",
        group="export",
    ),
    Key(
        "h",
        "cycle_history",
        "header sparklines: 1 s / 10 s / 1 min a bar (5 min, 1 h, 24 h kept)",
        title="History resolution",
    ),
    Key(
        "p",
        "app.pause",
        "pause / resume the live view (header keeps ticking)",
        "Pause",
        "Pause / resume",
    ),
    Key("question_mark", "app.help", "this help", "Help", "Keys"),
    Key(
        "q", "app.quit_console", "quit: same as s, the server drains first", "Quit", "Quit console"
    ),
)

DETACH = Key("q", "app.quit_console", "detach: the server keeps running", "Detach", "Detach")
"""``q`` of an attached console (``verb-console attach``), which only lets go of the server."""


def _keys(attached: bool) -> tuple[Key, ...]:
    """:data:`KEYS`, with ``q`` reading Detach on an attached console."""
    if not attached:
        return KEYS
    return tuple(DETACH if k.action == DETACH.action else k for k in KEYS)


_DISPLAY = {
    "up": "↑",
    "down": "↓",
    "pageup": "PgUp",
    "pagedown": "PgDn",
    "home": "Home",
    "end": "End",
    "slash": "/",
    "question_mark": "?",
    "less_than_sign": "<",
    "greater_than_sign": ">",
    "space": "space",
    "escape": "esc",
}


def key_display(keys: str) -> str:
    """How the help shows Textual key names: ``up,k`` reads ``↑ k`` (``Up k`` in ASCII)."""
    arrows = {"up": G.key_up, "down": G.key_down}
    return " ".join(arrows.get(k) or _DISPLAY.get(k, k) for k in keys.split(",") if k)


def bindings(scope: str, *, read_only: bool = False, attached: bool = False) -> list[BindingType]:
    """The Textual bindings of one scope (see :attr:`Key.scope`)."""
    return [
        Binding(
            k.keys,
            k.action,
            k.footer or k.title or k.help,
            show=bool(k.footer) and not (read_only and k.changes),
            key_display=_DISPLAY.get(k.keys),
        )
        for k in _keys(attached)
        if k.scope == scope and k.keys
    ]


def help_lines(attached: bool = False) -> list[tuple[str, str]]:
    """``(keys, what they do)`` for the help screen, one line per key or group."""
    lines: list[tuple[str, str]] = []
    groups: dict[str, int] = {}
    for k in _keys(attached):
        if not k.keys:
            continue
        shown = key_display(k.keys)
        text = k.help if k.scope in ("screen", "table") else f"{k.scope.title()}: {k.help}"
        if k.group:
            if k.group in groups:
                at = groups[k.group]
                lines[at] = (f"{lines[at][0]} {shown}", lines[at][1])
                continue
            groups[k.group] = len(lines)
        else:
            # Panes sharing a key and a meaning share one line ("Rooms, Streams: ...").
            same = next(
                (i for i, (ks, t) in enumerate(lines) if ks == shown and t.endswith(k.help)), None
            )
            if same is not None and k.scope not in ("screen", "table"):
                owners = lines[same][1].removesuffix(f": {k.help}")
                lines[same] = (shown, f"{owners}, {k.scope.title()}: {k.help}")
                continue
        lines.append((shown, text))
    return lines


def palette_keys(attached: bool = False) -> list[Key]:
    """The keys that the command palette offers by name."""
    return [k for k in _keys(attached) if k.title]


def changing_keys() -> list[str]:
    """The keys a read-only console refuses."""
    return [key_display(k.keys) for k in KEYS if k.changes and k.keys]


# Textual's own entries that this console replaces: the stock "Quit" would stop
# the server without draining it, and "Keys" would be listed twice.
REPLACED_COMMANDS = frozenset({"Quit", "Keys"})


class Commands(SystemCommandsProvider):
    """The palette's commands, found by their name or by what they do ("pane", "sort")."""

    async def search(self, query: str) -> Hits:
        matcher = self.matcher(query)
        for name, help_text, callback, *_ in self.app.get_system_commands(self.screen):
            score = max(matcher.match(name), matcher.match(help_text) * 0.9)
            if score > 0:
                yield Hit(score, matcher.highlight(name), callback, help=help_text)
