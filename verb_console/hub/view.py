"""The :class:`~verb_console.hub.snapshot.HubView` of a running hub."""

from __future__ import annotations

from .hub import Hub
from .session import SessionView
from .snapshot import (
    ClosedSessionInfo,
    LogEvent,
    MuxConnectionInfo,
    Overview,
    RoomInfo,
    ThrottleInfo,
    TransferInfo,
)


class LiveHubView:
    """Read-only snapshots of a :class:`Hub`, plus the operator actions (refused when read-only)."""

    def __init__(self, hub: Hub, read_only: bool = False) -> None:
        self.hub = hub
        self.read_only = read_only
        hub.read_only = read_only

    def overview(self) -> Overview:
        return self.hub.overview()

    def sessions(self) -> list[SessionView]:
        # Live views, not copies: see SessionView for why.
        return [s.view for s in self.hub.sessions.values()]

    def closed_sessions(self) -> list[ClosedSessionInfo]:
        return self.hub.closed_sessions()

    def throttle_state(self) -> list[ThrottleInfo]:
        return self.hub.throttle_state()

    def rooms(self) -> list[RoomInfo]:
        return self.hub.rooms_info()

    def mux_connections(self) -> list[MuxConnectionInfo]:
        return self.hub.mux_connections()

    def transfers(self) -> list[TransferInfo]:
        return self.hub.transfers()

    def log_since(self, seq: int) -> list[LogEvent]:
        return self.hub.log_since(seq)

    def _check(self, action: str) -> None:
        if self.read_only:
            raise PermissionError(f"read-only console: {action} refused")

    def operator_broadcast(self, text: str, room: str | None = None) -> int:
        self._check("broadcast")
        return self.hub.operator_broadcast(text, room)

    def operator_close(self, session_id: str) -> bool:
        self._check("close")
        return self.hub.operator_close(session_id)

    def operator_close_ip(self, address: str) -> int:
        self._check("close")
        return self.hub.operator_close_ip(address)

    def begin_shutdown(self) -> None:
        # Not refused when read-only: quitting a console stops the server it hosts,
        # and an operator must always be able to quit.
        self.hub.begin_shutdown()

    def force_shutdown(self) -> None:
        self._check("shutdown")
        self.hub.force_shutdown()
