"""The passphrase stays out of argv, child environments and output; nonces never repeat."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from imaging.backup import backup_path
from imaging.process import child_environment, run
from imaging.repository import codec
from imaging.repository.store import Repository
from tests.conftest import PASSPHRASE
from tests.support import MiB, write_random_image

pytestmark = pytest.mark.faults

SECRET = "s3cret-Passphrase-That-Must-Not-Leak"


def test_children_never_inherit_the_passphrase(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOURGLASS_PASSPHRASE", SECRET)
    assert "HOURGLASS_PASSPHRASE" not in child_environment()
    out = run(["env"]).stdout.decode()
    assert SECRET not in out


def test_cli_removes_the_variable_before_any_child_runs(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    Repository.init(repo, passphrase=SECRET)
    source = tmp_path / "s.img"
    write_random_image(source, 8 * MiB)
    probe = (
        "import os, sys\n"
        "from imaging.cli.main import main\n"
        "code = main(sys.argv[1:])\n"
        "import subprocess\n"
        "env = subprocess.run(['env'], capture_output=True, text=True).stdout\n"
        "print('LEAK' if os.environ.get('HOURGLASS_PASSPHRASE') or 'HOURGLASS_PASSPHRASE' in env else 'CLEAN')\n"
        "sys.exit(code)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe, "backup", "--repo", str(repo), str(source), "--debug"],
        env={**os.environ, "HOURGLASS_PASSPHRASE": SECRET},
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().endswith("CLEAN")
    assert SECRET not in result.stdout + result.stderr


def test_wrong_passphrase_output_does_not_echo_it(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    Repository.init(repo, passphrase=PASSPHRASE)
    result = subprocess.run(
        [sys.executable, "-m", "imaging.cli.main", "snapshots", "--repo", str(repo), "--debug"],
        env={**os.environ, "HOURGLASS_PASSPHRASE": SECRET},
        capture_output=True,
        text=True,
    )
    assert result.returncode == 4
    assert SECRET not in result.stdout + result.stderr
    for path in repo.rglob("*"):
        if path.is_file():
            assert SECRET.encode() not in path.read_bytes()


def test_no_command_takes_a_passphrase_value() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "imaging.cli.main", "backup", "--help"],
        capture_output=True,
        text=True,
    )
    assert "--passphrase-file" in result.stdout
    assert "--passphrase " not in result.stdout and "--passphrase=" not in result.stdout


def test_nonces_never_repeat(repo: Repository, tmp_path: Path) -> None:
    source = tmp_path / "s.img"
    write_random_image(source, 200 * MiB, zero_every=0)
    backup_path(repo, source)
    for _ in range(3):
        backup_path(repo, source)  # manifests under the same key too
    nonces = []
    for entry in repo.iter_chunk_files():
        with open(entry.path, "rb") as f:
            nonces.append(f.read(codec.CHUNK_HEADER.size)[12:24])
    for path in (repo.path / "snapshots").iterdir():
        nonces.append(path.read_bytes()[8:20])
    assert len(nonces) > 40
    assert len(set(nonces)) == len(nonces)
