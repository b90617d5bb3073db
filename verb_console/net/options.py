"""The seed's "Server Options" block, in snake_case."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import Any


@dataclass(slots=True)
class TCPOptions:
    """Every option of the seed's ``tcp`` block; each one is applied to real sockets.

    Times are in milliseconds, as on the seed page.
    """

    # Connection settings
    backlog: int = 511
    exclusive: bool = False  # False sets SO_REUSEPORT so several servers may share the port
    # Socket options
    allow_half_open: bool = False
    pause_on_connect: bool = False
    # Buffer settings: the read size per receive call, and the unsent-output
    # level above which write() returns False and reads pause (backpressure).
    readable_high_water_mark: int = 16384
    writable_high_water_mark: int = 16384
    # Keep-alive settings
    keep_alive: bool = True
    keep_alive_initial_delay: int = 60000
    # Disable Nagle's algorithm
    no_delay: bool = True
    # Inactivity timeout (no bytes received); 0 turns it off
    timeout: int = 300000
    # Event handlers
    on_connection: Callable[[Any], Any] | None = None
    on_error: Callable[[BaseException], Any] | None = None
    on_listening: Callable[[], Any] | None = None
    on_close: Callable[[], Any] | None = None

    def update(self, values: dict[str, Any]) -> None:
        """Apply ``values`` (snake_case or the seed's camelCase names)."""
        known = {f.name for f in fields(self)}
        for key, value in values.items():
            name = _snake(key)
            if name not in known:
                raise TypeError(f"unknown tcp option: {key!r}")
            setattr(self, name, value)
        self.validate()

    def validate(self) -> None:
        for name in ("backlog", "readable_high_water_mark", "writable_high_water_mark"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"tcp option {name} must be a positive integer, got {value!r}")
        for name in ("keep_alive_initial_delay", "timeout"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or isinstance(value, bool) or value < 0:
                raise ValueError(f"tcp option {name} must be a number >= 0, got {value!r}")


def _snake(name: str) -> str:
    out = []
    for ch in name:
        if ch.isupper():
            out.append("_")
            out.append(ch.lower())
        else:
            out.append(ch)
    return "".join(out)
