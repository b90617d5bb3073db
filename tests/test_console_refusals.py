"""A refused upload shows on the Transfers pane (state refused, the error code) and in the log.

A real server in the app's loop with a 1 KiB file limit; a real json client asks
to upload more than that and is refused on the wire, and the console says so.
"""

from __future__ import annotations

from pathlib import Path

from helpers import eventually
from test_console_live import WAIT, live_console, pane_rows


async def test_a_refused_upload_is_a_transfers_row_and_a_log_row(tmp_path: Path) -> None:
    async with live_console(tmp_path, max_file_size=1024) as live:
        start = {
            "type": "file_start",
            "transferId": "big-1",
            "filename": "too-big.bin",
            "fileSize": 4096,
            "chunkSize": 1024,
            "sha256": "0" * 64,
        }
        reply = await live.json.request(start)
        assert reply["type"] == "error" and reply["code"] == "too_large"
        await live.pilot.press("5")

        def refused_row() -> bool:
            return any(
                t.state == "refused"
                and t.filename == "too-big.bin"
                and t.outcome == "too_large"
                and t.session_id == live.json.id
                and t.size == 4096
                for t in pane_rows(live, "transfers")
            )

        await eventually(refused_row, WAIT)
        pane = live.app.main.pane("transfers")
        assert "1 refused" in pane._title_text
        await live.pilot.press("6")

        def logged() -> bool:
            return any(
                e.kind == "upload" and "too-big.bin" in e.text and "refused: too_large" in e.text
                for e in pane_rows(live, "log")
            )

        await eventually(logged, WAIT)
