"""Runs the server: hub plus listeners, signals, and the headless entry point."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import signal
import socket
import sys
import time
from collections.abc import Coroutine
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .address import host_port
from .admin import paths as admin_paths
from .admin.server import AdminServer
from .hub import Hub
from .hub.revocation import Revocation
from .hub.snapshot import HubState
from .hub.uploads import UploadStore
from .hub.view import LiveHubView
from .logformat import JsonLogFormatter
from .memory import HeapTrimmer
from .net import ServerProtocol, TCPOptions, TCPServer, TLSOptions, create_server
from .net.socket import TCPSocket
from .reloading import Reloading
from .security import load_auth, load_policy, load_proxy_trust, load_tls
from .settings import Settings, StartupRefused

if TYPE_CHECKING:
    from .admin.metrics_http import MetricsServer

log = logging.getLogger("verb_console")

PROXY_NOTE_S = 10.0
"""Seconds between two log lines about bad PROXY headers."""


def format_listen(host: str, port: int, protocol: str, tls: bool = False) -> str:
    where = host_port(host, port)
    return f"{where} ({protocol}, tls)" if tls else f"{where} ({protocol})"


class Runtime:
    """One server: a :class:`Hub` and its listener, started on the running event loop."""

    def __init__(self, settings: Settings | None = None) -> None:
        s = self.settings = settings or Settings()
        # Made here, prepared (its directory created and swept) in start().
        self.uploads = UploadStore(
            Path(s.upload_dir),
            max_file_size=s.max_file_size,
            quota=s.upload_quota,
            per_session_limit=s.max_transfers,
            per_connection_limit=s.max_transfers_per_connection,
            server_limit=s.max_transfers_total,
            max_files=s.max_upload_files,
            client_reservation=s.max_reserved_per_client,
            transfer_timeout=s.transfer_timeout,
        )
        self.hub = Hub(s, self.uploads)
        self.uploads.set_event_sink(self.hub.event)
        self.server: TCPServer | None = None
        self.admin: AdminServer | None = None
        self.metrics: MetricsServer | None = None
        # Hands freed heap memory back to the system (memory.py), from start to shutdown.
        self.trimmer = HeapTrimmer(live=lambda: len(self.hub.connections))
        self._signals = 0
        # What ``ctl reload`` and SIGHUP re-read (auth file, policy, certificate),
        # read off the loop and applied on it.
        self.reloading = Reloading(self)
        # Bad PROXY headers since the last line about them, and when that was.
        self._proxy_refusals = 0
        self._proxy_noted = -PROXY_NOTE_S

    @property
    def port(self) -> int:
        addr = self.server.address() if self.server is not None else None
        if addr is None:
            raise RuntimeError("the server is not listening")
        return addr.port

    def tcp_options(self) -> TCPOptions:
        s = self.settings
        return TCPOptions(
            backlog=511,
            # An operator starting a second server on a taken port wants an error,
            # not two servers silently sharing it.
            # A cluster's nodes on one host may share it (SO_REUSEPORT), when asked.
            exclusive=not s.reuse_port,
            readable_high_water_mark=s.readable_high_water_mark,
            writable_high_water_mark=s.writable_high_water_mark,
            keep_alive=True,
            keep_alive_initial_delay=60000,
            no_delay=True,
            timeout=int(s.idle_timeout * 1000),
            on_connection=self._on_connection,
            on_error=lambda exc: log.error("TCP server error: %s", exc),
        )

    def _on_connection(self, sock: TCPSocket) -> None:
        self.hub.attach(sock, self.protocol)

    @property
    def protocol(self) -> str:
        return self.settings.protocol

    async def start(self) -> None:
        """Prepare the hub and start listening; logs ``listening on HOST:PORT (PROTOCOL)``."""
        s = self.settings
        hub = self.hub
        if self.protocol not in hub.factories:
            raise ValueError(f"protocol {self.protocol!r} is not available")
        store = self.uploads
        removed = store.prepare()
        if removed:
            hub.event("server", f"removed {removed} unfinished uploads left by an earlier run")
        hub.auth = load_auth(s)
        hub.permissions.policy = load_policy(s)
        hub.banning.open(s.state_dir)
        context = load_tls(s)
        self.reloading.install()
        hub.start()
        if hub.state is not HubState.RUNNING:  # a signal arrived while starting
            return
        # A cluster node's name is known before listening unless it comes from port 0.
        early = bool(s.cluster) and bool(s.node_name or s.port)
        if early:
            await self._join_cluster(s.port)
        tls = None
        if context is not None:
            tls = TLSOptions(
                context,
                detect=self.protocol == "auto",
                required=s.tls_required,
                handshake_timeout=s.handshake_timeout,
            )
        server = create_server(ServerProtocol.TCP).with_options(
            port=s.port, host=s.host, tcp=self.tcp_options(), tls=tls
        )
        server.accept_filter = hub.admit
        trusted = load_proxy_trust(s)
        if trusted is not None:
            server.proxy_trusted = trusted
            server.proxy_timeout = s.handshake_timeout
            server.on_proxy_error = self._proxy_refused
        server.on_accept_failure = lambda text: hub.event("error", text)
        try:
            await server.listen()
        except OSError as exc:
            # Name the address: "Address already in use" alone does not say which.
            where = format_listen(s.host, s.port, s.protocol)
            why = exc.strerror or str(exc)
            raise OSError(exc.errno, f"cannot listen on {where}: {why}") from exc
        self.server = server
        addr = server.address()
        assert addr is not None
        if s.cluster and not early:
            await self._join_cluster(addr.port)
        line = format_listen(addr.address, addr.port, s.protocol, tls is not None)
        hub.listening(line, server.stop_accepting)
        hub.on_shutdown.append(server.close)
        hub.on_shutdown.append(store.aclose)
        try:
            await self.start_admin(addr.port)
        except OSError:
            server.close()
            raise
        hub.event("server", f"listening on {line}")
        self.trimmer.start()
        hub.on_shutdown.append(self.trimmer.stop)
        hub.turns.start()
        hub.turns.beside.append(lambda: "heap trim" if self.trimmer.trimming else "")
        hub.on_shutdown.append(hub.turns.stop)
        if s.metrics:
            from .admin.metrics_http import start_metrics

            self.metrics = await start_metrics(hub, s.metrics, tls=tls)
            hub.on_shutdown.append(self.metrics.close)

    async def _join_cluster(self, port: int) -> None:
        """Become a node of the cluster at ``--cluster`` (PROTOCOL.md section 10)."""
        from .cluster import RedisBus, valid_node_name
        from .cluster.base import ClusterUnavailable, NodeNameTaken

        s = self.settings
        name = s.node_name or default_node_name(port)
        if not valid_node_name(name):
            raise StartupRefused(f"--node-name: {name!r} is not 1 to 32 characters of A-Za-z0-9_.-")
        bus = RedisBus(
            self.hub,
            s.cluster,
            name,
            queue_limit=s.cluster_queue,
            max_message=max(s.max_frame, 1024 * 1024) + 4096,
        )
        self.hub.join_cluster(bus)
        try:
            await bus.start()
        except (NodeNameTaken, ClusterUnavailable) as exc:
            raise StartupRefused(f"--cluster: {exc}") from None
        self.hub.on_shutdown.append(bus.aclose)

    @property
    def admin_path(self) -> Path:
        """Where this server's admin socket is (ARCHITECTURE.md gives the default)."""
        s = self.settings
        if s.admin_socket:
            return Path(s.admin_socket)
        if s.reuse_port:
            # Nodes sharing one port each get their own socket, named by node too.
            node = s.node_name or default_node_name(self.port)
            return admin_paths.socket_dir() / f"{self.port}-{node}.sock"
        return admin_paths.default_path(self.port)

    async def start_admin(self, port: int) -> None:
        """Open the admin socket; a live server already holding it is an error naming it."""
        path = self.admin_path
        view = LiveHubView(self.hub, read_only=self.settings.read_only)
        admin = AdminServer(view, path, self.reload_async, port)
        await admin.start(default_dir=not self.settings.admin_socket)
        self.admin = admin
        self.hub.on_shutdown.append(admin.close)
        self.hub.event("server", f"admin socket {path}")

    def _proxy_refused(self, peer: str, why: str) -> None:
        """A trusted proxy's connection without a good PROXY header: logged, at most
        one line per :data:`PROXY_NOTE_S` (a broken balancer may send thousands)."""
        self._proxy_refusals += 1
        now = time.monotonic()
        if now - self._proxy_noted < PROXY_NOTE_S:
            return
        more = self._proxy_refusals - 1
        self._proxy_noted, self._proxy_refusals = now, 0
        also = f" ({more} more since the last note)" if more else ""
        self.hub.event("error", f"closed {peer}: bad PROXY header: {why}{also}")

    @property
    def revocation(self) -> Revocation | None:
        """The last reload's pass over the live sessions (section 12.2), if any."""
        return self.reloading.revocation

    def install_signal_handlers(self) -> None:
        """SIGTERM/SIGINT: the first starts the graceful shutdown, the second closes everything."""
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            # Not available on every platform (e.g. Windows' proactor loop).
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, self._on_signal, sig)

    def install_sighup_reload(self) -> None:
        """SIGHUP reloads (as ``ctl reload`` does) and never stops the server."""
        loop = asyncio.get_running_loop()
        with contextlib.suppress(AttributeError, NotImplementedError, RuntimeError, ValueError):
            loop.add_signal_handler(signal.SIGHUP, self.reloading.reload_soon, "SIGHUP")

    def reload(self, why: str = "reload") -> list[str]:
        """Reload now, reading the files on the caller's thread (it blocks: for
        embedding and tests); returns the errors of what failed (logged too)."""
        return self.reloading.reload(why)

    async def reload_async(self, why: str = "reload") -> list[str]:
        """Reload as ``ctl reload`` does: the files read and parsed off the loop,
        the results applied on it; returns the errors of what failed."""
        return await self.reloading.reload_async(why)

    def _on_signal(self, sig: signal.Signals) -> None:
        self._signals += 1
        if self._signals == 1:
            log.info("%s: starting graceful shutdown", sig.name)
            self.hub.begin_shutdown()
        else:
            log.info("%s again: closing every session now", sig.name)
            self.hub.force_shutdown()

    async def run(self) -> int:
        """Start, serve until shut down, and return the exit status (0 after a clean shutdown)."""
        # Handlers first: a script may signal as soon as the listening line appears.
        self.install_signal_handlers()
        self.install_sighup_reload()
        await self.start()
        await self.hub.wait_stopped()
        return 0


