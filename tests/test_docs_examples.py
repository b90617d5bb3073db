"""The Python examples of the docs run, and print what the page says they print.

Every ```python block of README.md and docs/*.md whose last lines are ``#> ...``
comments is a complete program: it runs in a fresh interpreter from the
repository's root, must exit 0 within 60 s, and must print exactly those lines.
A block with no ``#>`` lines must still compile. (A small collector of our own
rather than pytest-examples: that plugin wants each output comment right after
its print call, which breaks up an example, and with pytest 8 it crashed while
reporting a failing example; this one is 40 lines and runs each block in its
own process, so no example's event loop or globals touch another's.)
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
_BLOCK = re.compile(r"^```python\n(.*?)^```", re.M | re.S)


def _examples() -> list[object]:
    found = []
    for page in PAGES:
        text = page.read_text()
        for m in _BLOCK.finditer(text):
            line = text.count("\n", 0, m.start()) + 1
            name = f"{page.relative_to(ROOT)}:{line}"
            found.append(pytest.param(m[1], id=name))
    return found


EXAMPLES = _examples()


def test_the_docs_have_runnable_examples() -> None:
    runnable = [p for p in EXAMPLES if "\n#> " in p.values[0]]  # type: ignore[attr-defined]
    assert len(runnable) >= 5


@pytest.mark.parametrize("code", EXAMPLES)
def test_example(code: str, tmp_path: Path) -> None:
    lines = code.rstrip("\n").split("\n")
    expected = []
    while lines and lines[-1].startswith("#>"):
        expected.insert(0, lines.pop()[3:])
    if not expected:
        compile(code, "<example>", "exec")
        return
    # Examples that name an admin socket under /tmp get one of their own.
    source = code.replace("/tmp/", f"{tmp_path}/")
    done = subprocess.run(
        [sys.executable, "-c", source],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.rstrip("\n").split("\n") == expected, done.stderr


# ---------------------------------------------------------------- shell transcripts
# ```text blocks that show a session at a shell prompt: `$ nc HOST PORT` (the
# line after it is typed, the rest is what the server sends back) and
# `$ printf '...' | nc HOST PORT` (all the rest is the server's). Each is played
# against a live server on an `auto` listener, as the page starts it.
_TRANSCRIPT = re.compile(r"^```text\n\$ ((?:printf .*? \| )?nc \S+ \d+)\n(.*?)^```", re.M | re.S)


def _transcripts() -> list[object]:
    found = []
    for page in PAGES:
        text = page.read_text()
        for m in _TRANSCRIPT.finditer(text):
            line = text.count("\n", 0, m.start()) + 1
            found.append(pytest.param(m[1], m[2], id=f"{page.relative_to(ROOT)}:{line}"))
    return found


def _normal(text: str) -> str:
    """What varies from run to run: the client's port and the clock."""
    text = re.sub(r"127\.0\.0\.1:\d{5}", "127.0.0.1:PORT", text)
    return re.sub(r'"timestamp":\d{13}', '"timestamp":T', text)


def test_the_docs_have_transcripts() -> None:
    commands = [p.values[0] for p in _transcripts()]  # type: ignore[attr-defined]
    assert any(c.startswith("nc ") for c in commands)
    assert any(c.startswith("printf ") for c in commands)


@pytest.mark.parametrize(("command", "shown"), _transcripts())
async def test_transcript(command: str, shown: str, tmp_path: Path) -> None:
    from verb_console.runtime import Runtime
    from verb_console.settings import Settings

    if command.startswith("nc "):
        typed, _, expected = shown.partition("\n")
        sent = typed.encode() + b"\n"
    else:  # the bytes printf writes, by the shell's own printf
        printf = command.rpartition(" | ")[0]
        sent = subprocess.run(["sh", "-c", printf], capture_output=True, check=True).stdout
        expected = shown
    expected = expected.rstrip("\n")
    runtime = Runtime(
        Settings(
            port=0,
            protocol="auto",
            upload_dir=str(tmp_path / "uploads"),
            admin_socket=str(tmp_path / "admin.sock"),
            state_dir=str(tmp_path / "state"),
        )
    )
    await runtime.start()
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", runtime.port)
        writer.write(sent)
        received = b""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(5):
                while len(_normal(received.decode()).rstrip("\n")) < len(_normal(expected)):
                    data = await reader.read(65536)
                    if not data:
                        break
                    received += data
        writer.close()
    finally:
        runtime.hub.force_shutdown()
        await runtime.hub.wait_stopped()
    assert _normal(received.decode()).rstrip("\n") == _normal(expected)


def test_the_token_example_is_shaped_like_a_token() -> None:
    """security.md's `verb-console token` output has the shape the command prints."""
    text = (ROOT / "docs" / "security.md").read_text()
    shown = re.search(r"^\$ verb-console token (\w+)\n(\S+)\n(\w+):", text, re.M)
    assert shown is not None
    done = subprocess.run(
        [sys.executable, "-m", "verb_console", "token", shown[1]], capture_output=True, text=True
    )
    token, line = done.stdout.splitlines()
    assert len(shown[2]) == len(token) and re.fullmatch(r"[\w-]+", shown[2])
    assert shown[3] == line.partition(":")[0] == shown[1]
