"""The server's log: the rows the console's Log pane shows, also sent to Python logging."""

from __future__ import annotations

import logging
import time
from collections import deque
from typing import Any

from .snapshot import LogEvent

log = logging.getLogger("verb_console.hub")

EVENTS_KEPT = 1000
"""Rows kept for a console that reads them (older ones are dropped)."""


class EventLog:
    """Numbered rows, the newest :data:`EVENTS_KEPT` kept; a reader asks for those after
    the last number it saw."""

    __slots__ = ("_seq", "events")

    def __init__(self) -> None:
        self.events: deque[LogEvent] = deque(maxlen=EVENTS_KEPT)
        self._seq = 0

    def add(self, kind: str, text: str, fields: dict[str, Any] | None = None) -> None:
        """One row; ``error`` rows are warnings, ``operator`` and ``server`` rows info.

        ``fields`` are the event's data (a session's id, address...) for a structured
        log (``--log-format json``); the text says the same for people.
        """
        self._seq += 1
        self.events.append(LogEvent(self._seq, time.time(), kind, text))
        # Marked, so a handler that copies warnings into this log skips its own rows.
        extra = {"hub_event": True, "event_kind": kind, "event_fields": fields}
        if kind == "error":
            log.warning(text, extra=extra)
        elif kind in ("operator", "server"):
            log.info(text, extra=extra)
        else:
            log.debug(text, extra=extra)

    def since(self, seq: int) -> list[LogEvent]:
        """The rows numbered after ``seq``, oldest first."""
        events = self.events
        if not events or events[-1].seq <= seq:
            return []
        return [e for e in events if e.seq > seq]
