"""The filter line's language: words, ``field:value`` terms and ``field>number`` comparisons.

``json lobby`` keeps rows whose searchable text contains both words.
``proto:mux`` keeps rows whose PROTO cell contains ``mux``; ``room:lobby`` finds
the ROOMS column by the start of its name. ``idle>60``, ``unsent>=1MiB`` and
``msgin<10k`` compare a column's value read back from its cell: durations
(``1m05s``), sizes (``1.5 KiB``, ``2MB``) and counts (``12.3k``, ``1,024``).

The console filters its tables with it, and the server its live sessions for an
attached console (:mod:`.hub.session_fields`), over the same cell text.
"""

from __future__ import annotations

import operator
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from .units import to_number


class Column(Protocol):
    """What a filter reads of a column: its label (the term's field) and its cells."""

    @property
    def label(self) -> str: ...

    def render(self, row: Any, now: float) -> str | tuple[str, str]: ...


_TERM = re.compile(r"^(?P<field>[a-z][a-z ]*?)\s*(?P<op>:|>=|<=|!=|=|>|<)\s*(?P<value>.*)$")


@dataclass(frozen=True, slots=True)
class Term:
    """One term of a filter: a column (``None``: the searchable text), an operator, a value."""

    column: int | None
    op: str
    value: str
    number: float | None


class BadFilter(ValueError):
    """A ``field:value`` term names no column of the table."""


def parse(text: str, columns: Sequence[Column]) -> list[Term]:
    """Split a filter into terms; raises :class:`BadFilter` for an unknown field."""
    terms = []
    names = [c.label.lower().replace(" ", "") for c in columns]
    for word in text.split():
        match = _TERM.match(word.lower())
        if match is None:
            terms.append(Term(None, ":", word.lower(), None))
            continue
        field, op, value = match.group("field", "op", "value")
        field = field.replace(" ", "")
        found = next((i for i, n in enumerate(names) if n == field), None)
        if found is None:
            found = next((i for i, n in enumerate(names) if n.startswith(field)), None)
        if found is None:
            known = ", ".join(n for n in names)
            raise BadFilter(f"no column {field!r} here (columns: {known})")
        number = to_number(value) if op not in (":", "=", "!=") else None
        if op not in (":", "=", "!=") and number is None:
            raise BadFilter(f"{value!r} is not a number, size or duration")
        terms.append(Term(found, op, value, number))
    return terms


def matcher(
    terms: Sequence[Term], columns: Sequence[Column], search: Callable[[Any], str], now: float
) -> Callable[[Any], bool]:
    """A predicate keeping the rows that satisfy every term."""
    words = [t.value for t in terms if t.column is None]
    # Each field term as one test of a row, resolved once: a filter runs over
    # every session, ten thousand at a time.
    checks = [_field_check(columns[t.column], t, now) for t in terms if t.column is not None]

    def keep(row: Any) -> bool:
        if words:
            text = search(row).lower()
            if not all(w in text for w in words):
                return False
        return all(check(row) for check in checks)

    return keep


def _field_check(column: Column, t: Term, now: float) -> Callable[[Any], bool]:
    # A column may give the number its cell reads back as, without the text
    # (hub/session_fields.py does for durations): the same answer, made faster.
    number = getattr(column, "number", None)
    if number is not None and t.op in _COMPARE and t.number is not None:
        compare, limit = _COMPARE[t.op], t.number

        def compare_number(row: Any) -> bool:
            n = number(row, now)  # None: the text reads back as no number
            return n is not None and compare(n, limit)

        return compare_number
    render = column.render
    if t.op == ":":
        # The common field term, with no second call per row.
        value = t.value

        def contains(row: Any) -> bool:
            rendered = render(row, now)
            return value in (rendered[0] if isinstance(rendered, tuple) else rendered).lower()

        return contains
    test = _test(t)

    def check(row: Any) -> bool:
        rendered = render(row, now)
        return test((rendered[0] if isinstance(rendered, tuple) else rendered).lower())

    return check


_COMPARE: dict[str, Callable[[float, float], bool]] = {
    ">": operator.gt,
    "<": operator.lt,
    ">=": operator.ge,
    "<=": operator.le,
}


def _test(t: Term) -> Callable[[str], bool]:
    value = t.value
    if t.op == ":":
        return lambda cell: value in cell
    if t.op == "=":
        return lambda cell: cell == value
    if t.op == "!=":
        return lambda cell: cell != value
    compare, number = _COMPARE[t.op], t.number
    if number is None:  # parse() refuses such a term; kept for a hand-made one
        return lambda cell: False

    def test(cell: str) -> bool:
        n = to_number(cell)
        return n is not None and compare(n, number)

    return test


def apply(
    text: str,
    items: Sequence[Any],
    columns: Sequence[Column],
    search: Callable[[Any], str],
    now: float,
) -> tuple[list[Any], str]:
    """The items that filter ``text`` keeps, and why none can match (a bad term) or ``""``."""
    rows = list(items)
    if not text:
        return rows, ""
    try:
        terms = parse(text, columns)
    except BadFilter as error:
        return [], str(error)
    if len(terms) == 1 and terms[0].column is None:
        # The common case, one word, stays one pass of C-level string search.
        needle = terms[0].value
        return [r for r in rows if needle in search(r).lower()], ""
    # One pass a term, each over what the ones before it kept (a predicate testing
    # every term of each row cost a generator a row): the words together first.
    words = [t.value for t in terms if t.column is None]
    if len(words) == 1:
        needle = words[0]
        rows = [r for r in rows if needle in search(r).lower()]
    elif words:
        rows = [r for r in rows if _has_all(search(r).lower(), words)]
    for t in terms:
        if t.column is not None and rows:
            rows = list(filter(_field_check(columns[t.column], t, now), rows))
    return rows, ""


def _has_all(text: str, words: Sequence[str]) -> bool:
    return all(w in text for w in words)
