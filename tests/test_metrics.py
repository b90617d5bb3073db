"""``--metrics``: the Prometheus exposition and /healthz, over real HTTP on 127.0.0.1.

Every scrape is parsed with prometheus_client's own parser.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import signal
import ssl
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from helpers import eventually, frame
from prometheus_client.parser import text_string_to_metric_families

from verb_console.admin.metrics import HubCollector, parse_address
from verb_console.cli import UsageError, parse_settings
from verb_console.client import JsonClient, MuxClient
from verb_console.runtime import Runtime

pytestmark = pytest.mark.timeout(120)

ALLOWED_LABELS = {"protocol", "reason", "result", "node"}
# Labels that are part of a family's type, not of its series: a histogram's
# buckets, and the version of verb_build_info.
STRUCTURAL = {"le", "version"}

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


async def http(port: int, request: bytes, timeout: float = 5.0) -> tuple[int, bytes, bytes]:
    """One raw HTTP exchange; returns (status, head, body)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(request)
        async with asyncio.timeout(timeout):
            data = await reader.read()
    finally:
        writer.close()
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), head, body


async def scrape(port: int) -> tuple[list[Any], Samples]:
    status, head, body = await http(port, b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
    assert status == 200, body
    assert b"Content-Type: text/plain; version=0.0.4" in head
    families = list(text_string_to_metric_families(body.decode()))
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value for f in families for s in f.samples
    }
    return families, samples


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples[(name, tuple(sorted(labels.items())))]


@pytest.fixture
async def metered(
    start_server: Callable[..., Awaitable[Runtime]], tmp_path: Path
) -> Callable[..., Awaitable[Runtime]]:
    async def start(**overrides: Any) -> Runtime:
        values = {
            "protocol": "auto",
            "max_per_ip": 0,
            "upload_dir": str(tmp_path / "up"),
            "metrics": "127.0.0.1:0",
        }
        values.update(overrides)
        runtime = await start_server(**values)
        assert runtime.metrics is not None
        return runtime

    return start


def metrics_port(runtime: Runtime) -> int:
    assert runtime.metrics is not None
    return runtime.metrics.address[1]


async def open_json(port: int, rooms: list[str]) -> tuple[asyncio.StreamReader, Any]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"".join(frame({"type": "join_room", "room": r}) for r in rooms))
    return reader, writer


# --------------------------------------------------------------- the exposition


async def test_every_counter_is_a_total_and_only_the_allowed_labels_appear(metered) -> None:
    runtime = await metered()
    async with JsonClient("127.0.0.1", runtime.port) as client:
        await client.join_room("r")
        families, samples = await scrape(metrics_port(runtime))
    kinds = {f.name: f.type for f in families}
    counters = [f for f in families if f.type == "counter"]
    assert len(counters) >= 10
    for family in counters:
        assert family.name.startswith("verb_")
        assert {s.name for s in family.samples} == {family.name + "_total"}, family.name
    for family in families:
        assert family.name.startswith("verb_"), family.name
        if family.type != "counter":
            assert not any(s.name.endswith("_total") for s in family.samples), family.name
        for sample in family.samples:
            assert set(sample.labels) - STRUCTURAL <= ALLOWED_LABELS, sample
    assert kinds["verb_event_loop_lag_seconds"] == "histogram"
    assert kinds["verb_sessions"] == "gauge"
    # An info family is a gauge of value 1 in the text format.
    assert kinds["verb_build_info"] == "gauge"
    build = [s for f in families if f.name == "verb_build_info" for s in f.samples]
    assert [(s.name, s.value) for s in build] == [("verb_build_info", 1.0)]
    from verb_console import __version__

    assert build[0].labels == {"version": __version__}
    expected = {
        "verb_connections_accepted",
        "verb_connections_rejected",
        "verb_sessions_closed",
        "verb_messages_received",
        "verb_messages_sent",
        "verb_bytes_received",
        "verb_bytes_sent",
        "verb_slow_consumers",
        "verb_room_messages",
        "verb_uploads",
        "verb_upload_bytes",
        "verb_auth_failures",
    }
    assert expected <= {f.name for f in counters}
    assert value(samples, "verb_sessions", protocol="json") == 1


