"""The live sessions' fields as the server filters them: the same answers as the console's cells."""

from __future__ import annotations

from console_fake import make_sessions
from hypothesis import given
from hypothesis import strategies as st

from verb_console.console.panes.connections import LIVE_COLUMNS
from verb_console.hub.session_fields import LIVE_FIELDS
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


@given(st.floats(min_value=0, max_value=10**7, allow_nan=False))
def test_every_numbered_field_agrees_with_its_cell_on_the_console(ago: float) -> None:
    session = make_sessions(1)[0]
    # Counts and sizes of every magnitude, as ``ago`` varies.
    n = int(ago * 1000)
    session = session._replace(
        msgs_in=n, msgs_out=n // 7, bytes_in=n * 3, bytes_out=n // 3, unsent=n % 5000
    )
    now = session.last_activity + ago
    for field, column in zip(LIVE_FIELDS, LIVE_COLUMNS, strict=True):
        assert field.label == column.label
        rendered = column.render(session, now)
        text = rendered[0] if isinstance(rendered, tuple) else rendered
        assert field.render(session, now) == text
        if field.number is not None:
            assert field.number(session, now) == to_number(text)


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
)


def test_the_console_s_filter_keeps_what_reading_every_cell_back_keeps() -> None:
    """Numbers made without text, and one pass a term: the same rows as the slow way."""
    from dataclasses import replace

    from verb_console.filtering import apply, matcher, parse
    from verb_console.hub.session_fields import search_text

    sessions = make_sessions(3000)
    now = max(s.last_activity for s in sessions) + 30
    textual = [replace(c, number=None) for c in LIVE_COLUMNS]
    for text in FILTERS:
        kept, error = apply(text, sessions, LIVE_COLUMNS, search_text, now)
        assert error == ""
        by_text, _ = apply(text, sessions, textual, search_text, now)
        keep = matcher(parse(text, textual), textual, search_text, now)
        assert kept == by_text == [s for s in sessions if keep(s)], text
        assert 0 < len(kept) < len(sessions), text
