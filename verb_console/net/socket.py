"""``TCPSocket``: the seed's socket object, made of an asyncio buffered protocol.

One class is both the asyncio protocol and the user-facing socket so that a read
costs one call from the event loop to the listener and nothing more. Reads land in
a buffer the server shares between its sockets (the seed's buffer pool: the loop
fills it and the bytes are handed on before the next read), sized by the
``readable_high_water_mark`` option.
"""

from __future__ import annotations

import asyncio
import codecs
import contextlib
import logging
import socket as _socket
import time
from collections.abc import Callable
from typing import Any, cast

from ..address import host_port
from .tls import TLSError
from .tls_socket import TLSSocketMixin

log = logging.getLogger("verb_console.net")

EVENTS = ("data", "end", "close", "error", "timeout", "drain", "connect", "secure")

Listener = Callable[..., Any]


def apply_keep_alive(sock: _socket.socket, enable: bool, initial_delay_ms: float) -> None:
    """Turn TCP keep-alive on or off; the first probe goes after ``initial_delay_ms``."""
    sock.setsockopt(_socket.SOL_SOCKET, _socket.SO_KEEPALIVE, 1 if enable else 0)
    if enable and initial_delay_ms > 0:
        seconds = max(1, round(initial_delay_ms / 1000))
        if hasattr(_socket, "TCP_KEEPIDLE"):
            sock.setsockopt(_socket.IPPROTO_TCP, _socket.TCP_KEEPIDLE, seconds)
        elif hasattr(_socket, "TCP_KEEPALIVE"):  # macOS
            sock.setsockopt(_socket.IPPROTO_TCP, _socket.TCP_KEEPALIVE, seconds)