async def test_the_series_count_is_the_same_with_1000_sessions_in_100_rooms(metered) -> None:
    runtime = await metered()
    port = metrics_port(runtime)
    _, before = await scrape(port)
    writers = []
    try:
        for i in range(1000):
            _, writer = await open_json(runtime.port, [f"room-{i % 100}"])
            writers.append(writer)
        await eventually(lambda: len(runtime.hub.rooms) == 100, 30)
        await eventually(
            lambda: sum(len(r.members) for r in runtime.hub.rooms.rooms.values()) == 1000, 30
        )
        _, during = await scrape(port)
    finally:
        for writer in writers:
            writer.close()
    assert len(during) == len(before)
    assert set(during) == set(before)
    assert value(during, "verb_sessions", protocol="json") == 1000
    assert value(during, "verb_rooms") == 100


async def test_counters_never_decrease_across_scrapes_and_session_churn(metered) -> None:
    runtime = await metered(max_connections=200)
    port = metrics_port(runtime)
    hub = runtime.hub
    last: Samples = {}
    counters: set[str] = set()
    for round_ in range(6):
        clients = [JsonClient("127.0.0.1", runtime.port, reconnect=False) for _ in range(5)]
        for c in clients:
            await c.connect()
            await c.join_room(f"churn-{round_ % 2}")
            await c.room_message(f"churn-{round_ % 2}", "x" * round_)
        async with await MuxClient.connect("127.0.0.1", runtime.port) as mux:
            view = (await mux.open_stream("json")).json()
            await view.ping()
            lines = (await mux.open_stream("echo")).lines()
            await lines.send_line("hi")
            await lines.readline()
        # Some leave politely, one is cut by the operator, the rest stay a round.
        for c in clients[:3]:
            await c.close()
        hub.operator_close(clients[3].id)
        families, samples = await scrape(port)
        counters |= {s.name for f in families if f.type == "counter" for s in f.samples}
        for key, now in samples.items():
            if key[0] in counters and key in last:
                assert now >= last[key], (round_, key, last[key], now)
        last = samples
        await clients[4].close()
        await eventually(lambda: not hub.sessions, 10)
    assert value(last, "verb_sessions_closed_total", reason="operator") == 6
    assert value(last, "verb_connections_accepted_total") == hub.stats.accepted


async def test_the_values_agree_with_the_hub(metered, tmp_path: Path) -> None:
    runtime = await metered()
    hub = runtime.hub
    port = metrics_port(runtime)
    async with (
        JsonClient("127.0.0.1", runtime.port) as a,
        JsonClient("127.0.0.1", runtime.port) as b,
        await MuxClient.connect("127.0.0.1", runtime.port) as mux,
    ):
        await a.join_room("x")
        await b.join_room("x")
        for n in range(5):
            await a.room_message("x", n)
        await a.broadcast("all")
        stream = (await mux.open_stream("binary")).binary()
        await stream.heartbeat()
        upload = await b.request(
            {"type": "file_start", "transferId": "t", "filename": "f.bin", "fileSize": 3}
        )
        assert upload["type"] == "file_start_ack"
        await b.request({"type": "file_chunk", "transferId": "t", "chunkIndex": 0, "data": "YWJj"})
        await b.request({"type": "file_end", "transferId": "t"})
        _, s = await scrape(port)
        live = {p: 0 for p in ("json", "binary", "mux", "echo", "detecting")}
        for session in hub.sessions.values():
            live[session.protocol] += 1
        for protocol, n in live.items():
            assert value(s, "verb_sessions", protocol=protocol) == n, protocol
        assert value(s, "verb_connections_accepted_total") == hub.stats.accepted
        assert value(s, "verb_rooms") == len(hub.rooms) == 1
        assert value(s, "verb_room_messages_total") == hub.rooms.get("x").messages == 5
        assert value(s, "verb_uploads_total", result="complete") == 1
        assert value(s, "verb_upload_bytes_total") == 3
        json_in = sum(x.msgs_in for x in hub.sessions.values() if x.protocol == "json")
        assert value(s, "verb_messages_received_total", protocol="json") == json_in
        json_bytes = sum(
            x.outlet.bytes_written for x in hub.sessions.values() if x.protocol == "json"
        )
        assert value(s, "verb_bytes_sent_total", protocol="json") == json_bytes
    await eventually(lambda: not hub.sessions, 10)
    _, after = await scrape(port)
    closed = hub.closed_log
    assert value(after, "verb_sessions_closed_total", reason="client_closed") == len(
        [c for c in closed if c.reason == "client_closed"]
    )
    # Everything has ended now: the totals are the closed sessions' own figures.
    json_closed = [c for c in closed if c.protocol == "json"]
    assert value(after, "verb_messages_received_total", protocol="json") == sum(
        c.msgs_in for c in json_closed
    )
    assert value(after, "verb_bytes_received_total", protocol="json") == sum(
        c.bytes_in for c in json_closed
    )


