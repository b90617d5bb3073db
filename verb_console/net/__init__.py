"""The seed's TCP server API in Python.

``create_server``, ``with_options``, ``listen``, ``TCPSocket`` and ``MessageHandler``.
"""

from .message_handler import MessageHandler
from .options import TCPOptions
from .server import Address, ServerProtocol, TCPServer, create_server
from .socket import TCPSocket
from .tls import TLSOptions, make_server_context

__all__ = [
    "Address",
    "MessageHandler",
    "ServerProtocol",
    "TCPOptions",
    "TCPServer",
    "TCPSocket",
    "TLSOptions",
    "create_server",
    "make_server_context",
]
