"""The CLI's layout: one module per command, sharing only ``imaging.cli.common``.

A command module that imports another grows the cycle this layout removed (``main`` <->
``repo_commands``); ``main`` alone gathers the commands, and nothing imports ``main``.
"""

from __future__ import annotations

import argparse
import ast
import importlib
import inspect
from pathlib import Path

import imaging.cli
from imaging.cli import main

CLI = Path(imaging.cli.__file__).parent
SHARED = {"imaging.cli.common"}


def cli_imports(path: Path) -> set[str]:
    """The ``imaging.cli`` modules ``path`` imports, however it spells the import."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: from . import x, from .x import y
                base = "imaging.cli" + (f".{node.module}" if node.module else "")
            else:
                base = node.module or ""
            found.add(base)
            # `from imaging.cli import backup` names a module, not an attribute
            if base == "imaging.cli":
                found.update(f"imaging.cli.{alias.name}" for alias in node.names)
    return {name for name in found if name.startswith("imaging.cli.")}


def command_modules() -> list[Path]:
    return sorted(p for p in CLI.glob("*.py") if p.stem not in {"__init__", "main", "common"})


def test_every_command_has_its_module() -> None:
    names = {p.stem for p in command_modules()}
    assert {"init", "backup", "restore", "files", "disks", "unattended"} <= names


def test_command_modules_import_only_common() -> None:
    for path in [*command_modules(), CLI / "common.py", CLI / "__init__.py"]:
        others = cli_imports(path) - SHARED
        assert not others, f"{path.name} imports {sorted(others)}: share through common.py"
    assert cli_imports(CLI / "common.py") == set()


def test_only_main_gathers_the_commands() -> None:
    assert set(main.COMMANDS.values()) == {p.stem for p in command_modules()}
    engine = Path(imaging.cli.__file__).parents[1]
    for path in engine.rglob("*.py"):
        if path != CLI / "main.py":
            assert "imaging.cli.main" not in cli_imports(path), path


def subcommands(parser: argparse.ArgumentParser) -> set[str]:
    (action,) = (a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return set(action.choices)


def test_a_command_alone_loads_only_its_module() -> None:
    everything = subcommands(main.build_parser())
    assert set(main.COMMANDS) <= everything
    for command, module in main.COMMANDS.items():
        alone = subcommands(main.build_parser(command))
        # the module's own commands (mount registers umount too), and nothing else
        assert command in alone
        assert alone == {c for c, m in main.COMMANDS.items() if m == module}
    assert main.command_named(["--debug", "backup", "--repo", "r"]) == "backup"
    assert main.command_named(["--help"]) is None


def test_every_command_registers_the_same_way() -> None:
    # The signature `recovery_ui/cli.py` uses through the `hourglass.commands` entry point.
    for path in command_modules():
        module = importlib.import_module(f"imaging.cli.{path.stem}")
        assert list(inspect.signature(module.register).parameters) == ["sub", "common", "plain"]
