"""``verb-console ctl``: the console's operator actions from a shell, over the admin socket.

Plain text, or one JSON document with ``--json``. Exit status 0, or 1 with one
line on stderr when the server refuses or cannot be reached (2 for bad usage).
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn

import anyio
import orjson

from . import paths
from .client import AdminClient, AdminError
from .paths import AdminSocketError

PROG = "verb-console ctl"
PAGE = 1000


class CtlUsageError(Exception):
    pass


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise CtlUsageError(message)


def add_target_flags(parser: argparse.ArgumentParser) -> None:
    """``--admin-socket PATH | --port PORT``: which server (``attach`` shares these)."""
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--admin-socket", metavar="PATH", help="the server's admin socket")
    group.add_argument("--port", type=int, help="the server's listening port")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog=PROG, description="Operator commands for a running verb-console.")
    add_target_flags(parser)
    parser.add_argument("--json", action="store_true", help="print one JSON document")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    commands.add_parser("status", help="state, listeners, sessions and totals")
    sessions = commands.add_parser("sessions", help="the live sessions")
    sessions.add_argument("--sort", default="id", help="field to sort by (default id)")
    sessions.add_argument("--reverse", action="store_true", help="the other way round")
    sessions.add_argument("--filter", default="", help="only matching sessions")
    sessions.add_argument("--limit", type=int, default=0, help="at most this many (0: all)")
    sessions.add_argument(
        "--after", default=None, metavar="ID", help="start after this session, in this order"
    )
    commands.add_parser("rooms", help="rooms and their members")
    close = commands.add_parser("close", help="close one session")
    close.add_argument("id")
    close_ip = commands.add_parser("close-ip", help="close every session of one IP")
    close_ip.add_argument("ip")
    broadcast = commands.add_parser("broadcast", help="send a message to every session")
    broadcast.add_argument("text")
    broadcast.add_argument("--room", help="only to this room")
    history = commands.add_parser("history", help="the server's rates over time")
    history.add_argument(
        "--step", type=int, choices=(1, 10, 60), default=60, help="seconds a sample (default 60)"
    )
    history.add_argument("--last", type=int, default=60, help="the newest N samples (default 60)")
    commands.add_parser("drain", help="begin the graceful shutdown")
    commands.add_parser("reload", help="re-read what the server reloads (SIGHUP does the same)")
    return parser


def find_socket(admin_socket: str | None, port: int | None) -> Path:
    """The socket named by a flag, or the only server running."""
    if admin_socket:
        return Path(admin_socket)
    if port is not None:
        path = paths.default_path(port)
        if path.exists():
            return path
        # Nodes sharing a port (reuse_port) name their sockets PORT-NODE.sock.
        shared = [p for p in paths.running_servers() if p.stem.startswith(f"{port}-")]
        if len(shared) == 1:
            return shared[0]
        if len(shared) > 1:
            names = ", ".join(p.name for p in shared)
            raise AdminSocketError(
                f"{len(shared)} nodes share port {port} ({names}): use --admin-socket"
            )
        return path
    live = paths.running_servers()
    if not live:
        raise AdminSocketError(f"no running server found in {paths.socket_dir()}")
    if len(live) > 1:
        ports = ", ".join(p.stem for p in live)
        raise AdminSocketError(f"{len(live)} servers run (ports {ports}): choose one with --port")
    return live[0]


def _duration(seconds: float) -> str:
    seconds = max(0, int(seconds))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


def _table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    cells = [[str(c) for c in row] for row in rows]
    widths = [max([len(h)] + [len(r[i]) for r in cells]) for i, h in enumerate(headers)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip()]
    for row in cells:
        lines.append("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())
    return "\n".join(lines)


async def _all_sessions(client: AdminClient, args: argparse.Namespace) -> dict[str, Any]:
    # Page by page, each after the last row of the one before: the server answers
    # a bounded piece a request, and sessions coming and going between pages
    # shift nothing (the next page starts after a session, not at a count).
    rows: list[Any] = []
    after = args.after
    want = args.limit if args.limit > 0 else None
    while True:
        limit = PAGE if want is None else min(PAGE, want - len(rows))
        query = {"sort": args.sort, "reverse": args.reverse, "filter": args.filter}
        if after is not None:
            query["after"] = after
        page = await client.request("sessions", **query, limit=limit)
        rows.extend(page["rows"])
        if page["rows"]:
            after = page["rows"][-1][0]
        done = page["offset"] + len(page["rows"]) >= page["matched"]
        if not page["rows"] or done or (want and len(rows) >= want):
            fields = page["fields"]
            return {
                "total": page["total"],
                "matched": page["matched"],
                "sessions": [dict(zip(fields, r, strict=True)) for r in rows],
            }


def _status_text(s: dict[str, Any], hello: dict[str, Any]) -> str:
    t = s["totals"]
    lines = [
        f"state: {s['state']}",
        f"version: {s['version']}  pid: {hello.get('pid')}",
        f"uptime: {_duration(s['now'] - s['started_at'])}",
        "listeners: " + (", ".join(s["listeners"]) or "none"),
        f"sessions: {s['sessions']} (peak {s['peak_sessions']})",
        f"accepted: {t['accepted']}  rejected: {t['rejected_throttle'] + t['rejected_max']}"
        f"  slow consumers: {t['slow_consumers']}",
        f"messages: {t['msgs_in']} in, {t['msgs_out']} out"
        f"  bytes: {t['bytes_in']} in, {t['bytes_out']} out",
    ]
    if s.get("drain_deadline"):
        lines.append(f"drain ends in: {_duration(s['drain_deadline'] - s['now'])}")
    cluster = s.get("cluster")
    if cluster:
        lines += _cluster_text(cluster)
    return "\n".join(lines)


def _cluster_text(c: dict[str, Any]) -> list[str]:
    """This node, its Redis link and the nodes it knows (PROTOCOL.md section 10)."""
    others = [n for n in c["nodes"] if not n["is_self"]]
    known = ", ".join(n["name"] for n in others) or "none"
    return [
        f"cluster node: {c['node']}  redis link: {c['link']}  reconnects: {c['reconnects']}",
        f"known nodes: {len(c['nodes'])} ({c['node']}; others: {known})",
        f"cross-node messages: {c['published']} out, {c['received']} in"
        f"  ({c['msgs_out_per_s']}/s out, {c['msgs_in_per_s']}/s in)",
        f"dropped: {c['dropped']}  undeliverable: {c['undeliverable']}  queued: {c['queued']}",
    ]


async def run_command(args: argparse.Namespace) -> tuple[Any, str]:
    """Run one command; returns (the JSON document, the plain text)."""
    path = find_socket(args.admin_socket, args.port)
    async with await AdminClient.connect(path) as client:
        command = args.command
        if command == "status":
            status = await client.request("status")
            status["pid"] = client.hello.get("pid")
            status["admin_socket"] = str(path)
            return status, _status_text(status, client.hello)
        if command == "sessions":
            doc = await _all_sessions(client, args)
            now = time.time()
            rows = [
                [
                    s["id"],
                    s["protocol"],
                    _duration(now - s["connected_at"]),
                    _duration(now - s["last_activity"]),
                    s["msgs_in"],
                    s["msgs_out"],
                    s["bytes_in"],
                    s["bytes_out"],
                    s["unsent"],
                    ",".join(s["rooms"]),
                    s.get("user") or "-",
                ]
                for s in doc["sessions"]
            ]
            headers = ["SESSION", "PROTO", "UPTIME", "IDLE", "MSG IN", "MSG OUT"]
            headers += ["BYTES IN", "BYTES OUT", "UNSENT", "ROOMS", "USER"]
            text = _table(headers, rows)
            text += f"\n{len(rows)} of {doc['matched']} matching, {doc['total']} live"
            return doc, text
        if command == "rooms":
            rooms = await client.request("rooms")
            rows = [[r["name"], len(r["members"]), r["messages"]] for r in rooms]
            return {"rooms": rooms}, _table(["ROOM", "MEMBERS", "MESSAGES"], rows)
        if command == "close":
            result = await client.request("close", id=args.id)
            if not result["closed"]:
                raise AdminError("not_found", f"no live session {args.id}")
            return result, f"closed {args.id}"
        if command == "close-ip":
            result = await client.request("close_ip", ip=args.ip)
            return result, f"closed {result['closed']} sessions of {args.ip}"
        if command == "broadcast":
            result = await client.request("broadcast", text=args.text, room=args.room)
            where = f"room {args.room}" if args.room else "every session"
            return result, f"broadcast to {where}: {result['sent']} sessions"
        if command == "history":
            step, last = args.step, max(1, args.last)
            result = await client.request("history", step=step, limit=last)
            samples = result["samples"]
            # The newest sample ends at most one step ago; each before it, one step earlier.
            rows = [
                [f"-{_duration((len(samples) - i) * step)}", *(f"{v:,.1f}" for v in sample)]
                for i, sample in enumerate(samples)
            ]
            headers = ["AGO", "MSG IN/S", "MSG OUT/S", "BYTES IN/S", "BYTES OUT/S"]
            text = _table(headers, rows) if rows else f"no {step} s samples yet"
            return result, text
        if command == "drain":
            result = await client.request("drain")
            return result, f"state: {result['state']}"
        if command == "reload":
            result = await client.request("reload")
            if result["errors"]:
                raise AdminError("reload_failed", "reload: " + "; ".join(result["errors"]))
            return result, "reloaded"
    raise CtlUsageError(f"unknown command {command}")  # pragma: no cover - argparse checks


def main(argv: Sequence[str]) -> int:
    try:
        args = build_parser().parse_args(list(argv))
    except CtlUsageError as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 2
    try:
        doc, text = anyio.run(run_command, args)
    except (AdminSocketError, AdminError) as exc:
        print(f"{PROG}: {exc}", file=sys.stderr)
        return 1
    if args.json:
        sys.stdout.write(orjson.dumps(doc).decode() + "\n")
    else:
        print(text)
    return 0
