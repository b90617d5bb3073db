"""``e`` and ``E``: the table on show, as filtered and sorted, to a CSV or JSON file."""

from __future__ import annotations

import csv
import json
import time
from pathlib import Path

from .panes.table import LiveTable


def table_records(table: LiveTable) -> tuple[list[str], list[list[str]]]:
    """Every column's label and every row's cells as shown, hidden columns included."""
    labels = [c.label.strip() for c in table.columns]
    now = table.now
    rows = []
    for row in table.rows:
        cells = []
        for column in table.columns:
            cell = column.render(row, now)
            cells.append(cell[0] if isinstance(cell, tuple) else cell)
        rows.append(cells)
    return labels, rows


def export_table(table: LiveTable, name: str, fmt: str, directory: Path | None = None) -> Path:
    """Write ``table`` to ``<directory>/verb-console-<name>-<time>.<fmt>``; returns the path.

    The directory is the working directory unless given. ``fmt`` is ``csv`` or ``json``
    (a list of objects keyed by column label).
    """
    if fmt not in ("csv", "json"):
        raise ValueError(f"unknown export format {fmt!r}")
    labels, rows = table_records(table)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    folder = Path.cwd() if directory is None else directory
    path = folder / f"verb-console-{name}-{stamp}.{fmt}"
    n = 1
    while path.exists():
        n += 1
        path = folder / f"verb-console-{name}-{stamp}-{n}.{fmt}"
    with path.open("x", newline="", encoding="utf-8") as out:
        if fmt == "csv":
            writer = csv.writer(out)
            writer.writerow(labels)
            writer.writerows(rows)
        else:
            json.dump([dict(zip(labels, r, strict=True)) for r in rows], out, indent=1)
            out.write("\n")
    return path