def default_node_name(port: int) -> str:
    """``<hostname>-<port>``, kept to the characters and length a node name may have."""
    host = "".join(c if c.isalnum() or c in "_.-" else "-" for c in socket.gethostname())
    tail = f"-{port}"
    return (host[: 32 - len(tail)] or "node") + tail


LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def log_formatter(settings: Settings) -> logging.Formatter:
    """``--log-format``: people's lines (:data:`LOG_FORMAT`), or one JSON object a line."""
    if settings.log_format == "json":
        return JsonLogFormatter()
    return logging.Formatter(LOG_FORMAT)


def log_file_handler(settings: Settings) -> logging.Handler:
    """A handler appending to ``--log-file``, at the configured level."""
    handler = logging.FileHandler(settings.log_file, encoding="utf-8")
    handler.setLevel(getattr(logging, settings.log_level.upper(), logging.INFO))
    handler.setFormatter(log_formatter(settings))
    return handler


def tune_gc() -> None:
    """Never rescan what startup made: freeze it out of the collector's reach.

    Full collections walk every tracked object; at 10,000 connections they
    stalled the loop for 150 to 240 ms (bench/console_cost.py). Freezing the
    objects made at startup shrinks that walk. A higher gen0 threshold was
    tried too: it hid the stalls but let the heap grow 20% under churn
    (bench/soak.py), so the thresholds stay at Python's defaults.
    Process-wide, so only the entry points call it.
    """
    gc.collect()
    gc.freeze()


