"""The rates over time an attached console shows, as a :class:`~.remote_view.RemoteHubView`
holds them: the server's at the step the header asks for, and the one session's or
room's whose detail dialog is open (a watch held at the server while it is open).

Each round of the remote view asks for the samples after the newest it holds, at
most once a second (the server samples once a second), so a copy grows by the
samples and never fetches again what it has.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable

from ..hub.history import KEPT, WATCH_KEPT, WATCH_KINDS
from ..hub.snapshot import RateSeries, Severity
from .client import AdminClient, AdminError
from .protocol import series_from_wire


class _Kept:
    """The samples of one server-side series seen so far, and the newest one's number."""

    def __init__(self, kept: int) -> None:
        self.samples: deque[tuple[float, ...]] = deque(maxlen=kept)
        self.seq = 0

    def reset(self) -> None:
        self.samples.clear()
        self.seq = 0

    def merge(self, got: RateSeries) -> None:
        """Add the samples after :attr:`seq`; after a gap or a restart, start again."""
        if got.seq < self.seq or got.seq - self.seq > len(got.samples):
            self.samples.clear()
        self.samples.extend(got.samples)
        self.seq = got.seq

    def series(self, step: int, fields: tuple[str, ...], since: int, limit: int) -> RateSeries:
        n = max(0, min(self.seq - since, limit, len(self.samples)))
        samples = tuple(self.samples)[len(self.samples) - n :] if n else ()
        return RateSeries(step, self.seq, fields, samples)


class RemoteRates:
    """The rate series a remote view holds; ``poke`` wakes its task, ``tell`` notifies."""

    def __init__(self, poke: Callable[[], None], tell: Callable[[str, Severity], None]) -> None:
        self._poke = poke
        self._tell = tell
        self._step = 1
        self._history = {step: _Kept(kept) for step, kept in KEPT.items()}
        self._watch: tuple[str, str] | None = None
        self._watch_held: tuple[str, str] | None = None
        self._watch_kept = _Kept(WATCH_KEPT)
        # What the last round fetched, and when (monotonic).
        self._last: tuple[int, tuple[str, str] | None, float] = (0, None, 0.0)

    def new_server(self) -> None:
        """A new server numbers its samples afresh: forget every sample held."""
        for kept in (*self._history.values(), self._watch_kept):
            kept.reset()

    def new_connection(self) -> None:
        """A new connection holds no watch yet, and fetches at once."""
        self._watch_held = None
        self._last = (0, None, 0.0)

    async def round(self, client: AdminClient) -> None:
        # The server samples once a second: asking more often would only fetch nothing.
        now = time.monotonic()
        step = self._step
        if (step, self._watch) == self._last[:2] and now < self._last[2] + 1:
            return
        self._last = (step, self._watch, now)
        kept = self._history[step]
        raw = await client.request("history", step=step, since=kept.seq, limit=KEPT[step])
        kept.merge(series_from_wire(raw))
        wanted, held = self._watch, self._watch_held
        if held is not None and held != wanted:
            await client.request("unwatch", kind=held[0], key=held[1])
            self._watch_held = None
        if wanted is None:
            return
        try:
            kind, key = wanted
            raw = await client.request("watch", kind=kind, key=key, since=self._watch_kept.seq)
        except AdminError as exc:
            self._tell(f"rates of {wanted[1]}: {exc}", "warning")
            if self._watch == wanted:
                self._watch = None
            return
        self._watch_held = wanted
        if self._watch == wanted:
            self._watch_kept.merge(series_from_wire(raw))

    def traffic_history(self, step: int, since: int = 0, limit: int = 1440) -> RateSeries:
        kept = self._history.get(step)
        if kept is None:
            raise ValueError(f"step must be one of {', '.join(map(str, KEPT))}")
        if step != self._step:
            self._step = step
            self._poke()
        return kept.series(step, ("msgs_in", "msgs_out", "bytes_in", "bytes_out"), since, limit)

    def watch_open(self, kind: str, key: str) -> None:
        if self._watch != (kind, key):
            self._watch = (kind, key)
            self._watch_kept.reset()
            self._poke()

    def watch_close(self, kind: str, key: str) -> None:
        if self._watch == (kind, key):
            self._watch = None
            self._poke()

    def watch_series(self, kind: str, key: str, since: int = 0, limit: int = 300) -> RateSeries:
        fields = WATCH_KINDS.get(kind, ())
        if self._watch != (kind, key):
            return RateSeries(1, 0, fields, ())
        return self._watch_kept.series(1, fields, since, limit)
