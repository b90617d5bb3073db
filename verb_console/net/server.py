"""The seed's server API: ``create_server(ServerProtocol.TCP).with_options(...).listen(port)``."""

from __future__ import annotations

import asyncio
import contextlib
import enum
import errno
import logging
import resource
import socket as _socket
import time
from collections.abc import Callable, Generator
from typing import Any, NamedTuple

from ..address import host_port
from ..protocols.proxy import ProxyDecoder, ProxyHeaderError
from .options import TCPOptions
from .socket import TCPSocket, apply_keep_alive
from .tls import TLSOptions

log = logging.getLogger("verb_console.net")

# Accept errors that mean the process is out of descriptors or memory.
_RESOURCE_ERRNOS = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})
ACCEPT_NOTE_INTERVAL = 10.0

# Returns a rejection reason to close a new connection at once, or None to accept.
AcceptFilter = Callable[[str, int], str | None]


class ServerProtocol(enum.Enum):
    TCP = "tcp"


class Address(NamedTuple):
    address: str
    family: str
    port: int


class TCPServer:
    """A TCP server configured the seed's way.

    ``listen()`` binds at once (so :meth:`address` is known right away) and starts
    accepting on the running event loop; awaiting its result waits until it does.
    """

    def __init__(self) -> None:
        self.port: int = 0
        self.host: str = "127.0.0.1"
        self.options = TCPOptions()
        self.connections: set[TCPSocket] = set()
        self.accept_filter: AcceptFilter | None = None
        self.on_reject: Callable[[str, int, str], Any] | None = None
        # One line when accept fails for want of descriptors (at most one per
        # ACCEPT_NOTE_INTERVAL); asyncio retries the accept a second later.
        self.on_accept_failure: Callable[[str], Any] | None = None
        self._accept_noted = 0.0
        # Under uvloop, libuv meets EMFILE by accepting and closing the waiting
        # connections itself, and says nothing: the descriptor limit then, so that
        # an accepted descriptor that fills the table can be noted instead (0: off).
        self._fd_limit = 0
        # TLS on every accepted connection (or on those whose first byte asks for it).
        self.tls: TLSOptions | None = None
        # PROXY protocol (PROTOCOL.md 12.4): whether a peer address is a trusted
        # load balancer, how long its header may take, and who hears a bad one.
        self.proxy_trusted: Callable[[str], bool] | None = None
        self.proxy_timeout = 10.0
        self.on_proxy_error: Callable[[str, str], Any] | None = None
        # Connections whose header is awaited, and when it is due (loop time):
        # one sweep for them all, not a timer per connection (a timer made and
        # cancelled at each accept cost more than reading the header).
        self._awaiting: dict[_ServerSideSocket, float] = {}
        self._sweeper: asyncio.TimerHandle | None = None
        self._sock: _socket.socket | None = None
        self._server: asyncio.base_events.Server | None = None
        self._serving: asyncio.Task[None] | None = None
        self._read_buffer: memoryview | None = None
        self._closed = asyncio.Event() if _has_loop() else None
        self.listening = False

    def with_options(
        self,
        *,
        port: int | None = None,
        host: str | None = None,
        tcp: TCPOptions | dict[str, Any] | None = None,
        tls: TLSOptions | None = None,
    ) -> TCPServer:
        """Set the port, host and ``tcp`` options (seed names, in snake_case or camelCase),
        and ``tls`` to serve TLS."""
        if tls is not None:
            self.tls = tls
        if port is not None:
            self.port = port
        if host is not None:
            self.host = host
        if isinstance(tcp, TCPOptions):
            tcp.validate()
            self.options = tcp
        elif tcp:
            self.options.update(tcp)
        return self

    def listen(self, port: int | None = None, host: str | None = None) -> _Listening:
        """Bind and start accepting. Errors (address in use...) raise here, at once."""
        if port is not None:
            self.port = port
        if host is not None:
            self.host = host
        opts = self.options
        self._sock = sock = self._bind()
        self._read_buffer = memoryview(bytearray(opts.readable_high_water_mark))
        loop = asyncio.get_running_loop()
        self._closed = asyncio.Event()
        self._serving = loop.create_task(self._serve(sock))
        return _Listening(self, self._serving)

    def _bind(self) -> _socket.socket:
        opts = self.options
        infos = _socket.getaddrinfo(
            self.host or None, self.port, type=_socket.SOCK_STREAM, flags=_socket.AI_PASSIVE
        )
        family, socktype, proto, _, sockaddr = infos[0]
        sock = _socket.socket(family, socktype, proto)
        try:
            sock.setsockopt(_socket.SOL_SOCKET, _socket.SO_REUSEADDR, 1)
            if not opts.exclusive and hasattr(_socket, "SO_REUSEPORT"):
                sock.setsockopt(_socket.SOL_SOCKET, _socket.SO_REUSEPORT, 1)
            if family == _socket.AF_INET6:
                with contextlib.suppress(OSError):
                    sock.setsockopt(_socket.IPPROTO_IPV6, _socket.IPV6_V6ONLY, 1)
            sock.bind(sockaddr)
            sock.listen(opts.backlog)
            sock.setblocking(False)
        except BaseException:
            sock.close()
            raise
        return sock

    async def _serve(self, sock: _socket.socket) -> None:
        loop = asyncio.get_running_loop()
        try:
            self._server = await loop.create_server(
                self._make_socket, sock=sock, backlog=self.options.backlog
            )
        except Exception as exc:
            self._report_error(exc)
            raise
        self.listening = True
        previous = loop.get_exception_handler()

        def handler(lp: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
            exc = context.get("exception")
            # Each listener chains its own handler: it answers only for its own
            # socket (the loop names the listening socket), so a server with
            # several listeners names the one that failed.
            source = context.get("socket")
            ours = source is None or source.fileno() == sock.fileno()
            if ours and isinstance(exc, OSError) and exc.errno in _RESOURCE_ERRNOS:
                self._note_accept_failure(exc)
                return
            if previous is not None:
                previous(lp, context)
            else:
                lp.default_exception_handler(context)

        loop.set_exception_handler(handler)
        self._fd_limit = _hidden_emfile_limit(loop)
        if self.options.on_listening is not None:
            self.options.on_listening()

    def _make_socket(self) -> _ServerSideSocket:
        opts = self.options
        assert self._read_buffer is not None
        return _ServerSideSocket(
            self,
            read_buffer=self._read_buffer,
            readable_high_water_mark=opts.readable_high_water_mark,
            writable_high_water_mark=opts.writable_high_water_mark,
            allow_half_open=opts.allow_half_open,
        )

    def _accept(self, sock: _ServerSideSocket) -> bool:
        """Apply limits and socket options to a new connection; False if it was refused."""
        trusted = self.proxy_trusted
        if trusted is not None and trusted(sock.remote_address):
            # A load balancer's: its PROXY header names the client, who is then
            # admitted (or refused) by that address (PROTOCOL.md 12.4).
            sock.expect_proxy_header(self.proxy_timeout)
            return True
        return self._admit(sock)

    def _await_header(self, sock: _ServerSideSocket, timeout: float) -> None:
        """Close ``sock`` if its PROXY header is not whole within ``timeout`` s
        (checked a few times per timeout: at most a quarter of it late)."""
        loop = asyncio.get_running_loop()
        self._awaiting[sock] = loop.time() + timeout
        if self._sweeper is None:
            self._sweeper = loop.call_later(max(0.02, timeout / 4), self._sweep, timeout)

    def _sweep(self, timeout: float) -> None:
        self._sweeper = None
        loop = asyncio.get_running_loop()
        now = loop.time()
        for sock in [s for s, due in self._awaiting.items() if due <= now]:
            sock._proxy_failed("no PROXY header in time")
        if self._awaiting:
            self._sweeper = loop.call_later(max(0.02, timeout / 4), self._sweep, timeout)

    def _admit(self, sock: _ServerSideSocket) -> bool:
        opts = self.options
        if self.accept_filter is not None:
            reason = self.accept_filter(sock.remote_address, sock.remote_port)
            if reason is not None:
                # Closed at once with no bytes sent.
                sock.refused = True
                assert sock.transport is not None
                sock.transport.abort()
                if self.on_reject is not None:
                    self.on_reject(sock.remote_address, sock.remote_port, reason)
                return False
        raw = sock.raw_socket
        if self._fd_limit and raw is not None and raw.fileno() >= self._fd_limit - 1:
            # The lowest free descriptor is the last one: the table is full, and
            # libuv drops whoever connects next until one is closed.
            self._note_table_full()
        if raw is not None and raw.family in (_socket.AF_INET, _socket.AF_INET6):
            raw.setsockopt(_socket.IPPROTO_TCP, _socket.TCP_NODELAY, 1 if opts.no_delay else 0)
            apply_keep_alive(raw, opts.keep_alive, opts.keep_alive_initial_delay)
        self.connections.add(sock)
        if self.tls is not None:
            sock.use_tls(self.tls)
        if opts.pause_on_connect:
            sock.pause()
        if opts.timeout:
            sock.set_timeout(opts.timeout)
        if opts.on_connection is not None:
            try:
                opts.on_connection(sock)
            except Exception as exc:
                log.exception("on_connection failed for %s", sock.id)
                self._report_error(exc)
                sock.destroy()
        return True

    def _note_accept_failure(self, exc: OSError) -> None:
        now = time.monotonic()
        if now - self._accept_noted < ACCEPT_NOTE_INTERVAL:
            return
        self._accept_noted = now
        name = errno.errorcode.get(exc.errno or 0, str(exc.errno))
        bound = self.address()
        where = host_port(bound.address, bound.port) if bound is not None else self.host
        text = f"accept on {where} failed: {exc.strerror} ({name}); connections wait in the backlog"
        log.warning(text)
        if self.on_accept_failure is not None:
            self.on_accept_failure(text)

    def _note_table_full(self) -> None:
        now = time.monotonic()
        if now - self._accept_noted < ACCEPT_NOTE_INTERVAL:
            return
        self._accept_noted = now
        bound = self.address()
        where = host_port(bound.address, bound.port) if bound is not None else self.host
        text = (
            f"accept on {where}: all {self._fd_limit} descriptors are in use;"
            f" new connections fail with Too many open files (EMFILE) and are"
            f" dropped until some close"
        )
        log.warning(text)
        if self.on_accept_failure is not None:
            self.on_accept_failure(text)

    def _report_error(self, exc: BaseException) -> None:
        if self.options.on_error is not None:
            try:
                self.options.on_error(exc)
            except Exception:
                log.exception("on_error handler failed")
        else:
            log.error("TCP server error: %s", exc)

    def address(self) -> Address | None:
        """The bound address (the real port when listening on port 0); None once closed."""
        sock = self._sock
        if sock is None or sock.fileno() < 0:
            return None
        name = sock.getsockname()
        family = "IPv6" if sock.family == _socket.AF_INET6 else "IPv4"
        return Address(name[0], family, name[1])

    def stop_accepting(self) -> None:
        """Close the listening socket: new connections are refused; open ones go on."""
        if self._server is not None:
            self._server.close()
        elif self._sock is not None:
            if self._serving is not None:
                self._serving.cancel()
            self._sock.close()
        self.listening = False

    def close(self) -> None:
        """Stop accepting and destroy every open connection (the seed's ``close``)."""
        self.stop_accepting()
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
        for sock in list(self.connections):
            sock.destroy()
        if self._closed is not None and not self._closed.is_set():
            self._closed.set()
            if self.options.on_close is not None:
                self.options.on_close()

    async def wait_closed(self) -> None:
        if self._closed is not None:
            await self._closed.wait()
        if self._server is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 5)

    async def serve_forever(self) -> None:
        """Run until :meth:`close` is called."""
        if self._serving is None:
            self.listen()
        await self.wait_closed()


