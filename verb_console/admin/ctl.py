"""``verb-console ctl``: the console's operator actions from a shell, over the admin socket.

Plain text in human units (``1.5 KiB``, ``3m05s``, ``1 session``), or one JSON
document with ``--json`` (before or after the command) carrying the raw numbers:
bytes as integers, times as Unix seconds, under the admin protocol's field names.
Exit status 0, or 1 with one line on stderr when the server refuses or cannot be
reached (2 for bad usage).
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn

import anyio
import orjson

from ..hub.bans import BanError, format_duration
from ..units import fmt_byte_rate, fmt_bytes, fmt_count, fmt_duration, fmt_int, fmt_rate, plural
from . import paths
from .bans import bans_text, check_ban_args
from .client import AdminClient, AdminError
from .paths import AdminSocketError

PROG = "verb-console ctl"
PAGE = 1000
WAIT_POLL_S = 0.25
"""How often ``ctl drain --wait`` asks the server how the drain goes."""


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
    _json_after_command(commands)
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
    drain = commands.add_parser("drain", help="begin the graceful shutdown")
    drain.add_argument(
        "--final",
        action="store_true",
        help="a permanent stop: clients are told not to reconnect",
    )
    drain.add_argument(
        "--wait",
        action="store_true",
        help="print sessions and time left as they change; exit once the server is gone",
    )
    commands.add_parser("reload", help="re-read what the server reloads (SIGHUP does the same)")
    ban = commands.add_parser("ban", help="ban an address, a network (CIDR) or user:NAME")
    ban.add_argument("target", metavar="TARGET")
    ban.add_argument("--for", dest="duration", help="30s, 10m, 2h, 7d (default: until unbanned)")
    unban = commands.add_parser("unban", help="lift a ban")
    unban.add_argument("target", metavar="TARGET")
    commands.add_parser("bans", help="the live bans")
    return parser


def _json_after_command(commands: Any) -> None:
    """Let every command take ``--json`` after its name too (``ctl status --json``).

    The flag is added to each command's parser once they exist, by wrapping
    ``add_parser``; ``SUPPRESS`` leaves the top-level ``--json`` alone when absent.
    """
    add_parser = commands.add_parser

    def add_with_json(name: str, **kwargs: Any) -> argparse.ArgumentParser:
        sub: argparse.ArgumentParser = add_parser(name, **kwargs)
        sub.add_argument(
            "--json", action="store_true", default=argparse.SUPPRESS, help="print one JSON document"
        )
        return sub

    commands.add_parser = add_with_json


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


def _rate_text(field: str, value: float) -> str:
    """A history sample as ``ctl history`` shows it: bytes fields in bytes a second."""
    return fmt_byte_rate(value) if field.startswith("bytes") else fmt_rate(value)


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
        if page.get("error"):
            raise AdminError("bad_filter", page["error"])
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


def _detached_cells(s: dict[str, Any], now: float) -> list[str]:
    """STATE, LEFT and KEPT of a session: a detached one's resume window (PROTOCOL.md
    11.1), its time left, and the bytes/messages kept for it to replay."""
    until = s.get("detached_until")
    if until is None:
        return [s.get("state", "live"), "-", "-"]
    kept = f"{fmt_bytes(s.get('kept', 0))}/{fmt_count(s.get('kept_msgs', 0))}"
    return [s.get("state", "detached"), fmt_duration(max(0.0, until - now)), kept]


def _history_cells(r: dict[str, Any]) -> list[str]:
    """EPOCH, OFFSET, HISTORY and HIST SIZE of a room (PROTOCOL.md 11.2); "-" with history off."""
    if not r.get("epoch"):
        return ["-", "-", "-", "-"]
    return [r["epoch"], fmt_int(r["offset"]), fmt_int(r["history"]), fmt_bytes(r["history_bytes"])]


def _status_text(s: dict[str, Any], hello: dict[str, Any]) -> str:
    t = s["totals"]
    lines = [
        f"state: {s['state']}",
        f"version: {s['version']}  pid: {hello.get('pid')}",
        f"uptime: {fmt_duration(s['now'] - s['started_at'])}",
        "listeners: " + (", ".join(s["listeners"]) or "none"),
        f"sessions: {fmt_int(s['sessions'])} (peak {fmt_int(s['peak_sessions'])})",
        f"accepted: {fmt_int(t['accepted'])}"
        f"  rejected: {fmt_int(t['rejected_throttle'] + t['rejected_max'])}"
        f"  slow consumers: {fmt_int(t['slow_consumers'])}",
        f"messages: {fmt_int(t['msgs_in'])} in, {fmt_int(t['msgs_out'])} out"
        f"  bytes: {fmt_bytes(t['bytes_in'])} in, {fmt_bytes(t['bytes_out'])} out",
    ]
    refusals = s.get("refusals")
    if refusals:
        lines.append(
            "refusals: " + "  ".join(f"{k.replace('_', ' ')}: {v}" for k, v in refusals.items())
        )
    if s.get("drain_deadline"):
        lines.append(_drain_line(s) + (" (final)" if s.get("drain_final") else ""))
    lines.append("slowest loop turns (last minute): " + _turns_text(s, s["now"]))
    cluster = s.get("cluster")
    if cluster:
        lines += _cluster_text(cluster)
    return "\n".join(lines)


def _turns(status: dict[str, Any]) -> list[dict[str, Any]]:
    """The overview's slowest turns (``[seconds, at, doing]``) as named fields."""
    return [
        {"duration_ms": round(t[0] * 1000, 1), "at": t[1], "doing": t[2]}
        for t in status.get("slowest_turns") or ()
    ]