class TCPSocket(TLSSocketMixin, asyncio.BufferedProtocol):
    """A TCP connection with the seed's members and events.

    Events (``on(name, fn)``): ``data`` (bytes, or str after :meth:`set_encoding`),
    ``end`` (the peer finished sending), ``close`` (``had_error: bool``), ``error``
    (the exception), ``timeout`` (no bytes received for the :meth:`set_timeout`
    period), ``drain`` (unsent output fell below the writable high-water mark) and
    ``connect`` (client sockets), ``secure`` (the TLS handshake finished).
    """

    # Slots: a server holds one of these per connection, 10,000 of them idle.
    __slots__ = (
        "_closed_waiter",
        "_data_listeners",
        "_decoder",
        "_holds",
        "_listeners",
        "_rbuf",
        "_reading_paused",
        "_timeout_s",
        "_timer",
        "_user_paused",
        "allow_half_open",
        "bytes_read",
        "bytes_written",
        "congested",
        "connected_at",
        "destroyed",
        "had_error",
        "last_received",
        "local_address",
        "local_port",
        "pause_reads_when_congested",
        "remote_address",
        "remote_family",
        "remote_port",
        "transport",
        "writable_high_water_mark",
    )

    def __init__(
        self,
        *,
        read_buffer: memoryview | None = None,
        readable_high_water_mark: int = 16384,
        writable_high_water_mark: int = 16384,
        allow_half_open: bool = False,
    ) -> None:
        self._rbuf = (
            read_buffer
            if read_buffer is not None
            else memoryview(bytearray(readable_high_water_mark))
        )
        self.writable_high_water_mark = writable_high_water_mark
        self.allow_half_open = allow_half_open
        self.transport: asyncio.Transport | None = None
        # The transport's own write while bytes go to it as they are (connected,
        # no TLS), else None. A fan-out writes one frame to many sockets through
        # it, skipping a Python call per socket, and adds to bytes_written itself.
        self.wire: Callable[[bytes], object] | None = None
        self._listeners: dict[str, list[Listener]] = {}
        self._data_listeners: list[Listener] = []
        self.remote_address: str = ""
        self.remote_port: int = 0
        self.remote_family: str = ""
        self.local_address: str = ""
        self.local_port: int = 0
        self.bytes_read = 0
        self.bytes_written = 0
        self.connected_at = 0.0
        self.last_received = 0.0  # time.monotonic() of the last read
        self.destroyed = False
        self.congested = False  # unsent output is above the writable high-water mark
        # Stop reading while our own output is congested (the server turns this on).
        self.pause_reads_when_congested = False
        self._user_paused = False
        self._holds: set[object] | None = None  # made on first hold()
        self._reading_paused = False
        self._decoder: codecs.IncrementalDecoder | None = None
        self._timeout_s = 0.0
        self._timer: asyncio.TimerHandle | None = None
        self._closed_waiter: asyncio.Future[None] | None = None
        self.had_error = False
        self._init_tls()

    # ----------------------------------------------------------- events
    def on(self, event: str, listener: Listener) -> TCPSocket:
        """Add a listener for ``event``; returns the socket for chaining."""
        if event not in EVENTS:
            raise ValueError(f"unknown socket event {event!r}; expected one of {EVENTS}")
        if event == "data":
            self._data_listeners.append(listener)
        else:
            self._listeners.setdefault(event, []).append(listener)
        return self

    def off(self, event: str, listener: Listener) -> TCPSocket:
        """Remove a listener added with :meth:`on`."""
        bucket = self._data_listeners if event == "data" else self._listeners.get(event, [])
        with contextlib.suppress(ValueError):
            bucket.remove(listener)
        return self

    def once(self, event: str) -> asyncio.Future[Any]:
        """A future resolved by the next ``event`` (its first argument, or None)."""
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()

        def fire(*args: Any) -> None:
            self.off(event, fire)
            if not fut.done():
                fut.set_result(args[0] if args else None)

        self.on(event, fire)
        return fut

    def remove_all_listeners(self) -> None:
        self._listeners.clear()
        self._data_listeners.clear()

    def _emit(self, event: str, *args: Any) -> None:
        for listener in list(self._listeners.get(event, ())):
            try:
                listener(*args)
            except Exception:
                log.exception("%s listener failed on %s", event, self.id)

    @property
    def id(self) -> str:
        return host_port(self.remote_address, self.remote_port)

    # ----------------------------------------------------------- asyncio protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # A stream connection's transport is always a full (read-write) one.
        self.transport = transport = cast(asyncio.Transport, transport)
        peer = transport.get_extra_info("peername") or ("", 0)
        local = transport.get_extra_info("sockname") or ("", 0)
        self.remote_address, self.remote_port = peer[0], peer[1]
        self.local_address, self.local_port = local[0], local[1]
        self.remote_family = "IPv6" if ":" in self.remote_address else "IPv4"
        self.connected_at = time.time()
        self.last_received = time.monotonic()
        transport.set_write_buffer_limits(high=self.writable_high_water_mark)
        if self._tls is None and self._tls_options is None:
            self.wire = transport.write

    def get_buffer(self, sizehint: int) -> memoryview:
        return self._rbuf

    def buffer_updated(self, nbytes: int) -> None:
        if self._tls is not None or self._tls_options is not None:
            self._tls_received(nbytes)
            return
        self._deliver(bytes(self._rbuf[:nbytes]))

    def _deliver(self, data: bytes) -> None:
        self.bytes_read += len(data)
        self.last_received = time.monotonic()
        if self._decoder is not None:
            data = self._decoder.decode(data)  # type: ignore[assignment]
        try:
            for listener in self._data_listeners:
                listener(data)
        except Exception as exc:
            # A failing handler ends this connection only, never the server.
            log.exception("data handler failed on %s", self.id)
            self._fail(exc)

    def eof_received(self) -> bool | None:
        self._emit("end")
        return True if self.allow_half_open else None

    def pause_writing(self) -> None:
        self.congested = True
        if self.pause_reads_when_congested:
            self._sync_reading()

    def resume_writing(self) -> None:
        self.congested = False
        if self.pause_reads_when_congested:
            self._sync_reading()
        self._emit("drain")

    def connection_lost(self, exc: Exception | None) -> None:
        self.destroyed = True
        self.wire = None
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._tls_lost()
        if exc is not None:
            self.had_error = True
            self._emit("error", exc)
        self._emit("close", self.had_error)
        if self._closed_waiter is not None and not self._closed_waiter.done():
            self._closed_waiter.set_result(None)
        # Listeners often close over the socket; dropping them breaks those cycles
        # so a closed connection is freed at once, not by a later collection.
        self.remove_all_listeners()

    # ----------------------------------------------------------- seed API
    def write(self, data: bytes | bytearray | memoryview | str, encoding: str = "utf-8") -> bool:
        """Queue ``data``; returns False once unsent output is above the high-water mark."""
        transport = self.transport
        if transport is None or self.destroyed:
            return False
        if isinstance(data, str):
            data = data.encode(encoding)
        self.bytes_written += len(data)
        tls = self._tls
        if tls is not None:
            try:
                tls.send(data)
            except TLSError as exc:
                self._tls_abort(str(exc))
                return False
            out = tls.outgoing()
            if out:
                transport.write(out)
            return not self.congested
        transport.write(data)
        return not self.congested

    def end(self, data: bytes | str | None = None) -> None:
        """Write ``data`` if given, then close once the unsent output is flushed."""
        if data is not None:
            self.write(data)
        if self.transport is not None and not self.destroyed:
            tls = self._tls
            if tls is not None:
                tls.close()
                out = tls.outgoing()
                if out:
                    self.transport.write(out)
            self.transport.close()

    def destroy(self, error: BaseException | None = None) -> None:
        """Close at once, dropping unsent output."""
        if error is not None:
            self.had_error = True
            self._emit("error", error)
        if self.transport is not None and not self.destroyed:
            self.transport.abort()

    def _fail(self, exc: BaseException) -> None:
        self.had_error = True
        self._emit("error", exc)
        if self.transport is not None:
            self.transport.abort()

    @property
    def unsent(self) -> int:
        """Bytes written but not yet handed to the kernel."""
        t = self.transport
        return t.get_write_buffer_size() if t is not None and not self.destroyed else 0

    @property
    def raw_socket(self) -> _socket.socket | None:
        t = self.transport
        return t.get_extra_info("socket") if t is not None else None

    def set_keep_alive(self, enable: bool = True, initial_delay: float = 0) -> TCPSocket:
        """Turn keep-alive on or off; ``initial_delay`` in milliseconds."""
        sock = self.raw_socket
        if sock is not None:
            apply_keep_alive(sock, enable, initial_delay)
        return self

    def set_no_delay(self, no_delay: bool = True) -> TCPSocket:
        """Disable (True) or enable Nagle's algorithm."""
        sock = self.raw_socket
        if sock is not None and sock.family in (_socket.AF_INET, _socket.AF_INET6):
            sock.setsockopt(_socket.IPPROTO_TCP, _socket.TCP_NODELAY, 1 if no_delay else 0)
        return self

    def set_timeout(self, timeout: float, callback: Callable[[], Any] | None = None) -> TCPSocket:
        """Emit ``timeout`` after ``timeout`` ms with no bytes received (0 turns it off).

        The timer is lazy: reads only record the time, and the timer re-arms itself
        for the remaining period when it fires early, so busy sockets cost nothing.
        """
        if callback is not None:
            self.on("timeout", callback)
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._timeout_s = timeout / 1000.0
        if self._timeout_s > 0 and not self.destroyed:
            self._arm(self._timeout_s)
        return self

    def _arm(self, delay: float) -> None:
        loop = asyncio.get_running_loop()
        self._timer = loop.call_later(delay, self._check_timeout)

    def _check_timeout(self) -> None:
        self._timer = None
        if self.destroyed or self._timeout_s <= 0:
            return
        idle = time.monotonic() - self.last_received
        if idle >= self._timeout_s:
            self._emit("timeout")
            if not self.destroyed and self._timer is None:
                self._arm(self._timeout_s)
        else:
            self._arm(self._timeout_s - idle)

    def set_encoding(self, encoding: str | None = "utf-8") -> TCPSocket:
        """Deliver ``data`` as str decoded with ``encoding`` (None: back to bytes)."""
        self._decoder = codecs.getincrementaldecoder(encoding)("replace") if encoding else None
        return self

    def pause(self) -> TCPSocket:
        """Stop reading from the peer until :meth:`resume`."""
        self._user_paused = True
        self._sync_reading()
        return self

    def resume(self) -> TCPSocket:
        self._user_paused = False
        self._sync_reading()
        return self

    def hold(self, token: object) -> None:
        """Stop reading until every holder has called :meth:`release` (e.g. a slow disk)."""
        if self._holds is None:
            self._holds = set()
        self._holds.add(token)
        self._sync_reading()

    def release(self, token: object) -> None:
        if self._holds is not None:
            self._holds.discard(token)
        self._sync_reading()

    @property
    def is_paused(self) -> bool:
        return self._reading_paused

    def _sync_reading(self) -> None:
        want_paused = (
            self._user_paused
            or bool(self._holds)
            or (self.pause_reads_when_congested and self.congested)
        )
        t = self.transport
        if t is None or self.destroyed or want_paused == self._reading_paused:
            return
        self._reading_paused = want_paused
        if want_paused:
            t.pause_reading()
        else:
            t.resume_reading()

    def address(self) -> dict[str, Any]:
        return {
            "address": self.local_address,
            "port": self.local_port,
            "family": self.remote_family,
        }

    async def wait_closed(self) -> None:
        if self.destroyed:
            return
        if self._closed_waiter is None:
            self._closed_waiter = asyncio.get_running_loop().create_future()
        await self._closed_waiter

    # ----------------------------------------------------------- client side
    async def connect(self, port: int, host: str = "127.0.0.1") -> TCPSocket:
        """Connect to ``host:port`` (client sockets made by ``create_tcp_client``)."""
        loop = asyncio.get_running_loop()
        await loop.create_connection(lambda: self, host, port)
        self.set_no_delay(True)
        self._emit("connect")
        return self
