"""The docs pages say what the code does: generated tables match their sources,
every setting is documented with its real default, the systemd unit verifies, and
the README keeps its promises (length, quick start, links).

    python tests/test_docs_pages.py --write   # regenerate the operator guide's key table
"""

from __future__ import annotations

import argparse
import ast
import re
import shutil
import subprocess
import sys
import unicodedata
from dataclasses import fields
from pathlib import Path

import pytest

from verb_console.admin.ctl import build_parser as ctl_parser
from verb_console.cli import CONFIG_ONLY, FLAGS
from verb_console.cli import build_parser as cli_parser
from verb_console.console.keys import changing_keys, help_lines
from verb_console.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
README = ROOT / "README.md"
GUIDE = DOCS / "operator-guide.md"
CONFIG = DOCS / "configuration.md"
KEYS_BEGIN, KEYS_END = "<!-- keys: begin -->", "<!-- keys: end -->"

# Settings of the contract (ARCHITECTURE.md's command line, PROTOCOL.md 11 and 12)
# that configuration.md documents before their feature is on main; each leaves
# this set when its setting exists (the test below says so).
AWAITING_SETTINGS: set[str] = set()


# ---------------------------------------------------------------- key table
def keys_table() -> str:
    """The operator guide's table of keys, from the console's own key table."""
    rows = ["| key | what it does |", "|---|---|"]
    for keys, text in help_lines():
        shown = " ".join(f"`{k}`" for k in keys.split(" "))
        rows.append(f"| {shown} | {text.replace('|', '&#124;')} |")
    return "\n".join(rows)


def _between(text: str, begin: str, end: str) -> str:
    return text[text.index(begin) + len(begin) : text.index(end)].strip()


def test_the_key_table_is_the_consoles() -> None:
    assert _between(GUIDE.read_text(), KEYS_BEGIN, KEYS_END) == keys_table(), (
        "run: python tests/test_docs_pages.py --write"
    )


def test_the_pane_table_is_the_consoles() -> None:
    """One row per pane of the console, under the key that shows it, and each
    pane's screenshot made by screenshots/make_screenshots.py is on the page."""
    from verb_console.console.screen import PANES

    text = GUIDE.read_text()
    rows = re.findall(r"^\| `(\d)` \| (\w+) \|", text, re.M)
    assert rows == [(str(n), name.title()) for n, (name, _) in enumerate(PANES, 1)]
    for name, _ in PANES:
        if name != "cluster":  # a single server's demo has no cluster to show
            assert f"assets/screenshots/{name}.svg" in text, name


def test_the_screenshots_are_the_scripts() -> None:
    """Every picture the README and the docs show is one make_screenshots.py
    makes, and the docs' assets are those files (a link, not copies)."""
    from verb_console.console.screen import PANES

    made = {f"{name}.svg" for name, _ in PANES} | {
        f"{n}.svg" for n in ("help", "session", "room", "broadcast")
    }
    script = (ROOT / "screenshots" / "make_screenshots.py").read_text()
    for extra in ("help", "session", "room", "broadcast"):
        assert f'"{extra}"' in script, extra
    assert {p.name for p in (ROOT / "screenshots").glob("*.svg")} == made
    assert (DOCS / "assets" / "screenshots").resolve() == (ROOT / "screenshots").resolve()
    for page in [README, *DOCS.glob("*.md")]:
        for shot in re.findall(r"screenshots/(\w+\.svg)", page.read_text()):
            assert shot in made, f"{page.name}: {shot}"


def test_the_read_only_keys_are_the_consoles() -> None:
    """The guide's list of keys a read-only console refuses is the console's own."""
    said = re.search(r"The keys that change the server \(([^;)]*)", GUIDE.read_text())
    assert said is not None
    assert re.findall(r"`([^`]+)`", said[1]) == changing_keys()


# ---------------------------------------------------------------- settings
def toml_value(value: object) -> str:
    """A default as a config file writes it."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return f'"{value}"'
    return repr(value)


def documented_settings() -> dict[str, tuple[str, str]]:
    """key -> (flag, default) from configuration.md's tables."""
    rows = re.findall(r"^\| `(\w+)` \| ?(`--[\w-]+`)? ?\| `([^`]*)` \|", CONFIG.read_text(), re.M)
    return {key: (flag.strip("`"), default) for key, flag, default in rows}


