"""The console's Cluster pane (8): the nodes with their sessions, rooms and heartbeats, the
Redis link, cross-node rates and drops, read from the node's own view (a real in-process
node and a real ``verb-console --headless`` node on a real redis-server); and one line on
a server running alone."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cluster_harness import NodeProcess, RedisServer
from console_fake import FixedHubView, FrozenClock
from helpers import JsonClient, eventually

from verb_console.admin.remote_view import RemoteHubView
from verb_console.console import VerbConsoleApp
from verb_console.console.panes.cluster import ClusterPane
from verb_console.console.run import build_app
from verb_console.hub.snapshot import ClusterInfo, NodeInfo, Overview
from verb_console.settings import Settings

pytestmark = pytest.mark.timeout(60)
SIZE = (120, 30)
SIZES = [pytest.param((80, 24), id="80x24"), pytest.param((120, 40), id="120x40")]


@pytest.fixture(autouse=True)
def utc() -> Iterator[None]:
    """Times on screen are local wall-clock times; pin the zone so pictures match anywhere."""
    mp = pytest.MonkeyPatch()
    mp.setenv("TZ", "UTC")
    time.tzset()
    yield
    mp.undo()
    time.tzset()


async def stop(runtime: Any) -> None:
    """End the in-process server as the console's quit does: its shutdown also hands
    the ``verb_console`` logger back (the console keeps it while it runs), so later
    tests see their log records again."""
    if runtime.hub.state != "stopped":
        runtime.hub.force_shutdown()
    await asyncio.wait_for(runtime.hub.wait_stopped(), 10)
    if runtime.server is not None:
        await asyncio.wait_for(runtime.server.wait_closed(), 5)


async def test_the_cluster_pane_shows_both_nodes_their_sessions_and_the_link(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    beta = await NodeProcess.start(tmp_path, redis_server.url, "beta")
    settings = Settings(
        port=0,
        protocol="json",
        upload_dir=str(tmp_path / "uploads"),
        max_per_ip=0,
        cluster=redis_server.url,
        node_name="alpha",
    )
    app, runtime = build_app(settings)
    try:
        async with app.run_test(size=SIZE) as pilot:
            await eventually(lambda: runtime.server is not None, 10)
            on_b = await JsonClient.connect(beta.port)
            await on_b.request({"type": "join_room", "room": "r"})
            await pilot.press("8")
            pane = app.main.query_one(ClusterPane)
            assert app.main.current == "cluster"

            def beta_listed() -> bool:
                nodes = pane.info.nodes if pane.info is not None else ()
                return any(n.name == "beta" and n.sessions == 1 and n.rooms == 1 for n in nodes)

            await eventually(beta_listed, 10)
            await pilot.pause(0.3)
            title = pane._title_text
            assert "CLUSTER  node alpha" in title and "redis up" in title
            assert "2 nodes" in title and "0 dropped" in title
            assert sorted(r.name for r in pane.table.rows) == ["alpha", "beta"]
            beta_row = next(r for r in pane.table.rows if r.name == "beta")
            assert beta_row.heartbeat_age is not None and beta_row.heartbeat_age < 10
            # The tab bar lists the Cluster tab on a cluster node.
            assert "8 Cluster" in str(app.main.query_one("#tabs").render())
            await on_b.close()
            await stop(runtime)
    finally:
        await beta.stop()


async def test_a_server_alone_says_it_is_not_in_a_cluster(tmp_path: Path) -> None:
    settings = Settings(port=0, protocol="json", upload_dir=str(tmp_path / "uploads"))
    app, runtime = build_app(settings)
    async with app.run_test(size=SIZE) as pilot:
        await eventually(lambda: runtime.server is not None, 10)
        # Every tab is listed, the Cluster one too: its pane says the server is alone.
        assert "8 Cluster" in str(app.main.query_one("#tabs").render())
        await pilot.press("8")
        await pilot.pause(0.3)
        pane = app.main.query_one(ClusterPane)
        assert "not in a cluster" in pane._title_text
        assert pane.table.rows == []
        await stop(runtime)


CLUSTER = ClusterInfo(
    node="node-a",
    link="up",
    link_since=0.0,
    nodes=(
        NodeInfo("node-a", 5, 3, 0.0, True),
        NodeInfo("node-b", 1204, 17, 1.2, False),
        NodeInfo("node-c", 0, 0, 7.4, False),
    ),
    published=48210,
    received=51007,
    dropped=12,
    undeliverable=0,
    msgs_out_per_s=1520.0,
    msgs_in_per_s=1830.5,
    queued=0,
    reconnects=1,
)


class ClusterView(FixedHubView):
    def overview(self) -> Overview:
        return dataclasses.replace(super().overview(), node="node-a", link="up")

    def cluster_info(self) -> ClusterInfo | None:
        return CLUSTER


@pytest.mark.parametrize("size", SIZES)
def test_snapshot_of_the_cluster_pane(snap_compare: Any, size: tuple[int, int]) -> None:
    clock = FrozenClock()
    app = VerbConsoleApp(ClusterView(clock), clock=clock)
    assert snap_compare(app, terminal_size=size, press=["8"])


@pytest.mark.parametrize("size", SIZES)
def test_snapshot_of_the_cluster_pane_alone(snap_compare: Any, size: tuple[int, int]) -> None:
    clock = FrozenClock()
    app = VerbConsoleApp(FixedHubView(clock), clock=clock)
    assert snap_compare(app, terminal_size=size, press=["8"])


async def test_an_attached_console_reads_the_cluster_from_the_overview(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    sock = tmp_path / "alpha.sock"
    alpha = await NodeProcess.start(
        tmp_path, redis_server.url, "alpha", "--admin-socket", str(sock)
    )
    beta = await NodeProcess.start(tmp_path, redis_server.url, "beta")
    view = RemoteHubView(sock, interval=0.05)
    task = asyncio.create_task(view.run())
    try:

        def both_nodes() -> bool:
            info = view.cluster_info()
            return info is not None and sorted(n.name for n in info.nodes) == ["alpha", "beta"]

        await eventually(both_nodes, 10)
        info = view.cluster_info()
        assert info is not None and info.node == "alpha" and info.link == "up"
        assert view.overview().node == "alpha"
    finally:
        view.stop()
        await asyncio.wait_for(task, 5)
        await alpha.stop()
        await beta.stop()
