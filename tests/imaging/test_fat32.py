"""A repository on a FAT32 backup drive, what many USB sticks carry (issue 14, item 10).

The drive is a real FAT32 image on a loop device, mounted the way the app and unattended runs
mount a backup drive (``imaging.mounts.locations.mount_partition``): with the kernel's vfat where it
has one, with fusefat otherwise (this sandbox), then used through the real CLI.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest

from imaging.mounts import locations
from imaging.repository import fsutil
from imaging.repository.store import Repository
from tests.conftest import PASSPHRASE
from tests.support import MiB, have, loop_device, run_cli, sh, write_random_image

fat_tools = pytest.mark.skipif(
    not have("mkfs.vfat") or not (have("fusefat") or have("mount.vfat")),
    reason="needs mkfs.vfat (dosfstools) and the vfat kernel driver or fusefat",
)


@contextlib.contextmanager
def fat_drive(tmp_path: Path, mib: int) -> Iterator[Path]:
    """A FAT32 drive of ``mib`` MiB, mounted read-write as the app mounts one."""
    image = tmp_path / "stick.img"
    with open(image, "wb") as f:
        f.truncate(mib * MiB)
    sh("mkfs.vfat", "-F", "32", "-n", "HGSTICK", image)
    with loop_device(image) as device:
        location = locations.mount_partition(device, "vfat", writable=True)
        try:
            assert fsutil.filesystem_type(Path(location.mountpoint)) in ("vfat", "fuse.fusefat")
            yield Path(location.mountpoint)
        finally:
            locations.unmount(location)


def _fill(root: Path, leave: int) -> None:
    """Fill the drive, then free ``leave`` bytes (fusefat reports no free space in statfs,
    so the drive is filled until a write fails)."""
    (root / "spare").write_bytes(os.urandom(leave))
    with open(root / "filler", "wb") as f, contextlib.suppress(OSError):
        chunk = bytes(MiB)
        while True:
            f.write(chunk)
            f.flush()
    with contextlib.suppress(OSError), open(root / "filler", "ab") as f:
        while True:
            f.write(b"\0" * 512)
            f.flush()
    (root / "spare").unlink()


@pytest.mark.integration
@pytest.mark.root
@fat_tools
def test_init_backup_restore_verify_gc_on_fat32(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """fusefat refused "rw" (exit 234), then init failed on chmod (ENOSYS)."""
    source, second = tmp_path / "disk.img", tmp_path / "second.img"
    write_random_image(second, 40 * MiB, seed=2)
    with fat_drive(tmp_path, 400) as root:
        repo = str(root / "Backups")
        monkeypatch.setenv("HOURGLASS_PASSPHRASE", PASSPHRASE)
        assert run_cli("init", repo) == 0
        for seed in (1, 2):  # the same source twice, its content changed: gc has work
            write_random_image(source, 40 * MiB, seed=seed)
            monkeypatch.setenv("HOURGLASS_PASSPHRASE", PASSPHRASE)
            assert run_cli("backup", "--repo", repo, str(source)) == 0
        monkeypatch.setenv("HOURGLASS_PASSPHRASE", PASSPHRASE)
        out = tmp_path / "out.img"
        assert run_cli("restore", "--repo", repo, "--yes", "latest", str(out)) == 0
        assert out.read_bytes() == second.read_bytes()
        monkeypatch.setenv("HOURGLASS_PASSPHRASE", PASSPHRASE)
        assert run_cli("forget", "--yes", "--repo", repo, "--keep-last", "1") == 0
        capsys.readouterr()
        monkeypatch.setenv("HOURGLASS_PASSPHRASE", PASSPHRASE)
        assert run_cli("gc", "--repo", repo) == 0
        freed = re.search(r"Freed (\d+) chunk", capsys.readouterr().out)
        assert freed and int(freed.group(1)) > 0, "gc freed the forgotten snapshot's chunks"
        monkeypatch.setenv("HOURGLASS_PASSPHRASE", PASSPHRASE)
        assert run_cli("verify", "--repo", repo, "--read-data") == 0
        out.unlink()
        monkeypatch.setenv("HOURGLASS_PASSPHRASE", PASSPHRASE)
        assert run_cli("restore", "--repo", repo, "--yes", "latest", str(out)) == 0
        assert out.read_bytes() == second.read_bytes()
        assert not list((root / "Backups" / "tmp").iterdir())


@pytest.mark.integration
@pytest.mark.root
@pytest.mark.faults
@fat_tools
@pytest.mark.parametrize("existing", [False, True], ids=["new-directory", "empty-directory"])
def test_a_failed_init_on_fat32_leaves_nothing_behind(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], existing: bool
) -> None:
    """An init that runs out of room mid-way left a half-made directory, and the next init
    then refused ("exists and is not an empty directory"). Only what init made goes: an
    empty directory the person chose stays."""
    with fat_drive(tmp_path, 40) as root:
        if existing:
            (root / "Backups").mkdir()
        _fill(root, leave=6 * 512)  # room for a few of the repository's directories
        before = sorted(p.name for p in root.iterdir())
        capsys.readouterr()
        code = run_cli("init", "--encryption", "none", str(root / "Backups"))
        err = capsys.readouterr().err
        assert code != 0 and "internal error" not in err, err
        assert sorted(p.name for p in root.iterdir()) == before
        if existing:
            assert not list((root / "Backups").iterdir())
        (root / "filler").unlink()
        assert run_cli("init", "--encryption", "none", str(root / "Backups")) == 0
        Repository.open(root / "Backups")


# A FAT directory holds 65,536 32-byte entries ("." and ".." among them); a temporary chunk
# name, c-<16 hex>, takes three: two long-name entries and its 8.3 alias.
FAT_TMP_NAMES = (65536 - 2) // 3


def test_the_chunk_batch_is_capped_by_count(tmp_path: Path) -> None:
    """Small (compressible) chunks stayed in tmp/ until 64 MiB of them: more files than a FAT
    directory holds. Now several backups' batches at once fit in one FAT tmp/."""
    repo = Repository.init(tmp_path / "repo", encryption="none")
    if not repo.local_store.batched:
        pytest.skip("tmp_path is not on a filesystem whose chunks are batched")
    count = FAT_TMP_NAMES + 100
    peak = 0
    for number in range(count):
        repo.write_chunk(secrets.token_bytes(32), b"a small chunk")
        if number % 64 == 0:
            peak = max(peak, len(os.listdir(repo.path / "tmp")))
    repo.commit_chunks()
    assert peak <= FAT_TMP_NAMES // 4, f"{peak} files in tmp/"
    assert not os.listdir(repo.path / "tmp")
    assert sum(len(files) for _, _, files in os.walk(repo.path / "chunks")) == count
