"""The ban commands of the admin socket and of ``ctl`` (PROTOCOL.md 12.3)."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from ..hub.bans import parse_duration, parse_target
from ..units import fmt_duration

if TYPE_CHECKING:  # ctl uses this module, and must not load the whole hub
    from ..hub.banning import Banning

__all__ = ["ban_request", "bans_text", "check_ban_args"]


def ban_request(banning: Banning, op: str, args: dict[str, Any], by: str) -> Any:
    """Serve ``ban``, ``unban`` or ``bans``. A target or duration that does not
    parse raises :class:`BanError` (a ValueError: the request is refused) and
    nothing is banned; ``unban`` of a target with no ban answers ``null``."""
    if op == "bans":
        return {"bans": [b.to_wire() for b in banning.live()]}
    if op == "ban":
        duration = args.get("duration")
        ban = banning.ban(str(args["target"]), by, str(duration) if duration else None)
        return {"ban": ban.to_wire()}
    gone = banning.unban(str(args["target"]), by)
    return {"unban": gone.to_wire() if gone is not None else None}


def check_ban_args(target: str, duration: str | None) -> None:
    """Raise :class:`~verb_console.hub.bans.BanError` for a target or duration
    that ``ctl`` refuses before asking the server."""
    parse_target(target)
    if duration is not None:
        parse_duration(duration)


def _when(ts: float | None) -> str:
    if ts is None:
        return "never"
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts))


def bans_text(bans: list[dict[str, Any]]) -> str:
    """``ctl bans`` as a table: target, who, when made, when it ends, time left."""
    if not bans:
        return "no bans"
    now = time.time()
    rows = [
        [
            b["target"],
            b["by"],
            _when(b["created"]),
            _when(b["expires"]),
            "until unbanned" if b["expires"] is None else fmt_duration(max(0, b["expires"] - now)),
        ]
        for b in bans
    ]
    headers = ["TARGET", "BY", "CREATED", "EXPIRES", "LEFT"]
    cells = [headers, *rows]
    widths = [max(len(str(r[i])) for r in cells) for i in range(len(headers))]
    return "\n".join(
        "  ".join(str(c).ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in cells
    )