def test_every_setting_is_documented_with_its_default() -> None:
    documented = documented_settings()
    defaults = {f.name: f.default for f in fields(Settings)}
    for key in [*FLAGS, *CONFIG_ONLY]:
        assert key in documented, f"configuration.md does not document {key}"
        assert documented[key][1] == toml_value(defaults[key]), f"{key}: default"
    for key, (flag, *_) in FLAGS.items():
        assert documented[key][0] == flag, f"{key}: flag"


def _options(parser: argparse.ArgumentParser) -> dict[str, str]:
    """Each long option of ``parser`` and the setting it sets (its dest)."""
    return {
        o: a.dest
        for a in parser._actions
        for o in a.option_strings
        if o.startswith("--") and o != "--help"
    }


def test_every_flag_of_the_command_line_is_documented() -> None:
    """The parser itself, not FLAGS, says which flags exist: a flag added to it
    (as --read-only, --tls-required and --demo are, beside FLAGS) is on the page
    with the setting it sets, and a flag that sets no setting is named too."""
    documented = documented_settings()
    text = CONFIG.read_text()
    configurable = {*FLAGS, *CONFIG_ONLY}  # what a config file may set too
    for option, dest in _options(cli_parser()).items():
        if dest in configurable:
            assert documented.get(dest, ("",))[0] == option, f"configuration.md: {option}"
        else:
            assert f"`{option}`" in text, f"configuration.md never names {option}"


def test_documented_settings_exist_or_await_their_feature() -> None:
    known = {*FLAGS, *CONFIG_ONLY}
    unknown = set(documented_settings()) - known
    assert unknown <= AWAITING_SETTINGS, f"configuration.md documents unknown {unknown}"
    landed = AWAITING_SETTINGS & known
    assert not landed, f"{landed} exist now: take them out of AWAITING_SETTINGS"


# ---------------------------------------------------------------- systemd
def test_the_systemd_unit_verifies(tmp_path: Path) -> None:
    """examples/verb-console.service passes systemd-analyze verify, with its
    ExecStart pointed at this checkout's verb-console (verify checks it exists)."""
    tool = shutil.which("systemd-analyze")
    assert tool is not None, "systemd-analyze is needed (apt-get install systemd)"
    unit = (ROOT / "examples" / "verb-console.service").read_text()
    here = str(Path(sys.executable).parent / "verb-console")
    assert "/opt/verb-console/.venv/bin/verb-console" in unit
    path = tmp_path / "verb-console.service"
    path.write_text(unit.replace("/opt/verb-console/.venv/bin/verb-console", here))
    assert unit.count("/opt/verb-console/.venv/bin/verb-console") == 2  # ExecStart, ExecStop
    done = subprocess.run([tool, "verify", str(path)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert path.name not in done.stdout + done.stderr, done.stdout + done.stderr


def test_a_bad_unit_does_not_verify(tmp_path: Path) -> None:
    """The check above can fail: a misspelt setting is reported."""
    tool = shutil.which("systemd-analyze")
    assert tool is not None
    unit = (ROOT / "examples" / "verb-console.service").read_text()
    path = tmp_path / "verb-console.service"
    path.write_text(unit.replace("Restart=on-failure", "Restart=sometimes"))
    done = subprocess.run([tool, "verify", str(path)], capture_output=True, text=True)
    assert path.name in done.stdout + done.stderr


# ---------------------------------------------------------------- metrics
def _metrics_table() -> str:
    text = (DOCS / "deployment.md").read_text()
    return text[text.index("The families, all prefixed") : text.index("grafana-dashboard.json")]


def test_every_metric_family_is_documented() -> None:
    """Every family name the metrics module writes is in deployment.md's table
    (found in its source, so the cluster's families count without a cluster)."""
    table = _metrics_table()
    source = ast.parse((ROOT / "verb_console" / "admin" / "metrics.py").read_text())
    names = {
        n.value
        for n in ast.walk(source)
        if isinstance(n, ast.Constant) and isinstance(n.value, str)
        if re.fullmatch(r"verb_[a-z_]+", n.value)
    }
    assert len(names) > 25
    for name in sorted(names):
        base = name.removeprefix("verb_")
        if base.endswith("_"):  # the head of verb_cluster_messages_{name}
            assert f"`{base}{{" in table, name
        else:
            assert re.search(rf"`{base}(?:_total|_info)?`", table), f"deployment.md: {name}"


async def test_every_metric_label_value_is_documented(tmp_path: Path) -> None:
    """A label with a fixed set of values (a reason, a result, a protocol) lists
    them all in its family's row, as a live server's collector reports them.
    (The close reasons are the protocol page's, linked from the row.)"""
    from verb_console.admin.metrics import HubCollector
    from verb_console.runtime import Runtime

    settings = Settings(
        port=0,
        resume_window=120,
        upload_dir=str(tmp_path / "uploads"),
        admin_socket=str(tmp_path / "admin.sock"),
        state_dir=str(tmp_path / "state"),
    )
    runtime = Runtime(settings)
    await runtime.start()
    try:
        families = list(HubCollector(runtime.hub).collect())
    finally:
        runtime.hub.force_shutdown()
        await runtime.hub.wait_stopped()
    rows = _metrics_table().splitlines()
    for family in families:
        base = family.name.removeprefix("verb_")
        row = next(r for r in rows if re.search(rf"`{base}(?:_total|_info)?`", r))
        values = {
            v for sample in family.samples for k, v in sample.labels.items() if k not in {"le"}
        }
        if base in ("build", "sessions_closed"):
            continue  # the version; the close reasons (protocol.md section 13)
        missing = sorted(v for v in values if not re.search(rf"\b{v}\b", row))
        assert not missing, f"deployment.md, {family.name}: {missing}"


# ---------------------------------------------------------------- performance
def test_the_performance_table_is_what_bench_report_makes() -> None:
    done = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "report.py"), "--check"],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr


