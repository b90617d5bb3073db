"""The server core's import graph: no circle, and sessions never reach the hub.

Read from the source with ``ast`` (every import counts, those under
``if TYPE_CHECKING:`` too): a circle through type-only imports is still a
circle for a reader, and the first step to a real one.
"""

from __future__ import annotations

import ast
from pathlib import Path

import verb_console

ROOT = Path(verb_console.__file__).parent


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def import_graph() -> dict[str, set[str]]:
    modules = {module_name(p): p for p in ROOT.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        targets: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                found = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    up = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join([*up, base] if base else up)
                # ``from . import x`` may name a module; otherwise the module itself.
                found = [f"{base}.{a.name}" for a in node.names if f"{base}.{a.name}" in modules]
                found = found or [base]
            else:
                continue
            targets.update(t for t in found if t in modules and t != name)
        graph[name] = targets
    return graph


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append(sorted(comp))

    for v in graph:
        if v not in index:
            visit(v)
    return found


# The server and its console; the client library and the cluster layer are
# packages of their own, checked on their own terms.
CORE_EXCLUDES = ("verb_console.client", "verb_console.cluster")


def core_graph() -> dict[str, set[str]]:
    def core(m: str) -> bool:
        return not any(m == p or m.startswith(p + ".") for p in CORE_EXCLUDES)

    graph = import_graph()
    return {m: {t for t in ts if core(t)} for m, ts in graph.items() if core(m)}


def test_there_is_no_import_circle_in_the_server_core() -> None:
    graph = core_graph()
    for module in ("hub.session", "hub.hub", "net.socket", "protocols.json", "console.app"):
        assert f"verb_console.{module}" in graph
    assert circles(graph) == []


def test_the_circle_finder_finds_a_circle() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert circles(graph) == [["a", "b", "c"]]


def test_no_session_module_imports_the_hub() -> None:
    graph = import_graph()
    sessions = [m for m in graph if m.startswith("verb_console.hub.") and m.endswith("_session")]
    assert len(sessions) >= 5
    for module in [*sessions, "verb_console.hub.session"]:
        assert "verb_console.hub.hub" not in graph[module], module
