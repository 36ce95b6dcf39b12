"""Bad input the engine must refuse plainly (issue 14): sources that are not images."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from imaging.errors import SourceError
from tests.support import run_cli


def _backup_in_child(repo: Path, source: str) -> subprocess.CompletedProcess[str]:
    """The real command in a child, so a source that blocks the open fails the test by timeout
    instead of hanging the run."""
    return subprocess.run(
        [sys.executable, "-m", "imaging.cli.main", "backup", "--repo", str(repo), source],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "PYTHONPATH": os.getcwd()},
    )


@pytest.fixture
def plain_repo(tmp_path: Path) -> Path:
    repo = tmp_path / "repo"
    assert run_cli("init", str(repo), "--encryption", "none") == 0
    return repo


@pytest.mark.parametrize("kind", ["directory", "fifo", "char-device", "missing", "dangling"])
def test_backup_of_a_non_image_source_is_exit_9(
    plain_repo: Path, tmp_path: Path, kind: str
) -> None:
    """A directory was read as a huge image (exit 70, MemoryError); a fifo hung the open."""
    if kind == "directory":
        source = tmp_path / "somedir"
        source.mkdir()
        (source / "a.txt").write_text("hello")
    elif kind == "fifo":
        source = tmp_path / "pipe"
        os.mkfifo(source)
    elif kind == "char-device":
        source = Path("/dev/null")
    elif kind == "missing":
        source = tmp_path / "nothing-here"
    else:
        source = tmp_path / "dangling"
        source.symlink_to(tmp_path / "gone")
    done = _backup_in_child(plain_repo, str(source))
    assert done.returncode == SourceError.exit_code, done.stderr
    assert "internal error" not in done.stderr and "Traceback" not in done.stderr
    assert str(source) in done.stderr
    assert not list((plain_repo / "snapshots").iterdir())
