"""The node's link to Redis: connect, subscribe, announce, and rebuild after any failure.

A link lives until something fails: a command or the subscription errs or
times out (a Redis frozen with no FIN answers nothing: every command has a
timeout), the connection is killed, or the node's probe of its own
subscription does not come back. Then everything is rebuilt from scratch, and
since a restarted Redis is empty, the node announces its whole state again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import secrets
import time
from dataclasses import dataclass
from typing import Any

import orjson
from redis.asyncio import Redis
from redis.asyncio.connection import AbstractConnection
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ResponseError

from ..hub.histogram import Histogram
from . import keys
from .base import SUBSCRIBE, UNSUBSCRIBE, ClusterUnavailable, LinkBus, NodeNameTaken
from .commands import abort, pack
from .history import GROUP, POST, SCRIPTS
from .sync import announce, bootstrap, refresh

log = logging.getLogger("verb_console.cluster")

HEARTBEAT_S = 1.0
COMMAND_TIMEOUT_S = 1.0
# A probe not back within this long means the subscription is dead.
PROBE_DEADLINE_S = 2.5
# A node neither heard from nor holding its heartbeat key this long is dead.
DEAD_AFTER_S = 3.0
REFRESH_S = 5.0
RECONNECT_MAX_S = 0.5
BATCH = 2000


class LinkLost(Exception):
    """The link must be rebuilt."""


@dataclass(frozen=True, slots=True)
class LinkStats:
    """The link's figures at one moment (its node adds its own to make ``BusStats``)."""

    state: str  # "up", "down" or "connecting"
    since: float  # wall clock of the last change of state
    reconnects: int  # times the link was made again after a loss
    published: int  # queue entries written to Redis
    rate_out: float  # of them, per second over the last heartbeat
    rate_in: float  # messages from other nodes per second over the last heartbeat
    probe_lags: Histogram  # a copy: the probe's round trips through pub/sub


