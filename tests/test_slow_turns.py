"""The slowest recent loop turns: measured by the hub's turn clock, named by the
work that took them, and shown by ``ctl status``."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from console_fake import FixedHubView, FrozenClock

from verb_console.console.app import VerbConsoleApp
from verb_console.hub.turns import TurnClock
from verb_console.hub.view import LiveHubView


async def hold_the_loop(seconds: float) -> None:
    """One turn that takes ``seconds`` (the callback blocks), then a few turns more."""
    loop = asyncio.get_running_loop()
    loop.call_soon(time.sleep, seconds)
    await asyncio.sleep(0.05)


async def test_a_long_turn_is_noted_with_the_work_that_took_it() -> None:
    clock = TurnClock()
    clock.start()
    try:
        with clock.doing("refresh"):
            time.sleep(0.06)
        await asyncio.sleep(0.05)
        await hold_the_loop(0.04)  # unlabelled
        turns = clock.slowest()
        assert turns[0].doing == "refresh" and turns[0].duration >= 0.05
        assert any(t.doing == "" and 0.025 <= t.duration < 0.055 for t in turns)
        # Work beside the loop names a turn it slowed that no labelled work took.
        clock.beside.append(lambda: "heap trim")
        await hold_the_loop(0.03)
        assert any(t.doing == "heap trim" for t in clock.slowest())
        # Every probe is in the lag histogram, the held ones above 25 ms.
        assert clock.histogram.count >= 5
        late = sum(
            n
            for bound, n in zip(clock.histogram.bounds, clock.histogram.counts, strict=False)
            if bound > 0.025
        )
        assert late + clock.histogram.counts[-1] >= 2
    finally:
        clock.stop()
    # Only the last minute counts.
    assert clock.slowest(within=0.0) == ()


async def test_ctl_status_shows_the_slowest_turns_in_text_and_json(
    start_server, tmp_path: Path
) -> None:
    sock = tmp_path / "admin.sock"
    runtime = await start_server(admin_socket=str(sock))
    with runtime.hub.turns.doing("scan"):
        time.sleep(0.2)
    await asyncio.sleep(0.05)

    def ctl(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "verb_console", "ctl", "--admin-socket", str(sock), *args],
            capture_output=True,
            text=True,
            timeout=20,
            stdin=subprocess.DEVNULL,
        )

    text = await asyncio.to_thread(ctl, "status")
    assert text.returncode == 0, text
    line = next(x for x in text.stdout.splitlines() if x.startswith("slowest loop turns"))
    assert " ms scan (" in line and "s ago)" in line
    doc = json.loads((await asyncio.to_thread(ctl, "--json", "status")).stdout)
    scan = next(t for t in doc["slowest_turns"] if t["doing"] == "scan")
    assert scan["duration_ms"] >= 195
    assert abs(scan["at"] - time.time()) < 30


async def test_a_slow_admin_request_names_the_turn_it_took(
    start_server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sock = tmp_path / "admin.sock"
    runtime = await start_server(admin_socket=str(sock))
    # The view answers the request slowly (a stand-in for a scan of many sessions).
    rooms = LiveHubView.rooms

    def slow_rooms(self: LiveHubView) -> Any:
        time.sleep(0.1)
        return rooms(self)

    monkeypatch.setattr(LiveHubView, "rooms", slow_rooms)
    done = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "verb_console", "ctl", "--admin-socket", str(sock), "rooms"],
        capture_output=True,
        timeout=20,
        stdin=subprocess.DEVNULL,
    )
    assert done.returncode == 0, done
    await asyncio.sleep(0.05)
    slow = [t for t in runtime.hub.turns.slowest() if t.doing == "admin rooms"]
    assert slow and slow[0].duration >= 0.09, runtime.hub.turns.slowest()


async def test_a_slow_console_refresh_names_the_turn_it_took() -> None:
    clock = TurnClock()

    class SlowView(FixedHubView):
        def overview(self) -> Any:
            time.sleep(0.06)
            return super().overview()

    view_clock = FrozenClock()
    app = VerbConsoleApp(SlowView(view_clock), clock=view_clock, turns=clock, refresh_hz=20)
    async with app.run_test(size=(120, 40)) as pilot:
        clock.start()
        try:
            for _ in range(40):
                await pilot.pause(0.05)
                if any(t.doing == "console refresh" for t in clock.slowest()):
                    break
        finally:
            clock.stop()
    refresh = [t for t in clock.slowest() if t.doing == "console refresh"]
    assert refresh and refresh[0].duration >= 0.05, clock.slowest()
