"""A restore never writes into the repository it reads (issue 14, item 7).

`restore --yes --repo R latest R/keys/x.key` exited 0 and destroyed the repository. Every
path to a repository file (directly, through a symlink, a bind mount or a hard link, or a
loop device backed by one) and every block device below the repository's filesystem (that
device, another partition of its disk, the whole disk) is refused with exit 6, naming the
repository, by the CLI and by the engine alike.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from imaging.errors import TargetUnsuitable
from imaging.image.backup import backup_path
from imaging.image.restore import restore_snapshot
from imaging.repository.store import Repository
from tests.conftest import PASSPHRASE
from tests.imaging.disks import helpers
from tests.support import MiB, loop_device, mounted, run_cli, sh, write_random_image


@dataclass
class Setup:
    repo: Repository
    source: bytes
    options: list[str]


def _setup(repo: Repository, tmp_path: Path) -> Setup:
    source = tmp_path / "source.img"
    write_random_image(source, 4 * MiB, zero_every=0)
    backup_path(repo, source)
    pw = tmp_path / "pw"
    pw.write_text(PASSPHRASE + "\n")
    return Setup(
        repo, source.read_bytes(), ["--repo", str(repo.path), "--passphrase-file", str(pw)]
    )


def digest(root: Path) -> dict[str, str]:
    """Every file of the repository and its SHA-256: a refused restore changes none."""
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def refused(setup: Setup, target: str | Path, capsys: pytest.CaptureFixture[str]) -> str:
    """Restore onto ``target`` by the CLI and the engine: both refuse, naming the repository."""
    capsys.readouterr()
    code = run_cli("restore", "--yes", "latest", str(target), *setup.options)
    err = capsys.readouterr().err
    assert code == TargetUnsuitable.exit_code, err
    assert str(setup.repo.path) in err and "Traceback" not in err
    with pytest.raises(TargetUnsuitable, match=str(setup.repo.path)):
        restore_snapshot(setup.repo, setup.repo.snapshots()[-1], str(target))
    return err


def test_files_inside_the_repository_are_refused(
    repo: Repository,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    setup = _setup(repo, tmp_path)
    before = digest(repo.path)
    key = next((repo.path / "keys").glob("*.key"))
    chunk = Path(next(repo.iter_chunk_files()).path)
    link = tmp_path / "looks-harmless.img"
    link.symlink_to(key)
    hard = tmp_path / "hard-link.img"
    os.link(chunk, hard)
    monkeypatch.chdir(repo.path / "snapshots")
    for target in (key, repo.path / "config", chunk, repo.path / "tmp" / "new.img", link):
        assert "inside the repository" in refused(setup, target, capsys)
    assert "inside the repository" in refused(setup, "../keys/" + key.name, capsys)
    assert "hard links" in refused(setup, hard, capsys)
    hard.unlink()
    assert digest(repo.path) == before
    out = tmp_path / "beside.img"  # a file outside the repository is a fine target
    assert run_cli("restore", "--yes", "latest", str(out), *setup.options) == 0
    assert out.read_bytes() == setup.source
    assert run_cli("verify", "--read-data", *setup.options) == 0


@pytest.mark.integration
@pytest.mark.root
def test_the_repository_seen_through_a_bind_mount_is_refused(
    repo: Repository, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    setup = _setup(repo, tmp_path)
    before = digest(repo.path)
    alias = tmp_path / "alias"
    alias.mkdir()
    sh("mount", "--bind", repo.path, alias)
    try:
        assert "inside the repository" in refused(setup, alias / "config", capsys)
    finally:
        sh("umount", alias)
    assert digest(repo.path) == before


@pytest.fixture
def usb(tmp_path: Path) -> Iterator[tuple[str, Setup]]:
    """A two-partition loop disk; the repository on an ext4 filesystem in partition 1."""
    image = tmp_path / "usb.img"
    sh("truncate", "-s", "80M", image)
    sh("sgdisk", "--new=1:0:+40M", "--new=2:0:0", image)
    with helpers.attached(image) as disk:
        sh("mkfs.ext4", "-q", helpers.node(disk, 1))
        with mounted(helpers.node(disk, 1), tmp_path / "usb"):
            repo = Repository.init(tmp_path / "usb" / "repo", passphrase=PASSPHRASE)
            yield disk, _setup(repo, tmp_path)


@pytest.mark.integration
@pytest.mark.root
def test_block_devices_below_the_repository_are_refused(
    usb: tuple[str, Setup], capsys: pytest.CaptureFixture[str]
) -> None:
    """The mounted filesystem's device, its sibling partition and the whole disk."""
    disk, setup = usb
    sibling = helpers.node(disk, 2)
    helpers.write_bytes(sibling, 0, b"sibling data" * 1000)
    before = helpers.read_bytes(sibling, 0, 4 * MiB)
    for target in (helpers.node(disk, 1), sibling, disk):
        assert "holds the repository" in refused(setup, target, capsys)
    assert helpers.read_bytes(sibling, 0, 4 * MiB) == before


