"""New ids for a restored disk (``restore --new-ids``), so that it can sit beside its original.

A restore writes every id of the original back: the GPT disk GUID (or MBR signature), the
partition GUIDs, the filesystem UUIDs, LVM's PV and VG UUIDs. With both disks in one PC, LVM
says "Not using device ..." and a mount by UUID picks either disk. After the restore and its
verify, :func:`give_new_ids` does for the whole disk what ``vgimportclone`` does for a PV:

1. look at what depends on the ids from outside a filesystem (:func:`survey`): Windows' boot
   configuration (BCD, on the ESP or, on an MBR disk, on an NTFS partition) names its disk and
   partitions by GPT GUID (MBR: signature and offset), so such a disk keeps its table's ids
   and its NTFS serials; BIOS GRUB's core.img (compressed, in the BIOS boot partition or the
   gap) embeds ``search.fs_uuid`` of the filesystem holding ``/boot/grub``, so that filesystem
   keeps its UUID; a LUKS header keeps its UUID (the initramfs's cryptroot names it);
2. new disk and partition GUIDs with ``sgdisk`` (MBR: a new signature, which is also what
   PARTUUID=SIG-NN names);
3. new filesystem UUIDs with each filesystem's own tool, on the partitions and on the logical
   volumes of a PV (reached, as :mod:`imaging.disks.lvm` reaches them, through a loop device
   over their extents): ``tune2fs -U random`` after ``e2fsck -f``, ``xfs_admin -U generate``,
   ``btrfstune -u``, ``swaplabel -U``, ``fatlabel -i -r``, ``ntfslabel --new-serial``,
   ``tune.exfat -I``;
4. new PV and VG UUIDs (``pvchange --uuid``, ``vgchange --uuid``, LVM told of this PV alone).
   The VG keeps its name: the restored system names its LVs by it (``/dev/mapper/vg-root`` in
   fstab, ``root=`` on the kernel line, and inside its initramfs, which cannot be edited), and
   renaming it the way vgimportclone does would leave that system unbootable on its own, the
   usual case of a restored disk. Beside the original, LVM then sees two VGs of one name with
   different UUIDs, which it reports and tells apart by UUID (``vgrename UUID newname``);
5. the references by id inside the restored system (:data:`REFERENCE_FILES`) rewritten to
   the new ids: ``UUID=``, ``PARTUUID=``, ``/dev/disk/by-uuid/``, ``/dev/disk/by-partuuid/``,
   GRUB's ``search --fs-uuid`` and ``search.fs_uuid``; each filesystem that can hold them is
   mounted read-write with the kernel's driver (vfat with fusefat), and each file is replaced
   atomically with its owner and mode.

The swap's new UUID is written to ``/etc/initramfs-tools/conf.d/resume``, but the initramfs
already built still names the old one until ``update-initramfs -u`` runs on the restored
system (said in the notes): alone, the restored system finds no swap to resume from and boots
normally; beside the original it would look in the original's swap. The swap is still given a
new UUID, because fstab's swap line would otherwise take either disk's swap.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path

from imaging.disks import filesystems, sysfs
from imaging.disks.lvm import lvm_change, pv_layout
from imaging.disks.table import PartitionTable, read_table
from imaging.errors import HourglassError, IntegrityError, ToolFailed
from imaging.mounts.drivers import Mode
from imaging.mounts.mount import mount, unmount
from imaging.process import run

ESP_TYPE = "c12a7328-f81f-11d2-ba4b-00a0c93ec93b"
MTOOLS_ENV = {**os.environ, "MTOOLS_SKIP_CHECK": "1"}

LINUX_FILESYSTEMS = ("ext2", "ext3", "ext4", "xfs", "btrfs")
EDITABLE = (*LINUX_FILESYSTEMS, "vfat")
"""Filesystems that can hold a file naming an id (vfat: the ESP's grub.cfg)."""
SUBVOLUMES = ("", "@", "@rootfs")
"""Where a Linux root is on a filesystem: the top, or a btrfs subvolume (as the replay looks)."""

REFERENCE_FILES = (
    "etc/fstab",
    "etc/crypttab",
    "etc/default/grub",
    "etc/initramfs-tools/conf.d/resume",
    "boot/grub/grub.cfg",
    "grub/grub.cfg",  # a separate /boot filesystem
    "EFI/*/grub.cfg",  # the ESP
)

# A line names an id only after one of these; only such lines are rewritten.
_MARKERS = re.compile(r"UUID=|by-uuid/|by-partuuid/|fs-uuid|fs_uuid", re.IGNORECASE)


@dataclass(frozen=True)
class Volume:
    """A filesystem (or PV, swap, LUKS) on the restored disk."""

    where: str  # "partition 3", "logical volume home (partition 2)"
    device: str
    fstype: str
    uuid: str
    partition: int


@dataclass
class IdChanges:
    """What :func:`give_new_ids` changed and kept, in words, and the old-to-new id map."""

    changed: list[str] = field(default_factory=list)
    kept: list[str] = field(default_factory=list)
    references: list[str] = field(default_factory=list)  # "partition 8: etc/fstab (3)"
    notes: list[str] = field(default_factory=list)
    renamed: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Survey:
    """What depends on the restored disk's ids from outside its filesystems."""

    windows: str  # where Windows' boot manager was found; "" when none
    bios_grub: bool  # GRUB's boot code in the MBR
    grub_dirs: frozenset[str]  # devices whose filesystem holds GRUB's i386-pc modules


def give_new_ids(disk: str) -> IdChanges:
    """Give the restored ``disk`` (a whole-disk block device, its partition nodes made) new
    ids where safe, update the references inside it, and say what was done."""
    table = read_table(disk)
    if table is None:
        raise HourglassError(f"{disk} has no partition table: it was not given new ids.")
    nodes = {p.number: p.device for p in sysfs.partitions(sysfs.name_of(disk))}
    missing = [p.number for p in table.data_partitions if p.number not in nodes]
    if missing:
        raise HourglassError(
            f"Partition {missing[0]} of {disk} has no device node: its filesystem could not be "
            "given a new id."
        )
    partitions = [
        Volume(f"partition {n}", node, info.fstype, info.uuid, n)
        for n, node in sorted(nodes.items())
        for info in [filesystems.probe(node)]
        if info.fstype
    ]
    with contextlib.ExitStack() as stack:
        volumes = list(partitions)
        for pv in partitions:
            if pv.fstype == "LVM2_member":
                volumes.extend(stack.enter_context(_logical_volumes(pv)))
        survey = survey_disk(disk, table, volumes)
        changes = IdChanges()
        _new_table_ids(disk, table, survey, changes)
        for volume in volumes:
            if volume.fstype == "LVM2_member":
                _new_lvm_ids(volume, changes)
            else:
                _new_filesystem_id(volume, survey, changes)
        _update_references(volumes, changes)
    return changes


# --- 1. what depends on the ids --------------------------------------------------------------


def survey_disk(disk: str, table: PartitionTable, volumes: list[Volume]) -> Survey:
    boot_code = _read(disk, 0, 440)
    windows = ""
    for v in volumes:
        entry = next((p for p in table.partitions if p.number == v.partition), None)
        if v.fstype == "vfat" and entry is not None and entry.type.lower() == ESP_TYPE:
            if _fat_has(v.device, "EFI/Microsoft/Boot/bootmgfw.efi"):
                windows = f"the ESP (partition {v.partition}) holds EFI/Microsoft/Boot"
        elif v.fstype == "ntfs" and table.kind == "msdos" and _ntfs_has(v.device, "Boot/BCD"):
            windows = f"partition {v.partition} holds Windows' Boot/BCD"
    grub_dirs = set()
    for v in volumes:
        if v.fstype in LINUX_FILESYSTEMS:
            with _mounted(v, Mode.READ_ONLY) as root:
                if any(_holds_grub(root / base) for base in SUBVOLUMES):
                    grub_dirs.add(v.device)
    return Survey(windows, b"GRUB" in boot_code, frozenset(grub_dirs))


def _holds_grub(root: Path) -> bool:
    return (root / "boot" / "grub" / "i386-pc").is_dir() or (root / "grub" / "i386-pc").is_dir()


def _read(path: str, offset: int, length: int) -> bytes:
    fd = os.open(path, os.O_RDONLY)
    try:
        return os.pread(fd, length, offset)
    finally:
        os.close(fd)


def _fat_has(device: str, path: str) -> bool:
    """Whether the FAT on ``device`` holds ``path`` (mtools reads it with no mount; FAT
    names are case-insensitive, as mtools compares them)."""
    result = run(["mdir", "-b", "-i", device, f"::/{path}"], check=False, env=MTOOLS_ENV)
    return result.returncode == 0


def _ntfs_has(device: str, path: str) -> bool:
    parent, _, name = path.rpartition("/")
    result = run(["ntfsls", "-f", "-p", f"/{parent}", device], check=False)
    names = result.stdout.decode(errors="replace").lower().split()
    return result.returncode == 0 and name.lower() in names


# --- 2. the table ---------------------------------------------------------------------------


def _new_table_ids(disk: str, table: PartitionTable, survey: Survey, changes: IdChanges) -> None:
    if survey.windows:
        changes.kept.append(
            f"the disk's {'GUID' if table.kind == 'gpt' else 'signature'} and its partitions' "
            f"ids: {survey.windows}, and Windows' boot configuration (BCD) names its disk and "
            "partitions by them"
        )
        return
    fresh = table.with_new_ids()
    if table.kind == "gpt":
        argv = ["sgdisk", f"--disk-guid={fresh.disk_id}"]
        argv += [f"--partition-guid={p.number}:{p.guid}" for p in fresh.partitions]
        run([*argv, disk])
        changes.changed.append(f"disk GUID {table.disk_id} -> {fresh.disk_id}")
        for old, new in zip(table.partitions, fresh.partitions, strict=True):
            changes.renamed[old.guid.lower()] = new.guid
            changes.changed.append(f"partition {old.number}: GUID {old.guid} -> {new.guid}")
    else:
        signature = int(fresh.disk_id, 16)
        fd = os.open(disk, os.O_WRONLY)
        try:
            os.pwrite(fd, signature.to_bytes(4, "little"), 440)
            os.fsync(fd)
        finally:
            os.close(fd)
        old_sig = int(table.disk_id, 16)
        for p in table.partitions:
            changes.renamed[f"{old_sig:08x}-{p.number:02x}"] = f"{signature:08x}-{p.number:02x}"
        changes.changed.append(f"disk signature {table.disk_id} -> {fresh.disk_id}")
    written = read_table(disk)
    expected = fresh if table.kind == "gpt" else replace(table, disk_id=fresh.disk_id)
    diffs = expected.differences(written) if written else ["no table"]
    if diffs:
        raise IntegrityError(f"The new ids of {disk}'s table were not written: {diffs[0]}.")


# --- 3. filesystems -------------------------------------------------------------------------


def _new_filesystem_id(volume: Volume, survey: Survey, changes: IdChanges) -> None:
    v = volume
    why = _keep_reason(v, survey)
    if why:
        changes.kept.append(f"{v.where}: {v.fstype} UUID {v.uuid}: {why}")
        return
    new = _set_uuid(v)
    if new is None:
        if v.uuid:
            changes.kept.append(f"{v.where}: {v.fstype} UUID {v.uuid}: no tool to change it")
        return
    after = filesystems.probe(v.device).uuid
    if not after or after.lower() == v.uuid.lower():
        raise IntegrityError(f"{v.where} ({v.fstype}) still has its UUID {v.uuid} after {new}.")
    changes.renamed[v.uuid.lower()] = after
    changes.changed.append(f"{v.where}: {v.fstype} UUID {v.uuid} -> {after} ({new})")


def _keep_reason(v: Volume, survey: Survey) -> str:
    if v.fstype == "crypto_LUKS":
        return "the initramfs's cryptroot names it (it cannot be edited)"
    if v.fstype == "ntfs" and survey.windows:
        return "a Windows disk keeps its NTFS serials"
    if survey.bios_grub and v.device in survey.grub_dirs:
        return (
            "BIOS GRUB's core.img (compressed, it cannot be patched) finds /boot/grub on it by "
            "this UUID"
        )
    return ""


def _set_uuid(v: Volume) -> str | None:
    """Give ``v`` a new UUID with its own tool; the tool's name, or None when none can."""
    d = v.device
    if v.fstype in ("ext2", "ext3", "ext4"):
        # tune2fs wants a filesystem checked since its last mount before it rewrites checksums
        result = run(["e2fsck", "-f", "-p", d], check=False)
        if result.returncode not in (0, 1):
            raise ToolFailed(
                f"e2fsck found errors on {v.where} (exit code {result.returncode}): its UUID "
                "was not changed.",
                "Check the filesystem (e2fsck -f) and restore again.",
            )
        run(["tune2fs", "-U", "random", d])
        return "tune2fs -U random"
    if v.fstype == "xfs":
        run(["xfs_admin", "-U", "generate", d])
        return "xfs_admin -U generate"
    if v.fstype == "btrfs":
        # -u rewrites the fsid in all metadata; -m (metadata_uuid) would be faster but sets
        # an incompat flag kernels before 5.0 cannot mount
        run(["btrfstune", "-f", "-u", d])
        return "btrfstune -u"
    if v.fstype == "swap":
        run(["swaplabel", "-U", str(uuid.uuid4()), d])
        return "swaplabel -U"
    if v.fstype == "vfat":
        run(["fatlabel", "-i", "-r", d])
        return "fatlabel -i -r"
    if v.fstype == "ntfs":
        run(["ntfslabel", "--new-serial", d])
        return "ntfslabel --new-serial"
    if v.fstype == "exfat":
        run(["tune.exfat", "-I", f"{secrets.randbits(32):#010x}", d])
        return "tune.exfat -I"
    return None


# --- 4. LVM ---------------------------------------------------------------------------------


def _lvm_ids(device: str) -> tuple[str, str, str, int]:
    out = lvm_change(
        "pvs", "--noheadings", "-o", "pv_uuid,vg_name,vg_uuid,pv_count", device, device=device
    )
    fields = out.split()
    if len(fields) < 4:
        return (fields[0] if fields else "", "", "", 0)
    return fields[0], fields[1], fields[2], int(fields[3])


def _new_lvm_ids(v: Volume, changes: IdChanges) -> None:
    pv, vg, vg_uuid, pvs = _lvm_ids(v.device)
    if vg and pvs != 1:
        changes.kept.append(
            f"{v.where}: PV {pv} and VG {vg} ({vg_uuid}): the VG has {pvs} PVs, and only this "
            "one is on the restored disk"
        )
        return
    lvm_change("pvchange", "--uuid", v.device, device=v.device)
    if vg:
        lvm_change("vgchange", "--uuid", vg, device=v.device)
    new_pv, _, new_vg, _ = _lvm_ids(v.device)
    if new_pv == pv or (vg and new_vg == vg_uuid):
        raise IntegrityError(f"LVM did not give the PV on {v.where} new UUIDs.")
    changes.changed.append(f"{v.where}: LVM PV UUID {pv} -> {new_pv} (pvchange --uuid)")
    if vg:
        changes.changed.append(
            f"{v.where}: VG {vg} UUID {vg_uuid} -> {new_vg} (vgchange --uuid; the name is "
            "kept: the restored system names its volumes by it)"
        )


@contextlib.contextmanager
def _logical_volumes(pv: Volume) -> Iterator[list[Volume]]:
    """The filesystems of the PV's linear logical volumes, each a loop device over its
    extents (as :mod:`imaging.disks.lvm` reaches them; this kernel may have no
    device-mapper). Other logical volumes keep their filesystems' UUIDs."""
    layout = pv_layout(pv.device)
    loops: list[Volume] = []
    try:
        for seg in layout.segments:
            if not seg.lv or seg.segtype != "linear" or layout.lv_segments.get(seg.lv, 0) != 1:
                continue
            offset = layout.pe_start + seg.start * layout.extent_size
            size = seg.count * layout.extent_size
            argv = ["losetup", "--find", "--show", "--offset", str(offset)]
            loop = run([*argv, "--sizelimit", str(size), pv.device]).stdout.decode().strip()
            info = filesystems.probe(loop)
            where = f"logical volume {layout.vg}/{seg.lv} ({pv.where})"
            loops.append(Volume(where, loop, info.fstype, info.uuid, pv.partition))
        yield [v for v in loops if v.fstype]
    finally:
        for v in loops:
            run(["losetup", "--detach", v.device], check=False)


# --- 5. references --------------------------------------------------------------------------


def rewrite_references(text: str, renamed: dict[str, str]) -> tuple[str, int]:
    """``text`` with every old id in ``renamed`` that a reference names replaced by its new
    one, and how many were replaced. Only lines naming ids by UUID=, PARTUUID=, by-uuid/,
    by-partuuid/ or GRUB's fs-uuid search are touched."""
    if not renamed:
        return text, 0
    pattern = re.compile(
        r"(?<![0-9A-Za-z-])("
        + "|".join(re.escape(k) for k in sorted(renamed, key=len, reverse=True))
        + r")(?![0-9A-Za-z-])",
        re.IGNORECASE,
    )
    total = 0
    lines = []
    for line in text.splitlines(keepends=True):
        if not _MARKERS.search(line):
            lines.append(line)
            continue
        new, n = pattern.subn(lambda m: renamed[m.group(1).lower()], line)
        total += n
        lines.append(new)
    return "".join(lines), total


def _update_references(volumes: list[Volume], changes: IdChanges) -> None:
    if not changes.renamed:
        return
    for v in volumes:
        if v.fstype not in EDITABLE:
            continue
        with _mounted(v, Mode.READ_WRITE) as root:
            for path in _reference_files(root, v.fstype):
                n = _rewrite_file(path, changes.renamed)
                if not n:
                    continue
                rel = path.relative_to(root)
                changes.references.append(f"{v.where}: /{rel} ({n})")
                if rel.name == "resume":
                    changes.notes.append(
                        "The initramfs in /boot still names the old swap UUID for resume from "
                        "hibernation: run update-initramfs -u on the restored system."
                    )


def _reference_files(root: Path, fstype: str) -> list[Path]:
    bases = SUBVOLUMES if fstype == "btrfs" else ("",)
    found = []
    for base in bases:
        for name in REFERENCE_FILES:
            for path in sorted((root / base).glob(name)):
                if path.is_file() and not path.is_symlink():
                    found.append(path)
    return found


def _rewrite_file(path: Path, renamed: dict[str, str]) -> int:
    """Replace ``path`` atomically with its references rewritten, keeping owner and mode."""
    raw = path.read_bytes()
    text = raw.decode("utf-8", errors="surrogateescape")
    new, n = rewrite_references(text, renamed)
    if not n:
        return 0
    st = path.stat()
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(new.encode("utf-8", errors="surrogateescape"))
            f.flush()
            os.fsync(f.fileno())
        with contextlib.suppress(OSError):  # FAT has no owners or modes
            os.chown(tmp, st.st_uid, st.st_gid)
            os.chmod(tmp, st.st_mode & 0o7777)
        _copy_xattrs(path, tmp)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    dirfd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dirfd)
    except OSError:
        pass  # FUSE drivers may not sync directories; the unmount flushes
    finally:
        os.close(dirfd)
    return n


def _copy_xattrs(source: Path, dest: str) -> None:
    """Extended attributes too: an SELinux system's ``security.selinux`` label, ACLs."""
    try:
        names = os.listxattr(source)
    except OSError:
        return  # the filesystem (FAT through FUSE) keeps none
    for name in names:
        with contextlib.suppress(OSError):
            os.setxattr(dest, name, os.getxattr(source, name))


@contextlib.contextmanager
def _mounted(v: Volume, mode: Mode) -> Iterator[Path]:
    where = tempfile.mkdtemp(prefix="hourglass-ids-")
    try:
        mount(v.device, v.fstype, where, mode)
        try:
            yield Path(where)
        finally:
            unmount(where)
    finally:
        with contextlib.suppress(OSError):
            os.rmdir(where)
