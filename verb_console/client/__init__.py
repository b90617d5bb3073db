"""Clients of verb-console's protocols, on anyio (so asyncio and trio alike).

- :class:`JsonClient`: the ``json`` protocol over TCP, with reconnection
  (:class:`Backoff`) and rejoining of rooms.
- :class:`MuxClient`: the ``mux`` protocol; each :class:`MuxStream` has a view
  in its own protocol: :class:`JsonStream`, :class:`BinaryStream`, :class:`LineStream`.
- :class:`TcpPipe`: a plain connection read through the binary or line view.

:class:`JsonClient` and :class:`JsonStream` share one core (:class:`JsonCore`):
``request`` sends a message with a ``ref`` and returns the reply carrying it on
both, and every error reply raises :class:`ServerError` (``MuxError`` is the same
class).
"""

from .backoff import Backoff
from .core import DELIBERATE_REASONS, JsonCore
from .errors import (
    ClientClosed,
    MuxClosed,
    MuxError,
    ReconnectFailed,
    SendBufferFull,
    ServerError,
)
from .mux import MuxClient, MuxStream
from .pipe import TcpPipe
from .recovery import Recovery
from .tcp import JsonClient
from .views import BinaryStream, JsonStream, LineStream

__all__ = [
    "DELIBERATE_REASONS",
    "Backoff",
    "BinaryStream",
    "ClientClosed",
    "JsonClient",
    "JsonCore",
    "JsonStream",
    "LineStream",
    "MuxClient",
    "MuxClosed",
    "MuxError",
    "MuxStream",
    "ReconnectFailed",
    "Recovery",
    "SendBufferFull",
    "ServerError",
    "TcpPipe",
]
