"""``host:port`` as every log line, session id and URL of the project writes it.

An IPv6 host goes in brackets (``[::1]:8080``), so the port stays readable and
the text is the form a client, a URL and ``--metrics HOST:PORT`` all accept.
"""

from __future__ import annotations


def host_port(host: str, port: int) -> str:
    """``host:port``, with an IPv6 ``host`` in brackets."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
