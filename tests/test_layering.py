"""The layering contracts of pyproject.toml hold, the wire-bytes rule among them
(ARCHITECTURE.md: only protocols/ parses wire bytes)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.timeout(120)


def test_every_import_contract_is_kept_and_the_wire_bytes_rule_is_one_of_them() -> None:
    script = Path(sys.executable).with_name("lint-imports")
    done = subprocess.run(
        [str(script), "--no-cache"], cwd=ROOT, capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Only protocols/ parses wire bytes KEPT" in done.stdout
    assert "The hub handles decoded messages, not JSON text KEPT" in done.stdout
    assert "0 broken" in done.stdout
