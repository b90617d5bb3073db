"""The message server: sessions, rooms, throttle, transfers, shutdown and figures."""

from .hub import Hub
from .session import CloseReason, Session
from .view import LiveHubView

__all__ = ["CloseReason", "Hub", "LiveHubView", "Session"]
