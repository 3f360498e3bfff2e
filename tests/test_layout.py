"""The package's shape: no import circle among the project's modules, and the driver side stays
free of torch (workers/ holds it; everything else imports it inside functions)."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("mixopt", "workers")


def module_name(path: Path, root: Path) -> str:
    parts = path.relative_to(root).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph(root: Path = REPO) -> dict[str, set[str]]:
    """module -> the project modules it imports, anywhere in its body (inside functions too).

    `from a.b import c` is an edge to a.b.c where that is a module, else to a.b; a relative
    import is resolved against the importing module's package."""
    files = {module_name(p, root): p for package in PACKAGES for p in sorted((root / package).rglob("*.py"))}
    graph: dict[str, set[str]] = {name: set() for name in files}
    for name, path in files.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
            targets = []
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                    base = ".".join(anchor + ([base] if base else []))
                for alias in node.names:
                    targets.append(f"{base}.{alias.name}" if f"{base}.{alias.name}" in files else base)
            graph[name].update(t for t in targets if t in files and t != name)
    return graph


def circles(graph: dict[str, set[str]]) -> list[set[str]]:
    """The modules that import one another, directly or round a longer circle: the strongly
    connected components of the graph with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[set[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for successor in sorted(graph[node]):
            if successor not in index:
                visit(successor)
                low[node] = min(low[node], low[successor])
            elif successor in stack:
                low[node] = min(low[node], index[successor])
        if low[node] == index[node]:
            component = set()
            while True:
                member = stack.pop()
                component.add(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(component)

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def path_round(graph: dict[str, set[str]], component: set[str]) -> str:
    """One circle through the component, as "a -> b -> a" (for the failure message)."""
    path = [min(component)]
    while True:
        following = sorted(graph[path[-1]] & component)
        back = [m for m in following if m in path]
        if back:
            return " -> ".join(path[path.index(back[0]):] + [back[0]])
        path.append(following[0])


def test_no_import_circle_among_the_project_modules():
    graph = import_graph()
    assert "mixopt.pipeline.stages" in graph and "workers.loop" in graph          # the walk found the modules
    assert "mixopt.pipeline.context" in graph["mixopt.pipeline.stages"]
    found = [path_round(graph, set(component)) for component in circles(graph)]
    assert not found, "import circle: " + "; ".join(found)


def test_the_circle_check_finds_a_circle(tmp_path):
    """The check above can fail: modules that import each other round a circle (one inside a
    function, as the stages and the recommendation module once did) are reported."""
    package = tmp_path / "mixopt"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "a.py").write_text("from mixopt.b import helper\n")
    (package / "b.py").write_text("def helper():\n    from mixopt.c import value\n    return value\n")
    (package / "c.py").write_text("from mixopt import a\nvalue = 1\n")
    (package / "d.py").write_text("from mixopt import a, c\n")
    (tmp_path / "workers").mkdir()
    graph = import_graph(tmp_path)
    assert circles(graph) == [{"mixopt.a", "mixopt.b", "mixopt.c"}]
    assert path_round(graph, {"mixopt.a", "mixopt.b", "mixopt.c"}) == "mixopt.a -> mixopt.b -> mixopt.c -> mixopt.a"


@pytest.mark.parametrize("module", ["mixopt", "mixopt.pipeline", "mixopt.cli", "mixopt.large_run",
                                    "mixopt.tools.report"])
def test_importing_the_driver_side_does_not_import_torch(module):
    # a fresh interpreter: in this one, other tests have imported torch already
    code = f"import sys, {module}; print('torch' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "False", f"import {module} imported torch"
