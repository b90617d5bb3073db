"""``verb-console attach``: the same console, on a server running in another process."""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Sequence
from typing import NoReturn

from ..admin.ctl import add_target_flags, find_socket
from ..admin.paths import AdminSocketError
from ..admin.remote_view import RemoteHubView
from .app import VerbConsoleApp

PROG = "verb-console attach"


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        print(f"{PROG}: error: {message}", file=sys.stderr)
        raise SystemExit(2)


def build_app(view: RemoteHubView, refresh: float, read_only: bool) -> VerbConsoleApp:
    tasks: list[asyncio.Task[None]] = []

    async def startup() -> None:
        # The copy is refreshed beside the UI on its own loop; the UI never waits.
        tasks.append(asyncio.create_task(view.run()))

    app = VerbConsoleApp(
        view, refresh_hz=refresh, read_only=read_only, startup=startup, attached=True
    )
    app.title = f"verb console · attached to {view.path}"
    return app


def main(argv: Sequence[str]) -> int:
    parser = _Parser(prog=PROG, description="The console of a server that is already running.")
    add_target_flags(parser)
    parser.add_argument("--read-only", action="store_true", help="refuse every action")
    parser.add_argument("--refresh", type=float, default=4.0, help="refreshes per second")
    args = parser.parse_args(list(argv))
    try:
        path = find_socket(args.admin_socket, args.port)
    except AdminSocketError as exc:
        print(f"{PROG}: {exc}", file=sys.stderr)
        return 1
    view = RemoteHubView(path, read_only=args.read_only, interval=1.0 / max(args.refresh, 0.5))
    app = build_app(view, args.refresh, args.read_only)
    rc = app.run()
    view.stop()
    return 0 if rc is None else int(rc)
