"""The live sessions' fields: the hub filters on values, the console lays the columns out.

A filter on values keeps what reading the console's cells back would keep (the
numbers are compared at the precision they are shown); each console column
names a hub field, and its title is the filter's name for that field.
"""

from __future__ import annotations

from console_fake import make_sessions
from hypothesis import given
from hypothesis import strategies as st

from verb_console.console.panes.session_columns import LIVE_COLUMNS
from verb_console.console.panes.table import cell_filter
from verb_console.hub.session_fields import BY_NAME, FIELDS, filter_rows, page_of, search_text
from verb_console.hub.snapshot import SessionInfo
from verb_console.units import (
    bytes_read_back,
    count_read_back,
    duration_read_back,
    fmt_bytes,
    fmt_count,
    fmt_duration,
    to_number,
)


@given(st.floats(min_value=-100, max_value=10**8, allow_nan=False))
def test_a_duration_read_back_without_its_text_is_what_the_text_reads_back_as(
    seconds: float,
) -> None:
    assert duration_read_back(seconds) == to_number(fmt_duration(seconds))


@given(st.integers(min_value=0, max_value=10**16))
def test_a_count_or_size_read_back_is_what_its_text_reads_back_as(n: int) -> None:
    assert count_read_back(n) == to_number(fmt_count(n))
    assert bytes_read_back(n) == to_number(fmt_bytes(n))


def test_every_column_shows_a_hub_field_and_its_title_is_that_field_s_filter_name() -> None:
    terms = {f.term: f.name for f in FIELDS}
    for column in LIVE_COLUMNS:
        assert column.field in BY_NAME, column.label
        assert terms[column.label.lower().replace(" ", "")] == column.field, column.label
    # Every field a filter names has a column: nothing is filtered on that is not shown.
    assert [f.term for f in FIELDS] == [c.label.lower().replace(" ", "") for c in LIVE_COLUMNS]


FILTERS = (
    "proto:json",
    "idle>60",
    "proto:json idle>60",
    "msgin>5k",
    "msgout<=12.3k",
    "bytesin>=1MiB proto:binary",
    "unsent<1 proto:echo",
    "uptime<1h 10.",
    "json 2001",
    "idle=1m05s",
    "room:lobby",
    "user:-",
    "state:detached",
    "left<30",
    "b>1MiB",  # "b" begins BYTES IN first
)


def _varied(count: int) -> tuple[list[SessionInfo], float]:
    """Sessions with rooms, users, and some detached with output kept for them."""
    sessions = make_sessions(count)
    now = max(s.last_activity for s in sessions) + 30
    out = []
    for i, s in enumerate(sessions):
        s = s._replace(rooms=("lobby",) if i % 4 == 0 else (), user="al" if i % 3 == 0 else None)
        if i % 7 == 0:
            s = s._replace(
                state="detached", detached_until=now + i % 60, kept=i * 13, kept_msgs=i % 40
            )
        out.append(s)
    return out, now


def test_the_hub_s_filter_on_values_keeps_what_the_console_s_cells_read_back_keep() -> None:
    """The server never formats a cell; it keeps the very rows a filter of the shown text would."""
    sessions, now = _varied(3000)
    by_cells = cell_filter(LIVE_COLUMNS, search_text)
    for text in FILTERS:
        kept, error = filter_rows(text, sessions, now)
        assert error == ""
        shown, _ = by_cells(text, sessions, now)
        assert kept == shown, text
        assert 0 < len(kept) < len(sessions), text
    # KEPT shows bytes and messages in one cell ("3.1 KiB/12"): its bytes are the value.
    kept, _ = filter_rows("kept>=1KiB state:detached", sessions, now)
    assert kept == [s for s in sessions if s.state == "detached" and s.kept >= 1024]


def test_a_bad_term_is_named_and_keeps_nothing() -> None:
    sessions = make_sessions(10)
    page = page_of(sessions, filter="colour:red idle>1")
    assert page.matched == 0 and page.rows == ()
    assert page.error.startswith("no column 'colour' here (columns: session, proto")
    page = page_of(sessions, filter="idle>soon")
    assert page.error == "'soon' is not a number, size or duration"


def test_a_page_sorts_by_a_field_s_value_with_ties_by_id_and_reverse_mirrors_it() -> None:
    sessions = make_sessions(200)
    page = page_of(sessions, "msgs_in", limit=1000)
    want = sorted(sessions, key=lambda s: (s.msgs_in, s.id))
    assert [s.id for s in page.rows] == [s.id for s in want]
    back = page_of(sessions, "msgs_in", True, offset=5, limit=10)
    assert [s.id for s in back.rows] == [s.id for s in want[::-1][5:15]]
    # No user sorts first; every field of the query sorts.
    for name in BY_NAME:
        assert page_of(sessions, name).matched == 200
