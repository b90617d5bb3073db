"""``--demo``'s simulated clients, built on the project's own clients, against a real server."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from helpers import eventually

from verb_console.demo import Demo

pytestmark = pytest.mark.timeout(60)


async def test_the_demo_runs_every_kind_of_client_and_leaves_nothing_behind_when_stopped(
    start_server, tmp_path: Path
) -> None:
    runtime = await start_server(protocol="auto", max_per_ip=0, upload_dir=str(tmp_path))
    hub = runtime.hub
    demo = Demo("127.0.0.1", runtime.port, seed=7, clients=3)
    demo.start()
    try:
        kinds = {"json", "echo", "binary", "mux"}
        await eventually(lambda: kinds <= {s.protocol for s in hub.sessions.values()}, 15)

        def mux_kinds() -> list[str]:
            return sorted(s.kind for m in hub.mux_connections() for s in m.streams)

        await eventually(lambda: mux_kinds() == ["binary", "echo", "json"], 10)
        await eventually(lambda: any(r.name == "ops" for r in hub.rooms_info()), 10)
        await eventually(lambda: hub.transfers() != [], 15)
        # The clients come from several loopback addresses.
        await eventually(lambda: len({s.split(":")[0] for s in hub.connections}) > 1, 10)
        await eventually(lambda: hub.totals().msgs_in > 20, 15)
    finally:
        await asyncio.wait_for(demo.stop(), 10)
    await eventually(lambda: hub.sessions == {}, 10)
    assert hub.connections == {}
