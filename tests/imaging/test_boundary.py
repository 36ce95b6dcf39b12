"""The engine stands on its own: importing it loads no UI code (the Harlequin rule)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import imaging

ENGINE = Path(imaging.__file__).parent


def loaded_after(code: str) -> set[str]:
    probe = code + "\nimport sys\nprint(' '.join(sys.modules))\n"
    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True
    )
    return {name.split(".")[0] for name in result.stdout.split()}


def test_engine_imports_no_ui() -> None:
    modules = sorted(
        "imaging." + ".".join(p.relative_to(ENGINE).with_suffix("").parts)
        for p in ENGINE.rglob("*.py")
        if p.name != "__init__.py"
    )
    loaded = loaded_after("".join(f"import {m}\n" for m in modules))
    assert not loaded & {"textual", "rich", "recovery_ui"}


def test_cli_parser_loads_no_textual() -> None:
    # `hourglass ui` comes from the app through an entry point; building the parser must not
    # drag Textual in (startup time of every command, and scripts without the app).
    loaded = loaded_after("import imaging.cli.main as m\nm.build_parser()")
    assert not loaded & {"textual", "rich"}


def test_engine_source_never_imports_the_ui() -> None:
    pattern = re.compile(r"^\s*(import|from)\s+(textual|recovery_ui)\b", re.MULTILINE)
    for path in ENGINE.rglob("*.py"):
        assert not pattern.search(path.read_text()), path
