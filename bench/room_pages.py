"""What a Rooms pane refresh costs the server at 1,000, 10,000 and 100,000 rooms.

In process, on a real :class:`~verb_console.hub.hub.Hub`: N rooms of one member
each (a stand-in member: the rooms hold members by reference only). Each tick,
``--moving`` rooms get a message (counted and marked as a relay does), then the
pane's work is timed, alternated in one run:

- ``page``: what the pane asks now, ``LiveHubView.room_page`` for its window
  of 200 rooms, sorted by messages (the order that moves), from the kept order;
- ``list``: every room's record and a sort of them, which a pane that asks for
  every room costs (``LiveHubView.rooms()``; members left out, as a page
  leaves them out).

Reported: the median and p95 per tick, in ms, and their ratio to the same
figure at the smallest N (the target: within 2x at 100x the rooms).

    .venv/bin/python bench/room_pages.py [--sizes 1000 10000 100000] [--ticks 40]
        [--moving 50] [--list-max 10000] [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from dataclasses import replace
from operator import attrgetter
from pathlib import Path

from verb_console.hub.hub import Hub
from verb_console.hub.view import LiveHubView
from verb_console.settings import Settings

RESULTS = Path(__file__).resolve().parent / "results"


class Member:
    """A room member as the registry sees one: an id and its set of room names."""

    def __init__(self, sid: str) -> None:
        self.id = sid
        self.rooms: set[str] = set()


def run(size: int, ticks: int, moving: int, list_max: int) -> dict[str, dict[str, float]]:
    hub = Hub(Settings(history_size=0))
    view = LiveHubView(hub)
    rooms = hub.rooms
    for n in range(size):
        rooms.join(Member(f"10.0.{n // 250}.{n % 250}:{1000 + n}"), f"room{n:06}")
    names = list(rooms.rooms)
    view.room_page("messages", True, "", 0, 200)  # the order is made once, then kept
    by_messages = attrgetter("messages")
    times: dict[str, list[float]] = {"page": [], "list": []}
    for tick in range(ticks):
        for i in range(moving):
            room = rooms.rooms[names[(tick * 7919 + i * 104729) % size]]
            room.messages += 1
            rooms.changes.mark(room)
        kinds = ("page", "list") if size <= list_max else ("page",)
        for kind in kinds if tick % 2 else kinds[::-1]:
            start = time.perf_counter()
            if kind == "page":
                page = view.room_page("messages", True, "", 0, 200)
                assert len(page.rows) == min(200, size)
            else:
                every = [replace(r, members=()) for r in view.rooms()]
                every.sort(key=by_messages, reverse=True)
            times[kind].append(time.perf_counter() - start)
    out = {}
    for kind, got in times.items():
        if not got:
            continue
        got.sort()
        out[kind] = {
            "median_ms": round(statistics.median(got) * 1000, 3),
            "p95_ms": round(got[int(len(got) * 0.95) - 1] * 1000, 3),
        }
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 10_000, 100_000])
    parser.add_argument("--ticks", type=int, default=40)
    parser.add_argument("--moving", type=int, default=50)
    parser.add_argument("--out", type=Path)
    parser.add_argument(
        "--list-max", type=int, default=10_000, help="time `list` up to this many rooms"
    )
    args = parser.parse_args()
    runs = {str(n): run(n, args.ticks, args.moving, args.list_max) for n in args.sizes}
    first = runs[str(args.sizes[0])]
    for figures in runs.values():
        for kind, row in figures.items():
            row["vs_smallest"] = round(row["median_ms"] / max(first[kind]["median_ms"], 1e-6), 2)
    doc = {
        "bench": "room_pages",
        "when": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "load": os.getloadavg(),
        },
        "ticks": args.ticks,
        "moving_rooms_per_tick": args.moving,
        "runs": runs,
    }
    text = json.dumps(doc, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
