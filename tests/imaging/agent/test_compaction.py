"""Journal compaction: many small segments merged into one say the same of every second
(versions, renames, deletes, restores as of each second), and a compaction interrupted
between its commit and its deletions leaves a journal that reads the same and is cleaned up
by the next one."""

from __future__ import annotations

import hashlib
import os
import time
from datetime import datetime
from pathlib import Path

import pytest

from imaging.journal.records import source_id_of
from imaging.journal.restore import journal_versions, restore_at
from imaging.journal.segments import is_journal, load_segments, superseded
from imaging.repository.store import Repository
from tests.support import run_cli

PASSPHRASE = "correct horse"


def _config(tmp_path: Path, protect: Path, compact_after: float) -> Path:
    path = tmp_path / f"agent-{compact_after:g}.toml"
    path.write_text(
        f'[repository]\nlocation = "{tmp_path / "repo"}"\n'
        f'passphrase_file = "{tmp_path / "secret"}"\n'
        f'[protect]\npaths = ["{protect}"]\n'
        f'[agent]\nstate_dir = "{tmp_path / "state"}"\ncompact_after = {compact_after}\n'
    )
    return path


def _next_second() -> None:
    time.sleep(1.05 - (time.time() % 1))


def _tree(root: Path) -> dict[str, str]:
    """Every file below ``root`` and a digest of its content, symlinks by target."""
    found = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in filenames + [d for d in dirnames if os.path.islink(os.path.join(dirpath, d))]:
            full = Path(dirpath) / name
            rel = str(full.relative_to(root))
            if full.is_symlink():
                found[rel] = "-> " + os.readlink(full)
            else:
                found[rel] = hashlib.sha256(full.read_bytes()).hexdigest()
    return found


def _journal(repo: Repository) -> list[str]:
    return [s.id for s in repo.snapshots() if is_journal(s)]


def _what_the_journal_says(
    repo: Repository, home: Path, moments: list[datetime], out: Path, until_ns: int = 2**63
) -> tuple[list[dict[str, str]], list[tuple[int, str, str]]]:
    """The trees as of each moment, and every event of some paths before ``until_ns``
    (later passes add their own "not running" gaps)."""
    trees = []
    for i, when in enumerate(moments):
        dest = out / str(i)
        restore_at(repo, [str(home)], when, str(dest))
        trees.append(_tree(dest))
    versions = [
        (v.event.ns, v.event.type, v.event.path)
        for p in ("a.txt", "b.txt", "dir", "dir/c.txt", "moved")
        for v in journal_versions(repo, str(home / p))
        if v.event.ns < until_ns
    ]
    return trees, versions


def test_compaction_keeps_every_second(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "secret").write_text(PASSPHRASE + "\n")
    Repository.init(tmp_path / "repo", passphrase=PASSPHRASE)
    home = tmp_path / "home"
    home.mkdir()
    keep = _config(tmp_path, home, compact_after=3600)
    moments = []

    def step() -> None:
        assert run_cli("agent", "--config", str(keep), "--once") == 0
        moments.append(datetime.now().astimezone())
        _next_second()

    (home / "a.txt").write_text("a1")
    (home / "dir").mkdir()
    (home / "dir" / "c.txt").write_text("c1")
    step()
    (home / "a.txt").write_text("a2, longer")
    (home / "b.txt").write_bytes(os.urandom(300_000))  # several chunks
    step()
    (home / "dir").rename(home / "moved")  # a rename replayed twice would lose the tree
    (home / "link").symlink_to("a.txt")
    step()
    (home / "a.txt").unlink()
    (home / "moved" / "c.txt").write_text("c2")
    step()
    (home / "b.txt").write_text("b small now")
    step()

    repo = Repository.open(tmp_path / "repo", PASSPHRASE)
    before_ids = _journal(repo)
    assert len(before_ids) == 5  # one segment a pass; nothing is old enough to merge
    before = _what_the_journal_says(repo, home, moments, tmp_path / "before")
    trees = before[0]
    digest = {
        name: hashlib.sha256(data).hexdigest() for name, data in (("a1", b"a1"), ("c2", b"c2"))
    }
    assert trees[0] == {"home/a.txt": digest["a1"], "home/dir/c.txt": trees[0]["home/dir/c.txt"]}
    assert "home/dir/c.txt" not in trees[2] and "home/moved/c.txt" in trees[2]
    assert trees[2]["home/link"] == "-> a.txt"
    assert "home/a.txt" not in trees[3] and trees[3]["home/moved/c.txt"] == digest["c2"]
    assert len({str(t) for t in trees}) == 5  # each second differs from the one before

    # An interrupted compaction: the merged segment is committed, the deletions fail.
    def lost_drive(self: Repository, snapshot_id: str) -> None:
        raise OSError(5, "Input/output error")

    compact_now = _config(tmp_path, home, compact_after=0)
    cut = time.time_ns()
    with monkeypatch.context() as m:
        m.setattr(Repository, "delete_snapshot", lost_drive)
        capsys.readouterr()
        assert run_cli("agent", "--config", str(compact_now), "--once") == 1  # said, not hidden
    assert "compacting the journal" in capsys.readouterr().err
    repo = Repository.open(tmp_path / "repo", PASSPHRASE)
    listed = repo.snapshots()
    left = set(_journal(repo))
    assert set(before_ids) <= left and len(left) == 7  # + the pass's own, + the merged one
    assert superseded(listed) == left - {max(listed, key=lambda s: s.order).id}
    (merged,) = load_segments(repo, source_id=source_id_of(os.uname().nodename))
    assert merged.compacted and len(merged.snapshot.id) == 32
    assert _what_the_journal_says(repo, home, moments, tmp_path / "interrupted", cut) == before

    # The next pass deletes what the merged segment holds, and merges its own segment in.
    assert run_cli("agent", "--config", str(compact_now), "--once") == 0
    repo = Repository.open(tmp_path / "repo", PASSPHRASE)
    (only,) = _journal(repo)
    assert only not in left
    assert _what_the_journal_says(repo, home, moments, tmp_path / "after", cut) == before
    # Its chunks are marked by gc and read back whole.
    secret = ["--repo", str(tmp_path / "repo"), "--passphrase-file", str(tmp_path / "secret")]
    assert run_cli("gc", *secret) == 0
    assert run_cli("verify", *secret, "--read-data") == 0
    assert _what_the_journal_says(repo, home, moments, tmp_path / "after-gc", cut) == before