# --------------------------------------------------------------- health and the HTTP server


async def test_healthz_is_200_while_serving_and_503_once_draining(metered) -> None:
    runtime = await metered(grace_period=5)
    port = metrics_port(runtime)
    status, _, body = await http(port, b"GET /healthz HTTP/1.1\r\n\r\n")
    assert (status, body) == (200, b"serving\n")
    async with JsonClient("127.0.0.1", runtime.port, reconnect=False):
        runtime.hub.begin_shutdown()
        status, _, body = await http(port, b"GET /healthz HTTP/1.1\r\n\r\n")
        assert (status, body) == (503, b"draining\n")
        _, samples = await scrape(port)
        assert value(samples, "verb_draining") == 1


async def test_unknown_paths_methods_and_oversized_requests_get_clear_answers(metered) -> None:
    runtime = await metered()
    port = metrics_port(runtime)
    assert (await http(port, b"GET /nope HTTP/1.1\r\n\r\n"))[0] == 404
    assert (await http(port, b"POST /metrics HTTP/1.1\r\n\r\n"))[0] == 405
    assert (await http(port, b"nonsense\r\n\r\n"))[0] == 400
    big = b"GET /metrics HTTP/1.1\r\nX: " + b"a" * 20_000 + b"\r\n\r\n"
    assert (await http(port, big))[0] == 431
    status, head, body = await http(port, b"HEAD /metrics HTTP/1.1\r\n\r\n")
    assert status == 200 and body == b"" and b"Content-Length: " in head


async def test_a_stalled_scraper_is_cut_and_never_delays_another(metered) -> None:
    runtime = await metered()
    assert runtime.metrics is not None
    runtime.metrics.read_timeout = 0.5
    port = metrics_port(runtime)
    # Connects and sends half a request, then nothing.
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"GET /metr")
    started = time.monotonic()
    _, samples = await scrape(port)  # answered at once, alongside the stalled one
    assert time.monotonic() - started < 0.4
    assert value(samples, "verb_connections_accepted_total") == 0
    async with asyncio.timeout(3):
        assert await reader.read() == b""  # cut after the read timeout
    assert time.monotonic() - started >= 0.45
    writer.close()
    assert runtime.metrics.cut >= 1
    # The server's own clients were never held up.
    async with JsonClient("127.0.0.1", runtime.port) as client:
        assert (await client.ping())["type"] == "pong"


async def test_scrapers_beyond_the_limit_are_refused_at_once(metered) -> None:
    runtime = await metered()
    assert runtime.metrics is not None
    runtime.metrics.max_clients = 2
    runtime.metrics.read_timeout = 5
    port = metrics_port(runtime)
    idle = [await asyncio.open_connection("127.0.0.1", port) for _ in range(2)]
    await eventually(lambda: len(runtime.metrics._clients) == 2, 5)
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    async with asyncio.timeout(2):
        assert await reader.read() == b""
    writer.close()
    for _, w in idle:
        w.close()


