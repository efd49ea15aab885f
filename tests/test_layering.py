"""The two rules of DESIGN.md: the engine never imports Qt (or the app); the app never imports torch."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def imported_roots(path: Path) -> set[str]:
    roots: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            roots |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            roots.add(node.module.split(".")[0])
    return roots


@pytest.mark.parametrize("package, forbidden", [("engine", {"PySide6", "shiboken6", "app"}),
                                                ("app", {"torch"})])
def test_no_forbidden_import_statement(package: str, forbidden: set[str]) -> None:
    offenders = {str(p.relative_to(ROOT)): sorted(imported_roots(p) & forbidden)
                 for p in sorted((ROOT / package).rglob("*.py")) if imported_roots(p) & forbidden}
    assert offenders == {}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def test_importing_every_engine_module_loads_no_qt() -> None:
    modules = sorted(module_name(p) for p in (ROOT / "engine").rglob("*.py") if p.stem != "__main__")
    assert "engine.pipeline" in modules and "engine.stages.backbone" in modules
    code = (f"import importlib, sys\nfor m in {modules!r}: importlib.import_module(m)\n"
            "print(sorted(n for n in sys.modules if n.split('.')[0] in ('PySide6', 'shiboken6', 'app')))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def import_graph(package: str) -> dict[str, set[str]]:
    """module → the modules of ``package`` it imports anywhere: at the top, inside functions, under
    ``if TYPE_CHECKING:``. ``from pkg import name`` counts as importing ``pkg.name`` when that is a module."""
    paths = {module_name(p): p for p in (ROOT / package).rglob("*.py") if p.stem != "__main__"}
    graph: dict[str, set[str]] = {name: set() for name in paths}
    for name, path in paths.items():
        is_pkg = path.stem == "__init__"
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = name.split(".")[: len(name.split(".")) - node.level + (1 if is_pkg else 0)]
                    base = ".".join(anchor + ([base] if base else []))
                targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in paths else base for alias in node.names]
            graph[name] |= {t for t in targets if t in paths and t != name}
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        state[node] = 2
        stack.pop()
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_the_cycle_finder_finds_a_hidden_cycle() -> None:
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set(), "c": {"a"}}) is None


@pytest.mark.parametrize("package", ["app", "engine"])
def test_no_import_cycle(package: str) -> None:
    """Including local and type-checking imports (window ↔ menus ↔ settings_dialog was one, hidden so)."""
    graph = import_graph(package)
    assert "app.window" not in graph.get("app.menus", set()) | graph.get("app.tray", set()), graph.get("app.menus")
    assert find_cycle(graph) is None, " → ".join(find_cycle(graph))
