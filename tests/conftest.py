"""Fixtures: real servers on 127.0.0.1 (port 0) and json clients that talk to them."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from cluster_harness import RedisServer
from helpers import TLS_PORTS, JsonClient

from verb_console.runtime import Runtime
from verb_console.settings import Settings

ServerFactory = Callable[..., Awaitable[Runtime]]


@pytest.fixture
async def redis_server(tmp_path: Path) -> AsyncIterator[RedisServer]:
    """A real redis-server process on a free port, killed after the test."""
    server = await RedisServer(tmp_path).start()
    yield server
    await server.kill()


@pytest.fixture
def wire() -> str:
    """How test clients reach the servers: "plain" here; modules that run every test
    over TLS too override it (``helpers.wire_fixtures``)."""
    return "plain"


@pytest.fixture
async def start_server(wire: str, tls_files: TLSFiles) -> AsyncIterator[ServerFactory]:
    """Start a json server with setting overrides; every server is stopped after the test."""
    runtimes: list[Runtime] = []

    async def start(**overrides: Any) -> Runtime:
        values: dict[str, Any] = {"host": "127.0.0.1", "port": 0, "protocol": "json"}
        if wire.startswith("tls"):
            values.update(tls_cert=tls_files.cert, tls_key=tls_files.key)
        values.update(overrides)
        runtime = Runtime(Settings(**values))
        await runtime.start()
        runtimes.append(runtime)
        if runtime.settings.tls_cert and runtime.server is not None:
            TLS_PORTS[runtime.port] = tls_files.client_context()
            tls_ports.append(runtime.port)
        return runtime

    tls_ports: list[int] = []
    yield start
    for port in tls_ports:
        TLS_PORTS.pop(port, None)
    for runtime in runtimes:
        runtime.hub.force_shutdown()
    for runtime in runtimes:
        await asyncio.wait_for(runtime.hub.wait_stopped(), 10)
        assert runtime.server is not None
        await asyncio.wait_for(runtime.server.wait_closed(), 5)


@pytest.fixture
async def server(start_server: ServerFactory) -> Runtime:
    """A json server with the default settings."""
    return await start_server()


@pytest.fixture
async def connect(start_server: ServerFactory) -> AsyncIterator[Callable[..., Awaitable[Any]]]:
    """Connect a :class:`JsonClient` to a runtime (closed after the test, before the server)."""
    clients: list[JsonClient] = []

    async def open_client(runtime: Runtime | int, **kwargs: Any) -> JsonClient:
        port = runtime if isinstance(runtime, int) else runtime.port
        client = await JsonClient.connect(port, **kwargs)
        clients.append(client)
        return client

    yield open_client
    for client in clients:
        with contextlib.suppress(Exception):
            await client.close()


class TLSFiles:
    """A CA made for this test run (trustme), a server certificate for 127.0.0.1
    and localhost, and client contexts that trust it. Nothing is committed."""

    def __init__(self, directory: Any) -> None:
        import trustme

        self.dir = directory
        self.ca = trustme.CA()
        server = self.ca.issue_cert("localhost", "127.0.0.1")
        self.cert = str(directory / "server.crt")
        self.key = str(directory / "server.key")
        server.cert_chain_pems[0].write_to_path(self.cert)
        server.private_key_pem.write_to_path(self.key)
        self.ca_file = str(directory / "ca.pem")
        self.ca.cert_pem.write_to_path(self.ca_file)

    def client_context(self, cert: Any = None) -> Any:
        """A client context trusting the run's CA (and nothing else), presenting
        ``cert`` if given.

        Not ``ssl.create_default_context()``: it loads the system's CA bundle,
        a quarter of a second of CPU, once per TLS test. The settings it would
        make are those of a PROTOCOL_TLS_CLIENT context already (hostname
        checked, certificate required)."""
        import ssl

        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        assert ctx.check_hostname and ctx.verify_mode == ssl.CERT_REQUIRED
        self.ca.configure_trust(ctx)
        if cert is not None:
            cert.configure_cert(ctx)
        return ctx

    def client_cert(self, name: str, ca: Any = None, **kwargs: Any) -> Any:
        """A client certificate whose subject's common name is ``name``."""
        return (ca or self.ca).issue_cert(name, common_name=name, **kwargs)


@pytest.fixture(scope="session")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> TLSFiles:
    return TLSFiles(tmp_path_factory.mktemp("tls"))


@pytest.fixture(autouse=True)
def _own_paths(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch):
    """Every test in its own working directory and admin-socket directory, so the
    defaults (``./uploads``, ``$XDG_RUNTIME_DIR/verb-console/PORT.sock``) of the
    servers it starts, in process or not, never meet another test's: tests run in
    parallel (pytest-xdist), and ``ctl`` finds "the only running server" there."""
    monkeypatch.chdir(tmp_path_factory.mktemp("cwd"))
    # Short (a Unix socket path holds 107 bytes): basetemp/popen-gwN/runNNN.
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path_factory.mktemp("run")))


@pytest.fixture(autouse=True)
def _steady_input_cursor(monkeypatch: pytest.MonkeyPatch):
    """Text inputs keep their cursor shown instead of blinking on a 0.5 s wall-clock
    timer, so a snapshot taken after typing does not depend on how busy the machine is."""
    from textual.widgets import Input

    monkeypatch.setattr(Input.cursor_blink, "_default", False)


@pytest.fixture(autouse=True)
def _own_config_dir(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch):
    """The console saves its theme under $XDG_CONFIG_HOME: never the real one in tests."""
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path_factory.mktemp("config")))


@pytest.fixture(autouse=True)
def _unicode_glyphs(monkeypatch: pytest.MonkeyPatch):
    """Draw with the Unicode glyphs whatever the test machine's locale; ASCII tests ask."""
    monkeypatch.setenv("VERB_CONSOLE_ASCII", "0")
    yield
    from verb_console.console import glyphs

    glyphs.use_ascii(False)


# VERB_TEST_PROFILE=FILE: each test's wall and CPU seconds (this process and the
# children it reaped), one JSON line per test, to find the tests that wait.
_PROFILE = __import__("os").environ.get("VERB_TEST_PROFILE")
if _PROFILE:
    import json
    import os
    import resource
    import time

    @pytest.hookimpl(hookwrapper=True)
    def pytest_runtest_protocol(item: pytest.Item, nextitem: Any) -> Any:
        def cpu() -> float:
            own = resource.getrusage(resource.RUSAGE_SELF)
            kids = resource.getrusage(resource.RUSAGE_CHILDREN)
            return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime

        wall, used = time.monotonic(), cpu()
        yield
        line = {"id": item.nodeid, "wall": time.monotonic() - wall, "cpu": cpu() - used}
        with open(f"{_PROFILE}.{os.environ.get('PYTEST_XDIST_WORKER', 'main')}", "a") as f:
            f.write(json.dumps(line) + "\n")
