"""The admin socket's server side, on the server's own asyncio loop.

Each request is answered from the same :class:`~verb_console.hub.view.LiveHubView`
that a hosted console reads, so ``ctl`` and ``attach`` see what the console
sees. Only the socket's owner and root get in (``SO_PEERCRED``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import struct
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import orjson

from .. import __version__
from ..hub.snapshot import ROOM_MEMBERS
from ..hub.view import LiveHubView
from ..protocols.json import JsonDecoder, encode
from . import paths
from .bans import ban_request
from .frame import FrameState, overview_to_wire
from .protocol import (
    ACTION_OPS,
    READ_OPS,
    RECORDS,
    VERSION,
    page_to_wire,
    records_page_to_wire,
    series_to_wire,
    tap_to_wire,
    to_wire,
)

log = logging.getLogger("verb_console.admin")

MAX_REQUEST = 64 * 1024
_CRED = struct.Struct("3i")


class AdminRequestError(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


def peer_uid(sock: Any) -> int | None:
    """The uid of the process at the other end of a Unix socket (Linux: SO_PEERCRED)."""
    option = getattr(socket, "SO_PEERCRED", None)
    if option is None:  # pragma: no cover - not Linux
        return None
    raw = sock.getsockopt(socket.SOL_SOCKET, option, _CRED.size)
    _pid, uid, _gid = _CRED.unpack(raw)
    return int(uid)


class TapLease:
    """One admin connection's hold on the hub's message tap, let go when it ends."""

    def __init__(self, view: LiveHubView) -> None:
        self.view = view
        self.held = False

    def since(self, seq: int) -> dict[str, Any]:
        if not self.held:
            self.held = True
            self.view.tap_open()
        return tap_to_wire(self.view.tap_since(seq))

    def release(self) -> None:
        if self.held:
            self.held = False
            self.view.tap_close()


class WatchLease:
    """One admin connection's watches of sessions and rooms, let go when it ends."""

    MAX_HELD = 4

    def __init__(self, view: LiveHubView) -> None:
        self.view = view
        self.held: set[tuple[str, str]] = set()

    def series(self, kind: str, key: str, since: int, limit: int) -> dict[str, Any]:
        if (kind, key) not in self.held:
            if len(self.held) >= self.MAX_HELD:
                raise ValueError(f"this connection holds {self.MAX_HELD} watches already")
            self.view.watch_open(kind, key)  # ValueError for a bad kind or key
            self.held.add((kind, key))
        return series_to_wire(self.view.watch_series(kind, key, since, limit))

    def close(self, kind: str, key: str) -> None:
        if (kind, key) in self.held:
            self.held.discard((kind, key))
            self.view.watch_close(kind, key)

    def release(self) -> None:
        for kind, key in list(self.held):
            self.close(kind, key)


class Leases:
    """What one admin connection holds open on the hub: the tap, and watches
    (and what its client holds of the last ``frame`` it was sent)."""

    def __init__(self, view: LiveHubView) -> None:
        self.tap = TapLease(view)
        self.watch = WatchLease(view)
        self.frames = FrameState()

    def release(self) -> None:
        self.tap.release()
        self.watch.release()


# The most sessions one ``sessions`` request answers (``ctl sessions`` asks page by page).
PAGE_MAX = 1000


class _Later:
    """A request's answer that needs awaiting (a reload reads its files in a thread)."""

    __slots__ = ("work",)

    def __init__(self, work: Awaitable[list[str]]) -> None:
        self.work = work


