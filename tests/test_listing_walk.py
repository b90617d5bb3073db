"""A page on an age filter costs a step of a walk, not the registry (issue 21).

An age (``idle>60``) moves with the clock, so no kept order can hold a filter on
it. The hub walks the kept order of the page's sort instead, a step of rows a
call, and answers from the last whole walk while the next goes on: at 100,000
sessions a console tick tests a few thousand rows, not every one.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

from helpers import eventually

from verb_console.hub.session_fields import SESSIONS
from verb_console.hub.view import LiveHubView

SESSIONS_OPEN = 12
STEP = 5


async def test_an_age_filter_is_walked_a_step_a_call_and_read_from_the_last_whole_walk(
    start_server,
) -> None:
    runtime = await start_server(max_per_ip=0)
    conns = [await asyncio.open_connection("127.0.0.1", runtime.port) for _ in range(SESSIONS_OPEN)]
    try:
        await eventually(lambda: len(runtime.hub.sessions) == SESSIONS_OPEN, 10)
        view = LiveHubView(runtime.hub)
        listing = view._sessions  # the sessions' listing: its step is the knob under test
        listing.step = STEP
        tested = [0]
        read: Callable[[Any], Any] = listing.view

        def counted(row: Any) -> Any:
            tested[0] += 1
            return read(row)

        listing.view = counted
        ids = sorted(runtime.hub.sessions)
        seen = []
        for _ in range(4):
            tested[0] = 0
            page = view.session_page("id", False, "idle<1h", 0, 100)
            assert tested[0] <= STEP  # a call tests one step of rows, however many there are
            seen.append((page.matched, [s.id for s in page.rows]))
        # The walk so far until it has ended, then the whole walk's answer while
        # the next one goes on.
        assert seen == [
            (5, ids[:5]),
            (10, ids[:10]),
            (SESSIONS_OPEN, ids),
            (SESSIONS_OPEN, ids),
        ]
        # The answer is the plain sort's, in either direction and at any offset.
        views = [s.view for s in runtime.hub.sessions.values()]
        for reverse in (False, True):
            for offset, limit in ((0, 100), (3, 4), (10, 5)):
                for _ in range(3):  # a whole walk
                    got = view.session_page("id", reverse, "idle<1h", offset, limit)
                want = SESSIONS.page_of(views, "id", reverse, "idle<1h", offset, limit, time.time())
                assert [s.id for s in got.rows] == [v.id for v in want.rows], (reverse, offset)
                assert (got.total, got.matched) == (want.total, want.matched)
        # A session gone since the walk passed it is left out of the page at once,
        # and out of the count once a walk has ended without it.
        conns.pop()[1].close()
        await eventually(lambda: len(runtime.hub.sessions) == SESSIONS_OPEN - 1, 10)
        page = view.session_page("id", False, "idle<1h", 0, 100)
        assert len(page.rows) == SESSIONS_OPEN - 1
        for _ in range(3):
            page = view.session_page("id", False, "idle<1h", 0, 100)
        assert page.matched == SESSIONS_OPEN - 1
        # Nothing matches a filter no session passes, however the walk stands.
        for _ in range(3):
            assert view.session_page("id", False, "idle>1h", 0, 100).rows == ()
    finally:
        for _reader, writer in conns:
            writer.close()