def test_every_benchmark_is_on_the_performance_page() -> None:
    """Each script in bench/ is in the page's table of what it measures (the
    shared helpers and the report that makes the table are not benchmarks)."""
    text = (DOCS / "performance.md").read_text()
    scripts = sorted((ROOT / "bench").glob("*.py"))
    missing = [
        p.name
        for p in scripts
        if p.name not in {"benchlib.py", "report.py"}
        and f"| `bench/{p.name}`" not in text
        and f", `bench/{p.name}`" not in text
    ]
    assert not missing, f"docs/performance.md does not say what these measure: {missing}"


# ---------------------------------------------------------------- pages and README
def _nav_pages() -> list[str]:
    return re.findall(r"^  - [^:]+: (\S+\.md)$", (ROOT / "mkdocs.yml").read_text(), re.M)


def test_ci_builds_the_docs_with_the_test_extras() -> None:
    """CI builds the site strictly (broken links and anchors fail it), with tools
    that the test extras install."""
    import tomllib

    ci = (ROOT / ".ci" / "run").read_text()
    assert re.search(r"^[^#\n]*mkdocs build --strict", ci, re.M)
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"][
        "optional-dependencies"
    ]
    assert "verb-console[docs]" in extras["test"]
    assert {re.split(r"[<>=]", d)[0] for d in extras["docs"]} >= {"mkdocs", "mkdocs-material"}


def test_every_page_is_in_the_nav() -> None:
    pages = sorted(p.name for p in DOCS.glob("*.md"))
    assert sorted(_nav_pages()) == pages


def test_the_readme_is_short_and_keeps_the_quick_start() -> None:
    text = README.read_text()
    assert len(text.splitlines()) <= 250
    start = text.index("## Quick start")
    quick = text[start : text.index("\n## ", start + 1)]
    assert "python3 -m venv .venv && .venv/bin/pip install -e . && .venv/bin/verb-console" in quick
    assert (
        "python3 -m venv .venv && .venv/bin/pip install -e '.[test]' && .venv/bin/python -m pytest"
        in quick
    )


