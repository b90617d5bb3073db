"""A short soak run in CI: bench/soak.py with few clients for a few seconds, and its checks.

The server is a real ``verb-console --headless`` process, so its descriptors and
memory are measured alone; see bench/soak.py and bench/soak_clients.py for what
the clients and attackers do.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

SOAK = Path(__file__).resolve().parent.parent / "bench" / "soak.py"

# One worker runs the module's tests, so the soak (its fixture) runs once.
pytestmark = [pytest.mark.timeout(120), pytest.mark.xdist_group("soak")]


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    out = tmp_path_factory.mktemp("soak") / "soak.json"
    args = ["--seconds", "5", "--clients", "40", "--big-room", "20", "--warmup", "2"]
    done = subprocess.run(
        [sys.executable, str(SOAK), *args, "--settle-before", "1", "--json", "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=100,
    )
    assert done.stdout, done.stderr[-2000:]
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    result["exit_status"] = done.returncode
    assert json.loads(out.read_text())["clients"] == result["clients"]
    return result


def test_the_soak_run_has_every_protocol_attack_and_way_of_leaving_in_it(report) -> None:
    assert set(report["clients_by_kind"]) == {
        *("json", "binary", "echo", "mux", "reader"),
        *("partial_json", "mux_partial", "mux_uploads", "flood", "rejoin", "churn"),
    }
    assert set(report["disconnects_by_kind"]) == {"fin", "rst", "rst_mid_frame", "half_close"}
    assert report["clients"] >= 40
    assert report["disconnects"] == report["clients"]
    assert report["messages_sent"] >= 1000
    assert report["uploads_completed"] >= 1
    assert report["attacks"]["partial_frames"] >= 10
    assert report["attacks"]["uploads_in_flight"] >= 10
    assert report["attacks"]["flood_messages"] >= 100


def test_every_client_got_the_answers_the_protocol_promises(report) -> None:
    assert report["client_errors"] == 0, report["client_error_samples"]
    assert report["server_errors"] == 0, report["per_node"]


def test_no_session_room_transfer_descriptor_or_temp_file_outlives_the_clients(report) -> None:
    leaks = report["per_node"]["solo"]["leaks"]
    assert leaks == {
        "sessions": 0,
        "connections": 0,
        "rooms": 0,
        "transfers": 0,
        "temp_files": 0,
        "fds": 0,
    }
    assert report["leaks_found"] == 0


def test_the_server_memory_comes_back_within_10_percent_by_itself(report) -> None:
    node = report["per_node"]["solo"]
    assert node["rss_peak"] > node["rss_before"]
    assert node["rss_after"] <= node["rss_before"] * 1.10, node["rss_after_series"]
    assert report["memory_ok"]


def test_the_soak_script_exits_0_when_nothing_leaked(report) -> None:
    assert report["exit_status"] == 0
    assert report["ok"]