def run_headless(settings: Settings) -> int:
    """``verb-console --headless``: the server with no UI, logging to stderr."""
    logging.basicConfig(
        level=getattr(logging, settings.log_level.upper(), logging.INFO),
        format=LOG_FORMAT,
        stream=sys.stderr,
    )
    for handler in logging.getLogger().handlers:
        handler.setFormatter(log_formatter(settings))
    if settings.log_file:
        logging.getLogger().addHandler(log_file_handler(settings))
    runtime = Runtime(settings)
    tune_gc()
    return run_loop(runtime.run())


def choose_loop() -> str:
    """Make uvloop the loop ``asyncio.run`` creates where it is installed (it measures
    faster); returns the name of the loop chosen, ``"uvloop"`` or ``"asyncio"``.

    ``VERB_CONSOLE_LOOP=asyncio`` keeps the standard loop (the benchmarks compare
    both). Both entry points call this: the headless server, and the console, whose
    Textual app calls ``asyncio.run`` itself and hosts the server on that loop.
    """
    if os.environ.get("VERB_CONSOLE_LOOP", "uvloop") == "asyncio":
        return "asyncio"
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency on POSIX
        return "asyncio"
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    return "uvloop"


def run_loop(main: Coroutine[Any, Any, int]) -> int:
    """Run ``main`` on the loop :func:`choose_loop` picks."""
    choose_loop()
    return asyncio.run(main)
