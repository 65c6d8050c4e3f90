"""The project's modules form layers a reader can follow: no import circles, and no import reaching upward.

From the bottom: `lambdas/` (the function assets hold only that package, so an import outside it fails in AWS);
`localdb/` (the embedded PostgreSQL) and `analytics/` (the data sets and the dashboard); `cdk/`; then the runners,
`statemachine/` and `benchmarks/`. The dashboard and the local runner share the local database through `localdb`,
so neither reaches into the other."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("lambdas", "localdb", "statemachine", "cdk", "analytics", "benchmarks")


def _modules() -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            parts = path.relative_to(ROOT).with_suffix("").parts
            found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def _resolve(name: str, modules: dict[str, Path]) -> str | None:
    while name and name not in modules:
        name = name.rpartition(".")[0]
    return name or None


def imported_modules(source: str, name: str, is_package: bool, modules: dict[str, Path]) -> set[str]:
    """The project modules that the module `name` (of this `source`) imports, at the top or inside a function."""
    package = name.split(".") if is_package else name.split(".")[:-1]
    imported: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package[: len(package) - node.level + 1] + ([base] if base else []))
            targets = [f"{base}.{alias.name}" for alias in node.names] + [base]
        else:
            continue
        imported |= {found for target in targets if (found := _resolve(target, modules)) not in (None, name)}
    return imported


def import_graph() -> dict[str, set[str]]:
    """Every project module and the project modules it imports."""
    modules = _modules()
    return {
        name: imported_modules(path.read_text(encoding="utf-8"), name, path.name == "__init__.py", modules)
        for name, path in modules.items()
    }


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for target in graph.get(node, ()):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in graph:
        if node not in index:
            visit(node)
    return found


def test_no_module_imports_itself_through_others() -> None:
    assert _cycles(import_graph()) == []


def test_the_cycle_finder_finds_a_circle() -> None:
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


LAYERS = [
    ("lambdas", ("localdb", "statemachine", "cdk", "analytics", "benchmarks")),  # the function assets: lambdas/ only
    ("localdb", ("statemachine", "cdk", "analytics", "benchmarks")),  # neutral: imports none of the programs using it
    ("analytics", ("statemachine", "cdk", "benchmarks")),  # the dashboard reaches the local database through localdb
    ("cdk", ("statemachine", "benchmarks")),  # the infrastructure does not import the runners above it
]


def upward_imports(graph: dict[str, set[str]], layer: str, may_not_import: tuple[str, ...]) -> set[tuple[str, str]]:
    return {
        (module, target)
        for module, targets in graph.items()
        if module.split(".")[0] == layer
        for target in targets
        if target.split(".")[0] in may_not_import
    }


@pytest.mark.parametrize(("layer", "may_not_import"), LAYERS)
def test_no_layer_imports_what_sits_above_it(layer: str, may_not_import: tuple[str, ...]) -> None:
    assert upward_imports(import_graph(), layer, may_not_import) == set()


def test_an_import_inside_a_function_counts_as_one() -> None:
    """The dashboard once imported the local runner's PostgreSQL inside a function, out of sight of a reader
    scanning the top of the file: the graph sees it, and the layering refuses it."""
    modules = _modules()
    source = "def draw():\n    from statemachine.local import postgres\n    return postgres\n"
    graph = {"analytics.dashboard": imported_modules(source, "analytics.dashboard", False, modules)}
    assert "statemachine.local.postgres" in graph["analytics.dashboard"]
    assert ("analytics.dashboard", "statemachine.local.postgres") in upward_imports(
        graph, "analytics", dict(LAYERS)["analytics"]
    )
