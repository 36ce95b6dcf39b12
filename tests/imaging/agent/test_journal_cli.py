"""The journal through the command line, with `hourglass agent --once` (a rescan pass, no
fanotify): files versions, files restore --at, agent status, and that image commands and
forget policies leave journal segments alone."""

from __future__ import annotations

import time
from datetime import datetime
from pathlib import Path

import pytest

from imaging.repository.store import Repository
from tests.support import run_cli


def _config(tmp_path: Path, protect: Path) -> Path:
    path = tmp_path / "agent.toml"
    path.write_text(
        f'[repository]\nlocation = "{tmp_path / "repo"}"\n'
        f'passphrase_file = "{tmp_path / "secret"}"\n'
        f'[protect]\npaths = ["{protect}"]\nexclude = ["cache"]\n'
        f'[agent]\nstate_dir = "{tmp_path / "state"}"\n'
    )
    return path


def _next_second() -> None:
    time.sleep(1.05 - (time.time() % 1))


def test_once_versions_restore_at_status(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "secret").write_text("correct horse\n")
    Repository.init(tmp_path / "repo", passphrase="correct horse")
    home = tmp_path / "home"
    (home / "ana" / "cache").mkdir(parents=True)
    (home / "ana" / "cache" / "junk").write_text("excluded")
    (home / "ana" / "big.bin").write_bytes(bytes(range(256)) * 4096)  # 1 MiB: several chunks
    (home / "ana" / "notes.txt").write_text("first")
    (home / "ana" / "old.txt").write_text("deleted later")
    config = _config(tmp_path, home)
    assert run_cli("agent", "--config", str(config), "--once") == 0
    first = datetime.now().astimezone()
    _next_second()
    (home / "ana" / "notes.txt").write_text("second version")
    (home / "ana" / "old.txt").unlink()
    assert run_cli("agent", "--config", str(config), "--once") == 0
    later = datetime.now().astimezone()
    capsys.readouterr()

    env_repo = ["--repo", str(tmp_path / "repo"), "--passphrase-file", str(tmp_path / "secret")]
    notes = str(home / "ana" / "notes.txt")
    assert run_cli("files", "versions", *env_repo, notes) == 0
    out = capsys.readouterr().out
    assert out.count(" version ") == 2 and "GAP" in out  # the second pass: "not running"

    stamp = "%Y-%m-%d %H:%M:%S"
    to = tmp_path / "out1"
    args = ["files", "restore", *env_repo, "--at", first.strftime(stamp)]
    assert run_cli(*args, str(home / "ana"), "--to", str(to)) == 0
    assert (to / "ana" / "notes.txt").read_text() == "first"
    assert (to / "ana" / "old.txt").read_text() == "deleted later"
    assert not (to / "ana" / "cache").exists()
    to = tmp_path / "out2"
    args = ["files", "restore", *env_repo, "--at", later.strftime(stamp)]
    assert run_cli(*args, str(home / "ana"), "--to", str(to)) == 0
    assert (to / "ana" / "notes.txt").read_text() == "second version"
    assert not (to / "ana" / "old.txt").exists()

    capsys.readouterr()
    assert run_cli("agent", "status", "--config", str(config)) == 0
    out = capsys.readouterr().out
    assert "Agent: not running" in out and str(home) in out and "ago" in out

    # A journal segment is not an image: `restore latest` finds no snapshot to restore,
    # and a forget policy keeps every segment.
    assert run_cli("restore", *env_repo, "latest", str(tmp_path / "disk.img"), "--yes") != 0
    before = Repository.open(tmp_path / "repo", "correct horse").snapshot_ids()
    assert run_cli("forget", *env_repo, "--keep-last", "1", "--yes") == 0
    assert Repository.open(tmp_path / "repo", "correct horse").snapshot_ids() == before
    # gc marks the journal's chunks (its index lists them): nothing it needs is freed.
    assert run_cli("gc", *env_repo) == 0
    to = tmp_path / "out3"
    args = ["files", "restore", *env_repo, "--at", later.strftime(stamp)]
    assert run_cli(*args, notes, "--to", str(to)) == 0
    assert (to / "notes.txt").read_text() == "second version"
    assert run_cli("verify", *env_repo, "--read-data") == 0


def test_an_empty_root_is_not_taken_as_everything_deleted(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A protected path that is empty where the journal holds files (a filesystem that is
    not mounted) is left as the journal has it: a gap says so, and the pass fails."""
    Repository.init(tmp_path / "repo", encryption="none")
    home = tmp_path / "home"
    (home / "ana").mkdir(parents=True)
    (home / "ana" / "notes.txt").write_text("kept")
    config = tmp_path / "agent.toml"
    config.write_text(
        f'[repository]\nlocation = "{tmp_path / "repo"}"\n'
        f'[protect]\npaths = ["{home}"]\n[agent]\nstate_dir = "{tmp_path / "state"}"\n'
    )
    assert run_cli("agent", "--config", str(config), "--once") == 0
    (home / "ana" / "notes.txt").unlink()
    (home / "ana").rmdir()
    assert run_cli("agent", "--config", str(config), "--once") == 1
    assert "not mounted" in capsys.readouterr().err
    out = tmp_path / "out"
    repo = ["--repo", str(tmp_path / "repo")]
    now = datetime.now().astimezone().strftime("%Y-%m-%d %H:%M:%S")
    assert run_cli("files", "restore", *repo, "--at", now, str(home), "--to", str(out)) == 0
    assert (out / "home" / "ana" / "notes.txt").read_text() == "kept"
