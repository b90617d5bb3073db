"""The core (net, protocols, hub, runtime) imports without Textual (ARCHITECTURE.md)."""

from __future__ import annotations

import subprocess
import sys
import textwrap

CORE_PACKAGES = ("verb_console.net", "verb_console.protocols", "verb_console.hub")

CHECK = textwrap.dedent(
    """
    import importlib
    import pkgutil
    import sys

    imported = []
    for name in {packages!r}:
        package = importlib.import_module(name)
        imported.append(name)
        for info in pkgutil.walk_packages(package.__path__, name + "."):
            importlib.import_module(info.name)
            imported.append(info.name)
    importlib.import_module("verb_console.runtime")
    imported.append("verb_console.runtime")
    leaked = sorted(m for m in sys.modules if m == "textual" or m.startswith("textual."))
    print("\\n".join(imported))
    if leaked:
        print("textual imported:", ", ".join(leaked[:5]), file=sys.stderr)
        sys.exit(1)
    """
).format(packages=CORE_PACKAGES)


def run_check(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)


def test_the_core_modules_import_without_textual() -> None:
    result = run_check(CHECK)
    assert result.returncode == 0, result.stderr
    imported = result.stdout.split()
    # Every submodule was really imported, not only the packages.
    for module in (
        "verb_console.net.server",
        "verb_console.net.socket",
        "verb_console.protocols.json",
        "verb_console.hub.hub",
        "verb_console.hub.json_session",
        "verb_console.hub.view",
        "verb_console.runtime",
    ):
        assert module in imported


def test_the_check_itself_notices_textual() -> None:
    result = run_check("import textual\n" + CHECK)
    assert result.returncode == 1
    assert "textual imported" in result.stderr
