"""The command line (ARCHITECTURE.md "The command line"): flags, config file, errors."""

from __future__ import annotations

import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from verb_console.cli import parse_settings
from verb_console.settings import Settings

pytestmark = pytest.mark.timeout(60)

LISTENING = re.compile(r"listening on 127\.0\.0\.1:(\d+) \((\w+)\)")


def run_cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "verb_console", *args],
        capture_output=True,
        text=True,
        timeout=20,
        cwd=cwd,
        stdin=subprocess.DEVNULL,
    )


def assert_one_line_error(result: subprocess.CompletedProcess[str], *names: str) -> str:
    assert result.returncode == 2, result
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    line = lines[0]
    assert line.startswith("verb-console: error: ")
    for name in names:
        assert name in line
    return line


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def listening_port(args: list[str], cwd: Path) -> tuple[int, str]:
    """Start the headless server, read the port and protocol from its log, then kill it."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "verb_console", "--headless", *args],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        cwd=cwd,
    )
    try:
        assert proc.stderr is not None
        deadline = time.monotonic() + 15
        seen = []
        while time.monotonic() < deadline:
            line = proc.stderr.readline()
            if not line:
                break
            seen.append(line)
            match = LISTENING.search(line)
            if match:
                return int(match.group(1)), match.group(2)
        raise AssertionError(f"no listening line: {seen!r}")
    finally:
        proc.kill()
        proc.wait(5)
        if proc.stderr is not None:
            proc.stderr.close()


@pytest.mark.parametrize(
    ("args", "name"),
    [
        (["--port", "70000"], "--port"),
        (["--port", "http"], "--port"),
        (["--protocol", "ftp"], "--protocol"),
        (["--max-connections", "-1"], "--max-connections"),
        (["--max-per-ip", "1.5"], "--max-per-ip"),
        (["--throttle-window", "0"], "--throttle-window"),
        (["--idle-timeout", "-1"], "--idle-timeout"),
        (["--grace-period", "nan"], "--grace-period"),
        (["--max-frame", "0"], "--max-frame"),
        (["--max-pending", "lots"], "--max-pending"),
        (["--bogus"], "--bogus"),
        (["--port"], "--port"),
    ],
)
def test_a_bad_flag_prints_one_line_naming_it_and_exits_2(
    args: list[str], name: str, tmp_path: Path
) -> None:
    assert_one_line_error(run_cli("--headless", *args, cwd=tmp_path), name)


@pytest.mark.parametrize("flag", ["--demo", "--read-only"])
def test_console_only_flags_are_refused_with_headless(flag: str, tmp_path: Path) -> None:
    assert_one_line_error(run_cli("--headless", flag, cwd=tmp_path), flag)


@pytest.mark.parametrize(
    ("toml", "name"),
    [
        ("max_connections = -1", "max_connections"),
        ('port = "eighty"', "port"),
        ("port = 99999", "port"),
        ("protocol = 5", "protocol"),
        ('protocol = "gopher"', "protocol"),
        ("idle_timeout = true", "idle_timeout"),
        ("max-per-ip = [1]", "max_per_ip"),
        ('read_only = "yes"', "read_only"),
        ("colour = 'red'", "colour"),
        ("headless = true", "headless"),
    ],
)
def test_a_bad_config_value_or_unknown_key_prints_one_line_naming_it_and_exits_2(
    toml: str, name: str, tmp_path: Path
) -> None:
    config = tmp_path / "server.toml"
    config.write_text(toml + "\n")
    assert_one_line_error(run_cli("--headless", "--config", str(config), cwd=tmp_path), name)


def test_an_unreadable_or_invalid_config_file_exits_2(tmp_path: Path) -> None:
    missing = tmp_path / "missing.toml"
    assert_one_line_error(run_cli("--headless", "--config", str(missing), cwd=tmp_path), "config")
    broken = tmp_path / "broken.toml"
    broken.write_text("port = = 1\n")
    assert_one_line_error(run_cli("--headless", "--config", str(broken), cwd=tmp_path), "config")


def test_the_config_file_is_applied_and_the_command_line_wins(tmp_path: Path) -> None:
    config = tmp_path / "server.toml"
    config.write_text(
        "\n".join(
            [
                'host = "127.0.0.1"',
                "port = 9999",
                'protocol = "json"',
                "max-per-ip = 3",
                "throttle_window = 2.5",
                "idle_timeout = 0",
                "max_frame = 4096",
                "grace_period = 1",
                "max_rooms = 5",
                "writable_high_water_mark = 1024",
            ]
        )
    )
    settings = parse_settings(["--config", str(config), "--max-per-ip", "7", "--port", "0"])
    assert settings.port == 0
    assert settings.max_per_ip == 7
    assert settings.protocol == "json"
    assert settings.throttle_window == 2.5
    assert settings.idle_timeout == 0
    assert settings.max_frame == 4096
    assert settings.grace_period == 1
    assert settings.max_rooms == 5
    assert settings.writable_high_water_mark == 1024
    # Untouched settings keep their defaults.
    assert settings.max_connections == Settings().max_connections


def test_a_config_file_may_hold_a_verb_console_table(tmp_path: Path) -> None:
    config = tmp_path / "pyproject-like.toml"
    config.write_text('[verb-console]\nprotocol = "echo"\nmax_connections = 12\n')
    settings = parse_settings(["--config", str(config)])
    assert (settings.protocol, settings.max_connections) == ("echo", 12)


def test_the_flags_set_their_settings() -> None:
    settings = parse_settings(
        [
            "--headless",
            "--host",
            "0.0.0.0",
            "--port",
            "1234",
            "--protocol",
            "mux",
            "--upload-dir",
            "/tmp/up",
            "--max-connections",
            "5",
            "--max-per-ip",
            "0",
            "--throttle-window",
            "1.5",
            "--idle-timeout",
            "0",
            "--handshake-timeout",
            "0.5",
            "--max-frame",
            "100",
            "--max-pending",
            "200",
            "--max-file-size",
            "300",
            "--upload-quota",
            "400",
            "--grace-period",
            "0",
        ]
    )
    assert settings.headless is True
    assert (settings.host, settings.port, settings.protocol) == ("0.0.0.0", 1234, "mux")
    assert settings.upload_dir == "/tmp/up"
    assert (settings.max_connections, settings.max_per_ip) == (5, 0)
    assert (settings.throttle_window, settings.idle_timeout) == (1.5, 0)
    assert settings.handshake_timeout == 0.5
    assert (settings.max_frame, settings.max_pending) == (100, 200)
    assert (settings.max_file_size, settings.upload_quota) == (300, 400)
    assert settings.grace_period == 0


def test_the_headless_server_listens_on_the_config_port_unless_the_command_line_says_otherwise(
    tmp_path: Path,
) -> None:
    port = free_port()
    config = tmp_path / "server.toml"
    config.write_text(f'port = {port}\nprotocol = "json"\nupload_dir = "{tmp_path / "up"}"\n')
    assert listening_port(["--config", str(config)], tmp_path) == (port, "json")
    other, protocol = listening_port(["--config", str(config), "--port", "0"], tmp_path)
    assert protocol == "json"
    assert other not in (0, port)


def test_a_port_in_use_is_one_line_and_a_nonzero_exit(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run_cli("--headless", "--port", str(port), "--protocol", "json", cwd=tmp_path)
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if "error" in line.lower()]
    assert len(errors) == 1, result.stderr
