"""One line per notable upload event, rate-limited, to the event log and stderr."""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable

from ...protocols.errors import ProtocolError
from ..snapshot import TransferInfo

__all__ = ["EventSink", "RateLimitedLog", "UploadReport"]

#: Where event-log lines go: ``sink(kind, text)`` (the hub's event log).
EventSink = Callable[[str, str], None]


class RateLimitedLog:
    """At most ``burst`` lines at once, refilled at ``per_second``.

    Lines over the rate are dropped and counted; the next line that goes out
    says how many were left out, so a flood of refusals costs a few lines.
    """

    def __init__(
        self,
        logger: logging.Logger,
        per_second: float = 5.0,
        burst: int = 20,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.sink: EventSink | None = None
        self._logger = logger
        self._rate = per_second
        self._burst = float(burst)
        self._tokens = float(burst)
        self._clock = clock
        self._last = clock()
        self.suppressed = 0
        self.written = 0

    def __call__(self, level: int, text: str) -> bool:
        """Log ``text`` unless over the rate; whether it went out."""
        now = self._clock()
        self._tokens = min(self._burst, self._tokens + (now - self._last) * self._rate)
        self._last = now
        if self._tokens < 1:
            self.suppressed += 1
            return False
        self._tokens -= 1
        if self.suppressed:
            text = f"{text} ({self.suppressed} similar lines left out)"
            self.suppressed = 0
        self.written += 1
        self._logger.log(level, "%s", text)
        if self.sink is not None:
            self.sink("upload", text)
        return True


class UploadReport:
    """The upload log lines (refused, failed, complete: one rate limit each) and the
    last refused requests, for the transfers view."""

    def __init__(self, logger: logging.Logger, kept: int = 100) -> None:
        self.refused_log = RateLimitedLog(logger)
        self.failed_log = RateLimitedLog(logger)
        self.completed_log = RateLimitedLog(logger)
        self._refused: deque[TransferInfo] = deque(maxlen=kept)
        self.refused = 0

    def set_sink(self, sink: EventSink | None) -> None:
        for line in (self.refused_log, self.failed_log, self.completed_log):
            line.sink = sink

    def refusals(self) -> list[TransferInfo]:
        return list(reversed(self._refused))

    def refusal(
        self,
        owner: str,
        transfer_id: str | None,
        filename: object,
        file_size: object,
        protocol: str,
        exc: ProtocolError,
    ) -> None:
        self.refused += 1
        now = time.time()
        name = filename if isinstance(filename, str) else ""
        self._refused.append(
            TransferInfo(
                session_id=owner,
                transfer_id=transfer_id or "",
                filename=name,
                size=file_size if type(file_size) is int else 0,
                received=0,
                started_at=now,
                ended_at=now,
                state="refused",
                outcome=exc.code,
                protocol=protocol,
            )
        )
        if exc.code == "io_error":
            self.failed_log(logging.WARNING, f"upload {name!r} from {owner} failed: {exc.message}")
        else:
            self.refused_log(
                logging.INFO, f"upload {name!r} from {owner} refused: {exc.code} ({exc.message})"
            )
