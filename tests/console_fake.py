"""A fixed, deterministic :class:`HubView`: the console tests' fake hub.

It holds a little of everything the real hub can report (every protocol, an
IPv6 client, mux streams, rooms, a blocked throttle entry, transfers in every
state, one closed session per close reason) and records the operator actions
it receives so tests can assert on them.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from dataclasses import dataclass, replace

from verb_console.hub.row_fields import MUX_CONNECTIONS, ROOMS
from verb_console.hub.session_fields import page_of
from verb_console.hub.snapshot import (
    ClosedSessionInfo,
    ClusterInfo,
    HubView,
    LogEvent,
    MuxConnectionInfo,
    MuxPage,
    Notifier,
    Overview,
    Rates,
    RateSeries,
    Refusals,
    RoomInfo,
    RoomPage,
    SessionInfo,
    SessionPage,
    SessionQuery,
    Stats,
    StreamInfo,
    ThrottleInfo,
    TransferInfo,
)
from verb_console.hub.tap import TapBatch, TapRow

T0 = 1_700_000_000.0
"""When the fixed server started (2023-11-14 22:13:20 UTC)."""
NOW = T0 + 3 * 3600 + 25 * 60 + 7
"""The fixed "now": 3h25m07s after start."""

CLOSE_REASONS = (
    "client_closed",
    "operator",
    "idle_timeout",
    "slow_consumer",
    "frame_too_large",
    "protocol_error",
    "shutdown",
    "throttled",
    "over_max_connections",
)


class FrozenClock:
    """A clock that only moves when told to."""

    def __init__(self, now: float = NOW) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        """Move time forward."""
        self.now += seconds


@dataclass(frozen=True, slots=True)
class Action:
    """An operator action the view received."""

    name: str
    args: tuple[object, ...] = ()


def _session(
    id: str,
    protocol: str,
    age: float,
    idle: float,
    n: int,
    *,
    unsent: int = 0,
    rooms: tuple[str, ...] = (),
    parent: str | None = None,
) -> SessionInfo:
    address, _, port = id.split("#")[0].rpartition(":")
    return SessionInfo(
        id=id,
        protocol=protocol,
        address=address.strip("[]"),
        port=int(port),
        connected_at=NOW - age,
        last_activity=NOW - idle,
        msgs_in=n,
        msgs_out=n * 3,
        bytes_in=n * 180,
        bytes_out=n * 610,
        unsent=unsent,
        rooms=rooms,
        parent=parent,
    )


def make_sessions(count: int) -> list[SessionInfo]:
    """``count`` plausible sessions across IPv4 and IPv6, for load tests."""
    out = []
    for i in range(count):
        if i % 5 == 4:
            sid = f"[2001:db8:{i % 97:x}::{i:x}]:{40000 + i % 20000}"
        else:
            sid = f"10.{i // 65536 % 256}.{i // 256 % 256}.{i % 256}:{30000 + i % 30000}"
        out.append(
            _session(sid, ("json", "binary", "echo")[i % 3], 10.0 + i % 7200, i % 300, i * 7)
        )
    return out


class FixedHubView:
    """A :class:`~verb_console.hub.snapshot.HubView` with rich, unchanging state.

    ``state`` may be set to ``"draining"`` or ``"stopped"``; :meth:`bump` makes
    the counters move so tests can tell a frozen view from a live one.
    """

    def __init__(self, clock: Callable[[], float] | None = None, *, sessions: int = 0) -> None:
        self.clock = clock or FrozenClock()
        self.state = "running"
        self.drain_deadline: float | None = None
        self.read_only = False
        self.actions: list[Action] = []
        self.cluster: ClusterInfo | None = None
        self.notifier: Notifier | None = None
        # The policy's refusals (PROTOCOL.md 12): none, so the header shows none.
        self.refusals = Refusals()
        self._sessions: list[SessionInfo] = self._fixed_sessions()
        if sessions:
            self._sessions += make_sessions(sessions)
        self._closed = [
            ClosedSessionInfo(
                id=f"198.51.100.{10 + i}:{52000 + i}",
                protocol=("json", "binary", "echo", "mux")[i % 4],
                address=f"198.51.100.{10 + i}",
                port=52000 + i,
                connected_at=NOW - 3000 + i * 60,
                closed_at=NOW - 600 + i * 45,
                reason=reason,
                msgs_in=20 * i,
                msgs_out=33 * i,
                bytes_in=4000 * i,
                bytes_out=9100 * i,
                detail={
                    "frame_too_large": "frame of 17.0 MiB over the 16 MiB limit",
                    "protocol_error": "invalid JSON at byte 12",
                    "slow_consumer": "2.0 MiB unsent for 10s",
                    "idle_timeout": "no traffic for 300s",
                }.get(reason, ""),
            )
            for i, reason in enumerate(CLOSE_REASONS)
        ]
        self._log: list[LogEvent] = []
        for i, (kind, text) in enumerate(_LOG_SCRIPT):
            self._log.append(LogEvent(seq=i + 1, time=NOW - 300 + i * 15, kind=kind, text=text))
        self._bumps = 0
        self.tap_readers = 0
        # The rate history starts when the view is made; watches, when opened.
        self._started = self.clock()
        self.watches: dict[tuple[str, str], float] = {}
        self.watch_holders: dict[tuple[str, str], int] = {}

    @staticmethod
    def _fixed_sessions() -> list[SessionInfo]:
        mux = "127.0.0.1:5000"
        return [
            _session("127.0.0.1:50001", "json", 12000, 2, 1520, rooms=("lobby", "ops")),
            _session("10.0.0.7:41234", "binary", 5400, 0.5, 98000, rooms=("lobby",)),
            _session("192.168.1.20:53000", "echo", 95, 95, 3),
            _session(
                "[2001:db8:85a3::8a2e:370:7334]:65535",
                "json",
                720,
                12,
                4400,
                rooms=("lobby", "ipv6-friends"),
            ),
            _session(
                "203.0.113.9:60111", "json", 3600, 1, 250000, unsent=2_400_000, rooms=("firehose",)
            ),
            _session("203.0.113.50:40404", "detecting", 1.5, 1.5, 0),
            _session(f"{mux}#1", "json", 900, 3, 77, parent=mux, rooms=("ops",)),
            _session(f"{mux}#2", "binary", 880, 40, 12, parent=mux),
            _session(f"{mux}#3", "echo", 60, 61, 5, parent=mux, unsent=90_000),
            _session("[::1]:5001#1", "json", 30, 4, 9, parent="[::1]:5001"),
        ]

    # ----- HubView --------------------------------------------------------------

    @staticmethod
    def _rates_at(now: float) -> Rates:
        wave = 0.5 + 0.5 * math.sin((now - T0) / 7.0)
        return Rates(
            msgs_in=1200 + 900 * wave,
            msgs_out=3600 + 2000 * (1 - wave),
            bytes_in=220_000 + 180_000 * wave,
            bytes_out=2_200_000 + 900_000 * wave,
        )

    @property
    def server_pid(self) -> int | None:
        return os.getpid()  # a hosted console: the server is this process

    def overview(self) -> Overview:
        now = self.clock()
        return Overview(
            state=self.state,
            started_at=T0,
            now=now,
            listeners=("0.0.0.0:7000 (json)", "0.0.0.0:7001 (binary)", "[::]:7002 (mux)"),
            sessions=len(self._sessions),
            # Each mux connection is one TCP connection, however many streams it carries.
            connections=sum(1 for s in self._sessions if s.parent is None)
            + len({s.parent for s in self._sessions if s.parent is not None}),
            peak_sessions=max(len(self._sessions), 1842),
            totals=Stats(
                accepted=52311,
                rejected_throttle=412,
                rejected_max=17,
                slow_consumers=3,
                msgs_in=9_812_004 + self._bumps,
                msgs_out=28_550_120 + self._bumps,
                bytes_in=1_734_000_000,
                bytes_out=5_100_000_000,
            ),
            rates=self._rates_at(now),
            drain_deadline=self.drain_deadline,
            read_only=self.read_only,
            version="0.1.0",
            refusals=self.refusals,
        )

    def sessions(self) -> list[SessionInfo]:
        return list(self._sessions)

    def session_page(
        self,
        sort: str = "id",
        reverse: bool = False,
        filter: str = "",
        offset: int = 0,
        limit: int = 100,
    ) -> SessionPage:
        page = page_of(self._sessions, sort, reverse, filter, offset, limit, self.clock())
        return replace(page, query=SessionQuery(sort, reverse, filter, offset, limit))

    def session(self, session_id: str) -> SessionInfo | None:
        return next((s for s in self._sessions if s.id == session_id), None)

    def cluster_info(self) -> ClusterInfo | None:
        return self.cluster

    def set_notifier(self, notify: Notifier) -> None:
        self.notifier = notify

    def closed_sessions(self) -> list[ClosedSessionInfo]:
        return list(self._closed)

    def throttle_state(self) -> list[ThrottleInfo]:
        def entry(key: str, live: int, window: int, rejected: int, blocked: bool) -> ThrottleInfo:
            return ThrottleInfo(key, live, window, NOW - 20, NOW + 40, rejected, NOW - 3, blocked)

        return [
            entry("127.0.0.1", 7, 9, 0, False),
            entry("10.0.0.7", 1, 1, 0, False),
            entry("203.0.113.66", 0, 31, 405, True),
            entry("2001:db8:85a3::/64", 1, 4, 7, False),
            entry("192.168.1.20", 1, 2, 0, False),
        ]

    def rooms(self) -> list[RoomInfo]:
        members: dict[str, list[str]] = {}
        for s in self._sessions:
            for room in s.rooms:
                members.setdefault(room, []).append(s.id)
        members.setdefault("empty-room", [])
        return [
            replace(
                RoomInfo(
                    name,
                    tuple(sorted(ids)),
                    1000 * len(name) + 7 * len(ids),
                    T0 + 60 * i,
                    size=len(ids),
                ),
                # Room history (PROTOCOL.md 11.2) in every room but one.
                epoch="" if name == "empty-room" else f"{0x3F9A1C2E77D04B15 + 7919 * i:016x}",
                offset=0 if name == "empty-room" else 1000 * len(name) + 7 * len(ids),
                history=0 if name == "empty-room" else min(100, 1000 * len(name)),
                history_bytes=0 if name == "empty-room" else 180 * min(100, 1000 * len(name)),
            )
            for i, (name, ids) in enumerate(sorted(members.items()))
        ]

    def room_page(
        self,
        sort: str = "name",
        reverse: bool = False,
        filter: str = "",
        offset: int = 0,
        limit: int = 100,
    ) -> RoomPage:
        rooms = [replace(r, members=()) for r in self.rooms()]
        return ROOMS.page_of(rooms, sort, reverse, filter, offset, limit, self.clock())

    def room(self, name: str, members_from: int = 0, members_limit: int = 1000) -> RoomInfo | None:
        found = next((r for r in self.rooms() if r.name == name), None)
        if found is None:
            return None
        window = found.members[members_from : members_from + members_limit]
        return replace(found, members=window, members_from=members_from)

    def mux_page(
        self,
        sort: str = "id",
        reverse: bool = False,
        filter: str = "",
        offset: int = 0,
        limit: int = 100,
    ) -> MuxPage:
        muxes = [replace(m, streams=()) for m in self.mux_connections()]
        return MUX_CONNECTIONS.page_of(muxes, sort, reverse, filter, offset, limit, self.clock())

    def mux_connection(self, mux_id: str) -> MuxConnectionInfo | None:
        return next((m for m in self.mux_connections() if m.id == mux_id), None)

    def mux_connections(self) -> list[MuxConnectionInfo]:
        by_parent: dict[str, list[SessionInfo]] = {}
        for s in self._sessions:
            if s.parent:
                by_parent.setdefault(s.parent, []).append(s)
        return [
            MuxConnectionInfo(
                id=parent,
                connected_at=min(s.connected_at for s in streams) - 5,
                streams=tuple(
                    StreamInfo(
                        stream_id=int(s.id.rsplit("#", 1)[1]),
                        kind=s.protocol,
                        session_id=s.id,
                        bytes_in=s.bytes_in,
                        bytes_out=s.bytes_out,
                        frames_in=s.msgs_in,
                        frames_out=s.msgs_out,
                        opened_at=s.connected_at,
                    )
                    for s in streams
                ),
                stream_count=len(streams),
                bytes_in=sum(s.bytes_in for s in streams),
                bytes_out=sum(s.bytes_out for s in streams),
            )
            for parent, streams in sorted(by_parent.items())
        ]

    def transfers(self) -> list[TransferInfo]:
        mib = 1024 * 1024
        return [
            TransferInfo(
                "127.0.0.1:50001",
                "t1",
                "backup-2023-11-14.tar.zst",
                512 * mib,
                205 * mib,
                NOW - 82,
                None,
                "active",
            ),
            TransferInfo(
                "10.0.0.7:41234",
                "t2",
                "firmware.bin",
                24 * mib,
                22 * mib,
                NOW - 11,
                None,
                "active",
                protocol="binary",
            ),
            TransferInfo(
                "127.0.0.1:5000#1",
                "t3",
                "report.pdf",
                3 * mib,
                3 * mib,
                NOW - 400,
                NOW - 380,
                "complete",
            ),
            TransferInfo(
                "203.0.113.9:60111",
                "t4",
                "dataset.csv",
                80 * mib,
                31 * mib,
                NOW - 900,
                NOW - 700,
                "failed",
                "checksum_mismatch",
            ),
            TransferInfo(
                "192.168.1.20:53000",
                "t5",
                "photo.jpg",
                4 * mib,
                1 * mib,
                NOW - 260,
                NOW - 250,
                "aborted",
                "client_closed",
            ),
            TransferInfo(
                "203.0.113.9:60111",
                "t6",
                "disk-image.iso",
                8 * 1024 * mib,
                0,
                NOW - 45,
                NOW - 45,
                "refused",
                "too_large",
            ),
        ]

    def log_since(self, seq: int) -> list[LogEvent]:
        return [e for e in self._log if e.seq > seq]

    # The message tap: fixed rows, and whether a pane holds it open.
    def tap_open(self) -> None:
        self.tap_readers += 1

    def tap_close(self) -> None:
        self.tap_readers -= 1

    def tap_since(self, seq: int) -> TapBatch | None:
        if self.tap_readers <= 0:
            return None
        rows = tuple(r for r in _TAP_ROWS if r.seq > seq)
        return TapBatch(rows, seen=4210, skipped=4210 - len(_TAP_ROWS), rate=20)

    # Rates over time: one sample a step since the view was made (or the watch opened),
    # each the rates at its time, so a frozen clock draws the same sparklines.
    def traffic_history(self, step: int, since: int = 0, limit: int = 1440) -> RateSeries:
        kept = {1: 300, 10: 360, 60: 1440}[step]
        seq = int((self.clock() - self._started) // step)
        n = max(0, min(seq - since, limit, kept))
        times = [self._started + step * (i + 1) for i in range(seq - n, seq)]
        fields = ("msgs_in", "msgs_out", "bytes_in", "bytes_out")
        samples = tuple(tuple(getattr(self._rates_at(t), f) for f in fields) for t in times)
        return RateSeries(step, seq, fields, samples)

    def watch_open(self, kind: str, key: str) -> None:
        self.watches.setdefault((kind, key), self.clock())
        self.watch_holders[kind, key] = self.watch_holders.get((kind, key), 0) + 1

    def watch_close(self, kind: str, key: str) -> None:
        self.watch_holders[kind, key] -= 1

    def watch_series(self, kind: str, key: str, since: int = 0, limit: int = 300) -> RateSeries:
        fields = ("msgs_in", "msgs_out") if kind == "session" else ("messages",)
        opened = self.watches.get((kind, key))
        if opened is None:
            return RateSeries(1, 0, fields, ())
        seq = int(self.clock() - opened)
        n = max(0, min(seq - since, limit, 300))
        samples = tuple(
            tuple(
                (20.0 + 10 * j) * (1.2 + math.sin((opened + i + 1 - T0) / (4.0 + j)))
                for j in range(len(fields))
            )
            for i in range(seq - n, seq)
        )
        return RateSeries(1, seq, fields, samples)

    def operator_broadcast(self, text: str, room: str | None = None) -> int:
        self.actions.append(Action("broadcast", (text, room)))
        targets = [s for s in self._sessions if room is None or room in s.rooms]
        self._note(f"broadcast to {room or 'everyone'} ({len(targets)} sessions): {text}")
        return len(targets)

    def operator_close(self, session_id: str) -> bool:
        self.actions.append(Action("close", (session_id,)))
        for s in self._sessions:
            if s.id == session_id:
                self._sessions.remove(s)
                self._closed.append(
                    ClosedSessionInfo(
                        s.id,
                        s.protocol,
                        s.address,
                        s.port,
                        s.connected_at,
                        self.clock(),
                        "operator",
                    )
                )
                self._note(f"closed {session_id}")
                return True
        return False

    def operator_close_ip(self, address: str) -> int:
        self.actions.append(Action("close_ip", (address,)))
        doomed = [s.id for s in self._sessions if s.address == address]
        for sid in doomed:
            self.operator_close(sid)
        return len(doomed)

    def begin_shutdown(self) -> None:
        self.actions.append(Action("begin_shutdown"))
        if self.state == "running":
            self.state = "draining"
            self.drain_deadline = self.clock() + 30
            self._note("graceful shutdown started")

    def force_shutdown(self) -> None:
        self.actions.append(Action("force_shutdown"))
        self.state = "stopped"
        self._note("forced shutdown")

    # ----- test helpers -----------------------------------------------------------

    def action_names(self) -> list[str]:
        """The names of the operator actions received, in order."""
        return [a.name for a in self.actions]

    def bump(self) -> None:
        """Make every live counter move, as real traffic would."""
        self._bumps += 1
        self._sessions = [
            s._replace(msgs_in=s.msgs_in + 1, bytes_in=s.bytes_in + 100) for s in self._sessions
        ]

    def _note(self, text: str) -> None:
        seq = self._log[-1].seq + 1 if self._log else 1
        self._log.append(LogEvent(seq, self.clock(), "operator", text))


_LOG_SCRIPT = (
    ("server", "listening on 0.0.0.0:7000 (json), 0.0.0.0:7001 (binary), [::]:7002 (mux)"),
    ("connect", "127.0.0.1:50001 json"),
    ("connect", "10.0.0.7:41234 binary"),
    ("connect", "[2001:db8:85a3::8a2e:370:7334]:65535 json"),
    ("close", "198.51.100.10:52000 client_closed"),
    ("close", "198.51.100.11:52001 operator"),
    ("error", "198.51.100.15:52005 protocol_error: invalid JSON at byte 12"),
    ("close", "198.51.100.13:52003 slow_consumer: 2.0 MiB unsent for 10s"),
    ("operator", "broadcast to everyone (9 sessions): maintenance at 22:00 UTC"),
    ("connect", "127.0.0.1:5000 mux"),
    ("close", "198.51.100.17:52007 throttled"),
    ("error", "198.51.100.14:52004 frame_too_large: frame of 17.0 MiB over the 16 MiB limit"),
    ("close", "198.51.100.18:52008 over_max_connections"),
    ("connect", "203.0.113.50:40404 detecting"),
)


_TAP_ROWS = tuple(
    TapRow(i + 1, NOW - 3 + i * 0.15, sid, proto, kind, size, room)
    for i, (sid, proto, kind, size, room) in enumerate(
        (
            ("127.0.0.1:50001", "json", "room_message", 412, "lobby"),
            ("10.0.0.7:41234", "binary", "data", 98304, ""),
            ("127.0.0.1:50001", "json", "ping", 15, ""),
            ("[2001:db8:85a3::8a2e:370:7334]:65535", "json", "broadcast", 2048, ""),
            ("127.0.0.1:5000#1", "json", "room_message", 96, "ops"),
            ("10.0.0.7:41234", "binary", "heartbeat", 0, ""),
            ("127.0.0.1:50001", "json", "private", 230, ""),
            ("127.0.0.1:5000#1", "json", "join_room", 33, "ops"),
        )
    )
)


# The fake is a whole HubView, as both real views are (mypy checks it).
_: type[HubView] = FixedHubView
