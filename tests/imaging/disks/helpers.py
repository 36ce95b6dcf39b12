"""Test disks: image files with real partition tables and real filesystems holding real files.

Tables are made with tools other than the code under test (sgdisk for GPT, a hand-written
MBR and EBR chain as fdisk lays it out), so reading and recreating them is tested against an
independent implementation. Kernel partition nodes come from ``partx --add`` (BLKPG): the
sandbox kernel has no partition-table parsers, so ``losetup --partscan`` makes none.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import stat
import struct
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from tests.support import MiB, fill_with_files, sh, tree_digest

MTOOLS_ENV = {**os.environ, "MTOOLS_SKIP_CHECK": "1"}
KERNEL_FS = ("ext2", "ext3", "ext4", "xfs", "btrfs")


@contextlib.contextmanager
def attached(image: Path) -> Iterator[str]:
    """A loop device for ``image`` with nodes for its partitions; detached afterwards."""
    device = sh("losetup", "--show", "--find", image).stdout.strip()
    try:
        # Nodes a detached device left behind (this kernel keeps them after `losetup -d`:
        # a run that was killed) make `partx --add` fail ("already exists"); remove them.
        subprocess.run(["partx", "--delete", device], check=False, capture_output=True)
        subprocess.run(["partx", "--add", device], check=False, capture_output=True)
        yield device
    finally:
        subprocess.run(["partx", "--delete", device], check=False, capture_output=True)
        subprocess.run(["losetup", "--detach", device], check=False)


def node(device: str, number: int) -> str:
    return f"{device}p{number}"


def make_fs(dev: str, fstype: str, label: str) -> None:
    argv = {
        "vfat": ["mkfs.vfat", "-F", "32", "-s", "1", "-n", label],
        "ext4": ["mkfs.ext4", "-q", "-F", "-L", label],
        "xfs": ["mkfs.xfs", "-q", "-f", "-L", label],
        "btrfs": ["mkfs.btrfs", "-q", "-f", "-L", label],
        "ntfs": ["mkfs.ntfs", "-q", "-f", "-F", "-L", label],
        "exfat": ["mkfs.exfat", "-L", label],
    }[fstype]
    sh(*argv, dev)


@contextlib.contextmanager
def mounted_fs(dev: str, fstype: str, where: Path, *, read_only: bool = False) -> Iterator[Path]:
    """Mount with the kernel driver, or the FUSE driver where the kernel has none."""
    where.mkdir(parents=True, exist_ok=True)
    if fstype in KERNEL_FS:
        options = ["ro"] if read_only else []
        if fstype == "xfs":
            options.append("nouuid")  # the source may be mounted with the same UUID
        argv = ["mount", *(["-o", ",".join(options)] if options else []), dev, str(where)]
    elif fstype == "ntfs":
        argv = ["ntfs-3g", *(["-o", "ro"] if read_only else []), dev, str(where)]
    elif fstype == "exfat":
        argv = ["mount.exfat-fuse", *(["-o", "ro"] if read_only else []), dev, str(where)]
    else:
        raise ValueError(f"no way to mount {fstype} here")
    sh(*argv)
    try:
        yield where
    finally:
        subprocess.run(["umount", str(where)], check=False)


def put_files(dev: str, fstype: str, tmp: Path, size: int, seed: int) -> dict[str, str]:
    """Copy ``size`` bytes of real files onto the filesystem; returns their digests."""
    staging = tmp / f"stage-{seed}"
    fill_with_files(staging, size, seed=seed)
    if fstype == "vfat":
        subprocess.run(
            ["mcopy", "-s", "-i", dev, *map(str, staging.iterdir()), "::/"],
            check=True,
            capture_output=True,
            env=MTOOLS_ENV,
        )
    else:
        with mounted_fs(dev, fstype, tmp / f"fill-{seed}") as root:
            shutil.copytree(staging, root, dirs_exist_ok=True)
    return tree_digest(staging)


def make_filesystems(
    device: str, layout: list[GptPart], tmp: Path, size: int, seed: int = 0
) -> dict[int, dict[str, str]]:
    """A filesystem on every partition of ``layout`` that names one, holding ``size`` bytes
    of files; their digests by partition number."""
    files = {}
    for p in layout:
        if p.fstype:
            dev = node(device, p.number)
            make_fs(dev, p.fstype, p.label)
            files[p.number] = put_files(dev, p.fstype, tmp, size, seed + p.number)
    return files


def read_files(dev: str, fstype: str, tmp: Path) -> dict[str, str]:
    """Digests of every file on the filesystem (read-only)."""
    tag = os.path.basename(dev)
    if fstype == "vfat":
        out = tmp / f"mcopy-{tag}"
        shutil.rmtree(out, ignore_errors=True)
        out.mkdir(parents=True)
        subprocess.run(
            ["mcopy", "-s", "-n", "-i", dev, "::/*", str(out)],
            check=True,
            capture_output=True,
            env=MTOOLS_ENV,
        )
        return tree_digest(out)
    with mounted_fs(dev, fstype, tmp / f"read-{tag}", read_only=True) as root:
        return tree_digest(root)


def tree_metadata(root: Path) -> dict[str, tuple[object, ...]]:
    """Every entry under ``root`` as a copy must keep it: type and mode, owner, mtime,
    xattrs (ACLs among them), content hash, whether it is sparse, and which entries are
    hard links of one another (by the first path of each inode)."""
    first_of_inode: dict[int, str] = {}
    result: dict[str, tuple[object, ...]] = {}
    for path in sorted(root.rglob("*")):
        rel = str(path.relative_to(root))
        if "lost+found" in path.parts:
            continue
        st = path.lstat()
        xattrs = tuple(
            sorted(
                (name, os.getxattr(path, name, follow_symlinks=False))
                for name in os.listxattr(path, follow_symlinks=False)
            )
        )
        content: object = None
        sparse = False
        if stat.S_ISREG(st.st_mode):
            content = hashlib.sha256(path.read_bytes()).hexdigest()
            sparse = st.st_blocks * 512 < st.st_size
        elif stat.S_ISLNK(st.st_mode):
            content = os.readlink(path)
        link = first_of_inode.setdefault(st.st_ino, rel) if st.st_nlink > 1 else ""
        result[rel] = (st.st_mode, st.st_uid, st.st_gid, st.st_mtime_ns, xattrs, content)
        result[rel] += (sparse, link)
    return result


def fsck(dev: str, fstype: str) -> subprocess.CompletedProcess[str]:
    """The filesystem's own checker in read-only mode."""
    argv = {
        "ext4": ["e2fsck", "-f", "-n"],
        "xfs": ["xfs_repair", "-n"],
        "btrfs": ["btrfs", "check", "--readonly"],
        "vfat": ["fsck.vfat", "-n"],
        "exfat": ["fsck.exfat", "-n"],
        "ntfs": ["ntfsfix", "-n"],
    }[fstype]
    return sh(*argv, dev, check=False)