class Link:
    """Connects the bus to Redis, and keeps it connected; counts what it writes."""

    def __init__(self, bus: LinkBus) -> None:
        self.bus = bus
        self.state = "connecting"
        self.since = time.time()
        self.reconnects = 0
        self.published = 0  # queue entries written to Redis
        self.rate_out = 0.0
        self.rate_in = 0.0
        self.token = secrets.token_hex(8)
        self._up_at = 0.0
        self._client: Redis | None = None
        self._conns: list[AbstractConnection] = []
        self._sub: AbstractConnection | None = None
        self._subscribed: set[bytes] = set()
        self._confirm: dict[bytes, asyncio.Future[None]] = {}
        self._probe_seq = 0
        self._probe_back = 0.0
        self._probe_sent = 0.0
        #: Round trips of the probe through pub/sub, for the metrics.
        self.probe_lags = Histogram()
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        self._last_refresh = 0.0
        self._last_rates = (time.monotonic(), 0, 0)
        # The writer's connection and stream while a command may be written to
        # it at once (write_now), and the replies Redis owes on it.
        self._direct: tuple[Any, asyncio.StreamWriter] | None = None
        self._owed = 0

    @property
    def client(self) -> Redis | None:
        """The link's Redis client while it lives (None between links)."""
        return self._client

    def _new_client(self) -> Redis:
        return Redis.from_url(
            self.bus.url,
            socket_timeout=COMMAND_TIMEOUT_S,
            socket_connect_timeout=COMMAND_TIMEOUT_S,
            retry=Retry(NoBackoff(), 0),
            health_check_interval=0,
            client_name=f"verb-console-{self.bus.node}",
        )

    # ----------------------------------------------------------- lifecycle
    async def claim(self) -> None:
        """Take the node's name in Redis; refuses if a live node holds it."""
        client = self._new_client()
        try:
            taken = not await client.set(
                keys.heartbeat_key(self.bus.node), self.token, nx=True, px=keys.HEARTBEAT_TTL_MS
            )
        except (OSError, TimeoutError, Exception) as exc:
            raise ClusterUnavailable(f"cannot reach Redis at {self.bus.url}: {exc}") from None
        finally:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(client.aclose(), 1)
        if taken:
            raise NodeNameTaken(f"node name {self.bus.node!r} is held by a live node")

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._supervise())

    async def aclose(self) -> None:
        bus = self.bus
        if self.state == "up":
            # Flush what the last sessions' leaving queued, then say goodbye.
            deadline = time.monotonic() + 1.0
            while bus.queue and time.monotonic() < deadline:
                await asyncio.sleep(0.01)
            client = self._client
            if client is not None:
                with contextlib.suppress(Exception):
                    pipe = client.pipeline(transaction=False)
                    pipe.publish(keys.MEMBERS, orjson.dumps({"o": "bye", "n": bus.node}))
                    pipe.delete(keys.heartbeat_key(bus.node))
                    pipe.hdel(keys.NODES, bus.node)
                    await asyncio.wait_for(pipe.execute(), COMMAND_TIMEOUT_S)
        self._closing = True
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(BaseException):
                await self._task
        await self._teardown()

    async def _supervise(self) -> None:
        delay = 0.05
        while not self._closing:
            started = time.monotonic()
            try:
                await self._run()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self._lost(exc)
            self._down()
            await self._teardown()
            if time.monotonic() - started > 5:
                delay = 0.05
            await asyncio.sleep(delay)
            delay = min(delay * 2, RECONNECT_MAX_S)

    def _lost(self, exc: Exception) -> None:
        """The link failed: said once (if it was up), and down at once."""
        if self.state == "up":
            log.warning("cluster: Redis link lost: %s", exc or type(exc).__name__)
            self.bus.note(f"cluster: Redis link lost ({exc})")
        self._down()

    def _down(self) -> None:
        bus = self.bus
        if self.state == "up":
            self.since = time.time()
            self.reconnects += 1
        self.state = "down"
        bus.drop_queue()
        self._subscribed.clear()
        for fut in self._confirm.values():
            if not fut.done():
                fut.cancel()
        self._confirm.clear()

    async def _teardown(self) -> None:
        conns, client = self._conns, self._client
        self._conns, self._sub, self._client = [], None, None
        # Close the sockets now: a subscriber left open keeps its channels in Redis.
        for conn in conns:
            abort(conn)
            with contextlib.suppress(Exception):
                await asyncio.wait_for(conn.disconnect(nowait=True), 0.5)
        if client is not None:  # a frozen Redis must not hold the node
            with contextlib.suppress(Exception):
                await asyncio.wait_for(client.aclose(), 0.5)

    # ----------------------------------------------------------- one link
    async def _run(self) -> None:
        bus = self.bus
        client = self._client = self._new_client()
        # Not redis-py's PubSub: it reconnects on errors, resubscribing all it saw.
        sub = self._sub = client.connection_pool.make_connection()
        self._conns.append(sub)
        fixed = [keys.MEMBERS, keys.BROADCAST, bus.own_channel]
        channels = [*fixed, *bus.wanted]
        await sub.connect()
        await sub.send_command("SUBSCRIBE", *channels)
        await asyncio.wait_for(self._confirmed(sub, set(channels)), COMMAND_TIMEOUT_S * 2)
        await client.set(keys.heartbeat_key(bus.node), self.token, px=keys.HEARTBEAT_TTL_MS)
        # Listed among the nodes now, not at the first heartbeat a second later: a
        # node linking meanwhile reads the directory by that list, and would miss
        # this node's sessions (their events went out before it subscribed).
        await client.hset(keys.NODES, bus.node, orjson.dumps(bus.load()))
        for script in SCRIPTS:  # room history's (see .history), run by their sha
            await client.script_load(script)
        await bootstrap(bus, client)
        await bus.sync_bans(client)
        # Up: from here on the hub's changes are queued, after this node's whole state.
        sessions, rooms = bus.local_state()
        self.state = "up"
        self.since = time.time()
        self._up_at = self._probe_back = time.monotonic()
        for node_state in bus.directory.nodes.values():
            node_state.last_heard = self._up_at
        # Rooms joined or emptied while linking (the queue dropped their changes):
        # first thing, subscribe exactly the rooms with local members now.
        missing = [(SUBSCRIBE, ch) for ch in bus.wanted if ch not in self._subscribed]
        stale = [
            (UNSUBSCRIBE, ch) for ch in self._subscribed if ch not in bus.wanted and ch not in fixed
        ]
        bus.queue.extendleft(reversed([*missing, *stale, *announce(bus.node, sessions, rooms)]))
        bus.wake.set()
        bus.note(f"cluster: node {bus.node} linked to Redis")
        tasks = [
            asyncio.ensure_future(self._read(sub)),
            asyncio.ensure_future(self._write(client, sub)),
            asyncio.ensure_future(self._heartbeat(client)),
            asyncio.ensure_future(self._watchdog()),
        ]
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                task.result()
            raise LinkLost("a link task ended")
        except Exception as exc:
            # Down before the other tasks are waited for (below, up to a command's
            # timeout): what waits on Redis (a sender held for its room posts, a
            # join, a hand-over) is let go now.
            self._lost(exc)
            raise
        finally:
            for task in tasks:
                task.cancel()
                # It may end in an error of its own (a timeout racing the
                # cancellation): read it, or asyncio reports it never retrieved.
                task.add_done_callback(lambda t: t.cancelled() or t.exception())
            # A task stuck in a client call that does not give way to its
            # cancellation must not hold the rebuild: it is left to end alone.
            await asyncio.wait(tasks, timeout=COMMAND_TIMEOUT_S)

    async def _watchdog(self) -> None:
        """End the link when the probe stops coming back, whatever the other tasks do.

        The heartbeat checks the probe too, but it waits on Redis commands; a
        node whose heartbeat is stuck in one must still notice a dead link.
        """
        while True:
            await asyncio.sleep(HEARTBEAT_S / 2)
            if time.monotonic() - self._probe_back > PROBE_DEADLINE_S + HEARTBEAT_S:
                raise LinkLost("the subscription's probe did not come back")

    async def _confirmed(self, sub: AbstractConnection, channels: set[bytes]) -> None:
        while channels:
            msg = await sub.read_response(timeout=math.inf, push_request=True)
            if isinstance(msg, list) and len(msg) >= 2 and msg[0] == b"subscribe":
                channels.discard(msg[1])
                self._subscribed.add(msg[1])

    async def _read(self, conn: AbstractConnection) -> None:
        # Straight from the pub/sub connection: PubSub.get_message builds a dict and
        # runs a timeout per message, several times the cost of the delivery. No
        # read timeout here: an idle link is normal, and a dead one is found by
        # the probe and the heartbeat.
        bus = self.bus
        on_message = bus.on_message
        read = conn.read_response
        forever = math.inf
        while True:
            msg = await read(timeout=forever, disconnect_on_error=False, push_request=True)
            if not isinstance(msg, list) or not msg:
                # Seen once the server had cut the connection: a read that returns
                # at once, again and again, would starve the loop. Rebuild instead.
                raise LinkLost(f"unexpected reply on the subscription: {msg!r:.80}")
            kind = msg[0]
            if kind == b"message":
                try:
                    on_message(msg[1], msg[2])
                except Exception:  # a malformed message must not end the link
                    log.exception("cluster: bad message on %r", msg[1])
            elif kind == b"subscribe":
                channel = msg[1]
                self._subscribed.add(channel)
                fut = self._confirm.pop(channel, None)
                if fut is not None and not fut.done():
                    fut.set_result(None)
            elif kind == b"unsubscribe":
                self._subscribed.discard(msg[1])

    def write_now(self, item: tuple[Any, ...]) -> bool:
        """Write one command to Redis at once, when nothing is queued before it.

        An idle node's message then leaves in the turn of the loop that made
        it, not one turn later when the writer task wakes; the writer reads
        Redis's reply. False: queue it (no writer yet, a (un)subscription under
        way, a reply owed: not idle, so batched; or the connection is closing).
        """
        direct = self._direct
        if direct is None or self._owed or item[0] in (SUBSCRIBE, UNSUBSCRIBE):
            return False
        conn, stream = direct
        if stream.transport.is_closing():
            return False
        parts: list[bytes] = []
        pack(conn, item, parts)
        try:
            stream.writelines(parts)
        except (OSError, RuntimeError):  # the transport went away: the link is rebuilt
            return False
        self._owed += 1
        self.published += 1
        return True

    async def _write(self, client: Redis, sub: AbstractConnection) -> None:
        """Publish what is queued, in order, many commands per write on one connection.

        PUBLISH is framed here (a redis-py pipeline spent several times longer
        packing and reading each reply than Redis took to run it); the replies are
        read back in one go, with one timeout for them all.
        """
        bus = self.bus
        queue = bus.queue
        conn = client.connection_pool.make_connection()
        self._conns.append(conn)
        await conn.connect()
        # The replies are read under one timeout of our own (below). redis-py's
        # socket_timeout would run every write in asyncio.wait_for: a task, and
        # two more turns of the loop before the bytes leave.
        conn.socket_timeout = None
        read = conn.read_response
        forever = math.inf
        self._owed = 0
        stream = getattr(conn, "_writer", None)
        if isinstance(stream, asyncio.StreamWriter):
            self._direct = (conn, stream)
        try:
            while True:
                if not queue:
                    if self._owed:
                        # A reply owed past the command timeout: Redis is frozen or
                        # gone, and a sender may be waiting on it (its room posts).
                        async with asyncio.timeout(COMMAND_TIMEOUT_S):
                            await self._read_owed(read, forever)
                        continue
                    bus.wake.clear()
                    await bus.wake.wait()
                    continue
                head = queue[0]
                if head[0] is SUBSCRIBE or head[0] is UNSUBSCRIBE:
                    queue.popleft()
                    # Nothing may overtake a subscription: the join that needs it
                    # is told after it, through the queue.
                    direct, self._direct = self._direct, None
                    try:
                        await self._subscription(sub, head[0], head[1])
                    finally:
                        self._direct = direct
                    continue
                parts: list[bytes] = []
                n = 0
                commands = 0
                while queue and n < BATCH:
                    item = queue[0]
                    if item[0] is SUBSCRIBE or item[0] is UNSUBSCRIBE:
                        break
                    queue.popleft()
                    n += 1
                    commands += 1
                    if item[0] is POST:
                        # A room's messages one after another: one run of the script.
                        group = [item]
                        room = item[2]
                        while (
                            queue
                            and len(group) < GROUP
                            and queue[0][0] is POST
                            and queue[0][2] == room
                        ):
                            group.append(queue.popleft())
                        n += len(group) - 1
                        item[1].pack(group, parts)
                    else:
                        pack(conn, item, parts)
                async with asyncio.timeout(COMMAND_TIMEOUT_S):
                    await conn.send_packed_command(parts, check_health=False)
                    self._owed += commands
                    self.published += n
                    await self._read_owed(read, forever)
        finally:
            self._direct = None
            abort(conn)

    async def _read_owed(self, read: Any, forever: float) -> None:
        """Read the replies owed, those of commands written at once included."""
        while self._owed:
            with contextlib.suppress(ResponseError):  # one bad command, not the link
                await read(timeout=forever)
            self._owed -= 1

    async def _subscription(self, sub: AbstractConnection, kind: str, channel: bytes) -> None:
        if sub is not self._sub or not sub.is_connected:
            # A torn-down link's connection: sending would connect it again.
            raise LinkLost("the subscriber connection is closed")
        wanted = channel in self.bus.wanted
        if kind is SUBSCRIBE:
            if wanted and channel not in self._subscribed:
                fut = self._confirm[channel] = asyncio.get_running_loop().create_future()
                await asyncio.wait_for(sub.send_command("SUBSCRIBE", channel), COMMAND_TIMEOUT_S)
                await asyncio.wait_for(fut, COMMAND_TIMEOUT_S)
        elif not wanted and channel in self._subscribed:
            await asyncio.wait_for(sub.send_command("UNSUBSCRIBE", channel), COMMAND_TIMEOUT_S)
            self._subscribed.discard(channel)

    def probe_returned(self, seq: bytes) -> None:
        if seq == str(self._probe_seq).encode():
            self._probe_back = time.monotonic()
            if self._probe_sent:
                self.probe_lags.observe(self._probe_back - self._probe_sent)

    async def _heartbeat(self, client: Redis) -> None:
        bus = self.bus
        while True:
            await asyncio.sleep(HEARTBEAT_S)
            now = time.monotonic()
            if now - self._probe_back > PROBE_DEADLINE_S:
                raise LinkLost("the subscription's probe did not come back")
            self._sample_rates(now)
            self._probe_seq += 1
            info = bus.load()
            names = list(bus.directory.nodes)
            pipe = client.pipeline(transaction=False)
            pipe.set(keys.heartbeat_key(bus.node), self.token, px=keys.HEARTBEAT_TTL_MS)
            pipe.hset(keys.NODES, bus.node, orjson.dumps(info))
            pipe.publish(keys.MEMBERS, orjson.dumps({"o": "hb", "n": bus.node, "i": info}))
            pipe.publish(bus.own_channel, b"p%d" % self._probe_seq)
            self._probe_sent = time.monotonic()
            for name in names:
                pipe.exists(keys.heartbeat_key(name))
            if now - self._last_refresh >= REFRESH_S:
                self._last_refresh = now
                refresh(bus, pipe)
            results = await asyncio.wait_for(pipe.execute(), COMMAND_TIMEOUT_S * 2)
            alive = results[4 : 4 + len(names)]
            now = time.monotonic()
            if now - self._up_at < DEAD_AFTER_S:
                continue
            for name, held in zip(names, alive, strict=True):
                state = bus.directory.nodes.get(name)
                if state is not None and not held and now - state.last_heard > DEAD_AFTER_S:
                    bus.forget_node(name, "is gone (no heartbeat)")

    def _sample_rates(self, now: float) -> None:
        received = self.bus.received
        last_t, last_out, last_in = self._last_rates
        dt = now - last_t
        if dt > 0:
            self.rate_out = (self.published - last_out) / dt
            self.rate_in = (received - last_in) / dt
        self._last_rates = (now, self.published, received)

    def stats(self) -> LinkStats:
        """The link's figures now (the probe's histogram copied)."""
        return LinkStats(
            state=self.state,
            since=self.since,
            reconnects=self.reconnects,
            published=self.published,
            rate_out=self.rate_out,
            rate_in=self.rate_in,
            probe_lags=self.probe_lags.copy(),
        )
