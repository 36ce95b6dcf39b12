"""One damaged manifest locks nothing else away (issue 14, item 5).

A real repository, a real bit flipped in a real manifest (its mtime kept, as bit rot does):
the damaged snapshot is listed as damaged and named, every intact one lists, restores and
browses as before, `forget` removes the damaged one and `gc` works again.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from imaging.errors import IntegrityError
from imaging.image.backup import backup_path
from imaging.repository.store import Repository
from tests.conftest import PASSPHRASE
from tests.support import MiB, run_cli, write_random_image


def flip_bit(path: Path, offset: int = 40) -> None:
    """Flip one bit of ``path`` in place, keeping its times (bit rot changes no mtime)."""
    st = os.stat(path)
    with open(path, "r+b") as f:
        f.seek(offset)
        byte = f.read(1)[0]
        f.seek(offset)
        f.write(bytes([byte ^ 0x04]))
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))


@dataclass
class Damaged:
    repo: Repository
    ids: list[str]  # oldest first
    sources: list[bytes]  # what each snapshot holds
    options: list[str]  # --repo and --passphrase-file for the CLI

    def manifest(self, index: int) -> Path:
        return self.repo.path / "snapshots" / f"{self.ids[index]}.snap"


@pytest.fixture
def three(repo: Repository, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Damaged:
    """Three snapshots of one image file a minute apart, each with its own content."""
    import imaging.image.backup

    source = tmp_path / "source.img"
    ids, sources = [], []
    start = datetime.now().astimezone().replace(microsecond=0) - timedelta(hours=1)
    for seed in range(3):
        when = start + timedelta(minutes=seed)
        monkeypatch.setattr(imaging.image.backup, "local_now", lambda when=when: when)
        write_random_image(source, 3 * MiB, seed=seed, zero_every=0)  # 3 chunks of its own
        sources.append(source.read_bytes())
        ids.append(backup_path(repo, source).id)
    pw = tmp_path / "pw"
    pw.write_text(PASSPHRASE + "\n")
    return Damaged(repo, ids, sources, ["--repo", str(repo.path), "--passphrase-file", str(pw)])


def test_the_engine_lists_intact_snapshots_and_names_the_damaged(three: Damaged) -> None:
    flip_bit(three.manifest(0))
    seen: list[str] = []
    listed = three.repo.snapshots(on_damage=lambda sid, error: seen.append(sid))
    assert [s.id for s in listed] == three.ids[1:]
    assert [d.id for d in listed.damaged] == [three.ids[0]] == seen
    assert "checksum mismatch" in listed.damaged[0].reason
    with pytest.raises(IntegrityError, match=three.ids[0]):
        three.repo.load_snapshot(three.ids[0])


def test_snapshots_lists_the_rest_and_names_the_damaged(
    three: Damaged, capsys: pytest.CaptureFixture[str]
) -> None:
    flip_bit(three.manifest(0))
    capsys.readouterr()
    assert run_cli("snapshots", *three.options) == IntegrityError.exit_code
    out, err = capsys.readouterr()
    rows = out.splitlines()[1:]
    assert len(rows) == 3
    assert rows[0].startswith(three.ids[0][:12]) and "DAMAGED" in rows[0]  # where it was
    assert [r[:12] for r in rows[1:]] == [i[:12] for i in three.ids[1:]]
    assert f"DAMAGED snapshot {three.ids[0]}" in err and "hourglass forget" in err
    assert run_cli("snapshots", "--json", *three.options) == IntegrityError.exit_code
    listing = json.loads(capsys.readouterr().out)
    assert [s["id"] for s in listing] == three.ids
    assert [s["damaged"] for s in listing] == [True, False, False]
    assert "checksum mismatch" in listing[0]["error"] and "time" not in listing[0]


def test_intact_snapshots_restore_and_the_damaged_one_is_named(
    three: Damaged, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    flip_bit(three.manifest(0))
    out = tmp_path / "latest.img"
    assert run_cli("restore", "--yes", "latest", str(out), *three.options) == 0
    assert out.read_bytes() == three.sources[2]
    assert run_cli("restore", "--yes", three.ids[1][:12], str(out), *three.options) == 0
    assert out.read_bytes() == three.sources[1]
    as_of = three.repo.load_snapshot(three.ids[1]).time.astimezone()
    local = as_of.strftime("%Y-%m-%d %H:%M:%S")
    assert run_cli("restore", "--yes", local, str(out), *three.options) == 0
    assert out.read_bytes() == three.sources[1]
    capsys.readouterr()
    none = tmp_path / "none.img"
    code = run_cli("restore", "--yes", three.ids[0][:12], str(none), *three.options)
    assert code == IntegrityError.exit_code and not none.exists()
    err = capsys.readouterr().err
    assert three.ids[0] in err and "damaged" in err and "forget" in err
    assert run_cli("verify", three.ids[1][:12], *three.options) == 0
    capsys.readouterr()
    assert run_cli("verify", *three.options) == IntegrityError.exit_code
    report = capsys.readouterr()
    damaged_lines = [
        line for line in (report.out + report.err).splitlines() if three.ids[0] in line
    ]
    assert damaged_lines and damaged_lines[0].count(three.ids[0]) == 1, damaged_lines


def test_forget_removes_a_damaged_snapshot_and_gc_works_again(
    three: Damaged, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    flip_bit(three.manifest(0))
    assert run_cli("gc", *three.options) != 0  # it may not guess what the damaged one needs
    assert run_cli("forget", "--keep-last", "5", "--yes", *three.options) == 0
    assert three.manifest(0).exists()  # a policy never touches what it cannot read
    capsys.readouterr()
    assert run_cli("forget", "--yes", three.ids[0][:12], *three.options) == 0
    assert three.ids[0][:12] in capsys.readouterr().out
    assert not three.manifest(0).exists()
    assert three.repo.snapshot_ids() == sorted(three.ids[1:])
    chunks_before = sum(1 for _ in three.repo.iter_chunk_files())
    capsys.readouterr()
    assert run_cli("gc", "--json", *three.options) == 0
    freed = json.loads(capsys.readouterr().out)["freed"]
    assert freed == 3 and sum(1 for _ in three.repo.iter_chunk_files()) == chunks_before - 3
    assert run_cli("verify", "--read-data", *three.options) == 0
    out = tmp_path / "after.img"
    assert run_cli("restore", "--yes", three.ids[1][:12], str(out), *three.options) == 0
    assert out.read_bytes() == three.sources[1]
    assert run_cli("snapshots", *three.options) == 0


def test_latest_warns_when_the_newest_manifest_is_damaged(
    three: Damaged, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`latest` cannot know a damaged snapshot's time: it takes the newest intact one and
    says that a damaged manifest written later may have been meant."""
    flip_bit(three.manifest(2))
    out = tmp_path / "latest.img"
    capsys.readouterr()
    assert run_cli("restore", "--yes", "latest", str(out), *three.options) == 0
    assert out.read_bytes() == three.sources[1]
    err = capsys.readouterr().err
    assert "warning" in err and three.ids[2] in err and three.ids[1][:12] in err