def _hidden_emfile_limit(loop: asyncio.AbstractEventLoop) -> int:
    """The soft descriptor limit when ``loop`` hides a failed accept (uvloop), else 0.

    asyncio reports EMFILE to the loop's exception handler and retries a second
    later; libuv instead closes its reserve descriptor, accepts and closes every
    waiting connection, and reports nothing.
    """
    if not type(loop).__module__.startswith("uvloop"):
        return 0
    soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    return 0 if soft == resource.RLIM_INFINITY else int(soft)


class _ServerSideSocket(TCPSocket):
    """An accepted connection; from a trusted load balancer, it first reads the
    PROXY header (PROTOCOL.md 12.4): while one is awaited, the bytes read go to
    the sans-IO :class:`ProxyDecoder` instead of TLS or the session; once it is
    whole, the socket takes the client's address it names, the server admits
    the connection by that address, and the bytes after the header are read as
    if they had just arrived. A header that is missing, malformed, too long or
    late closes the connection with no reply."""

    __slots__ = ("_proxy", "refused", "server")

    def __init__(self, server: TCPServer, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.server = server
        self.refused = False
        self._proxy: ProxyDecoder | None = None

    def expect_proxy_header(self, timeout: float) -> None:
        """Read a PROXY header before anything else, within ``timeout`` seconds."""
        self._proxy = ProxyDecoder()
        if timeout > 0:
            self.server._await_header(self, timeout)

    def buffer_updated(self, nbytes: int) -> None:
        # Checked on every read: uvloop keeps the bound method it found at the
        # connect, so a connection cannot be given a class of its own later.
        if self._proxy is None:
            TCPSocket.buffer_updated(self, nbytes)
            return
        decoder = self._proxy
        try:
            found = decoder.receive(bytes(self._rbuf[:nbytes]))
        except ProxyHeaderError as exc:
            self._proxy_failed(str(exc))
            return
        if found is None:
            return
        header, rest = found
        self.proxy_done()
        if header.address is not None and header.port is not None:
            self.remote_address, self.remote_port = header.address, header.port
            self.remote_family = "IPv6" if ":" in header.address else "IPv4"
        if not self.server._admit(self):
            return
        if rest and not self.refused:
            # The bytes after the header, read as if they had just arrived.
            self._rbuf[: len(rest)] = rest
            TCPSocket.buffer_updated(self, len(rest))

    def proxy_done(self) -> None:
        """No header is awaited any more (read, or the connection is gone)."""
        if self._proxy is not None:
            self._proxy = None
            self.server._awaiting.pop(self, None)

    def _proxy_failed(self, why: str) -> None:
        if self._proxy is None:
            return
        self.proxy_done()
        self.refused = True
        if self.transport is not None:
            self.transport.abort()
        report = self.server.on_proxy_error
        if report is not None:
            peer = self.remote_address
            shown = f"[{peer}]:{self.remote_port}" if ":" in peer else f"{peer}:{self.remote_port}"
            report(shown, why)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self.server._accept(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.server.connections.discard(self)
        self.proxy_done()
        if self.refused:
            self.destroyed = True
            self.wire = None
            return
        super().connection_lost(exc)


class _Listening:
    """What ``listen()`` returns: the server itself, and awaitable until it accepts."""

    def __init__(self, server: TCPServer, task: asyncio.Task[None]) -> None:
        self.server = server
        self._task = task

    def __await__(self) -> Generator[Any, None, TCPServer]:
        yield from asyncio.shield(self._task).__await__()
        return self.server

    def __getattr__(self, name: str) -> Any:
        return getattr(self.server, name)


def _has_loop() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


def create_server(protocol: ServerProtocol = ServerProtocol.TCP) -> TCPServer:
    """``create_server(ServerProtocol.TCP)``: a server to configure with ``with_options``."""
    if protocol is not ServerProtocol.TCP:
        raise ValueError(f"unsupported server protocol: {protocol!r}")
    return TCPServer()
