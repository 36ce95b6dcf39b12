"""Repository locations: partitions mounted on demand, a blank drive formatted, shares.

SMB and NFS cannot be mounted on the test machine (its kernel has neither cifs nor nfs);
their command lines and the handling of the SMB password are tested, and a real mount of a
folder over SSH (sshfs against an sshd started on loopback) is."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from imaging.disks import mounts, sysfs
from imaging.disks.repos import PROBE_ROOT, repositories_in
from imaging.disks.table import read_table
from imaging.errors import Busy, HourglassError, TargetUnsuitable, UsageError
from imaging.mounts import locations
from imaging.mounts.drivers import Mode
from imaging.mounts.locations import Share
from imaging.mounts.mount import mount
from imaging.repository.store import Repository
from tests.conftest import PASSPHRASE
from tests.support import MiB, loop_device, sh


@pytest.fixture
def ext4_device(tmp_path: Path) -> Iterator[str]:
    image = tmp_path / "fs.img"
    sh("truncate", "-s", "64M", image)
    sh("mkfs.ext4", "-q", "-F", "-L", "BACKUP", image)
    with loop_device(image) as device:
        yield device
        for m in mounts.mounts_of(sysfs.name_of(device)):
            subprocess.run(["umount", m.mountpoint], check=False)


def _mounted_rw(device: str) -> list[str]:
    return [m.mountpoint for m in mounts.mounts_of(sysfs.name_of(device)) if not m.read_only]


@pytest.mark.root
@pytest.mark.integration
def test_partition_mounted_read_write_on_demand(ext4_device: str) -> None:
    location = locations.mount_partition(ext4_device, "ext4", writable=True)
    try:
        assert location.mounted_by_us and location.writable
        assert Path(location.mountpoint).parent == locations.ROOT
        assert _mounted_rw(ext4_device) == [location.mountpoint]
        Path(location.mountpoint, "hello").write_text("x")
        assert location in locations.mounted_locations()
        # Asked again, the same mount is used.
        again = locations.mount_partition(ext4_device, "ext4", writable=True)
        assert again.mountpoint == location.mountpoint and not again.mounted_by_us
    finally:
        locations.unmount(location)
    assert not mounts.mounts_of(sysfs.name_of(ext4_device))
    assert not os.path.exists(location.mountpoint)


@pytest.mark.root
@pytest.mark.integration
def test_probe_mount_is_replaced_by_a_read_write_one(ext4_device: str) -> None:
    probe = str(PROBE_ROOT / os.path.basename(ext4_device))
    mount(ext4_device, "ext4", probe, Mode.READ_ONLY)
    location = locations.mount_partition(ext4_device, "ext4", writable=True)
    try:
        assert not os.path.ismount(probe)
        assert _mounted_rw(ext4_device) == [location.mountpoint]
        repo_path = locations.moved_path(f"{probe}/backups/repo", probe, location.mountpoint)
        assert repo_path == f"{location.mountpoint}/backups/repo"
    finally:
        locations.unmount(location)


@pytest.mark.root
@pytest.mark.integration
def test_our_read_only_mount_is_mounted_again_read_write_in_place(ext4_device: str) -> None:
    first = locations.mount_partition(ext4_device, "ext4", writable=False)
    try:
        assert first.mounted_by_us and not first.writable
        # In use (a repository's file open there): refused, the read-only mount kept.
        held = os.open(first.mountpoint, os.O_RDONLY)
        try:
            with pytest.raises(Busy) as info:
                locations.mount_partition(ext4_device, "ext4", writable=True)
            assert first.mountpoint in info.value.message
        finally:
            os.close(held)
        in_place = [
            (m.mountpoint, m.read_only) for m in mounts.mounts_of(sysfs.name_of(ext4_device))
        ]
        assert in_place == [(first.mountpoint, True)]
        # Free: mounted again read-write where it was; the first location still owns it.
        again = locations.mount_partition(ext4_device, "ext4", writable=True)
        assert again.mountpoint == first.mountpoint and again.writable
        assert not again.mounted_by_us
        assert _mounted_rw(ext4_device) == [first.mountpoint]
        Path(again.mountpoint, "hello").write_text("x")
    finally:
        locations.unmount(first)
    assert not mounts.mounts_of(sysfs.name_of(ext4_device))


@pytest.mark.root
@pytest.mark.integration
def test_read_only_mount_of_someone_else_is_refused(ext4_device: str, tmp_path: Path) -> None:
    elsewhere = tmp_path / "ro"
    elsewhere.mkdir()
    sh("mount", "-o", "ro", ext4_device, elsewhere)
    try:
        with pytest.raises(Busy) as info:
            locations.mount_partition(ext4_device, "ext4", writable=True)
        assert str(elsewhere) in info.value.message
        # Read-only is fine: the existing mount is used.
        found = locations.mount_partition(ext4_device, "ext4", writable=False)
        assert found.mountpoint == str(elsewhere) and not found.mounted_by_us
    finally:
        sh("umount", elsewhere)


@pytest.mark.root
@pytest.mark.integration
def test_blank_drive_is_formatted_with_one_ext4_partition(tmp_path: Path) -> None:
    image = tmp_path / "blank.img"
    with open(image, "wb") as f:
        f.write(b"OLD DATA" * (MiB // 8) * 96)
    with loop_device(image) as device:
        try:
            node = locations.format_drive(device)
            assert node == f"{device}p1"
            table = read_table(device)
            assert table is not None and table.kind == "gpt"
            assert [p.number for p in table.partitions] == [1]
            assert table.partitions[0].start * table.sector_size == MiB
            probe = sh("blkid", "-p", "-o", "export", node).stdout
            assert "TYPE=ext4" in probe and "LABEL=HOURGLASS" in probe
            # A repository can be created there.
            location = locations.mount_partition(node, "ext4", writable=True)
            try:
                Repository.init(Path(location.mountpoint) / "repo", passphrase=PASSPHRASE)
                assert repositories_in(location.mountpoint) == [f"{location.mountpoint}/repo"]
                # A disk with something mounted is never formatted.
                with pytest.raises(TargetUnsuitable):
                    locations.format_drive(device)
            finally:
                locations.unmount(location)
        finally:
            subprocess.run(["partx", "--delete", device], check=False, capture_output=True)


def test_share_names_are_checked() -> None:
    for bad in (
        Share("smb", "", "backups"),
        Share("smb", "nas; rm -rf /", "backups"),
        Share("smb", "nas", ""),
        Share("nfs", "nas", "export"),
        Share("ssh", "nas", "/x", username="a b"),
        Share("ftp", "nas", "/x"),
        Share("smb", "nas", "a,credentials=/etc/shadow"),
    ):
        with pytest.raises(UsageError):
            bad.check()
    Share("smb", "192.168.1.20", "backups", username="ann").check()
    assert Share("smb", "nas", "/backups/").source() == "//nas/backups"
    assert Share("nfs", "nas", "/srv/b").source() == "nas:/srv/b"
    assert Share("ssh", "nas", "/srv/b", username="ann").source() == "ann@nas:/srv/b"


def test_passwords_never_reach_a_command_line() -> None:
    share = Share("ssh", "nas", "/srv", username="ann", port=2222)
    argv = locations.sshfs_argv(share, "/mnt/x", password=True, identity_file="", writable=True)
    assert "password_stdin" in argv[argv.index("-o") + 1]
    assert argv[:3] == ["sshfs", "-p", "2222"]
    options = locations.smb_options(Share("smb", "nas", "b", "ann"), "/run/c", writable=False)
    assert options == "ro,credentials=/run/c,iocharset=utf8"
    assert locations.smb_options(Share("smb", "nas", "b"), None, writable=True).startswith(
        "rw,guest"
    )


@pytest.mark.root
def test_smb_credentials_file_is_removed_even_when_the_mount_fails() -> None:
    share = Share("smb", "127.0.0.1", "nothing", username="ann")
    with pytest.raises(HourglassError):
        locations.mount_share(share, password="s3cret-password")
    leftovers = list(locations.SECRETS.glob("smb-*")) if locations.SECRETS.exists() else []
    assert leftovers == []
    assert not any(
        Path(m.mountpoint).parent == locations.ROOT and "smb" in m.mountpoint
        for m in mounts.mounts()
    )


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def sshd(tmp_path: Path) -> Iterator[tuple[int, Path, Path]]:
    """An sshd on loopback that lets root in with a key made for the test."""
    sshd_path = shutil.which("sshd") or "/usr/sbin/sshd"
    if not os.path.exists(sshd_path) or not shutil.which("sshfs"):
        pytest.skip("needs openssh-server and sshfs")
    keys = tmp_path / "keys"
    keys.mkdir()
    sh("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", keys / "host")
    sh("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", keys / "client")
    shutil.copy(keys / "client.pub", keys / "authorized")
    Path("/run/sshd").mkdir(exist_ok=True)
    port = _free_port()
    process = subprocess.Popen(
        [
            sshd_path,
            "-D",
            "-f",
            "/dev/null",
            "-p",
            str(port),
            "-h",
            str(keys / "host"),
            "-o",
            f"AuthorizedKeysFile={keys / 'authorized'}",
            "-o",
            "ListenAddress=127.0.0.1",
            "-o",
            "StrictModes=no",
            "-o",
            "Subsystem=sftp internal-sftp",
        ],
        stderr=subprocess.DEVNULL,
    )
    try:
        for _ in range(50):
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    break
            time.sleep(0.1)
        remote = tmp_path / "remote"
        remote.mkdir()
        yield port, keys / "client", remote
    finally:
        process.terminate()
        process.wait(10)


@pytest.mark.root
@pytest.mark.integration
def test_folder_over_ssh_is_a_location(sshd: tuple[int, Path, Path]) -> None:
    port, key, remote = sshd
    share = Share("ssh", "127.0.0.1", str(remote), username="root", port=port)
    location = locations.mount_share(share, identity_file=str(key))
    try:
        assert location.kind == "ssh" and location.writable
        assert location in locations.mounted_locations()
        Repository.init(Path(location.mountpoint) / "repo", passphrase=PASSPHRASE)
        assert (remote / "repo" / "config").is_file()
        assert repositories_in(location.mountpoint) == [f"{location.mountpoint}/repo"]
    finally:
        locations.unmount(location)
    assert not os.path.exists(location.mountpoint)
