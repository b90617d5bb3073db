"""A short soak run in CI: bench/soak.py with fewer clients, and its leak checks.

The server runs in its own process, so its descriptors, tasks and memory are
measured alone; see bench/soak.py for what the clients do.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

SOAK = Path(__file__).resolve().parent.parent / "bench" / "soak.py"

pytestmark = pytest.mark.timeout(180)


@pytest.fixture(scope="module")
def report() -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, str(SOAK), "--seconds", "20", "--clients", "60", "--json"],
        capture_output=True,
        text=True,
        timeout=150,
    )
    assert done.stdout, done.stderr[-2000:]
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    result["exit_status"] = done.returncode
    return result


def test_the_soak_run_has_every_protocol_and_way_of_leaving_in_it(report) -> None:
    assert set(report["clients_by_protocol"]) == {"json", "binary", "echo", "mux"}
    assert set(report["disconnects_by_kind"]) == {"fin", "rst", "rst_mid_frame", "half_close"}
    assert report["clients"] >= 100
    assert report["disconnects"] == report["clients"]
    assert report["messages_sent"] >= 5000
    assert report["uploads_completed"] >= 20
    assert report["uploads_abandoned"] >= 1


def test_every_client_got_the_answers_the_protocol_promises(report) -> None:
    assert report["client_errors"] == 0, report["client_error_samples"]
    assert report["server_errors"] == 0, report["server_error_samples"]


def test_no_session_room_transfer_task_descriptor_or_temp_file_outlives_the_clients(
    report,
) -> None:
    assert report["leaks"] == {
        "sessions": 0,
        "connections": 0,
        "json_sessions": 0,
        "rooms": 0,
        "transfers": 0,
        "temp_files": 0,
        "tasks": 0,
        "fds": 0,
    }
    assert report["leaks_found"] == 0


def test_the_server_memory_comes_back_within_10_percent_of_where_it_started(report) -> None:
    assert report["rss_after"] <= report["rss_before"] * 1.10, report["rss_growth"]
    assert report["memory_ok"]


def test_the_soak_script_exits_0_when_nothing_leaked(report) -> None:
    assert report["exit_status"] == 0
