"""docs/cli.md shows the command line's own --help texts, and cannot drift from them.

    python tests/test_docs_cli.py --write     # regenerate the page's help blocks

Each block of the page follows a ``<!-- help: ARGS -->`` comment and must be
exactly what ``verb-console ARGS`` prints at 80 columns. The list of commands
comes from the parsers themselves, so a new ctl command needs its block.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import itertools
import os
import re
import sys
from pathlib import Path

import pytest

from verb_console import __version__
from verb_console.admin.ctl import build_parser as ctl_parser
from verb_console.cli import main

PAGE = Path(__file__).resolve().parent.parent / "docs" / "cli.md"
_BLOCK = re.compile(r"<!-- help: (.*?) -->\n```text\n(.*?)```\n", re.S)


def commands() -> list[str]:
    """Every command whose --help the page shows, found from the parsers."""
    ctl = ctl_parser()
    sub = next(a for a in ctl._actions if isinstance(a, argparse._SubParsersAction))
    return ["--help", "attach --help", "ctl --help", "token --help"] + [
        f"ctl {name} --help" for name in sub.choices
    ]


def help_text(args: str) -> str:
    out = io.StringIO()
    old = os.environ.get("COLUMNS")
    os.environ["COLUMNS"] = "80"
    try:
        with contextlib.redirect_stdout(out), contextlib.suppress(SystemExit):
            main(args.split())
    finally:
        if old is None:
            del os.environ["COLUMNS"]
        else:
            os.environ["COLUMNS"] = old
    return out.getvalue()


def render(text: str) -> str:
    """The page with every help block as the commands print it now."""
    return _BLOCK.sub(lambda m: f"<!-- help: {m[1]} -->\n```text\n{help_text(m[1])}```\n", text)


def test_the_page_has_a_block_for_every_command() -> None:
    shown = [m[1] for m in _BLOCK.finditer(PAGE.read_text())]
    assert sorted(shown) == sorted(commands())


@pytest.mark.parametrize("args", commands())
def test_the_page_shows_what_the_command_prints(args: str) -> None:
    blocks = {m[1]: m[2] for m in _BLOCK.finditer(PAGE.read_text())}
    printed = help_text(args)
    assert printed.startswith("usage: verb-console")
    assert blocks.get(args) == printed, "run: python tests/test_docs_cli.py --write"


def test_every_flag_has_help() -> None:
    """--help is complete: no option of any command is listed without a line of help."""
    for args in commands():
        lines = [*help_text(args).split("options:", 1)[-1].splitlines(), ""]
        for line, after in itertools.pairwise(lines):
            if re.fullmatch(r"  -\S+(?: \S+)?", line):
                assert after.startswith(" " * 8), f"{args}: {line.strip()} has no help"


def test_help_points_only_at_what_the_repository_holds() -> None:
    """--help is read by people with a checkout or just the package: it cites the
    docs pages (docs/*.md, which exist), never a document outside the repository."""
    root = PAGE.parent.parent
    for args in commands():
        text = help_text(args)
        assert "PROTOCOL.md" not in text and "ARCHITECTURE.md" not in text, args
        for page in re.findall(r"docs/[\w-]+\.md", text):
            assert (root / page).exists(), f"{args}: {page}"


def test_version_prints_the_version() -> None:
    out = io.StringIO()
    with contextlib.redirect_stdout(out), pytest.raises(SystemExit) as done:
        main(["--version"])
    assert done.value.code == 0
    assert out.getvalue() == f"verb-console {__version__}\n"


if __name__ == "__main__":
    if sys.argv[1:] == ["--write"]:
        PAGE.write_text(render(PAGE.read_text()))
