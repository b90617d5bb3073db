"""Stream churn: many streams opened and closed on one mux connection leave nothing behind."""

from __future__ import annotations

import asyncio
import gc
import os
import time
from pathlib import Path

import pytest

from verb_console.client import MuxClient
from verb_console.hub.mux_session import MuxSession

pytestmark = pytest.mark.timeout(60)

KINDS = ("json", "binary", "echo")
BATCH = 200  # below the 256 open streams a connection may have


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


async def churn(client: MuxClient, count: int) -> None:
    """Open ``count`` streams in pipelined batches; each sends one message, then all close."""
    for start in range(0, count, BATCH):
        n = min(BATCH, count - start)
        streams = await asyncio.gather(
            *(client.open_stream(KINDS[(start + i) % 3]) for i in range(n))
        )
        for stream in streams:
            stream.write(b"2\n{}" if stream.kind == "json" else b"x\n")
        await asyncio.gather(*(stream.close() for stream in streams))


async def test_ten_thousand_streams_opened_and_closed_leave_no_state_and_bounded_memory(
    start_server, tmp_path: Path
) -> None:
    runtime = await start_server(protocol="mux", upload_dir=str(tmp_path))
    hub = runtime.hub
    client = await MuxClient.connect("127.0.0.1", runtime.port)
    try:
        await client.ping()
        session = hub.connections[client.local_id]
        assert isinstance(session, MuxSession)

        # Warm up: first-time allocations (caches, free lists) are not growth.
        await churn(client, 600)
        gc.collect()
        objects_before = len(gc.get_objects())
        rss_before = rss_bytes()

        t0 = time.perf_counter()
        await churn(client, 10_000)
        took = time.perf_counter() - t0
        assert (await client.ping())["type"] == "pong"

        gc.collect()
        objects_after = len(gc.get_objects())
        rss_after = rss_bytes()
        print(
            f"\nchurn: 10000 streams in {took:.2f}s; objects {objects_before} -> "
            f"{objects_after}; RSS {rss_before / 2**20:.1f} -> {rss_after / 2**20:.1f} MiB"
        )
        # Nothing left over, on either side.
        assert set(hub.sessions) == {client.local_id}
        assert not hub.json_sessions
        assert len(hub.rooms) == 0
        assert session.streams == {}
        assert not session._ready
        assert session.queued == 0
        assert not session.control.queue and session.control.queued == 0
        assert session.decoder.buffered == 0
        assert client.streams == {}
        assert client._opening == {} and client._closing == {}
        (info,) = hub.mux_connections()
        assert info.streams == ()
        # One leaked object per stream would be 10000.
        assert objects_after - objects_before < 2000
        assert rss_after - rss_before < 32 * 2**20
    finally:
        await client.close()
