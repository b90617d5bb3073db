"""The :class:`~verb_console.hub.snapshot.HubView` of a server in another process.

The console's view methods are synchronous and called on every tick, so they
must never wait on a socket. This view answers them from a local copy that a
background task (on the console's own loop) refreshes over the admin socket:
each round fetches the overview, new log events, one window of sessions in the
order and filter the Connections pane shows (in one ``frame`` request that the
server answers with what changed since the last, see :mod:`.frame`), and the
other lists only if a pane asked for them since the last round. When the
server goes away the overview says ``disconnected, retrying`` and the task
reconnects with backoff.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections import deque
from dataclasses import replace
from pathlib import Path
from typing import Any

import anyio

from ..hub.snapshot import (
    ROOM_MEMBERS,
    ClosedSessionInfo,
    ClusterInfo,
    HubView,
    LogEvent,
    MuxConnectionInfo,
    MuxPage,
    Notifier,
    Overview,
    Page,
    RateSeries,
    RoomInfo,
    RoomPage,
    SessionInfo,
    SessionPage,
    SessionQuery,
    Severity,
    ThrottleInfo,
    TransferInfo,
)
from ..hub.tap import TAP_KEPT, TapBatch, TapRow
from ..hub.view import refuse_if_read_only
from .bans import check_ban_args
from .client import AdminClient, AdminError
from .frame import FrameCopy
from .paths import AdminSocketError
from .protocol import RECORDS, from_wire, page_from_wire, tap_from_wire
from .remote_rates import RemoteRates

log = logging.getLogger("verb_console.admin")

DISCONNECTED = "disconnected, retrying"
BACKOFF_FIRST = 0.1
BACKOFF_MAX = 1.0
LOG_KEPT = 1000

_LISTS = ("closed_sessions", "throttle", "rooms", "mux_connections", "transfers")
# The paged lists, by their op, with the field they sort by first.
_PAGES = {"room_page": "name", "mux_page": "id"}
_PAGE_RECORDS: dict[str, type[Any]] = {
    "room_page": RoomInfo,
    "room": RoomInfo,
    "mux_page": MuxConnectionInfo,
    "mux_connection": MuxConnectionInfo,
}


def _empty_overview() -> Overview:
    from ..hub.snapshot import Rates, Stats

    now = time.time()
    return Overview(DISCONNECTED, now, now, (), 0, 0, Stats(), Rates())


class RemoteHubView:
    """A view over the admin socket at ``path``; call :meth:`run` as a task on the UI loop."""

    def __init__(self, path: Path, read_only: bool = False, interval: float = 0.25) -> None:
        self.path = path
        self.read_only = read_only
        self.interval = interval
        self.connected = False
        self.attaches = 0  # successful connections so far
        self.first_frame_at: float | None = None
        self._notify: Notifier | None = None
        self._client: AdminClient | None = None
        self._overview = _empty_overview()
        self._cluster: ClusterInfo | None = None
        self._page = SessionPage(0, 0, 0, ())
        self._frames = FrameCopy()  # what the server's frame deltas built
        # The page the console last asked for: the next round fetches it.
        self._query = SessionQuery()
        self._lists: dict[str, list[Any]] = {name: [] for name in _LISTS}
        self._wanted: set[str] = set()
        # Pages of rooms and mux connections, and the one room or mux connection
        # whose members or streams a pane shows: fetched only while asked for.
        self._pages: dict[str, tuple[SessionQuery, Page[Any]]] = {
            op: (SessionQuery(sort), Page(0, 0, 0, ())) for op, sort in _PAGES.items()
        }
        self._pages_wanted: set[str] = set()
        self._ones: dict[str, tuple[str, Any]] = {}
        self._ones_args: dict[str, dict[str, int]] = {}  # the window of the one record
        self._ones_wanted: set[str] = set()
        # The bans (PROTOCOL.md 12.3) as last fetched, and whether the next round fetches them.
        self._bans: list[dict[str, Any]] = []
        self._bans_wanted = False
        self._events: list[LogEvent] = []
        self._local_seq = 0
        self._remote_seq = 0
        self._server_pid: int | None = None
        self._pending: list[tuple[str, dict[str, Any], str]] = []
        self._wake: anyio.Event | None = None  # made on the loop, in run()
        self._stopping = False
        # The message tap, fetched only while the console's Tap pane shows.
        self._tap_wanted = False
        self._tap_held = False  # the server holds a tap for this connection
        self._tap_remote_seq = 0
        self._tap_rows: deque[TapRow] = deque(maxlen=TAP_KEPT)
        self._tap_counts = (0, 0, 0)
        # Rates over time: the server's, and one session's or room's.
        self._rates = RemoteRates(self._poke, self._tell)

    # ----- the background task ------------------------------------------------

    async def run(self) -> None:
        """Keep the copy fresh until :meth:`stop`; reconnect with backoff when the server goes."""
        self._wake = anyio.Event()
        backoff = BACKOFF_FIRST
        while not self._stopping:
            try:
                client = await AdminClient.connect(self.path, read_only=self.read_only, timeout=2)
            except (AdminSocketError, AdminError, OSError) as exc:
                self._disconnected(str(exc))
                await self._sleep(backoff)
                backoff = min(backoff * 2, BACKOFF_MAX)
                continue
            backoff = BACKOFF_FIRST
            self._client = client
            pid = client.hello.get("pid")
            if pid != self._server_pid:
                self._remote_seq = 0  # a new server numbers its events afresh
                self._tap_remote_seq = 0
                self._rates.new_server()
                self._server_pid = pid
            self._tap_held = False  # a new connection holds no tap yet
            self._rates.new_connection()
            self._frames.reset()  # nor any frame
            self.connected = True
            self.attaches += 1
            self._local_event("server", f"attached to {self.path} (pid {pid})")
            try:
                while not self._stopping:
                    await self._round(client)
                    await self._sleep(self.interval)
            except (AdminSocketError, OSError) as exc:
                self._disconnected(str(exc))
            finally:
                self._client = None
                with contextlib.suppress(Exception):
                    await client.aclose()

    async def _sleep(self, seconds: float) -> None:
        wake = self._wake
        assert wake is not None
        with anyio.move_on_after(seconds):
            await wake.wait()
        if wake.is_set():
            self._wake = anyio.Event()

    def _poke(self) -> None:
        if self._wake is not None:
            self._wake.set()

    def stop(self) -> None:
        self._stopping = True
        self._poke()

    @property
    def server_pid(self) -> int | None:
        """The process id of the server last attached to (a restarted one has a new one)."""
        return self._server_pid

    def _disconnected(self, why: str) -> None:
        if self.connected:
            self._local_event("error", f"lost the server: {why}")
        self.connected = False
        self._overview = replace(self._overview, state=DISCONNECTED, now=time.time())

    async def _round(self, client: AdminClient) -> None:
        while self._pending:
            op, args, what = self._pending.pop(0)
            try:
                await client.request(op, **args)
            except AdminError as exc:
                self._tell(f"{what} refused: {exc}", "error")
        # One request a tick, answered with what changed since the last one.
        query = self._query
        overview, page, events = self._frames.apply(
            await client.request(
                "frame",
                sort=query.sort,
                reverse=query.reverse,
                filter=query.filter,
                offset=query.offset,
                limit=query.limit,
                log_seq=self._remote_seq,
                have=self._frames.have,
            )
        )
        page = replace(page, query=query)
        cluster = self._frames.cluster
        wanted, self._wanted = self._wanted, set()
        for name in wanted:
            cls = RECORDS[name]
            self._lists[name] = [from_wire(cls, r) for r in await client.request(name)]
        await self._pages_round(client)
        if self._bans_wanted:
            self._bans_wanted = False
            self._bans = (await client.request("bans"))["bans"]
        await self._tap_round(client)
        await self._rates.round(client)
        for event in events:
            self._remote_seq = max(self._remote_seq, event.seq)
            self._local_event(event.kind, event.text, event.time)
        self._overview = overview
        self._cluster = cluster
        self._page = page
        if self.first_frame_at is None:
            self.first_frame_at = time.monotonic()

    async def _pages_round(self, client: AdminClient) -> None:
        """The pages of rooms and mux connections asked for since the last round, and
        the one room or mux connection whose members or streams are on show."""
        wanted, self._pages_wanted = self._pages_wanted, set()
        for op in wanted:
            q = self._pages[op][0]
            raw = await client.request(
                op, sort=q.sort, reverse=q.reverse, filter=q.filter, offset=q.offset, limit=q.limit
            )
            self._pages[op] = (q, replace(page_from_wire(raw, _PAGE_RECORDS[op]), query=q))
        ones, self._ones_wanted = self._ones_wanted, set()
        for op in ones:
            key = self._ones[op][0]
            raw = await client.request(op, key=key, **self._ones_args.get(op, {}))
            found = from_wire(_PAGE_RECORDS[op], raw) if raw is not None else None
            self._ones[op] = (key, found)

    def _paged(self, op: str, query: SessionQuery) -> Page[Any]:
        held, page = self._pages[op]
        if (query.sort, query.reverse, query.filter) != (held.sort, held.reverse, held.filter):
            query = replace(query, offset=0)  # a new order or filter starts from the top
        if query != held:
            self._pages[op] = (query, page)
            self._poke()
        self._pages_wanted.add(op)
        return page

    def _one(self, op: str, key: str, **window: int) -> Any:
        held = self._ones.get(op)
        if held is None or held[0] != key:
            self._ones[op] = held = (key, None)
            self._poke()
        if self._ones_args.get(op) != window:
            # The same record, another window of it: what is held shows until it comes.
            self._ones_args[op] = window
            self._poke()
        self._ones_wanted.add(op)
        return held[1]

    async def _tap_round(self, client: AdminClient) -> None:
        if self._tap_wanted:
            batch = tap_from_wire(await client.request("tap", seq=self._tap_remote_seq))
            self._tap_held = True
            local = self._tap_rows[-1].seq if self._tap_rows else 0
            for r in batch.rows:
                self._tap_remote_seq = max(self._tap_remote_seq, r.seq)
                local += 1
                self._tap_rows.append(replace(r, seq=local))
            self._tap_counts = (batch.seen, batch.skipped, batch.rate)
        elif self._tap_held:
            await client.request("tap_close")
            self._tap_held = False

    def _local_event(self, kind: str, text: str, when: float | None = None) -> None:
        self._local_seq += 1
        self._events.append(LogEvent(self._local_seq, when or time.time(), kind, text))
        if len(self._events) > LOG_KEPT:
            del self._events[: len(self._events) - LOG_KEPT]

    def _tell(self, message: str, severity: Severity = "information") -> None:
        if self._notify is not None:
            self._notify(message, severity)

    def _submit(self, op: str, what: str, **args: Any) -> None:
        if not self.connected:
            self._tell(f"{what}: not attached ({DISCONNECTED})", "error")
            return
        self._pending.append((op, args, what))
        self._poke()

    # ----- HubView ------------------------------------------------------------

    def overview(self) -> Overview:
        ov = self._overview
        return replace(ov, read_only=self.read_only or ov.read_only)

    def session_page(
        self,
        sort: str = "id",
        reverse: bool = False,
        filter: str = "",
        offset: int = 0,
        limit: int = 100,
    ) -> SessionPage:
        """The page last fetched; the next round fetches this one (the server sorts,
        filters and pages). A new order or filter starts from the top."""
        q = self._query
        if (sort, reverse, filter) != (q.sort, q.reverse, q.filter):
            offset = 0
        query = SessionQuery(sort, reverse, filter, max(0, offset), limit)
        if query != q:
            self._query = query
            self._poke()
        return self._page

    def session(self, session_id: str) -> SessionInfo | None:
        return next((s for s in self._page.rows if s.id == session_id), None)

    def sessions(self) -> list[SessionInfo]:
        """The rows of the page last fetched."""
        return list(self._page.rows)

    def set_notifier(self, notify: Notifier) -> None:
        self._notify = notify

    def _list(self, name: str) -> list[Any]:
        self._wanted.add(name)
        return self._lists[name]

    def closed_sessions(self) -> list[ClosedSessionInfo]:
        return self._list("closed_sessions")

    def throttle_state(self) -> list[ThrottleInfo]:
        return self._list("throttle")

    def rooms(self) -> list[RoomInfo]:
        return self._list("rooms")

    def mux_connections(self) -> list[MuxConnectionInfo]:
        return self._list("mux_connections")

    def room_page(
        self,
        sort: str = "name",
        reverse: bool = False,
        filter: str = "",
        offset: int = 0,
        limit: int = 100,
    ) -> RoomPage:
        """The page last fetched; the next round fetches this one."""
        return self._paged("room_page", SessionQuery(sort, reverse, filter, max(0, offset), limit))

    def room(
        self, name: str, members_from: int = 0, members_limit: int = ROOM_MEMBERS
    ) -> RoomInfo | None:
        """The room as last fetched (None until then); the next round fetches it again."""
        window = {"members_from": max(0, members_from), "members_limit": members_limit}
        found: RoomInfo | None = self._one("room", name, **window)
        return found

    def mux_page(
        self,
        sort: str = "id",
        reverse: bool = False,
        filter: str = "",
        offset: int = 0,
        limit: int = 100,
    ) -> MuxPage:
        return self._paged("mux_page", SessionQuery(sort, reverse, filter, max(0, offset), limit))

    def mux_connection(self, mux_id: str) -> MuxConnectionInfo | None:
        found: MuxConnectionInfo | None = self._one("mux_connection", mux_id)
        return found

    def transfers(self) -> list[TransferInfo]:
        return self._list("transfers")

    def tap_open(self) -> None:
        self._tap_wanted = True
        self._poke()

    def tap_close(self) -> None:
        self._tap_wanted = False
        self._poke()

    def cluster_info(self) -> ClusterInfo | None:
        return self._cluster

    def traffic_history(self, step: int, since: int = 0, limit: int = 1440) -> RateSeries:
        return self._rates.traffic_history(step, since, limit)

    def watch_open(self, kind: str, key: str) -> None:
        self._rates.watch_open(kind, key)

    def watch_close(self, kind: str, key: str) -> None:
        self._rates.watch_close(kind, key)

    def watch_series(self, kind: str, key: str, since: int = 0, limit: int = 300) -> RateSeries:
        return self._rates.watch_series(kind, key, since, limit)

    def tap_since(self, seq: int) -> TapBatch | None:
        if not self._tap_wanted:
            return None
        rows = tuple(r for r in self._tap_rows if r.seq > seq)
        return TapBatch(rows, *self._tap_counts)

    def log_since(self, seq: int) -> list[LogEvent]:
        return [e for e in self._events if e.seq > seq]

    # Operator actions: sent on the next round; the answers the console shows are
    # estimates from the copy, and a refusal comes back as a notification.

    def _check(self, action: str) -> None:
        refuse_if_read_only(self.read_only, action)

    def operator_broadcast(self, text: str, room: str | None = None) -> int:
        self._check("broadcast")
        self._submit("broadcast", "broadcast", text=text, room=room)
        if room is None:
            return self._overview.sessions
        for r in self._lists["rooms"]:
            if r.name == room:
                return r.size
        return 0

    def operator_close(self, session_id: str) -> bool:
        self._check("close")
        self._submit("close", f"close {session_id}", id=session_id)
        return any(s.id == session_id for s in self._page.rows)

    def operator_close_ip(self, address: str) -> int:
        self._check("close")
        self._submit("close_ip", f"close {address}", ip=address)
        return sum(1 for s in self._page.rows if s.address == address)

    def operator_ban(self, target: str, duration: str | None = None) -> dict[str, Any]:
        """Ban ``target`` (checked here first: raises BanError); the server answers later."""
        self._check("ban")
        check_ban_args(target, duration)
        self._submit("ban", f"ban {target}", target=target, duration=duration, by="console")
        self._bans_wanted = True
        return {"target": target, "by": "console", "created": time.time(), "expires": None}

    def operator_unban(self, target: str) -> bool:
        self._check("unban")
        self._submit("unban", f"unban {target}", target=target, by="console")
        self._bans_wanted = True
        return any(b["target"] == target for b in self._bans)

    def bans(self) -> list[dict[str, Any]]:
        """The bans as last fetched; asking fetches them again with the next round."""
        self._bans_wanted = True
        self._poke()
        return list(self._bans)

    def begin_shutdown(self) -> None:
        self._check("shutdown")
        self._submit("drain", "shutdown")

    def force_shutdown(self) -> None:
        self._check("shutdown")
        self._submit("force", "shutdown")


# mypy checks that the remote view is a whole HubView.
_: type[HubView] = RemoteHubView