def test_verify_latest_warns_when_the_newest_manifest_is_damaged(
    three: Damaged, capsys: pytest.CaptureFixture[str]
) -> None:
    """`verify latest` checks the newest intact snapshot and says so, as a restore does; the
    JSON carries the warning too."""
    flip_bit(three.manifest(2))
    capsys.readouterr()
    assert run_cli("verify", "latest", *three.options) == 0
    err = capsys.readouterr().err
    assert "warning" in err and three.ids[2] in err and three.ids[1][:12] in err
    assert run_cli("verify", "latest", "--json", *three.options) == 0
    (warning,) = json.loads(capsys.readouterr().out)["warnings"]
    assert three.ids[2] in warning
    # an id names one snapshot: nothing to warn about
    assert run_cli("verify", three.ids[1], *three.options) == 0
    assert "warning" not in capsys.readouterr().err


def test_every_manifest_damaged_is_damage_not_an_empty_repository(
    three: Damaged, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    for index in range(3):
        flip_bit(three.manifest(index))
    capsys.readouterr()
    code = run_cli("restore", "--yes", "latest", str(tmp_path / "o.img"), *three.options)
    assert code == IntegrityError.exit_code
    assert "Every snapshot" in capsys.readouterr().err


@pytest.mark.integration
@pytest.mark.root
def test_files_ls_browses_intact_snapshots(
    repo: Repository, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from tests.imaging.files.fsimages import make_fs, writable

    image = make_fs("ext4", tmp_path / "fs.img")
    ids = []
    for n in range(3):
        with writable("ext4", image, tmp_path / "rw") as mnt:
            (mnt / f"file{n}.txt").write_text(f"version {n}\n")
        ids.append(backup_path(repo, image).id)
    pw = tmp_path / "pw"
    pw.write_text(PASSPHRASE + "\n")
    options = ["--repo", str(repo.path), "--passphrase-file", str(pw)]
    flip_bit(repo.path / "snapshots" / f"{ids[0]}.snap")
    for selector, expected in (("latest", "file2.txt"), (ids[1][:12], "file1.txt")):
        capsys.readouterr()
        assert run_cli("files", "ls", selector, "/", "--json", *options) == 0, capsys.readouterr()
        out = capsys.readouterr().out
        names = [e["name"] for e in json.loads(out[out.index("[") :])]
        assert expected in names and "file0.txt" in names
    assert run_cli("files", "ls", ids[0][:12], "/", *options) == IntegrityError.exit_code
    assert ids[0] in capsys.readouterr().err
