"""The helpers several layers share: ``host:port`` text, the event loop choice, libc."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys

import pytest

from verb_console.address import host_port
from verb_console.hub.uploads.usage import _inotify_libc
from verb_console.libc import libc
from verb_console.memory import HeapTrimmer
from verb_console.runtime import choose_loop, format_listen


def test_host_port_brackets_an_ipv6_host_only() -> None:
    assert host_port("127.0.0.1", 8080) == "127.0.0.1:8080"
    assert host_port("localhost", 1) == "localhost:1"
    assert host_port("::1", 8080) == "[::1]:8080"
    assert host_port("fe80::1%lo", 9) == "[fe80::1%lo]:9"
    assert format_listen("::", 0, "json", tls=True) == "[::]:0 (json, tls)"


async def test_a_session_on_ipv6_is_named_with_brackets(start_server) -> None:
    runtime = await start_server(host="::1")
    reader, writer = await asyncio.wait_for(asyncio.open_connection("::1", runtime.port), 5)
    try:
        length = int(await asyncio.wait_for(reader.readuntil(b"\n"), 5))
        welcome = json.loads(await asyncio.wait_for(reader.readexactly(length), 5))
        host, port = writer.get_extra_info("sockname")[:2]
        assert welcome["id"] == f"[{host}]:{port}"
    finally:
        writer.close()


@pytest.mark.parametrize(("env", "module"), [("asyncio", "asyncio"), (None, "uvloop")])
def test_the_headless_server_runs_on_the_loop_verb_console_loop_names(
    env: str | None, module: str
) -> None:
    code = (
        "import asyncio\n"
        "from verb_console.runtime import run_loop\n"
        "async def main():\n"
        "    print(type(asyncio.get_running_loop()).__module__.split('.')[0])\n"
        "    return 0\n"
        "raise SystemExit(run_loop(main()))\n"
    )
    environ = {k: v for k, v in os.environ.items() if k != "VERB_CONSOLE_LOOP"}
    if env is not None:
        environ["VERB_CONSOLE_LOOP"] = env
    out = subprocess.run(
        [sys.executable, "-c", code], env=environ, capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == module


@pytest.mark.parametrize(("env", "chosen"), [("asyncio", "asyncio"), ("uvloop", "uvloop")])
def test_the_console_and_the_server_choose_the_loop_in_one_place(
    monkeypatch: pytest.MonkeyPatch, env: str, chosen: str
) -> None:
    """``run_console`` calls the same :func:`choose_loop` before Textual's ``asyncio.run``."""
    from verb_console.console import run

    assert run.choose_loop is choose_loop
    monkeypatch.setenv("VERB_CONSOLE_LOOP", env)
    before = asyncio.get_event_loop_policy()
    try:
        assert choose_loop() == chosen
        policy = type(asyncio.get_event_loop_policy()).__module__.split(".")[0]
        assert policy == ("uvloop" if chosen == "uvloop" else "asyncio")
    finally:
        asyncio.set_event_loop_policy(before)


def test_libc_is_loaded_once_for_the_heap_trimmer_and_the_upload_watch() -> None:
    lib = libc()
    assert lib is not None
    assert libc() is lib
    assert HeapTrimmer().libc is lib
    assert _inotify_libc() is lib
