"""Pages of what a console lists (sessions, rooms, mux connections), sorted and filtered
on their values, at a cost that does not grow with how many there are.

A :class:`Query` says what a kind of row can be sorted and filtered by: one
:class:`Field` per name a query sorts by and a filter term names. A
:class:`Listing` answers a page of one registry from the orders kept for it
(:mod:`.order`): a tick costs what changed since the last and the page's rows.
A filter on an age (``idle>60``) moves with the clock, with no event to follow,
so no order can keep it: it is walked over the kept order of its sort instead,
:attr:`Listing.step` rows a call (:class:`_Walk`), and a page is read from the
last whole walk while the next goes on. A call costs the step, not the registry;
the answer is as old as a walk (at 100,000 sessions and four pages a second,
five seconds). :meth:`Query.page_of` is the plain answer over a list, which a
fixed view gives and the kept orders must equal.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from operator import attrgetter
from typing import Any, Generic, NamedTuple, TypeVar

from ..filtering import BadFilter, Fields, Read, Test, compile_filter
from ..units import bytes_read_back, count_read_back, duration_read_back
from .order import Changing, Order, Orders
from .snapshot import Page, SessionQuery

R = TypeVar("R")
S = TypeVar("S", bound=Changing)

#: Rows a page on an age filter tests per call (see :class:`_Walk`).
WALK_STEP = 5_000
#: Walks kept at most: one for each (sort, filter) consoles ask for.
WALKS_KEPT = 8


class _Walk:
    """A filter that moves with the clock, walked over the kept order of a sort.

    ``found`` gathers, in that order, the ids the filter keeps from where the walk
    began up to ``pos``; when it reaches the end it becomes ``done``, the answer
    pages are read from, and the next walk begins. A row that moves in the order
    while the walk passes may be met twice (``seen`` keeps it once) or not at all
    (the next walk finds it).
    """

    __slots__ = ("done", "found", "pos", "seen", "used")

    def __init__(self) -> None:
        self.pos = 0
        self.found: list[str] = []
        self.seen: set[str] = set()
        self.done: list[str] | None = None
        self.used = 0.0


class Field(NamedTuple):
    """A field of a row a query sorts by (``name``) and a filter names (``term``)."""

    name: str  # the record's attribute
    term: str  # what a filter term calls it (a console column's title, spaces out)
    read: Read  # its value for a filter: text, or a number at the precision shown
    key: Callable[[Any], Any] | None = None  # the sort key, when not the attribute itself
    clock: bool = False  # the value moves with the clock (an age): no order keeps a filter on it

    @property
    def sort_key(self) -> Callable[[Any], Any]:
        return self.key if self.key is not None else attrgetter(self.name)


def text(name: str) -> Read:
    get = attrgetter(name)
    return lambda r, _now: get(r)


def count(name: str) -> Read:
    get = attrgetter(name)
    return lambda r, _now: count_read_back(get(r))


def size(name: str) -> Read:
    get = attrgetter(name)
    return lambda r, _now: bytes_read_back(get(r))


def age(name: str) -> Read:
    """Seconds since the field's time (a start, a last read)."""
    get = attrgetter(name)
    return lambda r, now: duration_read_back(now - get(r))


_ID = attrgetter("id")


class Query:
    """What one kind of row is sorted and filtered by; ties go by ``id``."""

    def __init__(
        self,
        fields: Sequence[Field],
        search: Callable[[Any], str],
        word: Callable[[str], Test] | None = None,
    ) -> None:
        self.fields = tuple(fields)
        self.by_name = {f.name: f for f in reversed(self.fields)}  # the first of a name
        self.filter_fields = Fields(
            tuple(f.term for f in self.fields), tuple(f.read for f in self.fields), search
        )
        self._word = word

    def sort_key(self, name: str) -> Callable[[Any], Any]:
        """The sort key of field ``name``; ValueError for a field no query sorts by."""
        field = self.by_name.get(name)
        if field is None:
            raise ValueError(f"unknown sort key {name!r}")
        return field.sort_key

    def compile(self, text: str) -> tuple[Test, bool]:
        """Filter ``text`` as a test of ``(record, now)``, and whether its answer moves
        with the clock (a term on an age); raises :class:`BadFilter`."""
        needle = text.strip().lower()
        one_word = needle and " " not in needle and not any(c in needle for c in ":<>=")
        if self._word is not None and one_word:
            return self._word(needle), False  # the common case, made fast
        test, used = compile_filter(text, self.filter_fields)
        return test, any(self.fields[i].clock for i in used)

    def filter_rows(self, text: str, rows: Sequence[Any], now: float) -> tuple[list[Any], str]:
        """The rows filter ``text`` keeps, in order, and why none can (a bad term) or ``""``."""
        if not text.strip():
            return list(rows), ""
        try:
            keep, _clock = self.compile(text)
        except BadFilter as error:
            return [], str(error)
        return [r for r in rows if keep(r, now)], ""

    def page_of(
        self,
        records: Sequence[Any],
        sort: str,
        reverse: bool = False,
        filter: str = "",
        offset: int = 0,
        limit: int = 100,
        now: float = 0.0,
        frozen: Callable[[Any], Any] | None = None,
    ) -> Page[Any]:
        """Filter, sort (ties by id; ``reverse`` mirrors the whole order) and slice ``records``."""
        key = self.sort_key(sort)
        rows, error = self.filter_rows(filter, records, now)
        rows.sort(key=_ID, reverse=reverse)
        rows.sort(key=key, reverse=reverse)
        matched = len(rows)
        offset = max(0, min(offset, matched))
        picked = rows[offset : offset + max(0, limit)]
        out = tuple(map(frozen, picked)) if frozen is not None else tuple(picked)
        query = SessionQuery(sort, reverse, filter, offset, limit)
        return Page(len(records), matched, offset, out, query, error)


