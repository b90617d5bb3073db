"""Where bans survive a restart: ``bans.json`` in ``--state-dir`` (PROTOCOL.md 12.3).

Written whole and atomically (a temporary file in the same directory, flushed
to disk, renamed over the old one, the directory flushed), so a crash leaves
the old list or the new one, never half of either. Saving runs off the event
loop (an fsync can take longer than a loop turn may); a file that cannot be
written, or that is corrupted at start, is reported and never stops the server.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import tempfile
from collections.abc import Callable
from pathlib import Path

import orjson

from .bans import Ban, BanChange, BanError

__all__ = ["FILE_NAME", "BanStore"]

FILE_NAME = "bans.json"
FORMAT = 1


class BanStore:
    """Reads and writes the ban list of one state directory."""

    def __init__(self, state_dir: str) -> None:
        self.path = Path(state_dir) / FILE_NAME
        self._saving: asyncio.Task[None] | None = None
        self._again: tuple[list[Ban], list[BanChange] | None] | None = None
        # The last save's error (None: it worked), for the caller to report once.
        self.error: str | None = None
        # What the last load found of changes not yet given to the cluster.
        self.unsent: list[BanChange] = []

    def load(self) -> tuple[list[Ban], str | None]:
        """The bans saved, and why the file could not be used (None: it could, or
        there is none yet). A corrupted file gives no bans, never an exception.
        The changes not yet given to the cluster go to :attr:`unsent`."""
        self.unsent = []
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            return [], None
        except OSError as exc:
            return [], f"cannot read {self.path}: {exc.strerror or exc}; starting with no bans"
        try:
            data = orjson.loads(raw)
            if not isinstance(data, dict) or not isinstance(data.get("bans"), list):
                raise BanError("expected an object with a list of bans")
            bans = [Ban.from_wire(b) for b in data["bans"]]
            unsent = data.get("unsent", [])
            if not isinstance(unsent, list):
                raise BanError("unsent must be a list of changes")
            self.unsent = [BanChange.from_wire(c) for c in unsent]
            return bans, None
        except (orjson.JSONDecodeError, BanError, KeyError, TypeError, ValueError) as exc:
            self.unsent = []
            return [], f"{self.path} is corrupted ({exc}); starting with no bans"

    def write(self, bans: list[Ban], unsent: list[BanChange] | None = None) -> None:
        """Write ``bans``, and the changes ``unsent`` to the cluster yet, atomically
        (blocking: run it in a thread)."""
        directory = self.path.parent
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        state: dict[str, object] = {"format": FORMAT, "bans": [b.to_wire() for b in bans]}
        if unsent:
            state["unsent"] = [c.to_wire() for c in unsent]
        body = orjson.dumps(state)
        fd, tmp = tempfile.mkstemp(prefix=".bans-", suffix=".tmp", dir=directory)
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(body)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, self.path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        dir_fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)

    def save(
        self,
        bans: list[Ban],
        report: Callable[[str | None], None],
        unsent: list[BanChange] | None = None,
    ) -> None:
        """Save ``bans`` (and ``unsent``) off the loop; a save asked during one runs
        after it, with the latest lists. ``report(error or None)`` is called after
        each attempt."""
        if self._saving is not None and not self._saving.done():
            self._again = (bans, unsent)
            return
        task = self._save((bans, unsent), report)
        self._saving = asyncio.get_running_loop().create_task(task)

    async def _save(
        self,
        state: tuple[list[Ban], list[BanChange] | None],
        report: Callable[[str | None], None],
    ) -> None:
        while True:
            try:
                await asyncio.to_thread(self.write, *state)
            except OSError as exc:
                self.error = f"cannot save bans to {self.path}: {exc.strerror or exc}"
            else:
                self.error = None
            report(self.error)
            again, self._again = self._again, None
            if again is None:
                return
            state = again

    async def wait_saved(self) -> None:
        """Until the saves asked so far are done (tests, shutdown)."""
        while self._saving is not None and not self._saving.done():
            await asyncio.shield(self._saving)
