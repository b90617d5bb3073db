"""The filter line's language: words, ``field:value`` terms and ``field>number`` comparisons.

``json lobby`` keeps rows whose searchable text contains both words.
``proto:mux`` keeps rows whose ``proto`` field contains ``mux``; a field is
named by the start of its name (``room:lobby`` finds ``rooms``). ``idle>60``,
``unsent>=1MiB`` and ``msgin<10k`` compare a field's number: durations
(``1m05s``), sizes (``1.5 KiB``, ``2MB``) and counts (``12.3k``, ``1,024``).

The language knows rows only through :class:`Fields`: each field's name and
how to read its value from a row, as text or as a number. The hub filters the
live sessions on their values (:mod:`.hub.session_fields`); a console table
over a small list reads its values off its cells.
"""

from __future__ import annotations

import operator
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from .units import to_number

Value = str | float | None
"""A field's value: text, or a number (None: no number)."""
Read = Callable[[Any, float], Value]
"""How a field's value is read from (a row, the time now)."""


@dataclass(frozen=True, slots=True)
class Fields:
    """What a filter may name: each field's name (lower case, no spaces), and its read,
    in order (a name's start finds the first field it begins)."""

    names: tuple[str, ...]
    reads: tuple[Read, ...]
    search: Callable[[Any], str]
    """What a bare word is looked for in."""


_TERM = re.compile(r"^(?P<field>[a-z][a-z ]*?)\s*(?P<op>:|>=|<=|!=|=|>|<)\s*(?P<value>.*)$")
_COMPARE: dict[str, Callable[[float, float], bool]] = {
    ">": operator.gt,
    "<": operator.lt,
    ">=": operator.ge,
    "<=": operator.le,
}


class BadFilter(ValueError):
    """A term names no field, or compares with something that is not a number."""


Test = Callable[[Any, float], bool]


def compile_filter(text: str, fields: Fields) -> tuple[Test, frozenset[int]]:
    """A test of ``(row, now)`` keeping the rows that satisfy every term of ``text``,
    and the fields its terms name (by index); raises :class:`BadFilter`."""
    words: list[str] = []
    tests: list[Test] = []
    used: set[int] = set()
    for word in text.lower().split():
        match = _TERM.match(word)
        if match is None:
            words.append(word)
            continue
        name, op, value = match.group("field", "op", "value")
        found = _field(fields.names, name.replace(" ", ""))
        used.add(found)
        tests.append(_term(fields.reads[found], op, value))
    search = fields.search
    if words:
        tests.insert(0, lambda row, _now: all(w in search(row).lower() for w in words))
    if len(tests) == 1:
        return tests[0], frozenset(used)
    return lambda row, now: all(t(row, now) for t in tests), frozenset(used)


def _field(names: Sequence[str], name: str) -> int:
    """The field a term names: its whole name, else the first that begins so."""
    found = next((i for i, n in enumerate(names) if n == name), None)
    if found is None:
        found = next((i for i, n in enumerate(names) if n.startswith(name)), None)
    if found is None:
        raise BadFilter(f"no column {name!r} here (columns: {', '.join(names)})")
    return found


def _term(read: Read, op: str, value: str) -> Test:
    number = to_number(value)
    if op in _COMPARE:
        if number is None:
            raise BadFilter(f"{value!r} is not a number, size or duration")
        compare = _COMPARE[op]

        def compares(row: Any, now: float) -> bool:
            v = read(row, now)
            n = to_number(v) if isinstance(v, str) else v
            return n is not None and compare(n, number)

        return compares
    negate = op == "!="

    def equals(row: Any, now: float) -> bool:
        v = read(row, now)
        if isinstance(v, str):
            v = v.lower()
            hit = value in v if op == ":" else v == value
        else:  # a number: the same number, at the precision it is shown
            hit = v is not None and v == number
        return hit != negate

    return equals


def apply(text: str, items: Sequence[Any], fields: Fields, now: float) -> tuple[list[Any], str]:
    """The items that filter ``text`` keeps, and why none can (a bad term) or ``""``."""
    if not text.strip():
        return list(items), ""
    try:
        keep, _used = compile_filter(text, fields)
    except BadFilter as error:
        return [], str(error)
    return [r for r in items if keep(r, now)], ""
