"""The one mount table: which driver mounts which filesystem, read-only or read-write.

Two modes:

- :attr:`Mode.READ_ONLY`, for browsing a snapshot and for probing a partition for a
  repository: nothing is written, so no journal or log is replayed (a replay writes, and a
  snapshot must be shown as it was stored);
- :attr:`Mode.READ_WRITE`, for a repository drive and for growing a filesystem whose tool works
  only when mounted (xfs, btrfs).

The kernel's driver is used where the kernel has it (loaded, built in, or a module modprobe
loads); vfat and exFAT fall back to their FUSE drivers (fusefat, exfat-fuse) on kernels built
without them, which is what runs in this project's test sandbox.

NTFS is always mounted with ntfs-3g (FUSE), never with the kernel's ntfs3, though Debian's
kernel has ntfs3. ntfs-3g is the mature driver for writes, and a repository drive is written
to; ntfs3 (Linux 5.15+) had write bugs fixed release after release, and refuses a volume
Windows left dirty or hibernated (Fast Startup) unless forced, where ntfs-3g mounts it
read-only and says why it will not write. One driver in both modes also means the NTFS path
the tests run is the one the appliance runs. The cost: a repository on NTFS is written
through FUSE (``fuseblk``), so it gets the per-file fdatasync of FUSE filesystems instead of
syncfs batches (docs/FORMAT.md).

xfs gets ``nouuid`` in both modes: without it the kernel refuses a second filesystem with the
UUID of one already mounted, which is what two snapshots of one filesystem are, and what a
restored disk is next to its source.
"""

from __future__ import annotations

import enum
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from imaging.process import run


class Mode(enum.Enum):
    READ_ONLY = "read-only"
    READ_WRITE = "read-write"


@dataclass(frozen=True)
class _Options:
    read_only: str
    read_write: str | None = None  # None: never mounted read-write

    def get(self, mode: Mode) -> str | None:
        return self.read_only if mode is Mode.READ_ONLY else self.read_write


# fstype -> (kernel filesystem name, options per mode).
KERNEL = {
    "ext2": ("ext4", _Options("ro,noload", "rw")),
    "ext3": ("ext4", _Options("ro,noload", "rw")),
    "ext4": ("ext4", _Options("ro,noload", "rw")),
    "xfs": ("xfs", _Options("ro,norecovery,nouuid", "rw,nouuid")),
    # rescue=nologreplay (Linux 5.9+); the bare `nologreplay` is gone from recent kernels.
    "btrfs": ("btrfs", _Options("ro,rescue=nologreplay", "rw")),
    "vfat": ("vfat", _Options("ro", "rw")),
    "exfat": ("exfat", _Options("ro", "rw")),
    "hfsplus": ("hfsplus", _Options("ro")),
    "iso9660": ("iso9660", _Options("ro")),
    "squashfs": ("squashfs", _Options("ro")),
}

# fstype -> (FUSE program, options per mode). fusefat refuses plain "rw" (exit 234,
# "experimental code ... add -o rw+ if you accept the risk"): rw+ is its only writable mode.
FUSE = {
    "ntfs": ("ntfs-3g", _Options("ro", "rw")),
    "vfat": ("fusefat", _Options("ro", "rw+")),
    "exfat": ("mount.exfat-fuse", _Options("ro", "rw")),
}
FUSE_ONLY = {"ntfs"}  # see the module's docstring

# FUSE drivers read a file directly, except exfat-fuse, which insists on a block device
# ("Block device required", it mounts as fuseblk).
FUSE_NEEDS_BLOCK_DEVICE = {"exfat"}

NOT_FILESYSTEMS = {"swap", "crypto_LUKS", "LVM2_member", "linux_raid_member", "BitLocker"}

ALIASES = {"fat": "vfat", "fat12": "vfat", "fat16": "vfat", "fat32": "vfat", "msdos": "vfat"}

# Filesystems a repository can live on: those mounted read-write, kernel or FUSE.
REPOSITORY_FILESYSTEMS = tuple(
    dict.fromkeys(t for t, (_, o) in [*KERNEL.items(), *FUSE.items()] if o.read_write)
)


@dataclass(frozen=True)
class Driver:
    """How to mount one filesystem in one mode: a kernel driver or a FUSE program."""

    fstype: str
    mode: Mode
    options: str
    kernel: str | None = None  # the kernel's filesystem name; None for FUSE
    fuse: str | None = None  # the FUSE program

    @property
    def needs_block_device(self) -> bool:
        """An image file must be put on a loop device first (kernel drivers, exfat-fuse)."""
        return self.kernel is not None or self.fstype in FUSE_NEEDS_BLOCK_DEVICE

    def argv(self, device: str, mountpoint: str) -> list[str]:
        """The command line that mounts ``device`` at ``mountpoint``."""
        if self.kernel is not None:
            return ["mount", "-t", self.kernel, "-o", self.options, device, mountpoint]
        assert self.fuse is not None
        return [self.fuse, "-o", self.options, device, mountpoint]

    def describe(self) -> str:
        if self.kernel is not None:
            return f"{self.kernel} ({self.options})"
        return f"{self.fuse} -o {self.options}"


def kernel_filesystems() -> set[str]:
    """The filesystems the running kernel has loaded (or built in)."""
    try:
        text = Path("/proc/filesystems").read_text()
    except OSError:
        return set()
    return {line.split()[-1] for line in text.splitlines() if line.strip()}


def kernel_has(name: str) -> bool:
    """True when the kernel can mount ``name``: loaded, built in, or a module that loads.

    /proc/filesystems lists only what is loaded: on the appliance, whose root is a squashfs,
    ext4 is a module nobody has needed yet. modprobe loads it (where there is a modprobe).
    """
    if name in kernel_filesystems():
        return True
    modprobe = shutil.which("modprobe") or next(
        (p for p in ("/usr/sbin/modprobe", "/sbin/modprobe") if os.path.exists(p)), None
    )
    if modprobe is None:
        return False
    run([modprobe, "-q", name], check=False)
    return name in kernel_filesystems()


def normalize(fstype: str) -> str:
    """The name this table uses for ``fstype`` (blkid's and the manifest's names vary)."""
    fstype = fstype.strip()
    return ALIASES.get(fstype.lower(), fstype)


def detect(path: str) -> str | None:
    """The filesystem type ``blkid -p`` finds on ``path``, or None."""
    result = run(["blkid", "-p", "-o", "value", "-s", "TYPE", path], check=False)
    text = result.stdout.decode(errors="replace").strip()
    return normalize(text) if result.returncode == 0 and text else None


def driver_for(fstype: str, mode: Mode) -> Driver | None:
    """The driver that mounts ``fstype`` here in ``mode``: the kernel's where it has one,
    else FUSE (mounting names the package when the program is missing); None when neither
    can."""
    fstype = normalize(fstype)
    if fstype not in FUSE_ONLY and fstype in KERNEL:
        name, options = KERNEL[fstype]
        chosen = options.get(mode)
        if chosen is not None and kernel_has(name):
            return Driver(fstype, mode, chosen, kernel=name)
    if fstype in FUSE:
        program, options = FUSE[fstype]
        chosen = options.get(mode)
        if chosen is not None:
            return Driver(fstype, mode, chosen, fuse=program)
    return None
