"""The states of one upload."""

from __future__ import annotations

import enum

__all__ = ["UploadState"]


class UploadState(enum.StrEnum):
    """Where one upload is: taking bytes, being finished, or ended one of three ways.

    ``ACTIVE -> FINISHING -> COMPLETE``; ``ACTIVE`` or ``FINISHING`` ``-> ABORTED``
    (a decision: the client's abort, a disconnect, shutdown) or ``-> FAILED`` (a
    broken rule or a disk error). The values are the words the console shows.
    """

    ACTIVE = "active"
    FINISHING = "finishing"
    COMPLETE = "complete"
    ABORTED = "aborted"
    FAILED = "failed"

    @property
    def ended(self) -> bool:
        return self in _ENDED

    @property
    def shown(self) -> str:
        """The state as the transfers view reports it (finishing is still active)."""
        return "active" if self is UploadState.FINISHING else self.value


_ENDED = frozenset({UploadState.COMPLETE, UploadState.ABORTED, UploadState.FAILED})
