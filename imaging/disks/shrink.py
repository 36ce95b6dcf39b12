"""Shrinking a partition's filesystem while restoring it to a smaller disk.

The snapshot is never changed, and the target is not written until the shrunk filesystem
exists: ext2/3/4, NTFS and btrfs are restored from the snapshot into a sparse scratch file
the size of the original partition (only the used blocks take room there), shrunk there
with their own tool (``resize2fs``, ``ntfsresize``, ``btrfs filesystem resize`` while
mounted), and the used blocks of the shrunk filesystem (partclone's map of it) are then
copied into the new, smaller partition and read back. A filesystem whose data does not fit
the new size is refused in the scratch file, before the target is touched.

xfs cannot shrink: the partition gets a new xfs of its size with the snapshot's UUID and
label, and the files are copied from the snapshot's read-only file-level view
(:mod:`imaging.files.session`) with ``cp -a``, which keeps owners, modes, times, xattrs,
ACLs, hard links and holes.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import hashlib
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from imaging.disks.filesystems import used_map
from imaging.disks.grow import GROW_ROOT
from imaging.disks.resize import SHRINK_HOW
from imaging.errors import IntegrityError, NoScratchSpace, TargetTooSmall, ToolFailed
from imaging.files.session import Session
from imaging.image.restore import ImageTarget, RestoreOptions, RestoreResult, restore_images
from imaging.mounts.drivers import Mode
from imaging.mounts.mount import mount, unmount
from imaging.mounts.mountinfo import filesystem_of
from imaging.process import run
from imaging.progress import Meter, ProgressCallback, no_progress
from imaging.repository import codec
from imaging.repository.store import Repository, Snapshot
from imaging.units import decimal_size

COPY = 4 * 2**20  # bytes per read and write when copying the shrunk filesystem


def in_scratch(fstype: str) -> bool:
    """Whether ``fstype`` shrinks in a scratch copy (xfs is re-created instead); an LVM PV
    does, by :mod:`imaging.disks.lvmshrink`."""
    return fstype in SHRINK_HOW and fstype != "xfs"


# Where a filesystem shrinks: one directory (``--scratch DIR``), candidates in order of
# preference (the operations layer's default: beside the repository, then the temporary
# directory), or None for the temporary directory alone.
Scratch = str | tuple[str, ...] | None
HOLE_PROBE = 64 * 2**20  # a sparse file this long must take (almost) no room
# A scratch copy in RAM (the appliance's /tmp is tmpfs) may use the memory the machine has
# to spare but this much: the restore itself, its page cache and the system need it. A tmpfs
# says it has half the RAM free whatever else holds the memory.
RAM_KEPT = 512 * 2**20


def _candidates(scratch: Scratch) -> tuple[str, ...]:
    if scratch is None:
        return (tempfile.gettempdir(),)
    return (scratch,) if isinstance(scratch, str) else scratch


def keeps_holes(directory: str) -> bool:
    """Whether files in ``directory`` can be sparse (exFAT and FAT write the holes out: a
    scratch copy there would take the filesystem's whole size and as long to write). Asked
    once per directory and filesystem: a restore checks its target, then writes it."""
    try:
        device = os.stat(directory).st_dev
    except OSError:
        return False
    return _keeps_holes(directory, device)


@functools.lru_cache(maxsize=16)
def _keeps_holes(directory: str, device: int) -> bool:
    try:
        fd, path = tempfile.mkstemp(prefix=".hourglass-hole-", dir=directory)
    except OSError:
        return False
    try:
        os.ftruncate(fd, HOLE_PROBE)
        os.pwrite(fd, b"x", HOLE_PROBE - 1)
        return os.fstat(fd).st_blocks * 512 < HOLE_PROBE // 4
    except OSError:
        return False
    finally:
        os.close(fd)
        with contextlib.suppress(OSError):
            os.unlink(path)


def _in_ram(directory: str) -> bool:
    mount = filesystem_of(directory)
    return mount is not None and mount.fstype in ("tmpfs", "ramfs")


def _memory_available() -> int:
    """MemAvailable of /proc/meminfo in bytes (0 when it cannot be read)."""
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    return 0


def choose_scratch(scratch: Scratch, needed: int) -> str:
    """The first candidate with ``needed`` bytes free (and, among several, one that keeps
    sparse files); :class:`NoScratchSpace` naming each when none will do."""
    candidates = _candidates(scratch)
    problems = []
    for where in candidates:
        try:
            st = os.statvfs(where)
        except OSError as e:
            problems.append(f"{where} cannot be used: {e.strerror}")
            continue
        free = st.f_bavail * st.f_frsize
        in_ram = _in_ram(where)
        if in_ram:
            free = min(free, max(0, _memory_available() - RAM_KEPT))
        if st.f_flag & os.ST_RDONLY:
            problems.append(f"{where} is read-only")
        elif free < needed:
            problems.append(f"{where} has {decimal_size(free)} free{' in RAM' if in_ram else ''}")
        elif len(candidates) > 1 and not keeps_holes(where):
            problems.append(f"{where} cannot hold sparse files")
        else:
            return where
    raise NoScratchSpace(
        f"Shrinking needs a scratch copy of the filesystem's data ({decimal_size(needed)}); "
        + "; ".join(problems)
        + ".",
        "Name a directory with more room with --scratch DIR (not on the target disk).",
    )


def scratch_needs(repo: Repository, snapshot: Snapshot, image: str, new_size: int) -> int:
    """The bytes a scratch copy of ``image`` takes when shrunk to ``new_size``: every block
    the snapshot holds data for (unused and all-zero blocks stay holes), and again those
    past ``new_size``, which the shrink copies into holes before the end (their old place
    is not given back to the scratch directory)."""
    size = snapshot.image(image).size
    bs = repo.block_size
    data = beyond = 0
    for block, chunk_id in enumerate(repo.load_index(snapshot, image)):
        if chunk_id in (codec.UNUSED_ID, codec.ZERO_ID):
            continue
        length = min(bs, size - block * bs)
        data += length
        if block * bs + length > new_size:
            beyond += length
    return data + beyond


def check_scratch(scratch: Scratch, needed: int) -> None:
    """:class:`NoScratchSpace` when no scratch directory can hold ``needed`` bytes."""
    choose_scratch(scratch, needed)


@dataclass
class Shrunk:
    """A filesystem shrunk in a scratch file: ``ranges`` are its used bytes to copy."""

    path: str
    fstype: str
    size: int
    ranges: list[tuple[int, int]]
    tool: str

    def remove(self) -> None:
        if os.path.exists(self.path):
            os.unlink(self.path)


def restore_to_scratch(
    repo: Repository,
    snapshot: Snapshot,
    image: str,
    new_size: int,
    *,
    scratch: Scratch,
    progress: ProgressCallback = no_progress,
    options: RestoreOptions | None = None,
    result: RestoreResult | None = None,
) -> str:
    """``image`` restored into a new sparse file in the scratch directory (chosen for a
    shrink to ``new_size``); its path. The caller removes it; a failure here does."""
    where = choose_scratch(scratch, scratch_needs(repo, snapshot, image, new_size))
    fd, path = tempfile.mkstemp(prefix=f"hourglass-shrink-{image}-", suffix=".img", dir=where)
    os.close(fd)
    try:
        restore_images(
            repo,
            snapshot,
            [ImageTarget(image=image, path=path, create=True)],
            progress=progress,
            options=options,
            result=result,
        )
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(path)
        raise
    return path


def shrink_in_scratch(
    repo: Repository,
    snapshot: Snapshot,
    image: str,
    new_size: int,
    *,
    scratch: Scratch,
    target: str,
    progress: ProgressCallback = no_progress,
    options: RestoreOptions | None = None,
    result: RestoreResult | None = None,
) -> Shrunk:
    """Restore ``image`` into a sparse scratch file and shrink its filesystem to
    ``new_size`` bytes; :class:`TargetTooSmall` when its data needs more."""
    record = snapshot.image(image)
    fstype = record.fstype or ""
    path = restore_to_scratch(
        repo,
        snapshot,
        image,
        new_size,
        scratch=scratch,
        progress=progress,
        options=options,
        result=result,
    )
    shrunk = Shrunk(path, fstype, new_size, [], "")
    try:
        minimum = _minimum(path, fstype)
        if minimum is not None and minimum > new_size:
            raise TargetTooSmall(
                f"Partition {record.number} ({fstype}) cannot shrink to "
                f"{decimal_size(new_size)} on {target}: its data needs at least "
                f"{decimal_size(minimum)} ({minimum} bytes), by {_tool(fstype)}.",
                "Choose a larger disk. Nothing was written to it.",
            )
        shrunk.tool = _shrink(path, fstype, new_size)
        if os.path.getsize(path) < new_size:
            # resize2fs cuts the file to whole blocks of the filesystem; the partition's
            # last sectors past them (a partition ending at the disk's end is rarely a
            # multiple of 4 KiB) are in the used map: they read as zeros again.
            os.truncate(path, new_size)
        shrunk.ranges = list(used_map(path, fstype, new_size, 2**20, checked=True).ranges())
    except BaseException:
        shrunk.remove()
        raise
    return shrunk


def _tool(fstype: str) -> str:
    return {"ntfs": "ntfsresize", "btrfs": "btrfs"}.get(fstype, "resize2fs")


def _minimum(path: str, fstype: str) -> int | None:
    """The smallest size the filesystem's own tool says it can shrink to, in bytes."""
    if fstype in ("ext2", "ext3", "ext4"):
        _e2fsck(path)
        out = run(["resize2fs", "-P", path]).stdout.decode()
        m = re.search(r"minimum size of the filesystem: (\d+)", out)
        info = run(["dumpe2fs", "-h", path]).stdout.decode()
        bs = re.search(r"^Block size:\s+(\d+)", info, re.M)
        if m and bs:
            return int(m.group(1)) * int(bs.group(1))
        return None
    if fstype == "ntfs":
        ntfs = run(["ntfsresize", "--info", "--force", "--no-progress-bar", path], check=False)
        m = re.search(r"You might resize at (\d+) bytes", ntfs.stdout.decode())
        return int(m.group(1)) if m else None
    return None  # btrfs: its resize refuses what does not fit


def _e2fsck(path: str) -> None:
    check = run(["e2fsck", "-f", "-p", path], check=False)
    if check.returncode > 1:  # 1: errors fixed; more: not safe to resize
        raise ToolFailed(
            f"e2fsck -f -p found problems it did not fix in the snapshot's filesystem (exit "
            f"code {check.returncode}); it was not shrunk, and the target was not written."
        )


def _shrink(path: str, fstype: str, new_size: int) -> str:
    if fstype in ("ext2", "ext3", "ext4"):
        run(["resize2fs", path, f"{new_size // 512}s"])
        return "resize2fs"
    if fstype == "ntfs":
        run(
            ["ntfsresize", "--force", "--no-progress-bar", "--size", str(new_size), path],
            input=b"y\n",
        )
        return "ntfsresize"
    if fstype == "btrfs":
        with _loop(path) as device:
            where = str(GROW_ROOT / f"shrink-{os.path.basename(device)}")
            mount(device, fstype, where, Mode.READ_WRITE)
            try:
                run(["btrfs", "filesystem", "resize", str(new_size), where])
            finally:
                unmount(where, remove=True)
        return "btrfs filesystem resize"
    raise ToolFailed(f"Hourglass has no tool to shrink {fstype or 'this'} filesystem.")


@contextmanager
def _loop(path: str) -> Iterator[str]:
    device = run(["losetup", "--find", "--show", path]).stdout.decode().strip()
    try:
        yield device
    finally:
        run(["losetup", "--detach", device], check=False)


def write_shrunk(
    shrunk: Shrunk,
    path: str,
    offset: int,
    *,
    verify: bool = True,
    progress: ProgressCallback = no_progress,
    item: str = "",
) -> int:
    """Copy the shrunk filesystem's used bytes to ``path`` at ``offset``; with ``verify``
    read them back and compare. Returns the bytes written."""
    copies = [(start, offset + start, length) for start, length in shrunk.ranges]
    what = f"{shrunk.fstype} filesystem"
    return copy_ranges(
        shrunk.path, path, copies, verify=verify, what=what, progress=progress, item=item
    )


def copy_ranges(
    source: str,
    path: str,
    copies: list[tuple[int, int, int]],
    *,
    verify: bool,
    what: str,
    progress: ProgressCallback = no_progress,
    item: str = "",
) -> int:
    """Copy each (from, to, length) of ``copies`` from the file ``source`` to ``path``;
    with ``verify`` read them back and compare (``what`` names it when they differ).
    ``progress`` gets the phases ``restore`` and ``verify`` of ``item``. Returns the bytes
    written."""
    total = sum(length for _, _, length in copies)
    written = 0
    src = os.open(source, os.O_RDONLY)
    dst = os.open(path, os.O_RDWR)
    try:
        meter = Meter("restore", total, progress, item=item)
        for start, to, length in copies:
            for pos in range(0, length, COPY):
                n = min(COPY, length - pos)
                data = os.pread(src, n, start + pos)
                if len(data) != n:
                    raise ToolFailed(
                        f"The shrunk {what} in {source} ends at byte {start + pos + len(data)}, "
                        f"before the {n} bytes to copy from byte {start + pos}."
                    )
                done = 0
                while done < n:
                    wrote = os.pwrite(dst, data[done:], to + pos + done)
                    if wrote <= 0:
                        raise OSError(errno.ENOSPC, f"{path} took no more bytes", path)
                    done += wrote
                written += n
                meter.add(n)
        os.fsync(dst)
        meter.finish()
        if verify:
            os.posix_fadvise(dst, 0, 0, os.POSIX_FADV_DONTNEED)
            meter = Meter("verify", total, progress, item=item)
            for start, to, length in copies:
                for pos in range(0, length, COPY):
                    n = min(COPY, length - pos)
                    want = hashlib.blake2b(os.pread(src, n, start + pos)).digest()
                    if hashlib.blake2b(os.pread(dst, n, to + pos)).digest() != want:
                        raise IntegrityError(
                            f"Verification of {path} failed: the shrunk {what} differs from "
                            f"what was written at byte {to + pos}.",
                            "The target disk may be failing.",
                        )
                    meter.add(n)
            meter.finish()
    finally:
        os.close(src)
        os.close(dst)
    return written


def recreate_xfs(repo: Repository, snapshot: Snapshot, image: str, node: str) -> str:
    """Make a new xfs on ``node`` with the snapshot's UUID and label, and copy the files of
    ``image`` into it from the snapshot's file-level view."""
    record = snapshot.image(image)
    argv = ["mkfs.xfs", "-q", "-f"]
    if record.uuid:
        argv += ["-m", f"uuid={record.uuid}"]
    if record.label:
        argv += ["-L", record.label]
    run([*argv, node])
    where = str(GROW_ROOT / f"xfs-{os.path.basename(node)}")
    mount(node, "xfs", where, Mode.READ_WRITE)
    try:
        with Session(repo) as session:
            mounted = session.mount(snapshot, image)
            try:
                _copy_tree(mounted.path, Path(where))
            finally:
                session.unmount(mounted)
    finally:
        unmount(where, remove=True)
    return "mkfs.xfs and cp -a"


def _copy_tree(source: Path, target: Path) -> None:
    if shutil.which("cp") is None:
        raise ToolFailed("cp not found.")
    run(["cp", "-a", "--sparse=auto", "--", f"{source}/.", f"{target}/"])


def check_shrunk(node: str, fstype: str) -> None:
    """The filesystem's own read-only check of the partition written; IntegrityError when
    it finds a problem."""
    argv = {
        "ext2": ["e2fsck", "-f", "-n"],
        "ext3": ["e2fsck", "-f", "-n"],
        "ext4": ["e2fsck", "-f", "-n"],
        "xfs": ["xfs_repair", "-n"],
        "btrfs": ["btrfs", "check", "--readonly"],
        "ntfs": ["ntfsresize", "--check", "--force", "--no-progress-bar"],
    }[fstype]
    result = run([*argv, node], check=False)
    if result.returncode != 0:
        detail = (result.stdout + result.stderr).decode(errors="replace").strip().splitlines()
        raise IntegrityError(
            f"The {fstype} filesystem shrunk on {node} does not check clean "
            f"({argv[0]} exit code {result.returncode}): {' / '.join(detail[-2:])}",
            "Restore to a disk at least the size of the original.",
        )
