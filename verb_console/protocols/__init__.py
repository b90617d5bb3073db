"""Sans-IO codecs: bytes in, events or bytes out; no sockets, clocks or event loop."""

from .errors import ProtocolError, ServerError

__all__ = ["ProtocolError", "ServerError"]