def fs_size(dev: str, fstype: str) -> int:
    """The filesystem's own idea of its size in bytes (to see that --grow grew it)."""
    if fstype == "ext4":
        out = sh("dumpe2fs", "-h", dev).stdout
        fields = dict(line.split(":", 1) for line in out.splitlines() if ":" in line)
        return int(fields["Block count"]) * int(fields["Block size"])
    if fstype == "xfs":
        out = sh("xfs_db", "-r", "-c", "sb 0", "-c", "print dblocks blocksize", dev).stdout
        fields = dict(line.split(" = ") for line in out.splitlines())
        return int(fields["dblocks"]) * int(fields["blocksize"])
    if fstype == "btrfs":
        out = sh("btrfs", "inspect-internal", "dump-super", dev).stdout
        return int(
            next(line.split()[1] for line in out.splitlines() if line.startswith("total_bytes"))
        )
    if fstype == "ntfs":
        out = sh("ntfsresize", "--info", "--force", "--no-action", dev).stdout
        line = next(line for line in out.splitlines() if line.startswith("Current volume size"))
        return int(line.split(":")[1].split()[0])
    raise ValueError(fstype)


def table_dump(device: str) -> str:
    """The table as util-linux (libblkid, not libparted) reads it, with the disk id."""
    rows = sh("partx", "--show", "--output", "NR,START,SECTORS,TYPE,UUID,NAME,FLAGS", device).stdout
    ptuuid = sh("blkid", "-p", "-o", "value", "-s", "PTUUID", device).stdout.strip()
    return f"PTUUID={ptuuid}\n{rows}"


def read_bytes(path: str, offset: int, length: int) -> bytes:
    fd = os.open(path, os.O_RDONLY)
    try:
        return os.pread(fd, length, offset)
    finally:
        os.close(fd)


def write_bytes(path: str, offset: int, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY)
    try:
        os.pwrite(fd, data, offset)
        os.fsync(fd)
    finally:
        os.close(fd)


