"""The operations layer owns what must be the same for every front end: the check after a
backup, the lease that covers a restore, the disks a backup must not read."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from imaging import jobs
from imaging.errors import Cancelled, RepositoryOnSource, UsageError
from imaging.repository import leases
from imaging.repository.store import Repository, Snapshot
from tests.conftest import PASSPHRASE
from tests.support import MiB, loop_device, mounted, sh, write_random_image


def chunk_files(repo: Repository, snapshot: Snapshot) -> list[Path]:
    """The chunk files the snapshot's images name (zero and unused blocks store none)."""
    paths = []
    for image in snapshot.images:
        for chunk_id in repo.load_index(snapshot, image.name):
            path = repo.chunk_path(chunk_id)
            if path.exists():
                paths.append(path)
    return paths


def test_every_check_policy_finds_what_it_promises(repo: Repository, tmp_path: Path) -> None:
    source = tmp_path / "s.img"
    write_random_image(source, 12 * MiB, zero_every=0)

    quiet = jobs.backup(repo, jobs.BackupRequest(sources=(str(source),), check=jobs.Check.NONE))
    assert quiet.report is None and quiet.ok

    def lose_a_chunk(snapshot: Snapshot) -> None:
        chunk_files(repo, snapshot)[0].unlink()

    write_random_image(source, 12 * MiB, seed=1, zero_every=0)
    lost = jobs.backup(repo, jobs.BackupRequest(sources=(str(source),)), on_committed=lose_a_chunk)
    assert lost.check is jobs.Check.STRUCTURE
    assert not lost.ok
    assert lost.snapshot.id[:12] in lost.report.damage[0].describe()  # type: ignore[union-attr]

    def flip_a_byte(snapshot: Snapshot) -> None:
        path = chunk_files(repo, snapshot)[0]
        data = bytearray(path.read_bytes())
        data[len(data) // 2] ^= 0x01
        path.write_bytes(bytes(data))

    for check, found in ((jobs.Check.STRUCTURE, False), (jobs.Check.DATA, True)):
        write_random_image(source, 12 * MiB, seed=2 + found, zero_every=0)
        result = jobs.backup(
            repo, jobs.BackupRequest(sources=(str(source),), check=check), on_committed=flip_a_byte
        )
        # structure sees every chunk stored; only reading the data finds the flipped byte
        assert result.ok is not found, check


def hourglass(*argv: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "HOURGLASS_PASSPHRASE": PASSPHRASE}
    return subprocess.run(
        [sys.executable, "-m", "imaging.cli.main", *argv],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )


def test_the_cli_backup_exits_3_when_its_check_fails(repo: Repository, tmp_path: Path) -> None:
    """An incremental takes its parent's chunks for unchanged blocks as stored. One of them
    is gone (a drive that lost a file): the snapshot is recorded, and the check after it
    says it is damaged, naming it; before, the CLI checked nothing and exited 0."""
    source = tmp_path / "s.img"
    write_random_image(source, 8 * MiB, zero_every=0)
    first = hourglass("backup", "--repo", str(repo.path), str(source))
    assert first.returncode == 0, first.stderr
    assert "structure checked" in first.stdout
    chunk_files(repo, repo.snapshots()[-1])[0].unlink()

    unchecked = hourglass("backup", "--repo", str(repo.path), str(source), "--check", "none")
    assert unchecked.returncode == 0, unchecked.stderr
    checked = hourglass("backup", "--repo", str(repo.path), str(source))
    assert checked.returncode == 3, checked.stdout + checked.stderr
    newest = repo.snapshots()[-1]
    assert f"snapshot {newest.id[:12]} was recorded, but checking it found" in checked.stderr
    assert "DAMAGED" in checked.stderr and "missing" in checked.stderr


def test_a_restore_holds_its_lease_from_the_choice_to_the_end(
    repo: Repository, tmp_path: Path
) -> None:
    """Forget the snapshot and run gc twice while the restore waits for its confirmation:
    the chunks stay, because the lease was taken before the snapshot was chosen (the app's
    restore took it only for the writing; two gc runs in that gap purged the chunks)."""
    source = tmp_path / "s.img"
    write_random_image(source, 16 * MiB, zero_every=0)
    snapshot = jobs.backup(repo, jobs.BackupRequest(sources=(str(source),))).snapshot
    out = tmp_path / "out.img"
    during: list[jobs.GcResult] = []

    def forget_and_collect(preview: jobs.RestorePreview) -> None:
        assert preview.snapshot.id == snapshot.id
        assert leases.live_leases(repo.path / "leases", ("reader",))
        repo.delete_snapshot(snapshot.id)
        for path in chunk_files(repo, snapshot):
            os.utime(path, (time.time() - 7200, time.time() - 7200))
        during.extend([jobs.gc(repo), jobs.gc(repo)])

    result = jobs.restore(
        repo, jobs.RestoreRequest(snapshot="latest", target=str(out)), confirm=forget_and_collect
    )
    assert result.verified and not result.damaged
    assert out.read_bytes() == source.read_bytes()
    assert during[0].trashed > 0 and during[1].freed == 0, during
    assert not leases.live_leases(repo.path / "leases", ("reader",))
    assert jobs.gc(repo).freed == during[0].trashed  # and once it ended, the space comes back


def test_a_refused_confirmation_writes_nothing(repo: Repository, tmp_path: Path) -> None:
    source = tmp_path / "s.img"
    write_random_image(source, 4 * MiB)
    jobs.backup(repo, jobs.BackupRequest(sources=(str(source),)))
    out = tmp_path / "out.img"
    out.write_bytes(b"keep me")

    def refuse(preview: jobs.RestorePreview) -> None:
        assert str(out) in preview.question() and "latest" not in preview.question()
        raise Cancelled("no")

    with pytest.raises(Cancelled):
        jobs.restore(repo, jobs.RestoreRequest(snapshot="latest", target=str(out)), confirm=refuse)
    assert out.read_bytes() == b"keep me"


def test_a_partition_of_a_snapshot_that_has_none_is_refused(
    repo: Repository, tmp_path: Path
) -> None:
    source = tmp_path / "s.img"
    write_random_image(source, 4 * MiB)
    snapshot = jobs.backup(repo, jobs.BackupRequest(sources=(str(source),))).snapshot
    with pytest.raises(UsageError, match="has no partitions"):
        jobs.check_restore_target(repo, snapshot, str(tmp_path / "o.img"), partition=2)
    with pytest.raises(UsageError, match="Two different partitions"):
        jobs.restore(
            repo,
            jobs.RestoreRequest(snapshot="latest:1", target=str(tmp_path / "o"), partition=2),
            confirm=lambda _: None,
        )


@pytest.mark.root
@pytest.mark.integration
def test_a_backup_never_reads_the_disk_holding_its_repository(tmp_path: Path) -> None:
    """The rule was the app's alone: the CLI and unattended runs read the repository's own
    disk into itself. Now the engine refuses, for every front end (exit 2)."""
    image = tmp_path / "drive.img"
    with open(image, "wb") as f:
        f.truncate(96 * MiB)
    sh("mkfs.ext4", "-q", "-F", image)
    with loop_device(image) as device, mounted(device, tmp_path / "mnt") as mnt:
        repo = Repository.init(mnt / "repo", passphrase=PASSPHRASE)
        with pytest.raises(RepositoryOnSource, match=device.removeprefix("/dev/")):
            jobs.plan_backup(repo, jobs.BackupRequest(sources=(device,), force=True))
        cli = hourglass("backup", "--repo", str(repo.path), device, "--force")
        assert cli.returncode == 2, cli.stderr
        assert "Choose a repository on another drive" in cli.stderr
        assert repo.snapshot_ids() == []
        # Another disk is fine: a second drive's loop device.
        other = tmp_path / "other.img"
        write_random_image(other, 4 * MiB)
        with loop_device(other) as second:
            done = jobs.backup(repo, jobs.BackupRequest(sources=(second,)))
            assert done.ok and done.snapshot.source == second
    subprocess.run(["sync"], check=False)


def test_backup_sources_never_lead_with_a_backup_drive() -> None:
    """Issue 22, item 6: what a front end offers to back up, first the one to preselect:
    not the boot medium, not the open repository's drive; another backup drive last."""
    from imaging.disks.model import Disk, Partition
    from imaging.jobs.disks import backup_sources, blank_disks, repository_partitions

    def disk(name: str, **kw: object) -> Disk:
        part = Partition(1, f"/dev/{name}1", 1 << 20, 1 << 30, "", "", "", fstype="ext4")
        return Disk(f"/dev/{name}", "", name, name, 2 << 30, 512, 512, "usb", True, False,
                    "gpt", partitions=(part,), **kw)  # type: ignore[arg-type]  # fmt: skip

    drive = disk("sda", repositories=("/mnt/sda1/hourglass-backups",))
    other_drive = disk("sdb", repositories=("/mnt/sdb1/hourglass-backups",))
    boot = disk("sdc", is_boot_disk=True)
    pc = disk("nvme0n1")
    disks = [drive, other_drive, boot, pc]
    assert backup_sources(disks) == [pc, drive, other_drive]
    assert backup_sources(disks, repository_disk=drive.device) == [pc, other_drive]
    # A new repository's place: never the disk to be backed up.
    places = [p.device for _d, p in repository_partitions(disks, source=pc.device)]
    assert places == ["/dev/sda1", "/dev/sdb1"]
    blank = Disk("/dev/sdd", "", "", "", 2 << 30, 512, 512, "usb", True, False, "")
    assert blank_disks([blank]) == [blank]
    assert blank_disks([blank], source=blank.device) == []


def test_an_incremental_looks_up_its_parents_chunks_while_it_runs(
    repo: Repository, tmp_path: Path
) -> None:
    """The structure check's lookups of the parent's chunks are made during the backup
    (EarlyCheck); one the drive lost is not taken as found, and the check names it."""
    from imaging.image.backup import BackupOptions, plan_file, run_backup
    from imaging.repository.verify import EarlyCheck, verify

    source = tmp_path / "s.img"
    write_random_image(source, 12 * MiB, zero_every=0)
    first = jobs.backup(repo, jobs.BackupRequest(sources=(str(source),)))
    assert first.ok
    parent_ids = set(repo.load_index(first.snapshot, first.snapshot.images[0].name))
    lost = chunk_files(repo, first.snapshot)[3]
    lost_id = bytes.fromhex(lost.name)
    assert lost_id in parent_ids
    lost.unlink()

    early = EarlyCheck()
    snapshot = run_backup(repo, plan_file(str(source)), options=BackupOptions(early_check=early))
    assert early.confirmed == parent_ids - {lost_id}
    report = verify(repo, [snapshot], confirmed=early.confirmed)
    assert report.checked == report.chunks == len(parent_ids)
    assert [d.what for d in report.damage] == [f"chunk {lost_id.hex()}"]
