"""Rollback: someone deletes the newest manifests from the backup drive. The drive cannot
tell (every file left is authentic); this machine's record of the newest snapshot it saw
can (issue 14, item 13; docs/SECURITY.md, "Rollback and replay")."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from tests.conftest import PASSPHRASE
from tests.support import MiB, run_cli, write_random_image

pytestmark = pytest.mark.faults


@pytest.fixture
def state(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "state"
    monkeypatch.setenv("HOURGLASS_STATE_DIR", str(path))
    return path


@pytest.fixture
def repo_with_two(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> tuple[Path, list[str]]:
    """An encrypted repository with two snapshots of one image file; their ids, oldest first."""
    (tmp_path / "pw").write_text(PASSPHRASE + "\n")
    repo = tmp_path / "repo"
    source = tmp_path / "src.img"
    assert run_cli("init", str(repo), "--passphrase-file", str(tmp_path / "pw")) == 0
    ids = []
    capsys.readouterr()
    for seed in (1, 2):
        write_random_image(source, 8 * MiB, seed=seed)
        assert run_cli("backup", "--repo", str(repo), str(source), *pw(tmp_path), "--json") == 0
        ids.append(json.loads(capsys.readouterr().out)["id"])
    return repo, ids


def pw(tmp_path: Path) -> tuple[str, str]:
    return ("--passphrase-file", str(tmp_path / "pw"))


def listing(capsys: pytest.CaptureFixture[str], repo: Path, tmp_path: Path) -> str:
    """`hourglass snapshots`' stderr (it must succeed)."""
    capsys.readouterr()
    assert run_cli("snapshots", "--repo", str(repo), *pw(tmp_path)) == 0
    return capsys.readouterr().err


def test_deleted_newest_snapshot_is_reported(
    state: Path,
    repo_with_two: tuple[Path, list[str]],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    repo, (old, new) = repo_with_two
    assert "WARNING" not in listing(capsys, repo, tmp_path)
    (repo / "snapshots" / f"{new}.snap").unlink()  # the attacker
    err = listing(capsys, repo, tmp_path)
    assert "WARNING" in err and new[:12] in err and old[:12] in err and "rolled back" in err
    # It stays until something newer is made, not just until it was shown once.
    assert new[:12] in listing(capsys, repo, tmp_path)
    write_random_image(tmp_path / "src.img", 8 * MiB, seed=3)
    assert run_cli("backup", "--repo", str(repo), str(tmp_path / "src.img"), *pw(tmp_path)) == 0
    assert "WARNING" not in listing(capsys, repo, tmp_path)


def test_deleted_right_after_the_backup_is_reported(
    state: Path,
    repo_with_two: tuple[Path, list[str]],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    # The backup itself records its snapshot: no listing is needed in between.
    repo, (_, new) = repo_with_two
    for path in (repo / "snapshots").iterdir():
        path.unlink()
    err = listing(capsys, repo, tmp_path)
    assert new[:12] in err and "no snapshot is left" in err


def test_forget_on_this_machine_is_not_a_rollback(
    state: Path,
    repo_with_two: tuple[Path, list[str]],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    repo, (_, new) = repo_with_two
    assert run_cli("forget", "--yes", "--repo", str(repo), new, *pw(tmp_path)) == 0
    assert "WARNING" not in listing(capsys, repo, tmp_path)


def test_older_snapshot_gone_is_not_a_rollback(
    state: Path,
    repo_with_two: tuple[Path, list[str]],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    repo, (old, _) = repo_with_two
    (repo / "snapshots" / f"{old}.snap").unlink()  # undetectable by design (SECURITY.md)
    assert "WARNING" not in listing(capsys, repo, tmp_path)


def test_the_record_never_stops_a_command(
    state: Path,
    repo_with_two: tuple[Path, list[str]],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    repo, _ = repo_with_two
    (record,) = (state / "repositories").iterdir()
    for junk in (b"{not json", b"[]", b'{"repository": "x"}', json.dumps({"newest": 5}).encode()):
        record.write_bytes(junk)
        listing(capsys, repo, tmp_path)
    record.write_bytes(b'{"newest": {"id": 1, "time": "yesterday"}, "repository": ')
    listing(capsys, repo, tmp_path)
    # A state directory that cannot be written (a file in its place, or read-only media).
    blocked = tmp_path / "blocked"
    blocked.write_text("a file, not a directory")
    monkeypatch.setenv("HOURGLASS_STATE_DIR", str(blocked))
    assert "WARNING" not in listing(capsys, repo, tmp_path)
    write_random_image(tmp_path / "src.img", 8 * MiB, seed=4)
    assert run_cli("backup", "--repo", str(repo), str(tmp_path / "src.img"), *pw(tmp_path)) == 0


def test_turned_off(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from imaging.repository import seen

    monkeypatch.setenv("HOURGLASS_STATE_DIR", "none")
    assert seen.state_dir() is None
    monkeypatch.delenv("HOURGLASS_STATE_DIR")
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "xdg"))
    expected = Path("/var/lib/hourglass") if os.geteuid() == 0 else tmp_path / "xdg" / "hourglass"
    assert seen.state_dir() == expected


def test_record_is_private_and_small(state: Path, repo_with_two: tuple[Path, list[str]]) -> None:
    repo, (_, new) = repo_with_two
    (record,) = (state / "repositories").iterdir()
    assert record.stat().st_mode & 0o077 == 0
    assert record.stat().st_size < 1024
    data = json.loads(record.read_text())
    assert data["newest"]["id"] == new and data["encrypted"] is True
    assert record.name == json.loads((repo / "config").read_text())["id"] + ".json"
