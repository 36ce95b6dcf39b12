"""Per filesystem: three snapshots where a file changes, then is deleted; its versions are
listed correctly and the old version comes back "as of" a local time with content and mtime."""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

import pytest

from imaging.files.browse import SnapshotBrowser
from imaging.files.restore import restore_files
from imaging.files.versions import file_versions
from imaging.image.backup import backup_path
from imaging.mounts.drivers import kernel_filesystems
from imaging.repository.store import Repository
from tests.imaging.files.fsimages import make_fs, vfat_delete, vfat_put, writable
from tests.support import MiB

pytestmark = [pytest.mark.integration, pytest.mark.root]

T1 = 1_700_000_000  # even seconds: FAT keeps modification times to 2 s
T2 = 1_700_100_000
FIRST = b"the first version of the report\n" * 100
SECOND = b"a second, longer version of the report\n" * 300


def change(
    kind: str, image: Path, tmp: Path, files: dict[str, tuple[bytes, int]], delete: list[str]
) -> None:
    if kind == "vfat":
        for name, (data, mtime) in files.items():
            vfat_put(image, name, data, mtime, tmp)
        for name in delete:
            vfat_delete(image, name)
        return
    with writable(kind, image, tmp / "rw") as mnt:
        for name, (data, mtime) in files.items():
            path = mnt / name.strip("/")
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
            os.utime(path, ns=(mtime * 10**9, mtime * 10**9))
        for name in delete:
            (mnt / name.strip("/")).unlink()


def one_month_late(t: int) -> float:
    """``t`` as fusefat shows a FAT date: the same local wall-clock time one month later
    (its month field is off by one; seen here: written 2023-11-14 22:13:20, shown
    2023-12-14 22:13:20)."""
    local = datetime.fromtimestamp(t)
    month = local.month % 12 + 1
    return local.replace(year=local.year + (local.month == 12), month=month).timestamp()


def shown_mtime(kind: str) -> Callable[[int], float]:
    """The mtime a snapshot of ``kind`` shows for a file written with mtime ``t``: ``t``
    itself, except for vfat read through fusefat (no vfat in this kernel)."""
    if kind == "vfat" and "vfat" not in kernel_filesystems():
        return one_month_late
    return float


@pytest.mark.parametrize("kind", ["ext4", "xfs", "btrfs", "vfat", "ntfs", "exfat"])
def test_versions_and_restore_as_of(kind: str, tmp_path: Path, repo: Repository) -> None:
    image = make_fs(kind, tmp_path / f"{kind}.img")
    keep = os.urandom(5 * MiB)
    change(
        kind,
        image,
        tmp_path,
        {"/Documents/Quarterly report.txt": (FIRST, T1), "/Documents/keep-this.bin": (keep, T1)},
        [],
    )
    s1 = backup_path(repo, image)
    time.sleep(1.1)  # snapshots one second apart: "as of" selects to the second
    change(kind, image, tmp_path, {"/Documents/Quarterly report.txt": (SECOND, T2)}, [])
    s2 = backup_path(repo, image)
    time.sleep(1.1)
    change(kind, image, tmp_path, {}, ["/Documents/Quarterly report.txt"])
    s3 = backup_path(repo, image)

    v1, v2 = file_versions(repo, "/Documents/Quarterly report.txt")
    assert [s.id for s in v1.snapshots] == [s1.id]
    assert [s.id for s in v2.snapshots] == [s2.id]
    assert v1.absent_after == []
    assert [s.id for s in v2.absent_after] == [s3.id]
    assert v1.hash == hashlib.sha256(FIRST).hexdigest()
    assert (v1.size, v2.size) == (len(FIRST), len(SECOND))
    shown = shown_mtime(kind)
    assert (v1.mtime.timestamp(), v2.mtime.timestamp()) == (shown(T1), shown(T2))
    (unchanged,) = file_versions(repo, "Documents/keep-this.bin")
    assert [s.id for s in unchanged.snapshots] == [s1.id, s2.id, s3.id]

    with SnapshotBrowser(repo, s3, None) as browser:
        assert [e.name for e in browser.listdir("/Documents")] == ["keep-this.bin"]
        assert browser.search("KEEP") == ["/Documents/keep-this.bin"]
        seen = browser.stat("/Documents/keep-this.bin")
        assert seen is not None
    assert seen.mtime.timestamp() == shown(T1)
    expected_t1 = shown(T1)

    as_of = s1.time.astimezone().strftime("%Y-%m-%d %H:%M:%S")
    dest = tmp_path / "dest"
    result = restore_files(repo, as_of, None, ["/Documents/Quarterly report.txt"], dest)
    assert result.ok and result.snapshot.id == s1.id
    restored = dest / "Quarterly report.txt"
    assert restored.read_bytes() == FIRST
    assert restored.stat().st_mtime_ns == int(expected_t1) * 10**9
