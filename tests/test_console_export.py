"""``e`` and ``E`` on every pane: data for scripts, not the screen's text (issue 24, item 2)."""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path

import pytest
from console_fake import FixedHubView, FrozenClock

from verb_console.console import VerbConsoleApp
from verb_console.console.export import SERVER_COLUMNS
from verb_console.console.keys import PANE_NAMES

# What a display string looks like: a unit after a number, a duration, a thousands comma.
DISPLAY = re.compile(
    r"^\d[\d.,]*\s?(B|KiB|MiB|GiB|k|M|/s)$|^\d+[dhm]\d+[hms]$|^\d+s$|^\d{1,3}(,\d{3})+$"
)


async def test_every_pane_exports_numbers_as_numbers_under_identifier_names(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    clock = FrozenClock()
    app = VerbConsoleApp(FixedHubView(clock), clock=clock)
    async with app.run_test(size=(80, 24)) as pilot:
        for n, name in enumerate(PANE_NAMES, 1):
            await pilot.press(str(n), "e", "E")
            await pilot.pause()
            [json_path] = tmp_path.glob(f"verb-console-{name}-*.json")
            [csv_path] = tmp_path.glob(f"verb-console-{name}-*.csv")
            doc = json.loads(json_path.read_text())
            assert doc["pane"] == name and doc["server"]["host"]
            for field in doc["fields"]:
                assert field.isidentifier() and field == field.lower(), (name, field)
            for row in doc["rows"]:
                for field, value in row.items():
                    assert not (isinstance(value, str) and DISPLAY.match(value)), (name, field)
            with csv_path.open() as f:
                header, *rows = list(csv.reader(f))
            assert header == [*doc["fields"], *SERVER_COLUMNS]
            assert len(rows) == len(doc["rows"])
            for row in rows:
                for cell in row:
                    assert not DISPLAY.match(cell), (name, cell)
