"""Fixtures: real servers on 127.0.0.1 (port 0) and json clients that talk to them."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from helpers import JsonClient

from verb_console.runtime import Runtime
from verb_console.settings import Settings

ServerFactory = Callable[..., Awaitable[Runtime]]


@pytest.fixture
async def start_server() -> AsyncIterator[ServerFactory]:
    """Start a json server with setting overrides; every server is stopped after the test."""
    runtimes: list[Runtime] = []

    async def start(**overrides: Any) -> Runtime:
        values: dict[str, Any] = {"host": "127.0.0.1", "port": 0, "protocol": "json"}
        values.update(overrides)
        runtime = Runtime(Settings(**values))
        await runtime.start()
        runtimes.append(runtime)
        return runtime

    yield start
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
