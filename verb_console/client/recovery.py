"""What a client got back after its connection broke (PROTOCOL.md section 11).

A client that reconnects first asks to resume its session (11.1): on success
nothing was lost, and what was sent to it meanwhile is replayed. Otherwise it
is a new session, and it joins its rooms again asking for what it missed since
its last message in each (11.2): each room is recovered, or has a hole.
:class:`Recovery` tells the application which, so it can show or refetch
what it lost.
"""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["Recovery"]


@dataclass(frozen=True, slots=True)
class Recovery:
    """The outcome of one reconnection."""

    #: The session went on where it was (same id, rooms, counter): nothing was lost.
    resumed: bool
    #: Messages replayed by the resume.
    replayed: int = 0
    #: Why the resume failed (a ``resume_failed`` reason), if it was tried and failed.
    resume_failed: str | None = None
    #: After a failed resume: each room rejoined, and whether what it missed was recovered.
    rooms: dict[str, bool] = field(default_factory=dict)

    @property
    def hole(self) -> bool:
        """True when something may have been lost: a new session (its private
        messages and broadcasts meanwhile are gone), or a room not recovered."""
        return not self.resumed
