"""Bad input the engine must refuse plainly (issue 14): sources that are not images."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from imaging.errors import SourceError
from tests.imaging.disks import helpers
from tests.support import MiB, have, run_cli, sh


def _cli_in_child(
    *argv: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """The real command in a child (its own locale; a source that blocks the open fails the
    test by timeout instead of hanging the run)."""
    return subprocess.run(
        [sys.executable, "-m", "imaging.cli.main", *argv],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONPATH": os.getcwd(), **(env or {})},
    )


def _backup_in_child(repo: Path, source: str) -> subprocess.CompletedProcess[str]:
    return _cli_in_child("backup", "--repo", str(repo), source)


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


# --- GPT names under a non-UTF-8 locale -------------------------------------------------------

NAMES = {1: "données – 数据", 2: "EFI: boot"}  # a colon too: sgdisk -c cuts names there
C_LOCALE = {"LC_ALL": "C", "LANG": "C", "LANGUAGE": ""}


def _gpt_disk(image: Path) -> None:
    """A 64 MiB GPT made by gdisk (not the code under test) with non-ASCII names; the second
    is named through gdisk's prompt, as sgdisk -c cannot write a colon."""
    helpers.garbage_file(image, 64 * MiB)
    sh("sgdisk", "--zap-all", image, check=False)
    sh("sgdisk", "-n1:2048:+16M", "-t1:8300", "-n2:0:+8M", "-t2:ef00", image)
    sh("sgdisk", f"-c1:{NAMES[1]}", image)
    subprocess.run(
        ["gdisk", str(image)],
        input=f"c\n2\n{NAMES[2]}\nw\nY\n",
        text=True,
        check=True,
        capture_output=True,
    )


def _gpt_name(device: str, number: int) -> str:
    out = sh("sgdisk", f"-i{number}", device).stdout
    line = next(line for line in out.splitlines() if line.startswith("Partition name:"))
    return line.split(":", 1)[1].strip().strip("'")


@pytest.mark.integration
@pytest.mark.root
@pytest.mark.skipif(not have("gdisk") or not have("sgdisk"), reason="needs gdisk and sgdisk")
def test_gpt_names_round_trip_under_the_c_locale(plain_repo: Path, tmp_path: Path) -> None:
    """Restoring under LC_ALL=C exited 70 (SystemError from pyparted's set_name)."""
    source, target = tmp_path / "src.img", tmp_path / "dst.img"
    _gpt_disk(source)
    helpers.garbage_file(target, 64 * MiB)
    with helpers.attached(source) as src, helpers.attached(target) as dst:
        assert [_gpt_name(src, n) for n in NAMES] == list(NAMES.values())
        done = _cli_in_child("backup", "--repo", str(plain_repo), src, env=C_LOCALE)
        assert done.returncode == 0, done.stderr
        done = _cli_in_child(
            "restore", "--repo", str(plain_repo), "--yes", "latest", dst, env=C_LOCALE
        )
        assert done.returncode == 0, done.stderr
        assert "verified" in done.stdout
        assert {n: _gpt_name(dst, n) for n in NAMES} == NAMES
