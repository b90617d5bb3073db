"""examples/upload.py run as a program against a real server."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import re
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.timeout(30)

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "upload.py"


async def run_example(*args: str) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        str(EXAMPLE),
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 20)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


@pytest.fixture
def source(tmp_path: Path) -> Path:
    path = tmp_path / "source.bin"
    path.write_bytes(os.urandom(3_000_000))
    return path


@pytest.mark.parametrize(("listener", "protocol"), [("json", "json"), ("binary", "binary")])
async def test_the_example_uploads_a_file_and_prints_both_matching_checksums(
    start_server, tmp_path, source, listener, protocol
) -> None:
    up = tmp_path / "up"
    runtime = await start_server(protocol=listener, upload_dir=str(up))
    code, out, err = await run_example(
        str(source), "--port", str(runtime.port), "--protocol", protocol, "--chunk-size", "100000"
    )
    assert code == 0, err
    digest = hashlib.sha256(source.read_bytes()).hexdigest()
    assert f"server sha256: {digest}" in out
    assert f"local  sha256: {digest}" in out
    assert (up / "source.bin").read_bytes() == source.read_bytes()
    assert sorted(os.listdir(up)) == ["source.bin"]
    # One set of units: the bar and the summary in binary units, as the console shows.
    assert "2.9 MiB/2.9 MiB" in out, out
    assert "uploaded source.bin: 2.9 MiB (3,000,000 bytes)" in out
    # The server's Log row says the size in the same units, not a raw byte count.
    assert any("'source.bin' (2.9 MiB)" in e.text for e in runtime.hub.events)
    assert " MB" not in out and re.search(r"B/s here, server: [\d.]+ [KMG]?i?B/s", out)


@pytest.mark.parametrize("protocol", ["json", "binary"])
async def test_the_example_speaks_to_an_auto_listener_and_reports_in_json(
    start_server, tmp_path, source, protocol
) -> None:
    up = tmp_path / "up"
    runtime = await start_server(protocol="auto", upload_dir=str(up))
    code, out, err = await run_example(
        str(source),
        "--port",
        str(runtime.port),
        "--protocol",
        protocol,
        "--name",
        "n.bin",
        "--json",
    )
    assert code == 0, err
    result = json.loads(out)
    assert result["ok"] is True
    assert result["server"]["type"] == "file_complete"
    assert result["server"]["sha256"] == result["local_sha256"]
    assert result["bytes"] == 3_000_000
    assert (up / "n.bin").read_bytes() == source.read_bytes()


@pytest.mark.parametrize("protocol", ["json", "binary"])
async def test_the_example_exits_1_with_the_servers_error_when_the_name_is_taken(
    start_server, tmp_path, source, protocol
) -> None:
    up = tmp_path / "up"
    up.mkdir()
    (up / "source.bin").write_bytes(b"first")
    runtime = await start_server(protocol=protocol, upload_dir=str(up))
    code, _, err = await run_example(
        str(source), "--port", str(runtime.port), "--protocol", protocol, "--quiet"
    )
    assert code == 1
    assert "file_exists" in err
    assert (up / "source.bin").read_bytes() == b"first"
    assert os.listdir(up) == ["source.bin"]


async def test_the_example_exits_1_when_no_server_listens(tmp_path, source) -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    code, _, err = await run_example(str(source), "--port", str(port), "--quiet")
    assert code == 1
    assert "upload failed" in err
