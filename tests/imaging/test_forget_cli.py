"""`hourglass forget`: counts out of range are bad usage; forgetting asks first (issue 14, 2)."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path

import pytest

from imaging.errors import Cancelled, UsageError
from imaging.image.backup import backup_path
from imaging.repository.retention import MAX_KEEP, Policy
from imaging.repository.store import Repository
from tests.conftest import PASSPHRASE
from tests.support import run_cli


@pytest.fixture
def three(repo: Repository, tmp_path: Path) -> tuple[Repository, list[str]]:
    """A repository holding three snapshots of one source, and the CLI's repository options."""
    source = tmp_path / "source.img"
    for seed in range(3):
        source.write_bytes(bytes([seed + 1]) * 65536)
        backup_path(repo, source)
    pw = tmp_path / "pw"
    pw.write_text(PASSPHRASE + "\n")
    return repo, ["--repo", str(repo.path), "--passphrase-file", str(pw)]


@pytest.mark.parametrize("rule", ["last", "hourly", "daily", "weekly", "monthly"])
@pytest.mark.parametrize("count", ["-1", "-3", str(MAX_KEEP + 1), str(10**12)])
def test_counts_out_of_range_are_bad_usage(
    three: tuple[Repository, list[str]], rule: str, count: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """`--keep-daily -1` forgot every snapshot and `--keep-last -1` the oldest, exit 0."""
    repo, options = three
    before = repo.snapshot_ids()
    assert run_cli("forget", f"--keep-{rule}", count, *options) == UsageError.exit_code
    assert repo.snapshot_ids() == before
    err = capsys.readouterr().err
    assert f"--keep-{rule}" in err and "Traceback" not in err


def test_policy_refuses_counts_out_of_range() -> None:
    """The app builds a Policy from typed numbers too: the engine refuses, not only the CLI."""
    for bad in (-1, MAX_KEEP + 1):
        with pytest.raises(UsageError):
            Policy(daily=bad)
    assert Policy(last=MAX_KEEP).last == MAX_KEEP


def test_without_terminal_forget_needs_yes(
    three: tuple[Repository, list[str]],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    repo, options = three
    before = repo.snapshot_ids()
    monkeypatch.setattr(sys, "stdin", io.StringIO())
    assert run_cli("forget", "--keep-last", "1", *options) == UsageError.exit_code
    assert repo.snapshot_ids() == before
    assert "--yes" in capsys.readouterr().err
    assert run_cli("forget", "--keep-last", "1", "--json", *options) == UsageError.exit_code
    assert capsys.readouterr().out == ""  # no plan printed as if it were done
    assert run_cli("forget", "--keep-last", "1", "--dry-run", *options) == 0
    assert run_cli("forget", "--keep-last", "3", *options) == 0  # nothing to forget: no question
    assert repo.snapshot_ids() == before
    assert run_cli("forget", "--keep-last", "1", "--yes", *options) == 0
    assert len(repo.snapshot_ids()) == 1


def _forget_on_a_terminal(options: list[str], answer: bytes) -> tuple[int, str]:
    """Run the real command with a pseudo-terminal as stdin, answer its question."""
    controller, terminal = os.openpty()
    try:
        child = subprocess.Popen(
            [sys.executable, "-m", "imaging.cli.main", "forget", "--keep-last", "1", *options],
            stdin=terminal,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env={**os.environ, "PYTHONPATH": os.getcwd()},
        )
        os.write(controller, answer)
        out, err = child.communicate(timeout=60)
    finally:
        os.close(terminal)
        os.close(controller)
    return child.returncode, out.decode() + err.decode()


def test_on_a_terminal_forget_shows_and_asks(three: tuple[Repository, list[str]]) -> None:
    repo, options = three
    oldest, middle, newest = (s.id for s in repo.snapshots())
    code, output = _forget_on_a_terminal(options, b"no\n")
    assert code == Cancelled.exit_code and "Cancelled" in output
    assert oldest[:12] in output and middle[:12] in output  # what would go was shown
    assert "Type yes" in output
    assert repo.snapshot_ids() == sorted([oldest, middle, newest])
    code, output = _forget_on_a_terminal(options, b"yes\n")
    assert code == 0, output
    assert repo.snapshot_ids() == [newest]