def garbage_file(path: Path, size: int) -> None:
    """A target that is not zeros: a restore must not depend on finding zeros there."""
    seed = b"HOURGLASS-OLD-DATA-"
    pattern = (seed * (MiB // len(seed) + 1))[:MiB]
    with open(path, "wb") as f:
        for _ in range(size // MiB):
            f.write(pattern)


# --- the test disks -------------------------------------------------------------------------


@dataclass
class GptPart:
    number: int
    fstype: str  # "" for raw content (BIOS boot)
    size_mib: int
    type_code: str
    label: str = ""
    name: str = ""
    attributes: int = 0
    files: dict[str, str] = field(default_factory=dict)


# BIOS boot, ESP, xfs, btrfs, ntfs, exfat, and ext4 last (numbered 8: a gap in the numbers)
GPT_LAYOUT = [
    GptPart(1, "", 1, "ef02", name="BIOS boot"),
    GptPart(2, "vfat", 64, "ef00", "ESP", "EFI system", attributes=1 << 2),
    GptPart(3, "xfs", 300, "8300", "XFSDATA", "xfs data"),
    GptPart(4, "btrfs", 128, "8300", "BTR", "btrfs"),
    GptPart(5, "ntfs", 64, "0700", "WINDOWS", "Basic data", attributes=1 << 63),
    GptPart(6, "exfat", 64, "0700", "EXCHANGE", "exchange"),
    GptPart(8, "ext4", 96, "8304", "root", "root", attributes=(1 << 60) | 1),
]
GPT_DISK_MIB = 1 + sum(p.size_mib for p in GPT_LAYOUT) + 2


def boot_code() -> bytes:
    return bytes((i * 7 + 3) % 256 for i in range(440))


def make_gpt_disk(image: Path, layout: list[GptPart], disk_mib: int) -> None:
    """A GPT disk image made by sgdisk: BIOS boot partition, gaps in the numbers, names,
    attributes, a disk GUID; boot code in the protective MBR."""
    image.unlink(missing_ok=True)
    sh("truncate", "-s", f"{disk_mib}M", image)
    argv = ["sgdisk", "--clear", "--set-alignment=2048"]
    for p in layout:
        argv += [
            f"--new={p.number}:0:+{p.size_mib}M",
            f"--typecode={p.number}:{p.type_code}",
        ]
        if p.name:
            argv += [f"--change-name={p.number}:{p.name}"]
        if p.attributes:
            argv += [f"--attributes={p.number}:=:{p.attributes:016x}"]
    sh(*argv, image)
    write_bytes(str(image), 0, boot_code())


def _mbr_entry(boot: bool, ptype: int, start: int, count: int) -> bytes:
    return struct.pack(
        "<B3sB3sII", 0x80 if boot else 0, b"\xfe\xff\xff", ptype, b"\xfe\xff\xff", start, count
    )


MBR_SIGNATURE = 0x5EEDF00D


@dataclass
class MbrPartition:
    number: int
    fstype: str
    start_mib: int
    size_mib: int
    type_byte: int
    boot: bool = False
    label: str = ""
    files: dict[str, str] = field(default_factory=dict)


# vfat (active) and ext4 primary, slot 3 empty, extended in slot 4 holding ext4 and btrfs
MBR_LAYOUT = [
    MbrPartition(1, "vfat", 1, 48, 0x0C, boot=True, label="DOSBOOT"),
    MbrPartition(2, "ext4", 49, 64, 0x83, label="mbrroot"),
    MbrPartition(5, "ext4", 115, 64, 0x83, label="logical5"),
    MbrPartition(6, "btrfs", 181, 128, 0x83, label="logical6"),
]
MBR_EXTENDED = (4, 114, 196)  # slot, start MiB, size MiB
MBR_DISK_MIB = 312


def make_mbr_disk(image: Path) -> None:
    """An MBR disk laid out as fdisk does: EBRs 1 MiB before each logical partition."""
    image.unlink(missing_ok=True)
    sh("truncate", "-s", f"{MBR_DISK_MIB}M", image)
    sectors = MiB // 512
    sector0 = bytearray(512)
    sector0[0:440] = boot_code()
    struct.pack_into("<I", sector0, 440, MBR_SIGNATURE)
    for p in MBR_LAYOUT:
        if p.number <= 4:
            entry = _mbr_entry(p.boot, p.type_byte, p.start_mib * sectors, p.size_mib * sectors)
            sector0[446 + 16 * (p.number - 1) : 462 + 16 * (p.number - 1)] = entry
    slot, ext_start_mib, ext_size_mib = MBR_EXTENDED
    ext_start = ext_start_mib * sectors
    sector0[446 + 16 * (slot - 1) : 462 + 16 * (slot - 1)] = _mbr_entry(
        False, 0x05, ext_start, ext_size_mib * sectors
    )
    sector0[510:512] = b"\x55\xaa"
    write_bytes(str(image), 0, bytes(sector0))
    logicals = [p for p in MBR_LAYOUT if p.number > 4]
    for i, p in enumerate(logicals):
        start = p.start_mib * sectors
        ebr_at = ext_start if i == 0 else start - sectors
        ebr = bytearray(512)
        ebr[446:462] = _mbr_entry(p.boot, p.type_byte, start - ebr_at, p.size_mib * sectors)
        if i + 1 < len(logicals):
            nxt = logicals[i + 1]
            next_ebr = nxt.start_mib * sectors - sectors
            ebr[462:478] = _mbr_entry(
                False,
                0x05,
                next_ebr - ext_start,
                nxt.start_mib * sectors + nxt.size_mib * sectors - next_ebr,
            )
        ebr[510:512] = b"\x55\xaa"
        write_bytes(str(image), ebr_at * 512, bytes(ebr))


# Windows 11 as its setup lays out a disk: ESP, MSR, C:, Recovery
WIN11_LAYOUT = [
    GptPart(1, "vfat", 64, "ef00", "SYSTEM", "EFI system partition"),
    GptPart(2, "", 16, "0c01", name="Microsoft reserved partition"),
    GptPart(3, "ntfs", 160, "0700", "Windows", "Basic data partition"),
    GptPart(4, "ntfs", 48, "2700", "Recovery", "Windows RE"),
]


def gap_content() -> bytes:
    """Stands in for GRUB's core.img in the MBR gap (sectors 1 .. 2047)."""
    seed = b"core.img stand-in "
    return (seed * (MiB // len(seed) + 1))[: MiB - 512]