class AdminServer:
    """Serves the admin protocol on a Unix socket for one running server."""

    def __init__(
        self,
        view: LiveHubView,
        path: Path,
        reload: Callable[[], Awaitable[list[str]]],
        port: int,
    ) -> None:
        self.view = view
        self.path = path
        self.reload = reload
        self.port = port
        self._server: asyncio.AbstractServer | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._writers: set[asyncio.StreamWriter] = set()

    async def start(self, default_dir: bool) -> None:
        """Bind the socket (mode 0600); in the default directory, make that 0700 first."""
        if default_dir:
            paths.prepare_dir(self.path.parent)
        paths.claim(self.path)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            # Linux gives the socket file the mode of the socket itself, so it
            # is never reachable by others, not even between bind and chmod.
            os.fchmod(sock.fileno(), 0o600)
            sock.bind(str(self.path))
            os.chmod(self.path, 0o600)
        except OSError as exc:
            sock.close()
            raise paths.AdminSocketError(
                f"cannot bind admin socket {self.path}: {exc.strerror or exc}"
            ) from None
        self._inode = os.stat(self.path).st_ino
        self._server = await asyncio.start_unix_server(self._serve, sock=sock)

    async def close(self) -> None:
        """Stop listening, end every admin connection and remove the socket file."""
        if self._server is not None:
            self._server.close()
            self._server = None
        for writer in list(self._writers):
            writer.close()
        for task in list(self._tasks):
            task.cancel()
        # Never remove a socket another server has bound at the same path since.
        with contextlib.suppress(OSError):
            if os.stat(self.path).st_ino == self._inode:
                self.path.unlink()

    def hello(self) -> dict[str, Any]:
        overview = self.view.overview()
        return {
            "v": VERSION,
            "type": "hello",
            "server": "verb-console",
            "version": __version__,
            "pid": os.getpid(),
            "port": self.port,
            "state": overview.state,
        }

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        self._writers.add(writer)
        try:
            await self._session(reader, writer)
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            self._tasks.discard(task)
            self._writers.discard(writer)
            writer.close()

    async def _session(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        uid = peer_uid(writer.get_extra_info("socket"))
        if uid is not None and uid not in (0, os.getuid()):
            log.warning("admin socket: refused a peer of uid %d", uid)
            self.view.hub.event("error", f"admin socket: refused a peer of uid {uid}")
            refusal = {"code": "forbidden", "message": "only the server's owner and root"}
            writer.write(encode({"v": VERSION, "type": "refused", "error": refusal}))
            with contextlib.suppress(ConnectionError):
                await writer.drain()
            return
        writer.write(encode(self.hello()))
        decoder = JsonDecoder(MAX_REQUEST)
        read_only = False
        lease = Leases(self.view)
        try:
            while True:
                data = await reader.read(65536)
                if not data:
                    return
                for body in decoder.feed(data):
                    reply, read_only = self._answer(body, read_only, lease)
                    later = reply.get("result")
                    if isinstance(later, _Later):
                        reply["result"] = {"errors": await later.work}
                    writer.write(encode(reply))
                if decoder.error is not None:
                    error = {"code": decoder.error.code, "message": str(decoder.error)}
                    writer.write(encode({"v": VERSION, "id": None, "ok": False, "error": error}))
                    await writer.drain()
                    return
                await writer.drain()
        finally:
            # An attached console that goes away stops the tap and the watches it held.
            lease.release()

    def _answer(
        self, body: bytes | bytearray, read_only: bool, lease: Leases
    ) -> tuple[dict[str, Any], bool]:
        request_id = None
        try:
            try:
                request = orjson.loads(body)
            except orjson.JSONDecodeError:
                raise AdminRequestError("bad_json", "the request is not valid JSON") from None
            if not isinstance(request, dict):
                raise AdminRequestError("bad_request", "a request is a JSON object")
            request_id = request.get("id")
            if request.get("v") != VERSION:
                raise AdminRequestError(
                    "bad_version", f"this server speaks admin protocol version {VERSION}"
                )
            op = request.get("op")
            args = request.get("args") or {}
            if not isinstance(op, str) or not isinstance(args, dict):
                raise AdminRequestError("bad_request", "op must be a string, args an object")
            if op == "hello":
                read_only = read_only or bool(args.get("read_only"))
                result: Any = {"read_only": read_only}
            elif op in ACTION_OPS and read_only:
                raise AdminRequestError("read_only", f"read-only attach: {op} refused")
            else:
                # A slow turn spent answering is named for the request.
                with self.view.hub.turns.doing(f"admin {op}"):
                    result = self._run(op, args, lease)
        except AdminRequestError as exc:
            error = {"code": exc.code, "message": str(exc)}
            return {"v": VERSION, "id": request_id, "ok": False, "error": error}, read_only
        return {"v": VERSION, "id": request_id, "ok": True, "result": result}, read_only

    def _run(self, op: str, args: dict[str, Any], lease: Leases) -> Any:
        view = self.view
        try:
            if op == "frame":
                return lease.frames.frame(view, args)
            if op in ("status", "overview"):
                # The cluster as this node sees it (None on a single server).
                cluster = view.cluster_info()
                wire_cluster = to_wire(cluster) if cluster is not None else None
                return {**overview_to_wire(view.overview()), "cluster": wire_cluster}
            if op == "sessions":
                sort = str(args.get("sort", "id"))
                reverse = bool(args.get("reverse", False))
                text = str(args.get("filter", ""))
                offset = int(args.get("offset", 0))
                after = args.get("after")
                if after is not None:
                    at = view.position(sort, reverse, text, str(after))
                    if at is None:
                        raise AdminRequestError("bad_request", f"no live session {after!r} here")
                    offset = at + 1
                # A page at a time, so that no request holds the loop for long.
                limit = min(int(args.get("limit", 100)), PAGE_MAX)
                page = view.session_page(sort, reverse, text, offset, limit)
                return page_to_wire(page)
            if op in ("room_page", "mux_page"):
                paged = view.room_page if op == "room_page" else view.mux_page
                sort = str(args.get("sort", "name" if op == "room_page" else "id"))
                limit = min(int(args.get("limit", 100)), PAGE_MAX)
                return records_page_to_wire(
                    paged(
                        sort,
                        bool(args.get("reverse", False)),
                        str(args.get("filter", "")),
                        int(args.get("offset", 0)),
                        limit,
                    )
                )
            if op == "room":
                # A window of its members, so that a room of 100,000 is not one turn.
                limit = min(int(args.get("members_limit", ROOM_MEMBERS)), PAGE_MAX)
                room = view.room(str(args["key"]), int(args.get("members_from", 0)), limit)
                return to_wire(room) if room is not None else None
            if op == "mux_connection":
                found = view.mux_connection(str(args["key"]))
                return to_wire(found) if found is not None else None
            if op == "log_since":
                return [to_wire(e) for e in view.log_since(int(args.get("seq", 0)))]
            if op == "tap":
                return lease.tap.since(int(args.get("seq", 0)))
            if op == "tap_close":
                lease.tap.release()
                return {}
            if op == "history":
                since, limit = int(args.get("since", 0)), int(args.get("limit", 1440))
                return series_to_wire(view.traffic_history(int(args["step"]), since, limit))
            if op == "watch":
                since, limit = int(args.get("since", 0)), int(args.get("limit", 300))
                return lease.watch.series(str(args["kind"]), str(args["key"]), since, limit)
            if op == "unwatch":
                lease.watch.close(str(args["kind"]), str(args["key"]))
                return {}
            if op in RECORDS:
                fetch: Callable[[], list[Any]] = {  # type: ignore[assignment]
                    "closed_sessions": view.closed_sessions,
                    "throttle": view.throttle_state,
                    "rooms": view.rooms,
                    "mux_connections": view.mux_connections,
                    "transfers": view.transfers,
                }[op]
                return [to_wire(r) for r in fetch()]
            if op == "close":
                return {"closed": view.hub.operator_close(str(args["id"]))}
            if op == "close_ip":
                return {"closed": view.hub.operator_close_ip(str(args["ip"]))}
            if op == "broadcast":
                room = args.get("room")
                sent = view.hub.operator_broadcast(str(args["text"]), room and str(room))
                return {"sent": sent}
            if op == "drain":
                # final: a permanent stop, clients are told not to reconnect (11.3).
                view.hub.begin_shutdown(final=bool(args.get("final", False)))
                return {"state": view.overview().state}
            if op == "force":
                view.hub.force_shutdown()
                return {"state": view.overview().state}
            if op == "reload":
                # Files are read off the loop: the reply waits for that (see _session).
                return _Later(self.reload())
            if op in ("ban", "unban", "bans"):
                return ban_request(view.hub.banning, op, args, str(args.get("by", "ctl")))
        except KeyError as exc:
            raise AdminRequestError("bad_request", f"{op}: missing argument {exc}") from None
        except (TypeError, ValueError) as exc:
            raise AdminRequestError("bad_request", f"{op}: {exc}") from None
        assert op not in READ_OPS | ACTION_OPS, op
        raise AdminRequestError("unknown_op", f"unknown operation {op!r}")