def test_the_readme_names_every_flag_and_command() -> None:
    """The command line in brief leaves nothing out: every flag of the server,
    every ctl command and option, and attach's and token's."""
    text = README.read_text()
    brief = text[text.index("## The command line in brief") :]
    brief = brief[: brief.index("\n## ", 1)]
    ctl = ctl_parser()
    sub = next(a for a in ctl._actions if isinstance(a, argparse._SubParsersAction))
    words = [*_options(cli_parser()), *_options(ctl), *sub.choices]
    words += [o for p in sub.choices.values() for o in _options(p)]
    missing = sorted(
        {w for w in words if not re.search(rf"(?<![\w-]){re.escape(w)}(?![\w-])", brief)}
    )
    assert not missing, f"README's command line in brief leaves out {missing}"


@pytest.mark.parametrize("page", [README, *sorted(DOCS.glob("*.md"))], ids=lambda p: p.name)
def test_links_to_files_resolve(page: Path) -> None:
    """Relative links and images point at files that exist (mkdocs checks the
    docs' own links; this checks the README's too, which mkdocs does not build)."""
    for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", page.read_text()):
        if "://" in target:
            continue
        assert (page.parent / target).exists(), f"{page.name}: {target}"


def test_the_docs_cite_only_what_a_checkout_holds() -> None:
    """The contract documents live outside the repository; the docs cite their
    own pages instead (the Protocol page is the contract in the repository)."""
    for page in [README, *DOCS.glob("*.md")]:
        text = page.read_text()
        assert "PROTOCOL.md" not in text and "ARCHITECTURE.md" not in text, page.name


# Change history and benchmark history, in the forms they take in prose:
# "used to ...", "before this ...", "...; after bounded fan-out, 1.02x; third run".
HISTORY = re.compile(
    r"used to |before this|previously|after this change|no longer (?:uses|does|needs)"
    r"|has been (?:changed|replaced|removed|added|fixed)|\b(?:second|third|fourth|fifth) run"
    r"|\bafter [\w -]+, \d+\.\d+x|\bearlier run|\bthe old (?:code|version|way)",
    re.I,
)


def test_no_history_in_the_prose() -> None:
    """History lives in git and bench/results, not in the docs."""
    for page in [README, *DOCS.glob("*.md")]:
        found = HISTORY.search(page.read_text())
        assert found is None, f"{page.name}: {found[0]!r}" if found else ""


def test_the_history_check_sees_history() -> None:
    """The check above can fail: the README's old prose would not pass it."""
    for prose in [
        "ping 1.31x; after bounded fan-out, 1.02x; third run, 1.04x",
        "before this, the console redrew every row",
        "the throttle used to count closed connections",
    ]:
        assert HISTORY.search(prose), prose


def slug(heading: str) -> str:
    """A heading's anchor as MkDocs (Python-Markdown's toc) makes it."""
    text = unicodedata.normalize("NFKD", heading).encode("ascii", "ignore").decode()
    text = re.sub(r"[^\w\s-]", "", text).strip().lower()
    return re.sub(r"[-\s]+", "-", text)


def _anchors(page: Path) -> set[str]:
    text = re.sub(r"^```.*?^```", "", page.read_text(), flags=re.M | re.S)
    return {slug(h) for h in re.findall(r"^#{1,6} (.+?)\s*$", text, re.M)}


@pytest.mark.parametrize("page", [README, *sorted(DOCS.glob("*.md"))], ids=lambda p: p.name)
def test_no_dead_anchors(page: Path) -> None:
    """Every ``page.md#anchor`` and ``#anchor`` link names a heading that exists
    (mkdocs checks the site's pages; the README is not one of them)."""
    for target, anchor in re.findall(r"\]\(([^)#\s]*)#([^)\s]+)\)", page.read_text()):
        linked = page.parent / target if target else page
        if "://" in target or linked.suffix != ".md":
            continue
        assert anchor in _anchors(linked), f"{page.name}: {target}#{anchor}"


if __name__ == "__main__":
    if sys.argv[1:] == ["--write"]:
        text = GUIDE.read_text()
        start, end = text.index(KEYS_BEGIN) + len(KEYS_BEGIN), text.index(KEYS_END)
        GUIDE.write_text(text[:start] + "\n" + keys_table() + "\n" + text[end:])