def test_the_collector_of_a_bare_hub_works_without_a_server() -> None:
    from prometheus_client import CollectorRegistry, generate_latest

    from verb_console.hub import Hub

    registry = CollectorRegistry()
    registry.register(HubCollector(Hub()))
    text = generate_latest(registry).decode()
    names = {f.name for f in text_string_to_metric_families(text)}
    assert "verb_sessions" in names and "verb_event_loop_lag_seconds" not in names


async def test_the_lag_histogram_sees_a_blocked_loop(metered) -> None:
    runtime = await metered()
    assert runtime.metrics is not None and runtime.metrics.lag is not None
    runtime.metrics.lag.stop()
    runtime.metrics.lag.interval = 0.05
    runtime.metrics.lag.start()
    await asyncio.sleep(0.12)
    time.sleep(0.3)  # the loop is blocked: the next sample is 0.3 s late
    await asyncio.sleep(0.1)
    _, samples = await scrape(metrics_port(runtime))
    count = value(samples, "verb_event_loop_lag_seconds_count")
    assert count >= 3
    assert value(samples, "verb_event_loop_lag_seconds_bucket", le="0.1") < count
    assert value(samples, "verb_event_loop_lag_seconds_sum") >= 0.25


# --------------------------------------------------------------- the flag


def test_the_metrics_flag_takes_host_and_port_and_refuses_anything_else() -> None:
    assert parse_settings(["--metrics", "127.0.0.1:9464"]).metrics == "127.0.0.1:9464"
    assert parse_settings([]).metrics == ""
    assert parse_address("[::1]:9464") == ("::1", 9464)
    for bad in ("9464", "127.0.0.1:", "host:99999", ":80"):
        with pytest.raises(UsageError, match="--metrics"):
            parse_settings(["--metrics", bad])


def test_the_headless_server_serves_metrics_where_it_is_told(tmp_path: Path) -> None:
    log = tmp_path / "log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "verb_console",
                "--headless",
                "--port",
                "0",
                "--metrics",
                "127.0.0.1:0",
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=tmp_path,
        )
    try:
        deadline = time.monotonic() + 20
        match = None
        while match is None and time.monotonic() < deadline:
            match = re.search(r"metrics on http://127\.0\.0\.1:(\d+)/metrics", log.read_text())
            time.sleep(0.05)
        assert match is not None, log.read_text()
        status, _, body = asyncio.run(http(int(match.group(1)), b"GET /healthz HTTP/1.1\r\n\r\n"))
        assert (status, body) == (200, b"serving\n")
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(15) == 0


# --------------------------------------------------------------- with a cluster


async def test_a_cluster_node_exports_its_link_traffic_and_pubsub_lag_under_its_node_label(
    start_server: Callable[..., Awaitable[Runtime]], tmp_path: Path
) -> None:
    from cluster_harness import RedisServer, wait_for

    redis = await RedisServer(tmp_path).start()
    try:
        a = await start_server(
            cluster=redis.url,
            node_name="a",
            upload_dir=str(tmp_path / "ua"),
            max_per_ip=0,
            metrics="127.0.0.1:0",
        )
        b = await start_server(
            cluster=redis.url, node_name="b", upload_dir=str(tmp_path / "ub"), max_per_ip=0
        )
        port = metrics_port(a)
        async with (
            JsonClient("127.0.0.1", a.port) as ca,
            JsonClient("127.0.0.1", b.port) as cb,
        ):

            async def known() -> bool:  # each node knows the other's session
                return (
                    cb.id in a.hub.bus.directory.sessions and ca.id in b.hub.bus.directory.sessions
                )

            await wait_for(known, 5)
            _, before = await scrape(port)
            await ca.private(cb.id, "across")
            assert (await cb.receive(3))["data"] == "across"
            await cb.broadcast("back")  # reaches node a whatever b's directory knows yet
            assert (await ca.receive(3))["data"] == "back"
            await asyncio.sleep(2.5)  # heartbeats: the probe goes round pub/sub
            families, after = await scrape(port)
        for family in families:
            if family.name.startswith("verb_cluster_"):
                assert {s.labels.get("node") for s in family.samples} == {"a"}, family.name
        assert value(after, "verb_cluster_link_up", node="a") == 1
        published = "verb_cluster_messages_published_total"
        received = "verb_cluster_messages_received_total"
        assert value(after, published, node="a") > value(before, published, node="a")
        assert value(after, received, node="a") > value(before, received, node="a")
        assert value(after, "verb_cluster_reconnects_total", node="a") == 0
        assert value(after, "verb_cluster_pubsub_lag_seconds_count", node="a") >= 1
        assert value(after, "verb_cluster_pubsub_lag_seconds_sum", node="a") > 0
    finally:
        await redis.kill()


