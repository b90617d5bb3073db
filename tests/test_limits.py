"""The limits of PROTOCOL.md section 7, with small settings, over real sockets."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import time

import pytest
from helpers import FrameSplitter, JsonClient, eventually, frame, open_raw

from verb_console.hub import LiveHubView

pytestmark = pytest.mark.timeout(30)


async def refused_without_bytes(port: int, source_ip: str = "127.0.0.1") -> bool:
    """Connect and report whether the server closed the connection without a byte."""
    sock = await open_raw(port, source_ip=source_ip)
    loop = asyncio.get_running_loop()
    try:
        data = await asyncio.wait_for(loop.sock_recv(sock, 1), 2)
    except (ConnectionResetError, BrokenPipeError):
        return True
    finally:
        sock.close()
    return data == b""


def session_id(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    return f"{host}:{port}"


def reasons_by_id(hub) -> dict[str, str]:
    return {c.id: c.reason for c in hub.closed_log}


# max connections


async def test_a_connection_over_max_connections_is_closed_at_once_with_no_bytes(
    start_server, connect
) -> None:
    runtime = await start_server(max_connections=2)
    hub = runtime.hub
    first = await connect(runtime)
    await connect(runtime)
    assert await refused_without_bytes(runtime.port)
    await eventually(lambda: hub.stats.rejected_max == 1)
    assert hub.closed_log[-1].reason == "over_max_connections"
    assert len(hub.connections) == 2
    # A slot freed by a closing client is available again.
    first_id = first.id
    await first.close()
    await eventually(lambda: first_id not in hub.connections)
    third = await connect(runtime)
    assert (await third.request({"type": "ping"}))["type"] == "pong"
    assert hub.stats.accepted == 3


# per-IP throttle


async def test_the_connection_over_max_per_ip_is_refused_with_no_bytes(
    start_server, connect
) -> None:
    runtime = await start_server(max_per_ip=3)
    for _ in range(3):
        await connect(runtime)
    assert await refused_without_bytes(runtime.port)
    await eventually(lambda: runtime.hub.stats.rejected_throttle == 1)
    assert runtime.hub.closed_log[-1].reason == "throttled"
    assert runtime.hub.stats.accepted == 3


async def test_the_throttle_counts_each_address_on_its_own(start_server, connect) -> None:
    runtime = await start_server(max_per_ip=2)
    for _ in range(2):
        await connect(runtime)
    assert await refused_without_bytes(runtime.port)
    other = await connect(runtime, source_ip="127.0.0.2")
    assert other.id.startswith("127.0.0.2:")
    keys = {t.key: t for t in runtime.hub.throttle_state()}
    assert keys["127.0.0.1"].blocked and keys["127.0.0.1"].rejected == 1
    assert not keys["127.0.0.2"].blocked and keys["127.0.0.2"].live == 1


async def test_closing_a_connection_frees_its_throttle_count(start_server, connect) -> None:
    runtime = await start_server(max_per_ip=3)
    clients = [await connect(runtime) for _ in range(3)]
    assert await refused_without_bytes(runtime.port)
    closed_id = clients[0].id
    await clients[0].close()
    await eventually(lambda: closed_id not in runtime.hub.connections)
    again = await connect(runtime)
    assert (await again.request({"type": "ping"}))["type"] == "pong"
    assert await refused_without_bytes(runtime.port)


async def test_rejected_attempts_do_not_count_against_the_address(start_server, connect) -> None:
    runtime = await start_server(max_per_ip=3)
    clients = [await connect(runtime) for _ in range(3)]
    for _ in range(5):
        assert await refused_without_bytes(runtime.port)
    await eventually(lambda: runtime.hub.stats.rejected_throttle == 5)
    # Had the five rejections counted, freeing one slot would not be enough.
    closed_id = clients[0].id
    await clients[0].close()
    await eventually(lambda: closed_id not in runtime.hub.connections)
    await connect(runtime)
    assert runtime.hub.stats.accepted == 4


async def test_the_throttle_count_resets_when_the_window_ends(start_server, connect) -> None:
    runtime = await start_server(max_per_ip=3, throttle_window=0.5)
    for _ in range(3):
        await connect(runtime)
    assert await refused_without_bytes(runtime.port)
    await asyncio.sleep(0.6)
    # A fresh window: the three live connections no longer count.
    for _ in range(3):
        client = await connect(runtime)
        assert client.welcome["type"] == "welcome"
    assert await refused_without_bytes(runtime.port)
    assert runtime.hub.stats.accepted == 6
    assert runtime.hub.stats.rejected_throttle == 2


async def test_max_per_ip_zero_turns_the_throttle_off(start_server, connect) -> None:
    runtime = await start_server(max_per_ip=0)
    clients = [await connect(runtime) for _ in range(25)]
    assert len(runtime.hub.connections) == 25
    assert runtime.hub.stats.rejected_throttle == 0
    assert (await clients[-1].request({"type": "ping"}))["type"] == "pong"


# idle timeout


async def test_an_idle_client_gets_closing_idle_timeout_and_is_closed(
    start_server, connect
) -> None:
    runtime = await start_server(idle_timeout=0.3)
    started = time.monotonic()
    client = await connect(runtime)
    client_id = client.id
    assert await client.recv(3) == {"type": "closing", "reason": "idle_timeout"}
    waited = time.monotonic() - started
    await client.expect_eof()
    assert 0.25 <= waited < 2.0
    await eventually(lambda: client_id not in runtime.hub.connections)
    assert reasons_by_id(runtime.hub)[client_id] == "idle_timeout"


async def test_bytes_received_keep_a_client_alive_past_the_idle_timeout(
    start_server, connect
) -> None:
    runtime = await start_server(idle_timeout=0.3)
    client = await connect(runtime)
    deadline = time.monotonic() + 1.0
    while time.monotonic() < deadline:
        assert (await client.request({"type": "ping"}))["type"] == "pong"
        await asyncio.sleep(0.1)
    # Then silence: the timeout applies again.
    assert await client.recv(3) == {"type": "closing", "reason": "idle_timeout"}


async def test_bytes_sent_to_a_client_do_not_keep_it_alive(start_server, connect) -> None:
    runtime = await start_server(idle_timeout=0.4)
    listener = await connect(runtime)
    talker = await connect(runtime)
    deadline = time.monotonic() + 0.8
    got_closing = False
    while time.monotonic() < deadline and not got_closing:
        await talker.send({"type": "broadcast", "data": "tick"})
        with contextlib.suppress(TimeoutError):
            while True:
                message = await listener.recv(0.05)
                if message["type"] == "closing":
                    assert message["reason"] == "idle_timeout"
                    got_closing = True
                    break
    assert got_closing


# slow consumers and backpressure


async def test_a_client_that_never_reads_is_closed_as_a_slow_consumer_while_others_go_on(
    start_server, connect
) -> None:
    runtime = await start_server(max_pending=1024 * 1024)
    hub = runtime.hub
    sleeper = await open_raw(runtime.port, rcvbuf=4096)  # never reads
    sleeper_id = session_id(sleeper)
    sender = await connect(runtime)
    normal = await connect(runtime)
    await eventually(lambda: sleeper_id in hub.connections)
    data = "x" * 500_000
    try:
        for _ in range(80):
            await sender.send({"type": "broadcast", "data": data})
            message = await normal.recv(2)
            assert (message["type"], len(message["data"])) == ("broadcast", len(data))
            started = time.monotonic()
            assert (await normal.request({"type": "ping"}, timeout=1))["type"] == "pong"
            assert time.monotonic() - started < 0.5
            if hub.stats.slow_consumers:
                break
        await eventually(lambda: sleeper_id not in hub.connections)
    finally:
        sleeper.close()
    assert hub.stats.slow_consumers == 1
    assert reasons_by_id(hub)[sleeper_id] == "slow_consumer"
    assert sender.id in hub.connections and normal.id in hub.connections
    assert (await sender.request({"type": "ping"}))["type"] == "pong"


async def test_the_server_stops_reading_from_a_session_whose_own_output_is_congested(
    start_server,
) -> None:
    runtime = await start_server(writable_high_water_mark=4096)
    hub = runtime.hub
    loop = asyncio.get_running_loop()
    client = await open_raw(runtime.port, rcvbuf=4096)
    sid = session_id(client)
    await eventually(lambda: sid in hub.connections)
    outlet = hub.connections[sid].outlet
    pings = 200_000
    payload = frame({"type": "ping"}) * pings
    sending = asyncio.ensure_future(loop.sock_sendall(client, payload))
    try:
        # Reading also pauses between turns of a long read (hub/pacer.py): wait
        # for the pause that congestion makes.
        await eventually(lambda: outlet.is_paused and outlet.congested, timeout=5)
        assert outlet.unsent > 4096
        read_while_paused = outlet.bytes_read
        await asyncio.sleep(0.2)
        assert outlet.bytes_read == read_while_paused
        assert outlet.bytes_read < len(payload)
        # The client reads: the server resumes and answers every ping.
        splitter = FrameSplitter()
        pongs = 0
        saw_welcome = False
        deadline = time.monotonic() + 10
        while pongs < pings and time.monotonic() < deadline:
            chunk = await asyncio.wait_for(loop.sock_recv(client, 65536), 2)
            assert chunk, "the server closed the connection"
            for body in splitter.feed(chunk):
                if body.startswith(b'{"type":"pong"'):
                    pongs += 1
                else:
                    assert json.loads(body)["type"] == "welcome", body
                    saw_welcome = True
        assert saw_welcome and pongs == pings
        await asyncio.wait_for(sending, 2)
        assert not outlet.is_paused
        assert outlet.bytes_read == len(payload)
        assert hub.stats.slow_consumers == 0
    finally:
        sending.cancel()
        client.close()


# the closed-sessions log


async def test_the_closed_sessions_log_records_why_each_session_ended(
    start_server, connect
) -> None:
    runtime = await start_server(idle_timeout=0.6, max_frame=1000)
    hub = runtime.hub
    quitter = await connect(runtime)
    kicked = await connect(runtime)
    huge = await connect(runtime)
    garbled = await connect(runtime)
    sleeper = await connect(runtime)
    ids = {
        quitter.id: "client_closed",
        kicked.id: "operator",
        huge.id: "frame_too_large",
        garbled.id: "protocol_error",
        sleeper.id: "idle_timeout",
    }
    await quitter.close()
    assert hub.operator_close(kicked.id)
    await huge.send_raw(b"5000\n")
    await garbled.send_raw(b"#\n")
    await eventually(lambda: sleeper.id not in hub.connections, timeout=3)
    late = await connect(runtime)
    ids[late.id] = "shutdown"
    hub.force_shutdown()
    await asyncio.wait_for(hub.wait_stopped(), 5)
    reasons = reasons_by_id(hub)
    assert {sid: reasons.get(sid) for sid in ids} == ids
    for closed in hub.closed_log:
        assert closed.protocol == "json"
        assert closed.closed_at >= closed.connected_at


async def test_refused_connections_are_logged_as_throttled_or_over_max_connections(
    start_server, connect
) -> None:
    runtime = await start_server(max_per_ip=1, max_connections=2)
    await connect(runtime)
    await connect(runtime, source_ip="127.0.0.2")
    assert await refused_without_bytes(runtime.port, "127.0.0.3")  # over max
    runtime.hub.operator_close_ip("127.0.0.2")
    await eventually(lambda: len(runtime.hub.connections) == 1)
    assert await refused_without_bytes(runtime.port, "127.0.0.1")  # throttled
    log = list(runtime.hub.closed_log)
    refused = [(c.address, c.reason, c.protocol) for c in log if c.protocol == "-"]
    assert refused == [
        ("127.0.0.3", "over_max_connections", "-"),
        ("127.0.0.1", "throttled", "-"),
    ]


async def test_the_closed_sessions_log_keeps_the_last_1000(start_server) -> None:
    runtime = await start_server(max_connections=0)
    total = 1010

    async def attempt() -> None:
        with contextlib.suppress(OSError):
            sock = await open_raw(runtime.port)
            sock.close()

    for start in range(0, total, 100):
        await asyncio.gather(*(attempt() for _ in range(start, min(total, start + 100))))
    await eventually(lambda: runtime.hub.stats.rejected_max == total, timeout=10)
    assert len(runtime.hub.closed_log) == 1000
    assert len(runtime.hub.closed_sessions()) == 1000
    assert all(c.reason == "over_max_connections" for c in runtime.hub.closed_log)


# hub totals


async def test_the_hub_totals_count_connections_and_what_the_clients_sent(
    start_server, connect
) -> None:
    runtime = await start_server(max_per_ip=2, max_connections=3)
    hub = runtime.hub
    a = await connect(runtime)
    b = await connect(runtime)
    assert await refused_without_bytes(runtime.port)  # third from 127.0.0.1: throttled
    c = await connect(runtime, source_ip="127.0.0.2")
    assert await refused_without_bytes(runtime.port, "127.0.0.3")  # fourth: over max
    for i in range(3):
        assert (await a.request({"type": "ping", "ref": i}))["type"] == "pong"
    await a.send({"type": "broadcast", "data": "hello"})
    assert (await b.recv())["type"] == "broadcast"
    assert (await c.recv())["type"] == "broadcast"
    await a.send_raw(b"2\n[]")  # bad_message: still a message in
    assert (await a.recv())["code"] == "bad_message"
    clients = (a, b, c)
    await eventually(lambda: hub.stats.bytes_in == sum(x.bytes_sent for x in clients))
    totals = hub.totals()
    assert totals.accepted == 3
    assert totals.rejected_throttle == 1
    assert totals.rejected_max == 1
    assert totals.msgs_in == 3 + 1 + 1
    assert totals.bytes_in == sum(x.bytes_sent for x in clients)
    assert totals.slow_consumers == 0


async def test_the_hub_totals_of_relayed_messages_agree_with_what_the_clients_received(
    server, connect
) -> None:
    hub = server.hub
    a = await connect(server)
    b = await connect(server)
    c = await connect(server)
    clients = (a, b, c)
    before = hub.totals()
    frames_before = sum(x.frames_received for x in clients)
    bytes_before = sum(x.bytes_received for x in clients)
    for i in range(3):
        assert (await a.request({"type": "ping", "ref": i}))["type"] == "pong"
    await a.send({"type": "broadcast", "data": "hello"})
    await b.recv()
    await c.recv()
    await b.send({"type": "join_room", "room": "r"})
    await b.recv()
    await c.send({"type": "join_room", "room": "r"})
    await c.recv()
    await b.recv()  # user_joined
    await b.send({"type": "room_message", "room": "r", "data": [1, 2]})
    await c.recv()
    await a.send({"type": "private", "target": c.id, "data": 0})
    await c.recv()
    await a.send({"type": "dance"})
    await a.recv()  # unknown_type
    hub.operator_broadcast("note")
    for x in clients:
        await x.recv()
    after = hub.totals()
    assert after.msgs_out - before.msgs_out == sum(x.frames_received for x in clients) - (
        frames_before
    )
    assert after.bytes_out - before.bytes_out == sum(x.bytes_received for x in clients) - (
        bytes_before
    )


async def test_the_hub_totals_out_count_every_frame_sent_welcome_and_errors_included(
    server, connect
) -> None:
    hub = server.hub
    a = await connect(server)
    b = await connect(server)
    assert (await a.request({"type": "ping"}))["type"] == "pong"
    await a.send({"type": "broadcast", "data": "hello"})
    await b.recv()
    bad = await connect(server)
    await bad.send_raw(b"x")
    assert (await bad.recv())["code"] == "bad_header"
    assert (await bad.recv())["type"] == "closing"
    await bad.expect_eof()
    clients = (a, b, bad)
    totals = hub.totals()
    assert totals.msgs_out == sum(x.frames_received for x in clients)
    assert totals.bytes_out == sum(x.bytes_received for x in clients)
    # The hub's totals agree with the sum over its sessions, too.
    assert totals.bytes_out == sum(c.bytes_out for c in hub.closed_log) + sum(
        s.bytes_out for s in LiveHubView(hub).sessions()
    )


async def test_each_session_counts_its_own_messages_and_bytes(server, connect) -> None:
    client = await connect(server)
    for _ in range(4):
        await client.request({"type": "ping"})
    info = {s.id: s for s in LiveHubView(server.hub).sessions()}[client.id]
    assert info.msgs_in == 4
    assert info.msgs_out == client.frames_received
    assert info.bytes_in == client.bytes_sent
    assert info.bytes_out == client.bytes_received
    assert info.unsent == 0


async def test_the_welcome_is_not_sent_to_a_refused_connection(start_server) -> None:
    runtime = await start_server(max_connections=0)
    client = await JsonClient.connect(runtime.port, welcome=False)
    try:
        await client.expect_eof()
    finally:
        await client.close()
