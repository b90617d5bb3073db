"""``e`` and ``E``: the table on show, as filtered and sorted, to a CSV or JSON file.

Exports are data for scripts and spreadsheets, not a copy of the screen: each row
is the record behind it under the admin protocol's field names (the names
``ctl --json`` prints), numbers stay numbers (bytes as integers, times as Unix
seconds), and the durations the table shows as ``1m23s`` are added in seconds
(``uptime_seconds``, ``idle_seconds``...). Every export says when it was made
and by which server.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import re
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from .panes.table import LiveTable

Record = dict[str, Any]

_DERIVED: tuple[tuple[str, tuple[str, ...], Callable[..., float]], ...] = (
    # (name, the record's fields it needs, its value from those fields and now)
    ("duration_seconds", ("connected_at", "closed_at"), lambda a, b, _now: b - a),
    ("uptime_seconds", ("connected_at", "!closed_at"), lambda a, now: now - a),
    ("idle_seconds", ("last_activity",), lambda a, now: now - a),
    ("age_seconds", ("created_at",), lambda a, now: now - a),
    ("age_seconds", ("opened_at",), lambda a, now: now - a),
    ("elapsed_seconds", ("started_at", "ended_at"), lambda a, b, now: (b or now) - a),
    ("window_left_seconds", ("window_ends",), lambda a, now: max(0.0, a - now)),
)
"""The durations a table shows, from the timestamps of the records that have them."""


def identifier(label: str) -> str:
    """A column label as an identifier: ``MSG IN`` reads ``msg_in``."""
    return re.sub(r"\W+", "_", label.strip().lower()).strip("_")


def record_fields(row: Any) -> Record:
    """A table row's record as plain fields (nested records too), without formatting."""
    if isinstance(row, tuple) and hasattr(row, "_asdict"):
        return dict(row._asdict())
    if dataclasses.is_dataclass(row) and not isinstance(row, type):
        return {f.name: getattr(row, f.name) for f in dataclasses.fields(row)}
    if isinstance(row, tuple) and len(row) == 2 and isinstance(row[0], str):
        # A room's member: its id, and its session when this server holds it.
        return record_fields(row[1]) if row[1] is not None else {"id": row[0]}
    return {"value": row}


def row_data(row: Any, now: float) -> Record:
    """The fields of ``row`` and the durations derived from them, in seconds."""
    fields = record_fields(row)
    for name, needs, derive in _DERIVED:
        present = [n for n in needs if not n.startswith("!")]
        absent = [n[1:] for n in needs if n.startswith("!")]
        if name in fields or any(n not in fields for n in present):
            continue
        if any(n in fields for n in absent) or fields[present[0]] is None:
            continue
        fields[name] = round(derive(*(fields[n] for n in present), now), 3)
    return {k: _plain(v) for k, v in fields.items()}


def _plain(value: Any) -> Any:
    if isinstance(value, tuple | list):
        return [_plain(v) for v in value]
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {k: _plain(v) for k, v in record_fields(value).items()}
    return value


def _csv_cell(value: Any) -> Any:
    """One CSV cell: numbers as they are, a list of names spaced, a list of records counted."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        if all(isinstance(v, str) for v in value):
            return " ".join(value)
        return len(value)
    return value


def table_export(
    table: LiveTable, name: str, server: Mapping[str, Any], now: float | None = None
) -> Record:
    """The JSON document of an export: when, which server, which pane, and its rows."""
    exported_at = time.time() if now is None else now
    column = table.columns[table.sort_column] if table.columns else None
    rows = [row_data(row, table.now) for row in table.rows]
    fields: list[str] = []
    for row in rows:
        fields.extend(k for k in row if k not in fields)
    return {
        "exported_at": round(exported_at, 3),
        "server": dict(server),
        "pane": name,
        "filter": table.filter_text,
        "sort": {
            "column": identifier(column.label) if column else None,
            "reverse": table.sort_reverse,
        },
        "sampled_at": round(table.now, 3),
        "total": table.total,
        "fields": fields,
        "rows": rows,
    }


SERVER_COLUMNS = ("exported_at", "server_host", "server_pid", "server_address", "server_node")
"""The columns after the record's in every CSV row: when and where it came from."""


def export_table(
    table: LiveTable,
    name: str,
    fmt: str,
    directory: Path | None = None,
    *,
    server: Mapping[str, Any] | None = None,
) -> Path:
    """Write ``table`` to ``<directory>/verb-console-<name>-<time>.<fmt>``; returns the path.

    The directory is the working directory unless given. ``fmt`` is ``csv`` (one
    header row of field names, then one row per record, each ending with
    :data:`SERVER_COLUMNS`) or ``json`` (:func:`table_export`'s document).
    """
    if fmt not in ("csv", "json"):
        raise ValueError(f"unknown export format {fmt!r}")
    doc = table_export(table, name, server or {})
    stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(doc["exported_at"]))
    folder = Path.cwd() if directory is None else directory
    path = folder / f"verb-console-{name}-{stamp}.{fmt}"
    n = 1
    while path.exists():
        n += 1
        path = folder / f"verb-console-{name}-{stamp}-{n}.{fmt}"
    with path.open("x", newline="", encoding="utf-8") as out:
        if fmt == "csv":
            srv = doc["server"]
            listeners = srv.get("listeners") or [""]
            where = [
                doc["exported_at"],
                srv.get("host"),
                srv.get("pid"),
                listeners[0].split(" ")[0],
                srv.get("node"),
            ]
            writer = csv.writer(out)
            writer.writerow([*doc["fields"], *SERVER_COLUMNS])
            for row in doc["rows"]:
                cells = [_csv_cell(row.get(f)) for f in doc["fields"]]
                writer.writerow([*cells, *map(_csv_cell, where)])
        else:
            json.dump(doc, out, indent=1)
            out.write("\n")
    return path
