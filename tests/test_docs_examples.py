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
