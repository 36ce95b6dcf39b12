"""The `hourglass` command: contract options, JSON output, one-line errors, exit codes."""

from __future__ import annotations

import io
import json
import os
import re
import subprocess
import sys
from datetime import datetime
from pathlib import Path

import pytest

from imaging.errors import (
    IntegrityError,
    PassphraseError,
    RepositoryTooNew,
    SnapshotNotFound,
    UsageError,
)
from imaging.repository.store import Repository
from tests.conftest import PASSPHRASE
from tests.imaging.test_backup_restore import assert_zeros_exactly_at, ranges_of_chunk
from tests.support import MiB, run_cli, write_random_image


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    repo = tmp_path / "repo"
    monkeypatch.setenv("HOURGLASS_PASSPHRASE", PASSPHRASE)
    assert run_cli("init", str(repo)) == 0
    monkeypatch.setenv("HOURGLASS_PASSPHRASE", PASSPHRASE)
    monkeypatch.setenv("HOURGLASS_REPO", str(repo))
    return repo


def cli_json(capsys: pytest.CaptureFixture[str], *argv: str) -> object:
    capsys.readouterr()
    assert run_cli(*argv, "--json") == 0
    return json.loads(capsys.readouterr().out)


def test_backup_snapshots_restore(
    env: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    src = tmp_path / "disk.img"
    write_random_image(src, 10 * MiB)
    assert run_cli("backup", str(src)) == 0
    monkeypatch.setenv("HOURGLASS_PASSPHRASE", PASSPHRASE)
    (snap,) = cli_json(capsys, "snapshots")  # type: ignore[misc]
    assert set(snap) >= {"id", "time", "source", "size", "stored"}
    assert snap["size"] == 10 * MiB and snap["source"] == str(src)
    when = datetime.fromisoformat(snap["time"])
    assert when.tzinfo is not None and when.microsecond == 0
    assert "+" in snap["time"] or "-" in snap["time"][19:]
    monkeypatch.setenv("HOURGLASS_PASSPHRASE", PASSPHRASE)
    out = tmp_path / "out.img"
    local = when.astimezone().strftime("%Y-%m-%d %H:%M:%S")
    assert run_cli("restore", local, str(out), "--yes") == 0
    assert out.read_bytes() == src.read_bytes()


def test_passphrase_file_and_wrong_passphrase(
    env: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("HOURGLASS_PASSPHRASE")
    good = tmp_path / "pw"
    good.write_text(PASSPHRASE + "\n")
    assert run_cli("snapshots", "--passphrase-file", str(good)) == 0
    bad = tmp_path / "bad"
    bad.write_text("nope\n")
    capsys.readouterr()
    assert run_cli("snapshots", "--passphrase-file", str(bad)) == PassphraseError.exit_code
    err = capsys.readouterr().err
    assert err.startswith("hourglass: error: Wrong passphrase")
    assert "Traceback" not in err


def test_no_passphrase_without_terminal(
    env: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("HOURGLASS_PASSPHRASE")
    monkeypatch.setattr(sys, "stdin", io.StringIO())
    assert run_cli("snapshots") != 0
    assert "HOURGLASS_PASSPHRASE" in capsys.readouterr().err


def one_error_line(err: str) -> str:
    """The error line of ``err``, which holds it and at most one hint line, nothing else."""
    lines = err.splitlines()
    assert 1 <= len(lines) <= 2, lines
    assert lines[0].startswith("hourglass: error: "), lines
    assert all(line.startswith("hourglass: hint: ") for line in lines[1:]), lines
    return lines[0]


def test_errors_are_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HOURGLASS_PASSPHRASE", PASSPHRASE)
    capsys.readouterr()
    assert run_cli("snapshots", "--repo", str(tmp_path / "missing")) == 5
    assert "no repository" in one_error_line(capsys.readouterr().err)
    repo = tmp_path / "newer"
    assert run_cli("init", str(repo), "--encryption", "none") == 0
    config = json.loads((repo / "config").read_text())
    config["format"] = 99
    (repo / "config").write_text(json.dumps(config))
    capsys.readouterr()
    assert run_cli("snapshots", "--repo", str(repo)) == RepositoryTooNew.exit_code
    assert "format 99" in one_error_line(capsys.readouterr().err)
    assert run_cli("restore", "--repo", str(tmp_path / "missing"), "latest", "x", "--yes") == 5
    assert "no repository" in one_error_line(capsys.readouterr().err)


def test_init_block_size(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    repo = tmp_path / "small"
    assert run_cli("init", str(repo), "--encryption", "none", "--block-size", "256K") == 0
    assert "256.0 KiB blocks" in capsys.readouterr().out
    src = tmp_path / "disk.img"
    write_random_image(src, 3 * MiB, zero_every=0)
    assert run_cli("backup", "--repo", str(repo), str(src), "--progress", "none") == 0
    info = cli_json(capsys, "info", "--repo", str(repo))
    assert info["block_size"] == 256 * 1024 and info["chunks"] == 12  # type: ignore[index]
    out = tmp_path / "out.img"
    assert run_cli("restore", "--repo", str(repo), "latest", str(out), "--yes") == 0
    assert out.read_bytes() == src.read_bytes()
    # The default, and sizes the format does not allow.
    assert run_cli("init", str(tmp_path / "default"), "--encryption", "none") == 0
    assert json.loads((tmp_path / "default" / "config").read_text())["block_size"] == MiB
    with pytest.raises(SystemExit):
        run_cli("init", str(tmp_path / "odd"), "--block-size", "3M")
    assert "choose one of 256K, 512K, 1M, 2M, 4M" in capsys.readouterr().err
    assert not (tmp_path / "odd").exists()
    config = json.loads((repo / "config").read_text())
    config["block_size"] = 3 * MiB
    (repo / "config").write_text(json.dumps(config))
    assert run_cli("info", "--repo", str(repo)) == IntegrityError.exit_code
    assert "unsupported block size" in capsys.readouterr().err


def test_unknown_snapshot(env: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run_cli("restore", "deadbeef", "/tmp/x", "--yes") == SnapshotNotFound.exit_code


def test_restore_asks_and_refuses_without_terminal(
    env: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    src = tmp_path / "disk.img"
    write_random_image(src, 5 * MiB)
    run_cli("backup", str(src))
    monkeypatch.setenv("HOURGLASS_PASSPHRASE", PASSPHRASE)
    monkeypatch.setattr(sys, "stdin", io.StringIO())
    target = tmp_path / "existing.img"
    target.write_bytes(b"precious")
    assert run_cli("restore", "latest", str(target)) != 0
    assert target.read_bytes() == b"precious"
    assert "--yes" in capsys.readouterr().err


def test_verify_damage_exit_code(
    env: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    src = tmp_path / "disk.img"
    write_random_image(src, 9 * MiB)
    run_cli("backup", str(src))
    chunk = next(p for p in (env / "chunks").rglob("*") if p.is_file())
    data = bytearray(chunk.read_bytes())
    data[-40] ^= 1
    chunk.write_bytes(bytes(data))
    monkeypatch.setenv("HOURGLASS_PASSPHRASE", PASSPHRASE)
    capsys.readouterr()
    assert run_cli("verify", "--read-data") == IntegrityError.exit_code
    out = capsys.readouterr().out
    assert f"DAMAGED chunk {chunk.name}" in out and "breaks snapshot" in out
    monkeypatch.setenv("HOURGLASS_PASSPHRASE", PASSPHRASE)
    assert (
        run_cli("restore", "latest", str(tmp_path / "o.img"), "--yes") == IntegrityError.exit_code
    )
    monkeypatch.setenv("HOURGLASS_PASSPHRASE", PASSPHRASE)
    code = run_cli("restore", "latest", str(tmp_path / "o2.img"), "--yes", "--ignore-damage")
    assert code == IntegrityError.exit_code
    err = capsys.readouterr().err
    repo = Repository.open(env, PASSPHRASE)
    ranges = ranges_of_chunk(repo, repo.snapshots()[0], chunk.name)
    listed = re.findall(r"^DAMAGED data: bytes (\d+)-(\d+) ", err, re.MULTILINE)
    assert sorted((int(a), int(b) - int(a) + 1) for a, b in listed) == ranges
    assert_zeros_exactly_at(tmp_path / "o2.img", src, ranges)


def test_forget_gc_info(
    env: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    src = tmp_path / "disk.img"
    for seed in range(3):
        write_random_image(src, 9 * MiB, seed=seed)
        monkeypatch.setenv("HOURGLASS_PASSPHRASE", PASSPHRASE)
        assert run_cli("backup", str(src)) == 0
    monkeypatch.setenv("HOURGLASS_PASSPHRASE", PASSPHRASE)
    preview = cli_json(capsys, "forget", "--keep-last", "1", "--dry-run")
    assert len(preview["remove"]) == 2 and preview["dry_run"]  # type: ignore[index]
    monkeypatch.setenv("HOURGLASS_PASSPHRASE", PASSPHRASE)
    assert len(cli_json(capsys, "snapshots")) == 3  # type: ignore[arg-type]
    monkeypatch.setenv("HOURGLASS_PASSPHRASE", PASSPHRASE)
    assert run_cli("forget", "--keep-last", "1", "--yes") == 0
    monkeypatch.setenv("HOURGLASS_PASSPHRASE", PASSPHRASE)
    gc = cli_json(capsys, "gc")
    assert gc["freed"] > 0  # type: ignore[index]
    monkeypatch.setenv("HOURGLASS_PASSPHRASE", PASSPHRASE)
    info = cli_json(capsys, "info")
    assert info["snapshots"] == 1 and info["compression_ratio"] > 1  # type: ignore[index]
    monkeypatch.setenv("HOURGLASS_PASSPHRASE", PASSPHRASE)
    assert run_cli("forget") != 0  # no policy: refuse rather than forget everything


def test_key_add_recovery_and_change(
    env: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    capsys.readouterr()
    assert run_cli("key", "add", "--recovery") == 0
    recovery = next(w for w in capsys.readouterr().out.split() if w.startswith("HGRK-"))
    monkeypatch.setenv("HOURGLASS_PASSPHRASE", recovery)
    new = tmp_path / "new"
    new.write_text("brand new\n")
    assert run_cli("key", "change", "--new-passphrase-file", str(new)) == 0
    monkeypatch.setenv("HOURGLASS_PASSPHRASE", "brand new")
    capsys.readouterr()
    assert run_cli("key", "list") == 0
    kinds = [line.split()[1] for line in capsys.readouterr().out.splitlines()]
    assert sorted(kinds) == ["passphrase", "passphrase", "recovery"]  # the recovery key stays
    new.write_text("third\n")
    monkeypatch.setenv("HOURGLASS_PASSPHRASE", "brand new")
    assert run_cli("key", "change", "--new-passphrase-file", str(new)) == 0
    monkeypatch.setenv("HOURGLASS_PASSPHRASE", "third")
    capsys.readouterr()
    assert run_cli("key", "list") == 0
    assert capsys.readouterr().out.count("passphrase") == 2  # "brand new" was replaced


def test_json_progress_on_stderr(env: Path, tmp_path: Path) -> None:
    src = tmp_path / "disk.img"
    write_random_image(src, 9 * MiB)
    result = subprocess.run(
        [sys.executable, "-m", "imaging.cli.main", "backup", str(src), "--progress", "json"],
        capture_output=True,
        text=True,
        env={**os.environ, "HOURGLASS_PASSPHRASE": PASSPHRASE},
        check=True,
    )
    events = [json.loads(line) for line in result.stderr.splitlines()]
    backup = [e for e in events if e["phase"] == "backup"]
    assert backup[-1]["finished"] and backup[-1]["done"] == backup[-1]["total"] == 9 * MiB
    assert {"phase", "rate", "eta", "elapsed"} <= set(backup[-1])
    # then the check of the new snapshot (--check structure, the default), in the same stream
    assert events[-1]["phase"] == "verify" and events[-1]["finished"], events[-1]


def test_verify_says_what_it_read(
    env: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A structure check reads no chunk: it says so, not "(0 B) checked" (issue 22)."""
    src = tmp_path / "disk.img"
    write_random_image(src, 3 * MiB, zero_every=0)
    assert run_cli("backup", str(src)) == 0
    monkeypatch.setenv("HOURGLASS_PASSPHRASE", PASSPHRASE)
    capsys.readouterr()
    assert run_cli("verify") == 0
    out = capsys.readouterr().out
    assert "3 of 3 chunks found in place (not read)" in out and "0 B" not in out
    monkeypatch.setenv("HOURGLASS_PASSPHRASE", PASSPHRASE)
    assert run_cli("verify", "--read-data") == 0
    out = capsys.readouterr().out
    assert re.search(r"3 of 3 chunks \([0-9.]+ MB\) read and checked", out), out


def test_a_short_new_passphrase_is_warned_about_or_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Under 4 characters a new passphrase is refused unless --allow-short-passphrase;
    under 8 it is accepted with a warning (issue 22, polish)."""
    monkeypatch.setenv("HOURGLASS_PASSPHRASE", "abc")
    capsys.readouterr()
    assert run_cli("init", str(tmp_path / "r1")) == UsageError.exit_code
    err = capsys.readouterr().err
    assert "at least 4" in err and "--allow-short-passphrase" in err
    assert not (tmp_path / "r1" / "config").exists()
    monkeypatch.setenv("HOURGLASS_PASSPHRASE", "abc")
    assert run_cli("init", str(tmp_path / "r2"), "--allow-short-passphrase") == 0
    assert "only 3 characters" in capsys.readouterr().err
    monkeypatch.setenv("HOURGLASS_PASSPHRASE", "abcdef")
    assert run_cli("init", str(tmp_path / "r3")) == 0
    assert "only 6 characters" in capsys.readouterr().err
    monkeypatch.setenv("HOURGLASS_PASSPHRASE", PASSPHRASE)
    assert run_cli("init", str(tmp_path / "r4")) == 0
    assert "warning" not in capsys.readouterr().err
    new = tmp_path / "new"
    new.write_text("xy\n")
    monkeypatch.setenv("HOURGLASS_PASSPHRASE", PASSPHRASE)
    code = run_cli("key", "add", "--repo", str(tmp_path / "r4"), "--new-passphrase-file", str(new))
    assert code == UsageError.exit_code
    assert len(list((tmp_path / "r4" / "keys").iterdir())) == 1, "no slot was added"
