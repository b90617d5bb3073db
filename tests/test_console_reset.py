"""A peer that resets its connection: one Log row with a clear reason, no error rows.

A real json client on 127.0.0.1 sets SO_LINGER 0 and closes, so the server gets a
TCP RST; the console's Log pane and the closed-sessions list say so in words.
"""

from __future__ import annotations

import asyncio
import socket
import struct
from pathlib import Path

from helpers import eventually
from test_console_live import WAIT, live_console, pane_rows


async def test_a_reset_by_the_peer_is_one_close_row_that_says_so(tmp_path: Path) -> None:
    async with live_console(tmp_path) as live:
        _reader, writer = await asyncio.open_connection("127.0.0.1", live.runtime.port)
        await writer.drain()
        sock = writer.get_extra_info("socket")
        host, port = sock.getsockname()[:2]
        sid = f"{host}:{port}"
        await eventually(lambda: sid in live.runtime.hub.sessions, WAIT)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        writer.write(b"5\nhello")
        writer.transport.abort()
        await live.pilot.press("6")

        def rows() -> list[str]:
            return [f"{e.kind} {e.text}" for e in pane_rows(live, "log") if sid in e.text]

        await eventually(lambda: any(r.startswith("close ") for r in rows()), WAIT)
        await asyncio.sleep(0.3)
        about = [r for r in rows() if not r.startswith("connect ")]
        assert about == [f"close {sid} closed: connection_error (reset by the peer)"]
        closed = next(c for c in live.runtime.hub.closed_log if c.id == sid)
        assert (closed.reason, closed.detail) == ("connection_error", "reset by the peer")
