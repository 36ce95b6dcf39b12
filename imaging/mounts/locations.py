"""Places a repository can live, made available as directories for the app.

- a partition of a local disk, mounted read-write on demand under ``/run/hourglass/locations``
  (a partition a repository probe mounted read-only is mounted again read-write);
- a blank drive, formatted first (GPT, one ext4 partition) after the person confirmed it;
- a network share: SMB (``mount -t cifs``), NFS (``mount -t nfs``) or a folder over SSH
  (``sshfs``).

A :class:`Location` is one such place, as it is named (by the person, or by unattended orders
in their kernel-parameter syntax, :mod:`imaging.unattended.orders`) and, once mounted, the
directory it is at.

Secrets never go on a command line or into a child's environment: an SMB password goes in a
credentials file readable only by root that is deleted as soon as ``mount`` returns, an SSH
password goes to ``sshfs`` on its standard input (``-o password_stdin``).
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import subprocess
import uuid
from dataclasses import dataclass
from pathlib import Path

from imaging.disks import mounts, sysfs
from imaging.disks.discover import get_disk
from imaging.disks.repos import PROBE_ROOT
from imaging.disks.table import MIB, PartitionTable, TablePartition, reread_partitions, write_table
from imaging.errors import Busy, HourglassError, TargetUnsuitable, ToolFailed, UsageError
from imaging.mounts import mount, mountinfo
from imaging.mounts.drivers import REPOSITORY_FILESYSTEMS, Mode
from imaging.process import run

ROOT = Path("/run/hourglass/locations")
SECRETS = Path("/run/hourglass/secrets")
KNOWN_HOSTS = Path("/run/hourglass/known_hosts")
SHARE_KINDS = ("smb", "nfs", "ssh")
LINUX_FILESYSTEM = "0fc63daf-8483-4772-8e79-3d69d8477de4"
NEW_DRIVE_LABEL = "HOURGLASS"
_HOST = re.compile(r"^[A-Za-z0-9._:\[\]-]+$")
_USER = re.compile(r"^[A-Za-z0-9._-]*$")


@dataclass(frozen=True)
class Location:
    """A place a repository or a file lives: a partition, a network share, a URL or a folder.

    As it is named it has no ``mountpoint``; mounted (:func:`mount_partition`,
    :func:`mount_share`), ``mountpoint`` is the directory it is at.
    """

    kind: str  # "partition", "label", "uuid", "smb", "nfs", "ssh", "http" or "path"
    # /dev/sdb1, the label, the UUID, //server/share, server:/export, user@host:/path, or the
    # URL the orders name (nfs://, smb://, http(s)://); "" for a path
    source: str
    path: str = "/"  # the folder inside it
    mountpoint: str = ""  # where it is mounted; "" when it is not (yet)
    writable: bool = False
    mounted_by_us: bool = False

    def describe(self) -> str:
        """The location as unattended orders write it (``LABEL=x:/path``, a URL, a path)."""
        if self.kind in ("label", "uuid"):
            named = f"{self.kind.upper()}={self.source}:{self.path}"
        elif self.kind == "partition":
            named = f"{self.source}:{self.path}"
        elif self.kind == "path":
            named = self.path
        else:
            named = self.source
        return f"{named} at {self.mountpoint}" if self.mountpoint else named


@dataclass(frozen=True)
class Share:
    """A network share as the person typed it. The password is never part of it."""

    kind: str  # "smb", "nfs" or "ssh"
    host: str
    path: str  # SMB: the share name (and folders); NFS: the export; SSH: a folder
    username: str = ""
    port: int = 0  # SSH only; 0 means 22

    def source(self) -> str:
        if self.kind == "smb":
            return f"//{self.host}/{self.path.strip('/')}"
        if self.kind == "nfs":
            return f"{self.host}:{self.path or '/'}"
        user = f"{self.username}@" if self.username else ""
        return f"{user}{self.host}:{self.path or ''}"

    def check(self) -> None:
        """Refuse what cannot be a share before any program sees it."""
        if self.kind not in SHARE_KINDS:
            raise UsageError(f"Unknown kind of share {self.kind!r}.")
        if not self.host or not _HOST.match(self.host):
            raise UsageError(
                f"{self.host!r} is not a server name or address.",
                "Type a name such as nas.local or an address such as 192.168.1.20.",
            )
        if not _USER.match(self.username):
            raise UsageError(f"{self.username!r} is not a user name.")
        if self.kind == "smb" and not self.path.strip("/"):
            raise UsageError("Name the share on the server (for example: backups).")
        if self.kind == "nfs" and not self.path.startswith("/"):
            raise UsageError(
                f"{self.path!r} is not an NFS export.", "An export starts with /, e.g. /srv/backup."
            )
        if any(c in self.path for c in "\0\n,"):
            raise UsageError(f"{self.path!r} holds a character a share path cannot hold.")
        if not 0 <= self.port < 65536:
            raise UsageError(f"{self.port} is not a port number.")


def _mountpoint(name: str) -> str:
    path = ROOT / name
    if path.exists() and os.path.ismount(path):
        path = ROOT / f"{name}-{secrets.token_hex(3)}"
    path.mkdir(parents=True, exist_ok=True)
    return str(path)


# --- partitions -----------------------------------------------------------------------------


def mount_partition(device: str, fstype: str, *, writable: bool) -> Location:
    """``device`` mounted as a directory: where it is mounted already if that will do, else
    mounted by us (read-write when ``writable``). A partition mounted read-only by a
    repository probe (``/run/hourglass/probe``) is unmounted there and mounted read-write
    here. One the app mounted read-only itself (under :data:`ROOT`, a repository opened only
    to read) is mounted again read-write at the same place, so paths under it stay valid;
    the returned location does not own that mount (whoever mounted it unmounts it). One
    mounted read-only by someone else is refused."""
    name = sysfs.name_of(device)
    current = mounts.mounts_of(name)
    probe_mounts: list[str] = []
    ours: list[str] = []
    if current:
        rw = [m for m in current if not m.read_only]
        if rw or not writable:
            chosen = (rw or current)[0]
            return Location("partition", device, mountpoint=chosen.mountpoint, writable=bool(rw))
        probe_mounts = [m.mountpoint for m in current if Path(m.mountpoint).parent == PROBE_ROOT]
        ours = [m.mountpoint for m in current if Path(m.mountpoint).parent == ROOT]
        if len(probe_mounts) + len(ours) != len(current):
            where = ", ".join(m.mountpoint for m in current)
            raise Busy(
                f"{device} is mounted read-only at {where}.",
                "Unmount it (or mount it read-write) and try again.",
            )
    _check_repository_filesystem(device, fstype)
    for where in probe_mounts:
        mount.unmount(where, remove=True)
    if ours:
        for where in ours[1:]:
            mount.unmount(where, remove=True)
        mount.unmount(ours[0])  # Busy, naming the mount point, when files are open there
        try:
            mount.mount(device, fstype, ours[0], Mode.READ_WRITE)
        except HourglassError:  # put the read-only mount back for whoever reads from it
            with contextlib.suppress(HourglassError):
                mount.mount(device, fstype, ours[0], Mode.READ_ONLY)
            raise
        return Location("partition", device, mountpoint=ours[0], writable=True)
    where = _mountpoint(os.path.basename(device))
    mount.mount(device, fstype, where, Mode.READ_WRITE if writable else Mode.READ_ONLY)
    return Location("partition", device, mountpoint=where, writable=writable, mounted_by_us=True)


def _check_repository_filesystem(device: str, fstype: str) -> None:
    if fstype not in REPOSITORY_FILESYSTEMS:
        raise UsageError(
            f"{device} holds {fstype or 'no filesystem'}, which Hourglass cannot use for files.",
            "Choose a partition with a filesystem such as ext4, exFAT or NTFS.",
        )


def moved_path(path: str, old_root: str, new_root: str) -> str:
    """``path`` under ``old_root``, as seen under ``new_root`` (the same filesystem mounted
    elsewhere)."""
    relative = os.path.relpath(os.path.realpath(path), os.path.realpath(old_root))
    if relative.startswith(".."):
        raise UsageError(f"{path} is not under {old_root}.")
    return os.path.normpath(os.path.join(new_root, relative))


def unmount(location: Location) -> None:
    """Unmount a location this module mounted (nothing for one that was mounted already)."""
    if location.mounted_by_us:
        os.sync()
        mount.unmount(location.mountpoint, remove=True)


def release_lost(location: Location) -> None:
    """A location whose drive or share went away (a USB drive pulled, a FUSE driver gone):
    unmounted at once, lazily if something still holds files there (nothing can be written
    to it any more, so nothing is synced first), and its mount point removed. Nothing for a
    location this module did not mount."""
    if location.mounted_by_us and location.mountpoint:
        mount.unmount(location.mountpoint, lazy=True, remove=True)


def mounted_locations() -> list[Location]:
    """What is mounted under :data:`ROOT` now (partitions and shares mounted by the app)."""
    result = []
    for m in mountinfo.mounts():
        if Path(m.mountpoint).parent != ROOT:
            continue
        kind = {"cifs": "smb", "nfs": "nfs", "nfs4": "nfs", "fuse.sshfs": "ssh"}.get(
            m.fstype, "partition"
        )
        result.append(
            Location(
                kind,
                m.source,
                mountpoint=m.mountpoint,
                writable=not m.read_only,
                mounted_by_us=True,
            )
        )
    return result


# --- a blank drive --------------------------------------------------------------------------


def format_drive(disk_path: str, *, label: str = NEW_DRIVE_LABEL) -> str:
    """Erase ``disk_path`` and give it a GPT with one ext4 partition spanning the disk;
    returns the partition's device. Refuses the boot disk, a disk holding a repository and a
    disk with anything mounted or in use. The caller has shown the disk and had the person
    confirm (the app's typed confirmation)."""

    disk = get_disk(disk_path, used=False)
    name = sysfs.name_of(disk.device)
    if disk.is_boot_disk:
        raise TargetUnsuitable(
            f"{disk.device} is the disk this system was started from: Hourglass never formats it.",
            "Choose another disk.",
        )
    if disk.holds_repository:
        raise TargetUnsuitable(
            f"{disk.device} holds a repository ({', '.join(disk.repositories)}): it is not "
            "formatted.",
            "Choose another disk, or use that repository.",
        )
    busy = mounts.in_use(name)
    if busy:
        raise TargetUnsuitable(
            f"{disk.device} is in use: {'; '.join(busy)}.",
            "Unmount its partitions, then try again.",
        )
    ss = disk.logical_sector
    sectors = disk.size // ss
    align = MIB // ss
    backup = (1 + -(-(128 * 128) // ss)) * ss // ss
    last_usable = sectors - backup - 1
    end = ((last_usable + 1) // align) * align - 1
    if end <= align + align:
        raise TargetUnsuitable(f"{disk.device} is too small to hold a repository.")
    table = PartitionTable(
        kind="gpt",
        sector_size=ss,
        disk_id=str(uuid.uuid4()),
        partitions=(
            TablePartition(
                number=1,
                start=align,
                end=end,
                type=LINUX_FILESYSTEM,
                guid=str(uuid.uuid4()),
                name="Hourglass backup",
            ),
        ),
        first_usable=34 if ss == 512 else 6,
        last_usable=last_usable,
    )
    _wipe_signatures(disk.device)
    write_table(disk.device, table)
    reread_partitions(disk.device, table)
    node = next((p.device for p in sysfs.partitions(name) if p.number == 1), "")
    if not node or not os.path.exists(node):
        raise HourglassError(
            f"The new partition of {disk.device} has no device node.",
            "Unplug and replug the drive, then choose it again.",
        )
    run(["mkfs.ext4", "-q", "-F", "-L", label[:16], node])
    return node


def _wipe_signatures(device: str) -> None:
    """Old filesystem and RAID signatures would make the new drive look like the old one."""
    with contextlib.suppress(HourglassError):
        run(["wipefs", "--all", "--quiet", device])


# --- network shares -------------------------------------------------------------------------


def mount_share(
    share: Share,
    *,
    password: str = "",
    identity_file: str = "",
    writable: bool = True,
) -> Location:
    """Mount ``share`` under :data:`ROOT`. ``password`` is for SMB and SSH (never passed on
    a command line); ``identity_file`` is an SSH private key to use instead."""
    share.check()
    name = f"{share.kind}-{re.sub(r'[^A-Za-z0-9.-]', '_', share.host)}"
    where = _mountpoint(name)
    try:
        if share.kind == "smb":
            _mount_smb(share, where, password, writable)
        elif share.kind == "nfs":
            options = "rw" if writable else "ro"
            run(["mount", "-t", "nfs", "-o", f"{options},soft,timeo=150", share.source(), where])
        else:
            _mount_ssh(share, where, password, identity_file, writable)
    except BaseException:
        with contextlib.suppress(OSError):
            os.rmdir(where)
        raise
    return Location(
        share.kind, share.source(), mountpoint=where, writable=writable, mounted_by_us=True
    )


def smb_options(share: Share, credentials: str | None, writable: bool) -> str:
    """The ``-o`` of ``mount -t cifs``: a credentials file, or a guest login."""
    options = ["rw" if writable else "ro"]
    options.append(f"credentials={credentials}" if credentials else "guest")
    options.append("iocharset=utf8")
    return ",".join(options)


def _mount_smb(share: Share, where: str, password: str, writable: bool) -> None:
    credentials = None
    if share.username:
        SECRETS.mkdir(parents=True, exist_ok=True, mode=0o700)
        credentials = str(SECRETS / f"smb-{secrets.token_hex(8)}")
        fd = os.open(credentials, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.write(fd, f"username={share.username}\npassword={password}\n".encode())
        finally:
            os.close(fd)
    try:
        options = smb_options(share, credentials, writable)
        run(["mount", "-t", "cifs", "-o", options, share.source(), where])
    finally:
        if credentials:
            with contextlib.suppress(OSError):
                os.unlink(credentials)


def sshfs_argv(
    share: Share, where: str, *, password: bool, identity_file: str, writable: bool
) -> list[str]:
    """The ``sshfs`` command line (no secret in it: a password goes to standard input)."""
    options = [
        "reconnect",
        "ServerAliveInterval=15",
        "StrictHostKeyChecking=accept-new",
        f"UserKnownHostsFile={KNOWN_HOSTS}",
    ]
    if not writable:
        options.append("ro")
    if password:
        options.append("password_stdin")
    else:
        options.append("BatchMode=yes")
    if identity_file:
        options.append(f"IdentityFile={identity_file}")
    argv = ["sshfs"]
    if share.port:
        argv += ["-p", str(share.port)]
    return [*argv, "-o", ",".join(options), share.source(), where]


def _mount_ssh(share: Share, where: str, password: str, identity_file: str, writable: bool) -> None:
    KNOWN_HOSTS.parent.mkdir(parents=True, exist_ok=True)
    argv = sshfs_argv(
        share, where, password=bool(password), identity_file=identity_file, writable=writable
    )
    try:
        run(argv, input=(password + "\n").encode() if password else None, timeout=60)
    except subprocess.TimeoutExpired:
        raise ToolFailed(
            f"sshfs did not connect to {share.host} within 60 seconds.",
            "Check the server's name, that it runs SSH, and the network settings.",
        ) from None
