"""Rate history: the server's at 1 s, 10 s and 1 min, and one session's or room's while
watched; in-process, over a real admin socket, and through an attached console's view."""

from __future__ import annotations

import asyncio
import sys

import pytest
from helpers import eventually

from verb_console.admin.client import AdminClient, AdminError
from verb_console.admin.protocol import series_from_wire
from verb_console.admin.remote_view import RemoteHubView
from verb_console.hub.history import KEPT, MAX_WATCHES, Ring, TrafficHistory

pytestmark = [pytest.mark.timeout(60)]


def test_each_resolution_averages_the_counters_over_its_own_step_in_fixed_memory() -> None:
    history = TrafficHistory()
    # A steady 5 messages and 700 bytes a second in, for 25 hours of ticks.
    for t in range(25 * 3600 + 1):
        history.sample(float(t), (5 * t, 2 * t, 700 * t, 0))
    for step, kept in KEPT.items():
        series = history.series(step)
        assert len(series.samples) == kept  # the oldest fell off: memory is fixed
        assert series.seq == 25 * 3600 // step
        assert set(series.values("msgs_in")) == {5.0}
        assert set(series.values("bytes_in")) == {700.0}
    # A reader that has seen up to seq gets only what is newer.
    newest = history.series(60)
    assert history.series(60, since=newest.seq - 2).samples == newest.samples[-2:]
    assert history.series(60, since=newest.seq).samples == ()
    with pytest.raises(ValueError):
        history.series(5)


def test_a_late_tick_divides_by_the_time_that_really_passed() -> None:
    ring = Ring(10, 10)
    times = [0.0, *(float(t) for t in range(1, 10)), 15.0]  # the tenth tick is 6 s late
    for t in times:
        ring.add(t, (int(t * 4),))
    assert ring.series(("n",), 0, 10).samples == ((4.0,),)


async def test_the_hub_samples_its_traffic_every_second(server, connect) -> None:
    client = await connect(server)
    stop = asyncio.Event()

    async def ping() -> None:
        while not stop.is_set():
            await client.request({"type": "ping"})

    pinger = asyncio.create_task(ping())
    try:
        history = server.hub.history
        await eventually(lambda: any(v > 10 for v in history.series(1).values("msgs_in")), 5)
    finally:
        stop.set()
        await pinger


async def test_a_watched_session_and_room_get_per_second_rates_until_let_go(
    server, connect
) -> None:
    talker, listener = await connect(server), await connect(server)
    for c in (talker, listener):
        await c.request({"type": "join_room", "room": "lobby"})
    assert (await talker.recv())["type"] == "user_joined"
    watches = server.hub.watches
    assert len(watches) == 0  # nothing is sampled until someone looks
    watches.open("session", talker.id)
    watches.open("room", "lobby")
    stop = asyncio.Event()

    async def talk() -> None:
        while not stop.is_set():
            await talker.send({"type": "room_message", "room": "lobby", "data": "hi"})
            await listener.recv()
            await talker.request({"type": "ping"})

    task = asyncio.create_task(talk())
    try:
        await eventually(
            lambda: any(v > 5 for v in watches.series("session", talker.id).values("msgs_in")), 5
        )
        await eventually(
            lambda: any(v > 5 for v in watches.series("room", "lobby").values("messages")), 5
        )
        assert watches.series("session", talker.id).fields == ("msgs_in", "msgs_out")
        # Nobody else's session is sampled.
        assert watches.series("session", listener.id).samples == ()
    finally:
        stop.set()
        await task
    # Let go: it lingers (reopening shows what came in between), then goes.
    watches.close("session", talker.id)
    seq = watches.series("session", talker.id).seq
    await eventually(lambda: watches.series("session", talker.id).seq > seq, 3)
    with pytest.raises(ValueError):
        watches.open("thread", "x")
    with pytest.raises(ValueError):
        watches.open("session", "")


async def test_watches_are_bounded_and_a_lingering_one_makes_room(server) -> None:
    watches = server.hub.watches
    for i in range(MAX_WATCHES):
        watches.open("room", f"r{i}")
    with pytest.raises(ValueError, match="too many"):
        watches.open("room", "one-more")
    watches.close("room", "r3")
    watches.open("room", "one-more")
    assert len(watches) == MAX_WATCHES


@pytest.mark.skipif(sys.platform != "linux", reason="Unix sockets with SO_PEERCRED")
async def test_the_admin_socket_serves_history_and_holds_watches_for_its_connection(
    server, connect
) -> None:
    client = await connect(server)
    async with await AdminClient.connect(server.admin.path) as admin:
        with pytest.raises(AdminError, match="step"):
            await admin.request("history", step=7)
        with pytest.raises(AdminError, match="kind"):
            await admin.request("watch", kind="thread", key="x")
        first = series_from_wire(await admin.request("watch", kind="session", key=client.id))
        assert first.fields == ("msgs_in", "msgs_out")
        assert server.hub.watches._watches["session", client.id].holders == 1
        for _ in range(30):
            await client.request({"type": "ping"})
        await asyncio.sleep(1.2)
        got = series_from_wire(await admin.request("watch", kind="session", key=client.id))
        assert got.seq > first.seq
        await eventually(lambda: server.hub.history.series(1).seq > 0, 3)
        traffic = series_from_wire(await admin.request("history", step=1))
        assert traffic.fields == ("msgs_in", "msgs_out", "bytes_in", "bytes_out")
        assert len(traffic.samples) == traffic.seq  # a young server: every sample is kept
    # The connection ended: its watch is let go of (and lingers, unheld).
    await eventually(lambda: server.hub.watches._watches["session", client.id].holders == 0, 3)


@pytest.mark.skipif(sys.platform != "linux", reason="Unix sockets with SO_PEERCRED")
async def test_an_attached_view_follows_the_history_and_the_one_watch_it_holds(
    server, connect
) -> None:
    client = await connect(server)
    view = RemoteHubView(server.admin.path, interval=0.05)
    task = asyncio.create_task(view.run())
    stop = asyncio.Event()

    async def ping() -> None:
        while not stop.is_set():
            await client.request({"type": "ping"})

    pinger = asyncio.create_task(ping())
    try:
        await eventually(lambda: view.connected, 5)
        view.watch_open("session", client.id)
        await eventually(
            lambda: any(v > 5 for v in view.watch_series("session", client.id).values("msgs_in")),
            6,
        )
        await eventually(lambda: any(v > 5 for v in view.traffic_history(1).values("msgs_in")), 5)
        # The copy holds what the server holds, sample for sample.
        local = view.traffic_history(1)
        assert local.samples == tuple(server.hub.history.rings[1].samples)[: local.seq]
        # Asking for another step fetches that one.
        view.traffic_history(10)
        await eventually(lambda: view.traffic_history(10).seq == server.hub.history.rings[10].seq)
        # Closing the dialog lets go at the server; opening another moves the watch.
        view.watch_open("room", "nowhere")
        watches = server.hub.watches._watches
        await eventually(lambda: watches["session", client.id].holders == 0, 3)
        await eventually(lambda: watches.get(("room", "nowhere")) is not None, 3)
        view.watch_close("room", "nowhere")
        await eventually(lambda: watches["room", "nowhere"].holders == 0, 3)
    finally:
        stop.set()
        await pinger
        view.stop()
        await asyncio.wait_for(task, 5)
