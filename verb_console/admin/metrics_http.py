"""The small HTTP server of ``/metrics`` and ``/healthz``, inside the server's event loop.

One request per connection, a request head of at most 8 KiB read within 5 s, the
answer written within 5 s, and at most 32 scrapers at once: a slow or stalled
scraper is cut, never waited for, so it cannot hold up another or the server.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4
from prometheus_client.registry import CollectorRegistry

from ..address import host_port
from .metrics import HubCollector, LoopLag, exposition, parse_address

__all__ = ["MetricsServer", "start_metrics"]

MAX_REQUEST = 8 * 1024
READ_TIMEOUT = 5.0
WRITE_TIMEOUT = 5.0
MAX_CLIENTS = 32


def _response(status: str, body: bytes, content_type: str, head_only: bool = False) -> bytes:
    head = (
        f"HTTP/1.1 {status}\r\n"
        f"Content-Type: {content_type}\r\n"
        f"Content-Length: {len(body)}\r\n"
        "Cache-Control: no-store\r\n"
        "Connection: close\r\n\r\n"
    ).encode()
    return head if head_only else head + body


class MetricsServer:
    """The small HTTP server of ``/metrics`` and ``/healthz``, on the running event loop."""

    def __init__(
        self,
        hub: Any,
        host: str,
        port: int,
        *,
        lag: LoopLag | None = None,
        tls: Any = None,
        read_timeout: float = READ_TIMEOUT,
        write_timeout: float = WRITE_TIMEOUT,
        max_request: int = MAX_REQUEST,
        max_clients: int = MAX_CLIENTS,
    ) -> None:
        self.hub = hub
        self.host = host
        self.port = port
        self.lag = lag
        self.read_timeout = read_timeout
        self.write_timeout = write_timeout
        self.max_request = max_request
        self.max_clients = max_clients
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(HubCollector(hub, lag, tls))
        #: Scrapes answered, and requests cut (too slow, too big, too many at once).
        self.scrapes = 0
        self.cut = 0
        self._server: asyncio.Server | None = None
        self._clients: set[asyncio.Task[Any]] = set()

    @property
    def address(self) -> tuple[str, int]:
        """The bound ``(host, port)`` (the real port when 0 was asked)."""
        assert self._server is not None and self._server.sockets
        name = self._server.sockets[0].getsockname()
        return name[0], name[1]

    async def start(self) -> None:
        self._server = await asyncio.start_server(
            self._serve, self.host, self.port, limit=self.max_request, reuse_address=True
        )
        if self.lag is not None:
            self.lag.start()

    def render(self) -> bytes:
        """One scrape's exposition text."""
        return exposition(self.registry.collect())

    def _answer(self, method: str, target: str) -> bytes:
        path = target.split("?", 1)[0]
        head_only = method == "HEAD"
        if method not in ("GET", "HEAD"):
            return _response("405 Method Not Allowed", b"GET only\n", "text/plain")
        if path == "/metrics":
            self.scrapes += 1
            return _response("200 OK", self.render(), CONTENT_TYPE_PLAIN_0_0_4, head_only)
        if path == "/healthz":
            if self.hub.state == "running":
                return _response("200 OK", b"serving\n", "text/plain", head_only)
            return _response("503 Service Unavailable", b"draining\n", "text/plain", head_only)
        return _response("404 Not Found", b"/metrics or /healthz\n", "text/plain", head_only)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if len(self._clients) >= self.max_clients or task is None:
            self.cut += 1
            writer.transport.abort()
            return
        self._clients.add(task)
        cut = True
        try:
            try:
                async with asyncio.timeout(self.read_timeout):
                    head = await reader.readuntil(b"\r\n\r\n")
            except asyncio.LimitOverrunError:
                answer = _response("431 Request Header Fields Too Large", b"", "text/plain")
            else:
                parts = head.split(b"\r\n", 1)[0].decode("latin-1").split(" ")
                if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
                    answer = _response("400 Bad Request", b"", "text/plain")
                else:
                    answer = self._answer(parts[0], parts[1])
            writer.write(answer)
            async with asyncio.timeout(self.write_timeout):
                await writer.drain()
            cut = False
        except (TimeoutError, asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            self._clients.discard(task)
            if cut:
                self.cut += 1
                writer.transport.abort()
            else:
                writer.close()

    async def close(self) -> None:
        if self.lag is not None:
            self.lag.stop()
        if self._server is not None:
            self._server.close()
            for task in list(self._clients):
                task.cancel()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 2)


async def start_metrics(
    hub: Any, address: str, *, lag_interval: float = 0.5, tls: Any = None
) -> MetricsServer:
    """Start serving ``/metrics`` and ``/healthz`` on ``address`` (``HOST:PORT``);
    ``tls``: the listener's TLS options, whose handshakes are counted."""
    host, port = parse_address(address)
    server = MetricsServer(hub, host, port, lag=LoopLag(lag_interval), tls=tls)
    await server.start()
    bound = server.address
    hub.event("server", f"metrics on http://{host_port(bound[0], bound[1])}/metrics")
    return server