def _turns_text(status: dict[str, Any], now: float) -> str:
    turns = status["slowest_turns"]
    if not turns:
        return "none over 5 ms"
    return ", ".join(
        f"{t['duration_ms']:g} ms{' ' + t['doing'] if t['doing'] else ''}"
        f" ({fmt_duration(max(0.0, now - t['at']))} ago)"
        for t in turns
    )


def _cluster_text(c: dict[str, Any]) -> list[str]:
    """This node, its Redis link and the nodes it knows (PROTOCOL.md section 10)."""
    others = [n for n in c["nodes"] if not n["is_self"]]
    known = ", ".join(n["name"] for n in others) or "none"
    return [
        f"cluster node: {c['node']}  redis link: {c['link']}  reconnects: {c['reconnects']}",
        f"known nodes: {len(c['nodes'])} ({c['node']}; others: {known})",
        f"cross-node messages: {fmt_int(c['published'])} out, {fmt_int(c['received'])} in"
        f"  ({fmt_rate(c['msgs_out_per_s'])} out, {fmt_rate(c['msgs_in_per_s'])} in)",
        f"dropped: {fmt_int(c['dropped'])}  undeliverable: {fmt_int(c['undeliverable'])}"
        f"  queued: {fmt_int(c['queued'])}",
    ]


def _drain_line(s: dict[str, Any]) -> str:
    """``draining: 3 left, 12 s left``: sessions the drain has still to close, and
    the grace period's time left (rounded up to whole seconds)."""
    deadline = s.get("drain_deadline")
    seconds = math.ceil(max(0.0, deadline - s["now"])) if deadline is not None else 0
    return f"draining: {s.get('drain_left', 0)} left, {seconds} s left"


