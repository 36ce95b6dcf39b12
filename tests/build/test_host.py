"""Bad host conditions stop the build at once, with a message a person can act on."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from build.context import REPOSITORY
from build.errors import MirrorUnreachable, NotRoot
from imaging.errors import ToolMissing


def build_command(
    *args: str, env: dict[str, str] | None = None, python: str = sys.executable, **kw: object
) -> subprocess.CompletedProcess[str]:
    full_env = {**os.environ, "SOURCE_DATE_EPOCH": "1700000000", **(env or {})}
    return subprocess.run(
        [python, "-m", "build", *args],
        cwd=REPOSITORY,
        env=full_env,
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
        **kw,  # type: ignore[call-overload]
    )


@pytest.mark.root
@pytest.mark.integration  # runs the build command as root
def test_a_missing_tool_is_named_with_its_debian_package(tmp_path: Path) -> None:
    empty = tmp_path / "bin"
    empty.mkdir()
    result = build_command("image", env={"PATH": str(empty)})
    assert result.returncode == ToolMissing.exit_code, result.stderr
    assert "error: mmdebstrap not found." in result.stderr
    assert "hint: Install it with: apt install mmdebstrap" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.root
@pytest.mark.integration  # runs the build as the user nobody (setpriv)
def test_not_root_says_so() -> None:
    """The build run as the user nobody, with Debian's Python (the venv's may live under
    /root), from a copy of the sources that nobody can read wherever the checkout is."""
    system_python = shutil.which("python3", path="/usr/bin")
    if system_python is None or shutil.which("setpriv") is None:
        pytest.skip("needs /usr/bin/python3 and setpriv")
    # pytest's tmp_path is private to root: nobody needs a folder it can enter.
    top = Path(tempfile.mkdtemp(prefix="hourglass-notroot-"))
    copy = top / "checkout"
    for name in ("build", "imaging"):
        shutil.copytree(
            REPOSITORY / name, copy / name, ignore=shutil.ignore_patterns("work", "__pycache__")
        )
    shutil.copytree(REPOSITORY / "image", copy / "image")
    subprocess.run(["chmod", "-R", "a+rX", str(top)], check=True)
    try:
        result = subprocess.run(
            ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
             system_python, "-m", "build", "image"],
            cwd=copy,
            env={"PATH": "/usr/bin:/bin", "SOURCE_DATE_EPOCH": "1700000000", "HOME": "/tmp"},
            capture_output=True, text=True, check=False, timeout=120,
        )  # fmt: skip
    finally:
        shutil.rmtree(top)
    assert result.returncode == NotRoot.exit_code, result.stderr
    assert "must run as root" in result.stderr
    assert "sudo make image" in result.stderr


@pytest.mark.root
@pytest.mark.integration
# On the worker that builds the appliance (tests/conftest.py): its build writes into the
# same dist/ and cache/ this test finds unchanged.
@pytest.mark.xdist_group("vm")
def test_an_unreachable_mirror_is_a_clear_error_and_nothing_is_built() -> None:
    """Port 9 on loopback: refused at once. The base root must be built for a new mirror."""
    dist = REPOSITORY / "dist"
    cache = REPOSITORY / "build" / "work" / "cache"
    before = sorted(p.name for p in dist.glob("*")) if dist.exists() else []
    cached = sorted(p.name for p in cache.glob("*")) if cache.exists() else []
    result = build_command("image", env={"MIRROR": "http://127.0.0.1:9/debian"})
    assert result.returncode == MirrorUnreachable.exit_code, result.stderr
    assert "The Debian mirror http://127.0.0.1:9/debian cannot be reached" in result.stderr
    assert "Nothing was built." in result.stderr
    assert (sorted(p.name for p in dist.glob("*")) if dist.exists() else []) == before
    assert (sorted(p.name for p in cache.glob("*")) if cache.exists() else []) == cached