@pytest.mark.integration
@pytest.mark.root
def test_a_loop_device_on_a_repository_file_is_refused(
    usb: tuple[str, Setup], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _, setup = usb
    inside = setup.repo.path / "tmp" / "backing.img"  # a file of the repository's own
    inside.write_bytes(b"repository bytes" * (8 * MiB // 16))
    before = digest(setup.repo.path)
    with loop_device(inside) as loop:
        err = refused(setup, loop, capsys)
        assert str(inside) in err and "loop device" in err
    assert digest(setup.repo.path) == before
    # A loop device on a file beside the repository, on the same filesystem, is a target.
    beside = setup.repo.path.parent / "beside.img"
    beside.write_bytes(bytes(8 * MiB))
    with loop_device(beside) as loop:
        assert run_cli("restore", "--yes", "latest", loop, *setup.options) == 0
    assert beside.read_bytes()[: len(setup.source)] == setup.source


@pytest.mark.integration
@pytest.mark.root
def test_other_capitals_on_exfat_name_the_same_repository_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """exFAT matches names without case, and its FUSE driver gives `Repo` and `REPO` different
    inode numbers: only the case-folded path tells that REPO/CONFIG is the repository's."""
    image = tmp_path / "exfat.img"
    sh("truncate", "-s", "64M", image)
    sh("mkfs.exfat", image)
    with loop_device(image) as dev, helpers.mounted_fs(dev, "exfat", tmp_path / "stick") as stick:
        setup = _setup(Repository.init(stick / "Repo", passphrase=PASSPHRASE), tmp_path)
        before = digest(setup.repo.path)
        assert "inside the repository" in refused(setup, stick / "REPO" / "CONFIG", capsys)
        assert digest(setup.repo.path) == before
        assert run_cli("restore", "--yes", "latest", stick / "beside.img", *setup.options) == 0


def test_files_restore_never_writes_into_the_repository(
    tmp_path: Path, repo: Repository, capsys: pytest.CaptureFixture[str]
) -> None:
    """`files restore --to` a folder inside the repository (or a new one there) is refused
    before anything is written; a folder beside the repository is fine."""
    from imaging.files.restore import restore_files
    from tests.imaging.files.fsimages import make_fs, writable

    image = make_fs("ext4", tmp_path / "fs.img")
    with writable("ext4", image, tmp_path / "rw") as mnt:
        (mnt / "letter.txt").write_text("Dear Bob\n")
    snapshot = backup_path(repo, image)
    before = digest(repo.path)
    for dest in (repo.path / "keys", repo.path / "new-folder", repo.path / "chunks" / ".."):
        with pytest.raises(TargetUnsuitable, match=str(repo.path)):
            restore_files(repo, snapshot, None, ["/letter.txt"], dest)
    assert digest(repo.path) == before and not (repo.path / "new-folder").exists()
    beside = tmp_path / "beside"
    assert restore_files(repo, snapshot, None, ["/letter.txt"], beside).ok
    assert (beside / "letter.txt").read_text() == "Dear Bob\n"