# --------------------------------------------------------------- the Grafana dashboard


def test_the_grafana_dashboard_is_importable_and_graphs_only_metrics_that_exist(
    tmp_path: Path,
) -> None:
    import json

    from verb_console.admin.metrics import HubCollector as _Collector

    path = Path(__file__).resolve().parent.parent / "examples" / "grafana-dashboard.json"
    dashboard = json.loads(path.read_text())
    # What Grafana's import asks of a shared dashboard: a datasource input, panels with
    # unique ids on the grid, a title and a schema version.
    assert dashboard["title"] and dashboard["uid"] and dashboard["schemaVersion"] >= 30
    assert [i["name"] for i in dashboard["__inputs"]] == ["DS_PROMETHEUS"]
    panels = dashboard["panels"]
    assert len({p["id"] for p in panels}) == len(panels) >= 10
    names: set[str] = set()
    for panel in panels:
        assert panel["datasource"]["uid"] == "${DS_PROMETHEUS}"
        assert {"x", "y", "w", "h"} <= set(panel["gridPos"])
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            names |= set(re.findall(r"\b(verb_[a-z_]+)\{", target["expr"]))
    # Every metric the dashboard graphs is one the server exports (a cluster node's too).
    exported = {
        "verb_cluster_link_up",
        "verb_cluster_reconnects_total",
        "verb_cluster_messages_published_total",
        "verb_cluster_messages_received_total",
        "verb_cluster_messages_dropped_total",
        "verb_cluster_pubsub_lag_seconds_bucket",
        "verb_event_loop_lag_seconds_bucket",
    }
    from prometheus_client import CollectorRegistry, generate_latest

    from verb_console.hub import Hub
    from verb_console.hub.uploads import UploadStore
    from verb_console.net.tls import TLSOptions

    registry = CollectorRegistry()
    hub = Hub(uploads=UploadStore(tmp_path))
    registry.register(_Collector(hub, tls=TLSOptions(ssl.create_default_context())))
    for family in text_string_to_metric_families(generate_latest(registry).decode()):
        exported |= {s.name for s in family.samples}
    assert names and names <= exported, names - exported


async def test_the_exposition_parses_exactly_as_prometheus_clients_own(metered) -> None:
    from prometheus_client import generate_latest

    from verb_console.admin.metrics import exposition

    runtime = await metered()
    assert runtime.metrics is not None
    registry = runtime.metrics.registry
    async with JsonClient("127.0.0.1", runtime.port) as client:
        await client.join_room('a "quoted" \\ room')
        await client.room_message('a "quoted" \\ room', "x")

        def parsed(text: bytes) -> list[Any]:
            return [
                (
                    f.name,
                    f.type,
                    f.documentation,
                    sorted((s.name, tuple(sorted(s.labels.items())), s.value) for s in f.samples),
                )
                for f in text_string_to_metric_families(text.decode())
            ]

        ours = exposition(registry.collect())
        theirs = generate_latest(registry)
        assert parsed(ours) == parsed(theirs)


# --------------------------------------------------------------- authentication and TLS