def _process_gone(pid: int) -> bool:
    """True once ``pid`` has exited (a zombie waiting for its parent counts as gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return True
    except OSError:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        except PermissionError:
            return False
        return False
    # The state follows the parenthesised command name, which may hold spaces.
    return stat.rpartition(")")[2].split()[0] in ("Z", "X")


async def _wait_drained(client: AdminClient, as_json: bool) -> tuple[Any, str]:
    """Follow a drain until the server process is gone, printing each change.

    Made for scripts and systemd's ``ExecStop``: it returns (exit status 0)
    only once the process has exited, so a restart chained after it finds the
    port free.
    """
    pid = int(client.hello.get("pid") or 0)
    shown = ""
    while True:
        try:
            status = await client.request("status")
        except (AdminSocketError, AdminError):
            break  # the admin socket closes at the very end of the shutdown
        if status["state"] == "stopped":
            break
        line = _drain_line(status)
        if line != shown:
            shown = line
            if as_json:
                left = status.get("drain_left", 0)
                deadline = status.get("drain_deadline") or status["now"]
                doc = {"state": status["state"], "sessions_left": left}
                doc["seconds_left"] = round(max(0.0, deadline - status["now"]), 1)
                print(orjson.dumps(doc).decode(), flush=True)
            else:
                print(line, flush=True)
        await anyio.sleep(WAIT_POLL_S)
    while pid and not _process_gone(pid):
        await anyio.sleep(0.02)
    return {"state": "stopped", "pid": pid}, f"stopped (pid {pid} has exited)"


async def run_command(args: argparse.Namespace) -> tuple[Any, str]:
    """Run one command; returns (the JSON document, the plain text)."""
    if args.command == "ban":
        try:
            check_ban_args(args.target, args.duration)
        except BanError as exc:
            raise AdminError("bad_target", str(exc)) from None
    path = find_socket(args.admin_socket, args.port)
    async with await AdminClient.connect(path) as client:
        command = args.command
        if command == "status":
            status = await client.request("status")
            status["pid"] = client.hello.get("pid")
            status["admin_socket"] = str(path)
            status["slowest_turns"] = _turns(status)
            return status, _status_text(status, client.hello)
        if command == "sessions":
            doc = await _all_sessions(client, args)
            now = time.time()
            rows = [
                [
                    s["id"],
                    s["protocol"],
                    fmt_duration(now - s["connected_at"]),
                    fmt_duration(now - s["last_activity"]),
                    fmt_count(s["msgs_in"]),
                    fmt_count(s["msgs_out"]),
                    fmt_bytes(s["bytes_in"]),
                    fmt_bytes(s["bytes_out"]),
                    fmt_bytes(s["unsent"]),
                    ",".join(s["rooms"]),
                    s.get("user") or "-",
                    *_detached_cells(s, now),
                ]
                for s in doc["sessions"]
            ]
            headers = ["SESSION", "PROTO", "UPTIME", "IDLE", "MSG IN", "MSG OUT"]
            headers += ["BYTES IN", "BYTES OUT", "UNSENT", "ROOMS", "USER", "STATE", "LEFT", "KEPT"]
            text = _table(headers, rows)
            text += f"\n{fmt_int(len(rows))} of {fmt_int(doc['matched'])} matching,"
            text += f" {fmt_int(doc['total'])} live"
            return doc, text
        if command == "rooms":
            rooms = await client.request("rooms")
            rows = [
                [r["name"], fmt_int(len(r["members"])), fmt_int(r["messages"]), *_history_cells(r)]
                for r in rooms
            ]
            headers = ["ROOM", "MEMBERS", "MESSAGES", "EPOCH", "OFFSET", "HISTORY", "HIST SIZE"]
            return {"rooms": rooms}, _table(headers, rows)
        if command == "close":
            result = await client.request("close", id=args.id)
            if not result["closed"]:
                raise AdminError("not_found", f"no live session {args.id}")
            return result, f"closed {args.id}"
        if command == "close-ip":
            result = await client.request("close_ip", ip=args.ip)
            return result, f"closed {plural(result['closed'], 'session')} of {args.ip}"
        if command == "broadcast":
            result = await client.request("broadcast", text=args.text, room=args.room)
            where = f"room {args.room}" if args.room else "every session"
            return result, f"broadcast to {where}: {plural(result['sent'], 'session')}"
        if command == "history":
            step, last = args.step, max(1, args.last)
            result = await client.request("history", step=step, limit=last)
            samples = result["samples"]
            # The newest sample ends at most one step ago; each before it, one step earlier.
            rows = [
                [
                    f"-{fmt_duration((len(samples) - i) * step)}",
                    *(_rate_text(f, v) for f, v in zip(result["fields"], sample, strict=False)),
                ]
                for i, sample in enumerate(samples)
            ]
            headers = ["AGO", "MSG IN/S", "MSG OUT/S", "BYTES IN/S", "BYTES OUT/S"]
            text = _table(headers, rows) if rows else f"no {step} s samples yet"
            return result, text
        if command == "drain":
            result = await client.request("drain", final=args.final)
            if args.wait:
                return await _wait_drained(client, args.json)
            return result, f"state: {result['state']}"
        if command == "reload":
            result = await client.request("reload")
            if result["errors"]:
                raise AdminError("reload_failed", "reload: " + "; ".join(result["errors"]))
            return result, "reloaded"
        if command in ("ban", "unban", "bans"):
            return await ban_command(client, args)
    raise CtlUsageError(f"unknown command {command}")  # pragma: no cover - argparse checks


async def ban_command(client: AdminClient, args: argparse.Namespace) -> tuple[Any, str]:
    """``ban``, ``unban`` and ``bans`` (``--json``: the ban, or the array of bans)."""
    if args.command == "bans":
        bans = (await client.request("bans"))["bans"]
        return bans, bans_text(bans)
    if args.command == "ban":
        ban = (await client.request("ban", target=args.target, duration=args.duration))["ban"]
        left = None if ban["expires"] is None else ban["expires"] - ban["created"]
        return ban, f"banned {ban['target']} ({format_duration(left)})"
    gone = (await client.request("unban", target=args.target))["unban"]
    if gone is None:
        raise AdminError("not_found", f"no ban of {args.target}")
    return gone, f"unbanned {gone['target']}"


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
