"""The message server: sessions, rooms, throttle, transfers, shutdown and figures.

The names below are imported when first asked for: ``verb-console ctl`` uses a
few of the hub's small modules (ban targets, snapshot records) and must not pay
for loading the whole server on every call.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .hub import Hub
    from .session import CloseReason, Session
    from .view import LiveHubView

__all__ = ["CloseReason", "Hub", "LiveHubView", "Session"]

_WHERE = {"Hub": ".hub", "CloseReason": ".session", "Session": ".session", "LiveHubView": ".view"}


def __getattr__(name: str) -> Any:
    where = _WHERE.get(name)
    if where is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(where, __name__), name)
    globals()[name] = value
    return value