async def test_auth_failures_and_tls_handshakes_are_counted_by_reason(
    metered, tls_files, tmp_path: Path
) -> None:
    import hashlib

    import trustme

    tokens = tmp_path / "tokens"
    tokens.write_text(f"alice:{hashlib.sha256(b'tok-alice').hexdigest()}\n")
    runtime = await metered(
        protocol="json",
        tls_cert=tls_files.cert,
        tls_key=tls_files.key,
        auth_file=str(tokens),
        handshake_timeout=0.5,
    )
    port, ctx = runtime.port, tls_files.client_context()
    _, before = await scrape(metrics_port(runtime))
    assert value(before, "verb_tls_handshakes_total") == 0
    for reason in ("timeout", "plaintext", "certificate", "closed", "protocol"):
        assert value(before, "verb_tls_handshake_failures_total", reason=reason) == 0
    for reason in ("auth_required", "auth_failed", "auth_timeout"):
        assert value(before, "verb_auth_failures_total", reason=reason) == 0

    async def session(first: bytes | None) -> bytes:
        """A TLS json client: reads the welcome, sends ``first``, reads to the end."""
        reader, writer = await asyncio.open_connection(
            "127.0.0.1", port, ssl=ctx, server_hostname="localhost"
        )
        try:
            if first is not None:
                writer.write(first)
            async with asyncio.timeout(5):
                return await reader.read()
        finally:
            writer.close()

    good = frame({"type": "auth", "token": "tok-alice"}) + frame({"type": "ping"})
    reader, writer = await asyncio.open_connection(
        "127.0.0.1", port, ssl=ctx, server_hostname="localhost"
    )
    writer.write(good)
    assert b"authenticated" in await reader.readuntil(b'"authenticated"')
    await session(frame({"type": "auth", "token": "wrong"}))
    await session(frame({"type": "auth", "token": "wrong-again"}))
    await session(frame({"type": "ping"}))  # no token first
    await session(None)  # no token in time

    async def raw(data: bytes, hang_up: bool = False) -> bytes:
        """Plain TCP (on this loop, as the server): send ``data``, read to the end."""
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            writer.write(data)
            if hang_up:
                await asyncio.sleep(0.1)
                return b""
            async with asyncio.timeout(5):
                return await reader.read()
        finally:
            writer.close()

    # Plaintext to the TLS port; a ClientHello then a hang-up; silence, so no
    # handshake in time.
    await raw(b"GET / HTTP/1.1\r\n\r\n")
    obj = ssl.create_default_context().wrap_bio(ssl.MemoryBIO(), out := ssl.MemoryBIO())
    with contextlib.suppress(ssl.SSLWantReadError):
        obj.do_handshake()
    await raw(out.read(), hang_up=True)
    assert await raw(b"") == b""
    # A client trusting another CA refuses the server's certificate with an
    # unknown_ca alert (sans-IO, so the alert surely goes out).
    other = ssl.create_default_context()
    trustme.CA().configure_trust(other)
    obj = other.wrap_bio(
        incoming := ssl.MemoryBIO(), out := ssl.MemoryBIO(), server_hostname="localhost"
    )
    reader, plain = await asyncio.open_connection("127.0.0.1", port)
    with pytest.raises(ssl.SSLCertVerificationError):
        for _ in range(10):
            try:
                obj.do_handshake()
            except ssl.SSLWantReadError:
                plain.write(out.read())
                incoming.write(await reader.read(65536))
    plain.write(out.read())  # the alert
    async with asyncio.timeout(5):
        await reader.read()
    plain.close()
    await eventually(lambda: len(runtime.hub.connections) == 1, 5)
    writer.close()
    await eventually(lambda: not runtime.hub.connections, 5)
    _, after = await scrape(metrics_port(runtime))
    assert value(after, "verb_tls_handshakes_total") == 5
    failures = {
        reason: value(after, "verb_tls_handshake_failures_total", reason=reason)
        for reason in ("timeout", "plaintext", "certificate", "closed", "protocol")
    }
    assert failures == {
        "timeout": 1,
        "plaintext": 1,
        "certificate": 1,
        "closed": 1,
        "protocol": 0,
    }
    auth = {
        reason: value(after, "verb_auth_failures_total", reason=reason)
        for reason in ("auth_required", "auth_failed", "auth_timeout")
    }
    assert auth == {"auth_required": 1, "auth_failed": 2, "auth_timeout": 1}
    assert runtime.hub.auth_failures.failures("127.0.0.1") == 2
