"""The live sessions' fields as the server filters them: the same answers as the console's cells."""

from __future__ import annotations

from console_fake import make_sessions
from hypothesis import given
from hypothesis import strategies as st

from verb_console.console.panes.connections import LIVE_COLUMNS
from verb_console.hub.session_fields import LIVE_FIELDS
from verb_console.units import duration_read_back, fmt_duration, to_number


@given(st.floats(min_value=-100, max_value=10**8, allow_nan=False))
def test_a_duration_read_back_without_its_text_is_what_the_text_reads_back_as(
    seconds: float,
) -> None:
    assert duration_read_back(seconds) == to_number(fmt_duration(seconds))


@given(st.floats(min_value=0, max_value=10**7, allow_nan=False))
def test_every_numbered_field_agrees_with_its_cell_on_the_console(ago: float) -> None:
    session = make_sessions(1)[0]
    now = session.last_activity + ago
    for field, column in zip(LIVE_FIELDS, LIVE_COLUMNS, strict=True):
        assert field.label == column.label
        rendered = column.render(session, now)
        text = rendered[0] if isinstance(rendered, tuple) else rendered
        assert field.render(session, now) == text
        if field.number is not None:
            assert field.number(session, now) == to_number(text)
