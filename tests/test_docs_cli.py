"""docs/cli.md shows the command line's own --help texts, and cannot drift from them.

    python tests/test_docs_cli.py --write     # regenerate the page's help blocks

Each block of the page follows a ``<!-- help: ARGS -->`` comment and must be
exactly what ``verb-console ARGS`` prints at 80 columns. The list of commands
comes from the parsers themselves, so a new ctl command needs its block.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import io
import itertools
import os
import re
import runpy
import shlex
import sys
from pathlib import Path

import pytest

from verb_console import __version__
from verb_console.admin.bans import check_ban_args
from verb_console.admin.ctl import CtlUsageError
from verb_console.admin.ctl import build_parser as ctl_parser
from verb_console.cli import UsageError, main
from verb_console.cli import build_parser as cli_parser
from verb_console.hub.bans import BanError
from verb_console.security import valid_user_name

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


ROOT = PAGE.parent.parent
# The command's own word: at the start, after a prompt or an &&, or a venv's bin/.
_COMMAND = re.compile(r"(?:^|\$ |&& |bin/)verb-console((?: [^\n#&|]*)?)")
REFUSED = (SystemExit, UsageError, CtlUsageError, BanError)


def _command_lines() -> list[tuple[str, str]]:
    """Every ``verb-console ...`` command a reader may copy: in the shell blocks
    of the README and the docs, after a ``$`` prompt in their text blocks, and in
    the systemd unit's Exec lines. (The README's synopsis is not a command.)"""
    found = []
    sources = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
    for page in sources:
        text = page.read_text()
        for lang, body in re.findall(r"^```(\w*)\n(.*?)^```", text, re.M | re.S):
            body = body.replace("\\\n", " ")
            for line in body.splitlines():
                if lang == "text" and not line.startswith("$ "):
                    continue
                if lang in ("sh", "text"):
                    found += [(page.name, m.strip()) for m in _COMMAND.findall(line)]
    unit = (ROOT / "examples" / "verb-console.service").read_text()
    for line in re.findall(r"^Exec\w+=(.*)$", unit, re.M):
        found += [("verb-console.service", m.strip()) for m in _COMMAND.findall(line)]
    return found


def _parses(args: list[str]) -> None:
    """Parse ``verb-console ARGS`` as the command would, without running it."""
    if args[:1] == ["ctl"]:
        parsed = ctl_parser().parse_args(args[1:])
        if parsed.command == "ban":  # as ctl checks a ban before it asks the server
            check_ban_args(parsed.target, parsed.duration)
    elif args[:1] == ["attach"]:
        known = help_text("attach --help")
        for word in args[1:]:
            assert not word.startswith("--") or f" {word}" in known, word
    elif args[:1] == ["token"]:
        assert len(args) == 2 and valid_user_name(args[1]), args
    else:
        cli_parser().parse_args(args)


def test_the_docs_show_commands() -> None:
    pages = {page for page, _ in _command_lines()}
    assert {"README.md", "operator-guide.md", "verb-console.service"} <= pages
    assert len(_command_lines()) >= 30


@pytest.mark.parametrize(("page", "line"), _command_lines())
def test_every_command_in_the_docs_parses(page: str, line: str) -> None:
    """A command copied from the docs is one the command line accepts: its
    commands, options and values are real (``...`` stands for more options)."""
    args = [a for a in shlex.split(line.replace("...", "")) if a]
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        try:
            _parses(args)
        except REFUSED as exc:
            pytest.fail(f"{page}: verb-console {line.strip()}: {err.getvalue() or exc}")


def test_a_wrong_command_does_not_parse() -> None:
    """The check above can fail."""
    for args in (
        ["ctl", "sessions", "--sort-by", "idle"],
        ["--max-conns", "5"],
        ["ctl", "kick"],
        ["ctl", "ban", "10.0.0.0/33"],
    ):
        with contextlib.redirect_stderr(io.StringIO()), pytest.raises(REFUSED):
            _parses(args)


def _example_lines() -> list[tuple[str, str]]:
    """Every ``examples/NAME.py ...`` command in the shell blocks of the docs."""
    found = []
    for page in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        for body in re.findall(r"^```sh\n(.*?)^```", page.read_text(), re.M | re.S):
            found += [(page.name, m) for m in re.findall(r"(examples/\w+\.py[^\n#&|]*)", body)]
    return found


@functools.cache
def _example_help(script: str) -> str:
    """``python SCRIPT --help``, run in this process (argparse prints and exits)."""
    out = io.StringIO()
    argv = sys.argv
    sys.argv = [script, "--help"]
    try:
        with contextlib.redirect_stdout(out), pytest.raises(SystemExit) as done:
            runpy.run_path(str(ROOT / script), run_name="__main__")
    finally:
        sys.argv = argv
    assert done.value.code == 0
    return out.getvalue()


@pytest.mark.parametrize(("page", "line"), _example_lines())
def test_every_example_command_in_the_docs_is_the_scripts(page: str, line: str) -> None:
    """The options the docs give an example script are options it has."""
    script, *args = shlex.split(line)
    shown = _example_help(script)
    for word in args:
        if word.startswith("--"):
            assert re.search(rf"\s{re.escape(word)}\b", shown), f"{page}: {script} {word}"


def test_version_prints_the_version() -> None:
    out = io.StringIO()
    with contextlib.redirect_stdout(out), pytest.raises(SystemExit) as done:
        main(["--version"])
    assert done.value.code == 0
    assert out.getvalue() == f"verb-console {__version__}\n"


if __name__ == "__main__":
    if sys.argv[1:] == ["--write"]:
        PAGE.write_text(render(PAGE.read_text()))
