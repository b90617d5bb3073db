"""Walks over every session spread over turns of the loop (hub/session_pass.py).

The hub and its sessions are the real ones, over in-memory connections (as in
test_hub_model.py); the slice is made tiny so that a few thousand sessions need
many turns whatever the machine's speed.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from helpers import FrameSplitter
from test_hub_model import MemoryOutlet

from verb_console.hub import Hub, session_pass
from verb_console.hub.session_pass import SessionPass
from verb_console.hub.uploads import UploadStore
from verb_console.settings import Settings


async def test_a_walk_is_done_a_slice_per_turn_and_sees_every_item_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(session_pass, "SLICE_S", 0.0)
    seen: list[int] = []
    turns = 0
    walking = True

    def tick() -> None:
        nonlocal turns
        turns += 1
        if walking:
            asyncio.get_running_loop().call_soon(tick)

    asyncio.get_running_loop().call_soon(tick)
    hub = SimpleNamespace(
        sessions={i: SimpleNamespace(n=i, parent=None, closing=False) for i in range(1000)}
    )

    class Walk(SessionPass):
        def visit(self, session: Any) -> bool:
            seen.append(session.n)
            return False

    walk = Walk(hub)
    walk.start()
    assert 0 < len(seen) < 1000  # the first slice at once, the rest later
    await asyncio.wait_for(walk.done.wait(), 10)
    walking = False
    assert seen == list(range(1000))
    assert walk.turns >= 1000 // 16
    assert turns >= walk.turns - 1  # the loop turned between the slices


async def test_an_operator_broadcast_to_thousands_spreads_over_turns_and_reaches_each_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(session_pass, "SLICE_S", 0.0)
    store = UploadStore(tmp_path / "uploads", per_session_limit=2)
    store.prepare()
    hub = Hub(Settings(max_per_ip=0), store)
    hub.start()
    outlets = []
    for _ in range(3000):
        outlet = MemoryOutlet()
        assert hub.admit(outlet.remote_address, outlet.remote_port) is None
        hub.attach(outlet, "json")  # type: ignore[arg-type]
        outlets.append(outlet)
    await asyncio.sleep(0)
    for o in outlets:
        o.take()  # the welcomes
    clock_labels: list[str] = []
    worked = hub.turns.worked
    monkeypatch.setattr(
        hub.turns, "worked", lambda what, took: (clock_labels.append(what), worked(what, took))
    )
    assert hub.operator_broadcast("maintenance at noon") == 3000
    reached_at_once = sum(1 for o in outlets if o.output)
    assert reached_at_once < 3000
    for _ in range(1000):
        await asyncio.sleep(0)
        if all(o.output for o in outlets):
            break
    for o in outlets:
        got = [json.loads(b) for b in FrameSplitter().feed(o.take())]
        assert [(m["type"], m["from"], m["data"]) for m in got] == [
            ("broadcast", "server", "maintenance at noon")
        ]
    assert clock_labels.count("operator broadcast") >= 3000 // 16
    hub.force_shutdown()
    await asyncio.wait_for(hub.wait_stopped(), 10)
    await store.aclose()
