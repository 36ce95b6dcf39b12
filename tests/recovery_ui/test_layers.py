"""The app calls the operations layer and the record types, nothing below them: leases,
checks, protected disks and kind dispatch are the engine's, the same for every front end."""

from __future__ import annotations

import ast
from pathlib import Path

import recovery_ui

APP = Path(recovery_ui.__file__).parent

# What the app may import from the engine. Below these are the repository internals, the
# backup and restore engines, mounts and the disks layer: the app reaches them only through
# imaging.jobs.
ALLOWED = (
    "imaging.jobs",  # the operations layer and its facades
    "imaging.repository.records",  # snapshots, manifests, image records
    "imaging.errors",
    "imaging.progress",
    "imaging.units",
    # the appliance's own services: settings, vendor defaults, network, power
    "imaging.appliance",
)


def engine_imports(path: Path) -> list[tuple[int, str]]:
    """Every ``imaging`` module a file imports (at the top, in functions, for typing)."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module == "imaging":
                found += [(node.lineno, f"imaging.{a.name}") for a in node.names]
            else:
                found.append((node.lineno, node.module))
        elif isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names]
    return [(line, m) for line, m in found if m == "imaging" or m.startswith("imaging.")]


def allowed(module: str) -> bool:
    return module == "imaging.__version__" or any(
        module == a or module.startswith(a + ".") for a in ALLOWED
    )


def test_the_app_imports_nothing_below_the_operations_layer() -> None:
    wrong = [
        f"{path.relative_to(APP.parent)}:{line}: {module}"
        for path in sorted(APP.rglob("*.py"))
        for line, module in engine_imports(path)
        if not allowed(module)
    ]
    assert not wrong, "\n".join(wrong)


def test_the_check_is_real() -> None:
    # The scan sees imports in functions and under TYPE_CHECKING, where the app keeps most.
    sample = APP / "screens" / "backup.py"
    assert ("imaging.jobs" in {m for _, m in engine_imports(sample)}) or any(
        m.startswith("imaging.jobs") for _, m in engine_imports(sample)
    )
    assert not allowed("imaging.repository.store") and not allowed("imaging.disks.restore")
