"""No import cycles in the engine or the app.

Every import statement counts, at the top of a module or inside a function: an import
hidden in a function is still a cycle, only a later one. Imports under `if TYPE_CHECKING:`
are left out, since they never run.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable, Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("imaging", "recovery_ui")

pytestmark = pytest.mark.import_cycles


def module_name(path: Path, root: Path = ROOT) -> str:
    """The dotted name of the module in `path`, e.g. imaging.repository.store."""
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def find_modules(
    packages: Iterable[str] = PACKAGES, exclude: Iterable[str] = (), root: Path = ROOT
) -> dict[str, Path]:
    """Every module under `packages`, by name, leaving out `exclude` and what is under it."""
    excluded = tuple(exclude)
    modules = {}
    for package in packages:
        for path in sorted((root / package).rglob("*.py")):
            name = module_name(path, root)
            if any(name == e or name.startswith(e + ".") for e in excluded):
                continue
            modules[name] = path
    return modules


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _import_nodes(node: ast.AST) -> Iterator[ast.Import | ast.ImportFrom]:
    """Every import under `node`, at any depth, except those under `if TYPE_CHECKING:`."""
    for child in ast.iter_child_nodes(node):
        if isinstance(child, (ast.Import, ast.ImportFrom)):
            yield child
        elif isinstance(child, ast.If) and _is_type_checking(child.test):
            for other in child.orelse:
                yield from _import_nodes(ast.Module(body=[other], type_ignores=[]))
        else:
            yield from _import_nodes(child)


def _base(name: str, path: Path, node: ast.ImportFrom) -> str:
    """The module a `from ... import` names, with relative imports resolved."""
    if node.level == 0:
        return node.module or ""
    package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    package = package[: len(package) - (node.level - 1)]
    return ".".join(package + ([node.module] if node.module else []))


def imports_of(name: str, path: Path, known: set[str]) -> set[str]:
    """The modules among `known` that module `name` imports.

    `from X import Y` imports X.Y when that is a module, else X.
    """
    found = set()
    for node in _import_nodes(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        else:
            base = _base(name, path, node)
            targets = [
                f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base
                for alias in node.names
            ]
        found.update(t for t in targets if t in known and t != name)
    return found


def import_graph(modules: dict[str, Path]) -> dict[str, set[str]]:
    """Each module and the modules (of those given) that it imports."""
    known = set(modules)
    return {name: imports_of(name, path, known) for name, path in modules.items()}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan), sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for succ in sorted(graph.get(node, ())):
            if succ not in index:
                visit(succ)
                low[node] = min(low[node], low[succ])
            elif succ in on_stack:
                low[node] = min(low[node], index[succ])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return sorted(found)


def describe(found: list[list[str]]) -> str:
    return "import cycles:\n" + "\n".join("  " + " <-> ".join(c) for c in found)


@pytest.mark.parametrize(
    ("packages", "exclude"),
    [
        pytest.param(("imaging",), ("imaging.cli",), id="engine-without-cli"),
        pytest.param(PACKAGES, (), id="all"),
    ],
)
def test_no_import_cycles(packages: tuple[str, ...], exclude: tuple[str, ...]) -> None:
    found = cycles(import_graph(find_modules(packages, exclude)))
    assert not found, describe(found)


def test_the_scan_finds_a_cycle_hidden_in_a_function(tmp_path: Path) -> None:
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from pkg import b\n")
    (pkg / "b.py").write_text("def f():\n    from pkg.a import thing\n")
    (pkg / "c.py").write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from pkg import a\n"
    )
    (pkg / "d.py").write_text("from . import c\n")
    (pkg / "e.py").write_text("from .d import x\n")
    graph = import_graph(find_modules(["pkg"], root=tmp_path))
    assert graph["pkg.c"] == set()
    assert graph["pkg.d"] == {"pkg.c"}
    assert graph["pkg.e"] == {"pkg.d"}
    assert cycles(graph) == [["pkg.a", "pkg.b"]]
