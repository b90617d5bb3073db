"""The seed's TCP server API in Python.

``create_server``, ``with_options``, ``listen`` and ``TCPSocket``.
"""

from .options import TCPOptions
from .server import Address, ServerProtocol, TCPServer, create_server
from .socket import TCPSocket

__all__ = ["Address", "ServerProtocol", "TCPOptions", "TCPServer", "TCPSocket", "create_server"]