class Listing(Generic[S, R]):
    """Pages of one registry's rows (those ``kind`` keeps), from kept orders.

    ``view`` is what the query's fields read of a row (a live view, or a record);
    ``record`` the frozen record a page carries; ``keys`` faster sort keys of the
    rows themselves, in the same order as the fields' own.
    """

    def __init__(
        self,
        name: str,
        orders: Orders[S],
        query: Query,
        view: Callable[[S], Any],
        record: Callable[[S], R],
        kind: Callable[[S], bool] | None = None,
        keys: dict[str, Callable[[S], Any]] | None = None,
    ) -> None:
        self.name = name
        self.orders = orders
        self.query = query
        self.view = view
        self.record = record
        self.kind = kind
        self.keys = keys or {}
        self.step = WALK_STEP
        self._walks: dict[tuple[str, str], _Walk] = {}

    def _key(self, sort: str) -> Callable[[S], Any]:
        key = self.keys.get(sort)
        if key is not None:
            return key
        field_key, view = self.query.sort_key(sort), self.view
        return lambda row: field_key(view(row))

    def order(self, sort: str, filter: str) -> Order[S] | None:
        """The kept order of (``sort``, ``filter``), up to date; None when the filter
        moves with the clock. ValueError for a bad sort, BadFilter for a bad term."""
        key = self._key(sort)
        text = filter.strip()
        kind = self.kind
        keep = kind
        if text:
            test, clock = self.query.compile(text)
            if clock:
                return None
            view = self.view
            if kind is None:
                keep = lambda s: test(view(s), 0.0)  # noqa: E731 - the clock plays no part
            else:
                keep = lambda s: kind(s) and test(view(s), 0.0)  # noqa: E731
        return self.orders.get((self.name, sort, text), key, keep)

    def total(self) -> int:
        if self.kind is None:
            return len(self.orders.sessions)
        return len(self.orders.get((self.name, "", ""), _ID, self.kind))

    def page(self, sort: str, reverse: bool, filter: str, offset: int, limit: int) -> Page[R]:
        """Rows ``[offset, offset + limit)`` of the registry in (``sort``, ``filter``)."""
        query = SessionQuery(sort, reverse, filter, offset, limit)
        try:
            order = self.order(sort, filter)
        except BadFilter as error:
            return Page(self.total(), 0, 0, (), query, str(error))
        rows = self.orders.sessions
        if order is None:
            kept = self._walked(sort, filter)
            matched = len(kept)
            offset = max(0, min(offset, matched))
            if reverse:
                stop = matched - offset
                ids = kept[max(0, stop - max(0, limit)) : stop][::-1]
            else:
                ids = kept[offset : offset + max(0, limit)]
            # A row gone since the walk passed it is left out of the page.
            records = tuple(self.record(rows[i]) for i in ids if i in rows)
            return Page(self.total(), matched, offset, records, query)
        matched = len(order)
        offset = max(0, min(offset, matched))
        ids = order.ids(offset, max(0, limit), reverse)
        records = tuple(self.record(rows[i]) for i in ids)
        return Page(self.total(), matched, offset, records, query)

    def _walked(self, sort: str, filter: str) -> list[str]:
        """The ids an age filter keeps, in the order of ``sort``: the last whole walk's,
        after :attr:`step` more rows of the walk (see :class:`_Walk`); until a walk
        has ended, the part walked so far."""
        name = (sort, filter.strip())
        walk = self._walks.get(name)
        if walk is None:
            if len(self._walks) >= WALKS_KEPT:
                del self._walks[min(self._walks, key=lambda n: self._walks[n].used)]
            walk = self._walks[name] = _Walk()
        walk.used = time.monotonic()
        order = self.orders.get((self.name, sort, ""), self._key(sort), self.kind)
        test, _clock = self.query.compile(filter)
        rows, view, now = self.orders.sessions, self.view, time.time()
        found, seen = walk.found, walk.seen
        for row_id in order.ids(walk.pos, self.step):
            row = rows.get(row_id)
            if row is not None and row_id not in seen and test(view(row), now):
                seen.add(row_id)
                found.append(row_id)
        walk.pos += self.step
        if walk.pos >= len(order):
            walk.done, walk.found, walk.seen, walk.pos = found, [], set(), 0
        return walk.done if walk.done is not None else found

    def position(self, sort: str, reverse: bool, filter: str, row_id: str) -> int | None:
        """Where ``row_id`` is in the order of (``sort``, ``filter``), or None."""
        order = self.order(sort, filter)
        if order is None:
            ids = [_ID(r) for r in self.page(sort, reverse, filter, 0, 1 << 30).rows]
            return ids.index(row_id) if row_id in ids else None
        return order.position(row_id, reverse)
