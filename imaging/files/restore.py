"""Bringing files and directories back from a snapshot, the way ``cp -a`` would.

Each PATH lands in DEST under its last name (``/home/ann/Documents`` becomes
``DEST/Documents``). Mode, owner, timestamps (nanoseconds), symlinks, hardlinks, holes of
sparse files, extended attributes and POSIX ACLs are kept where DEST's filesystem supports
them; what it does not support becomes one warning per kind, not a failure.

Nothing is ever written outside DEST: every directory is entered through a file descriptor
opened with ``O_NOFOLLOW``, every file is created with ``O_EXCL | O_NOFOLLOW`` relative to
it, and a name from the image that is empty, ``.``, ``..`` or holds ``/`` or NUL is refused
(the image is hostile input). An existing name in DEST is kept and the restored entry gets
``NAME.restored-YYYYMMDD-HHMMSS.EXT`` (the extension kept last) unless ``overwrite``;
existing directories are merged.

A file whose data is damaged in the repository is restored with the readable parts (the
damaged ranges are left as holes), reported by name with its byte ranges and chunks, and the
other files still restore.

Large files on ext2/3/4 and xfs are copied from the repository directly: FIEMAP on the
mounted snapshot gives where the file's bytes lie in the partition, and those ranges are
read from an in-process view of the partition image that decodes chunks on a thread pool, as
a full restore does. Reading through the mounted filesystem instead goes ext4 -> loop device
-> FUSE -> the server, 128 KiB at a time, at about a third of a full restore's speed. A file
FIEMAP cannot describe safely (inline, encrypted, unknown extents) or whose chunks are
damaged goes the mounted way, which salvages and reports what it can.
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
from dataclasses import dataclass, field
from pathlib import Path

from imaging.errors import HourglassError, NoSpace, UsageError
from imaging.files import paths
from imaging.files.blockview import ChunkCache, DamagedRead, ImageView
from imaging.files.browse import SnapshotBrowser, printable
from imaging.files.versions import FIEMAP_FILESYSTEMS, fiemap
from imaging.image.restore import refuse_repository_target
from imaging.progress import Meter, ProgressCallback, no_progress
from imaging.repository.store import Repository, Snapshot
from imaging.units import count, local_now

PIECE = 4 * 1024 * 1024
SMALL = 4096
DIRECT_MIN = 4 * 1024 * 1024  # smaller files: the mounted way costs less than a chunk decode
FIEMAP_EXTENT_UNWRITTEN = 0x800  # allocated, never written: reads as zeros (a hole here)
DIRECT_CACHE = 64 * 1024 * 1024
XATTR_PREFIXES = ("user.", "trusted.", "security.", "system.posix_acl_")
UNSUPPORTED = (errno.ENOTSUP, errno.EOPNOTSUPP, errno.EPERM, errno.EINVAL, errno.ENOSYS)


@dataclass
class DamagedFile:
    """A file that could not be read completely: its path, unreadable byte ranges, chunks."""

    path: str
    ranges: list[tuple[int, int]] = field(default_factory=list)
    chunks: list[str] = field(default_factory=list)
    reason: str = ""

    def describe(self) -> str:
        text = printable(self.path)
        if self.ranges:
            spans = ", ".join(
                f"bytes {start}-{start + length - 1}" for start, length in self.ranges
            )
            text += f": unreadable {spans} (left as zeros)"
        elif self.reason:
            text += f": {self.reason}"
        if self.chunks:
            noun = "chunk" if len(self.chunks) == 1 else "chunks"
            text += f"; damaged {noun} {', '.join(self.chunks)}"
        return text


@dataclass
class FileRestoreResult:
    """What a file-level restore did."""

    snapshot: Snapshot
    image: str
    dest: str
    restored: int = 0
    bytes: int = 0
    renamed: list[tuple[str, str]] = field(default_factory=list)
    damaged: list[DamagedFile] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.damaged


def restore_files(
    repo: Repository,
    snapshot: Snapshot | str,
    partition: int | None,
    paths_: list[str],
    dest: str | Path,
    *,
    overwrite: bool = False,
    progress: ProgressCallback = no_progress,
) -> FileRestoreResult:
    """Restore ``paths_`` from ``snapshot`` (partition ``partition``) into directory ``dest``."""
    refuse_repository_target(repo, str(dest))  # before the snapshot is even opened
    with SnapshotBrowser(repo, snapshot, partition) as browser:
        return restore_from(browser, paths_, dest, overwrite=overwrite, progress=progress)


def restore_from(
    browser: SnapshotBrowser,
    paths_: list[str],
    dest: str | Path,
    *,
    overwrite: bool = False,
    progress: ProgressCallback = no_progress,
) -> FileRestoreResult:
    """:func:`restore_files` from a browser that is already open."""
    if not paths_:
        raise UsageError("Name at least one path to restore.")
    refuse_repository_target(browser.repo, str(dest))
    dest = Path(dest)
    try:
        dest.mkdir(parents=True, exist_ok=True)
        dest_fd = os.open(dest, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError as e:
        raise UsageError(f"Cannot use {dest} as the destination: {e.strerror}.") from None
    result = FileRestoreResult(browser.snapshot, browser.image, str(dest))
    try:
        split = [paths.split(p) for p in paths_]
        for parts in split:
            if browser.stat(paths.display(parts)) is None:
                raise UsageError(
                    f"{paths.display(parts)} does not exist in snapshot {browser.snapshot.id[:12]}."
                )
        total = sum(_size_under(browser.root, parts) for parts in split)
        meter = Meter("restore", total, progress)
        copier = _Copier(browser, result, meter, overwrite, dest_fd)
        try:
            for parts in split:
                meter.set_item(paths.display(parts))
                copier.restore_path(parts)
        finally:
            copier.close()
        meter.finish()
    finally:
        os.close(dest_fd)
    return result


def _size_under(root: str, parts: list[str]) -> int:
    """Bytes of regular files at or under ``parts`` (for progress; damage counts as zero)."""
    st = paths.lstat_in(root, parts)
    if st is None:
        return 0
    if not stat.S_ISDIR(st.st_mode):
        return st.st_size if stat.S_ISREG(st.st_mode) else 0
    total = 0
    top = os.path.join(root, *parts)
    for directory, _, files in os.walk(top, followlinks=False, onerror=lambda _: None):
        for name in files:
            with contextlib.suppress(OSError):
                st = os.lstat(os.path.join(directory, name))
                if stat.S_ISREG(st.st_mode):
                    total += st.st_size
    return total


class _Copier:
    def __init__(
        self,
        browser: SnapshotBrowser,
        result: FileRestoreResult,
        meter: Meter,
        overwrite: bool,
        dest_fd: int,
    ) -> None:
        self.browser = browser
        self.result = result
        self.meter = meter
        self.overwrite = overwrite
        self.dest_fd = dest_fd
        self.stamp = local_now().strftime("%Y%m%d-%H%M%S")
        self.links: dict[tuple[int, int], tuple[list[str], str]] = {}
        self._warned: set[str] = set()
        self.root_user = os.geteuid() == 0
        self._direct: ImageView | bool | None = None  # None: not made yet; False: not possible

    def close(self) -> None:
        if isinstance(self._direct, ImageView):
            self._direct.cache.close()

    # --- entry points -----------------------------------------------------------------------

    def restore_path(self, parts: list[str]) -> None:
        src_dir = paths.open_dir(self.browser.root, parts[:-1] if parts else [])
        try:
            if not parts:  # the root of the filesystem: its entries go straight into DEST
                root_fd = os.open(".", paths.DIR_FLAGS, dir_fd=src_dir)
                try:
                    self._copy_children(root_fd, self.dest_fd, [], [])
                finally:
                    os.close(root_fd)
                return
            self._copy(src_dir, parts[-1], self.dest_fd, [], parts[:-1])
        finally:
            os.close(src_dir)

    # --- one entry --------------------------------------------------------------------------

    def _copy(
        self, sfd: int, name: str, dfd: int, dest_parts: list[str], src_parts: list[str]
    ) -> None:
        shown = paths.display([*src_parts, name])
        if not paths.safe_name(name):
            self._warn(f"unsafe:{shown}", f"skipped {printable(shown)!r}: the name is not safe")
            return
        try:
            st = os.stat(name, dir_fd=sfd, follow_symlinks=False)
        except OSError as e:
            self._damaged_entry(shown, e)
            return
        kind = stat.S_IFMT(st.st_mode)
        if kind != stat.S_IFDIR and st.st_nlink > 1:
            key = (st.st_dev, st.st_ino)
            first = self.links.get(key)
            if first is not None and self._link(first, dfd, name, shown, dest_parts):
                return
        if kind == stat.S_IFDIR:
            self._copy_dir(sfd, name, st, dfd, dest_parts, src_parts)
            return
        final = self._target_name(dfd, name, shown, dest_parts, is_dir=False)
        if final is None:
            return
        temp = f".{name[:200]}.hourglass-{os.getpid()}" if self._exists(dfd, final) else final
        try:
            if kind == stat.S_IFREG:
                self._copy_file(sfd, name, st, dfd, temp, shown)
            elif kind == stat.S_IFLNK:
                target = os.readlink(name, dir_fd=sfd)
                os.symlink(target, temp, dir_fd=dfd)
                self._set_owner(dfd, temp, st, follow=False)
                os.utime(
                    temp, ns=(st.st_atime_ns, st.st_mtime_ns), dir_fd=dfd, follow_symlinks=False
                )
            elif kind in (stat.S_IFIFO, stat.S_IFCHR, stat.S_IFBLK):
                os.mknod(temp, stat.S_IMODE(st.st_mode) | kind, st.st_rdev, dir_fd=dfd)
                self._finish_path(dfd, temp, st)
            else:
                self._warn(f"kind:{shown}", f"skipped {printable(shown)}: a socket or unknown kind")
                return
        except OSError as e:
            with contextlib.suppress(OSError):
                if temp != final:
                    os.unlink(temp, dir_fd=dfd)
            if e.errno in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP) and kind != stat.S_IFREG:
                self._warn(
                    f"create:{kind}",
                    f"{printable(self.result.dest)} cannot hold "
                    f"{'symbolic links' if kind == stat.S_IFLNK else 'special files'}: "
                    f"{printable(shown)} and others like it were skipped",
                )
                return
            if e.errno in (errno.EIO,):
                self._damaged_entry(shown, e)
                return
            if e.errno in (errno.ENOSPC, errno.EDQUOT):
                raise NoSpace(
                    f"{printable(self.result.dest)} is full: {printable(shown)} could not be "
                    f"restored ({count(self.result.restored, 'item')} "
                    f"{'was' if self.result.restored == 1 else 'were'}).",
                    "Restore to a larger drive, or fewer files at a time.",
                ) from None
            raise HourglassError(
                f"Cannot restore {printable(shown)} to {printable(self.result.dest)}: {e.strerror}."
            ) from None
        if temp != final:
            os.replace(temp, final, src_dir_fd=dfd, dst_dir_fd=dfd)
        self.result.restored += 1
        if kind != stat.S_IFDIR and st.st_nlink > 1:
            self.links.setdefault((st.st_dev, st.st_ino), (list(dest_parts), final))

    def _copy_dir(
        self,
        sfd: int,
        name: str,
        st: os.stat_result,
        dfd: int,
        dest_parts: list[str],
        src_parts: list[str],
    ) -> None:
        shown = paths.display([*src_parts, name])
        try:
            child_src = os.open(name, paths.DIR_FLAGS, dir_fd=sfd)
        except OSError as e:
            self._damaged_entry(shown, e)
            return
        try:
            final = self._target_name(dfd, name, shown, dest_parts, is_dir=True)
            if final is None:
                return
            created = False
            try:
                os.mkdir(final, 0o700, dir_fd=dfd)
                created = True
            except FileExistsError:
                pass  # an existing directory: merge into it
            child_dest = os.open(final, paths.DIR_FLAGS, dir_fd=dfd)
            try:
                self._copy_children(child_src, child_dest, [*dest_parts, final], [*src_parts, name])
                if created or self.overwrite:
                    self._finish_fd(child_dest, st, shown, src_fd=child_src)
            finally:
                os.close(child_dest)
            self.result.restored += 1
        finally:
            os.close(child_src)

    def _copy_children(
        self, sfd: int, dfd: int, dest_parts: list[str], src_parts: list[str]
    ) -> None:
        names = []
        try:
            # The kernel itself refuses a name holding "/" with EIO (verify_dirent_name):
            # what was listed before it still restores.
            for entry in os.scandir(sfd):
                names.append(entry.name)
        except OSError as e:
            self._damaged_entry(paths.display(src_parts), e, listing=True)
        for child in sorted(names):
            self._copy(sfd, child, dfd, dest_parts, src_parts)

    # --- names in DEST ----------------------------------------------------------------------

    @staticmethod
    def _exists(dfd: int, name: str) -> bool:
        try:
            os.stat(name, dir_fd=dfd, follow_symlinks=False)
        except FileNotFoundError:
            return False
        return True

    def _target_name(
        self, dfd: int, name: str, shown: str, dest_parts: list[str], *, is_dir: bool
    ) -> str | None:
        """The name to create in DEST: ``name``, or a new one when ``name`` is taken."""
        try:
            existing = os.stat(name, dir_fd=dfd, follow_symlinks=False)
        except FileNotFoundError:
            return name
        existing_dir = stat.S_ISDIR(existing.st_mode)
        if is_dir and existing_dir:
            return name  # merge
        if self.overwrite and not existing_dir and not is_dir:
            return name  # replaced by rename over it
        if self.overwrite and not existing_dir and is_dir:
            os.unlink(name, dir_fd=dfd)
            return name
        # letter.txt -> letter.restored-20261201-183440.txt: the extension stays last, so
        # the file still opens with its program.
        stem, ext = (name, "") if is_dir else os.path.splitext(name)
        n = 1
        while True:
            candidate = f"{stem}.restored-{self.stamp}" + (f"-{n}" if n > 1 else "") + ext
            if not self._exists(dfd, candidate):
                break
            n += 1
        self.result.renamed.append(
            (shown, paths.display([*dest_parts, candidate])[1:])  # relative to DEST
        )
        return candidate

    # --- regular files ----------------------------------------------------------------------

    def _copy_file(
        self, sfd: int, name: str, st: os.stat_result, dfd: int, target: str, shown: str
    ) -> None:
        src = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=sfd)
        try:
            dst = os.open(
                target,
                os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                0o600,
                dir_fd=dfd,
            )
            try:
                damage_before = len(self.browser.session.damage())
                if self._copy_direct(src, dst, st.st_size):
                    bad = []
                else:
                    bad = self._copy_data(src, dst, st.st_size)
                os.ftruncate(dst, st.st_size)
                self._finish_fd(dst, st, shown, src_fd=src)
            finally:
                os.close(dst)
        finally:
            os.close(src)
        self.result.bytes += st.st_size
        if bad:
            chunks = sorted({d.chunk for d in self.browser.session.damage()[damage_before:]})
            self.result.damaged.append(DamagedFile(shown, bad, chunks))

    def _image_view(self) -> ImageView | None:
        """The snapshot's partition image, read in this process (made on first use)."""
        if self._direct is None:
            self._direct = False
            browser = self.browser
            if browser.fstype in FIEMAP_FILESYSTEMS:
                repo = browser.repo
                with contextlib.suppress(HourglassError):
                    ids = repo.load_index(browser.snapshot, browser.image)
                    size = browser.snapshot.image(browser.image).size
                    workers = 2 * (os.cpu_count() or 1)
                    cache = ChunkCache(repo, DIRECT_CACHE, workers=workers)
                    self._direct = ImageView(browser.image, ids, size, repo.block_size, cache)
        return self._direct if isinstance(self._direct, ImageView) else None

    def _copy_direct(self, src: int, dst: int, size: int) -> bool:
        """Copy a large file's extents straight from the repository (see the module's
        docstring); False, with nothing counted, when this file must go the mounted way."""
        if size < DIRECT_MIN:
            return False
        view = self._image_view()
        extents = fiemap(src, size) if view is not None else None
        if view is None or extents is None:
            return False
        copied = 0
        try:
            for logical, physical, extent_length, flags in extents:
                length = min(extent_length, size - logical)
                if flags & FIEMAP_EXTENT_UNWRITTEN or length <= 0:
                    continue  # zeros: left a hole, the final truncate gives the size
                for offset in range(0, length, PIECE):
                    n = min(PIECE, length - offset)
                    data = view.read(physical + offset, n)
                    if len(data) != n:  # an extent past the image's end: not to be trusted
                        self.meter.add(-copied)
                        return False
                    _write_at(dst, data, logical + offset)
                    copied += n
                    self.meter.add(n)
        except (DamagedRead, HourglassError):
            self.meter.add(-copied)
            return False
        self.meter.add(size - copied)  # holes and unwritten extents
        return True

    def _copy_data(self, src: int, dst: int, size: int) -> list[tuple[int, int]]:
        """Copy the data ranges of ``src`` (holes stay holes); returns unreadable ranges."""
        bad: list[tuple[int, int]] = []
        pos = 0
        while pos < size:
            try:
                start = os.lseek(src, pos, os.SEEK_DATA)
                end = min(os.lseek(src, start, os.SEEK_HOLE), size)
            except OSError as e:
                if e.errno == errno.ENXIO:
                    self.meter.add(size - pos)
                    break  # only a hole is left
                if e.errno not in (errno.EINVAL, errno.EOPNOTSUPP):
                    raise
                start, end = pos, size  # no SEEK_DATA here: everything is data
            self.meter.add(start - pos)
            self._copy_range(src, dst, start, end, bad)
            pos = end
        return _merge(bad)

    def _copy_range(
        self, src: int, dst: int, start: int, end: int, bad: list[tuple[int, int]]
    ) -> None:
        offset = start
        while offset < end:
            n = min(PIECE, end - offset)
            try:
                data = os.pread(src, n, offset)
            except OSError as e:
                if e.errno != errno.EIO:
                    raise
                self._salvage(src, dst, offset, n, bad)
                offset += n
                self.meter.add(n)
                continue
            if not data:
                break
            _write_at(dst, data, offset)
            offset += len(data)
            self.meter.add(len(data))

    def _salvage(
        self, src: int, dst: int, start: int, length: int, bad: list[tuple[int, int]]
    ) -> None:
        """Read what can be read of a range that failed, a page at a time."""
        for offset in range(start, start + length, SMALL):
            n = min(SMALL, start + length - offset)
            try:
                data = os.pread(src, n, offset)
            except OSError as e:
                if e.errno != errno.EIO:
                    raise
                bad.append((offset, n))
                continue
            if data:
                _write_at(dst, data, offset)

    # --- metadata ---------------------------------------------------------------------------

    def _finish_fd(
        self, fd: int, st: os.stat_result, shown: str, src_fd: int | None = None
    ) -> None:
        """Owner, extended attributes and ACLs, mode, then times (in that order: chown clears
        set-id bits and capabilities; times last because the others change ctime only)."""
        try:
            os.fchown(fd, st.st_uid, st.st_gid)
        except OSError as e:
            self._unsupported("owner", e)
        if src_fd is not None:
            self._copy_xattrs(src_fd, fd)
        try:
            os.fchmod(fd, stat.S_IMODE(st.st_mode))
        except OSError as e:
            self._unsupported("mode", e)
        try:
            os.utime(fd, ns=(st.st_atime_ns, st.st_mtime_ns))
        except OSError as e:
            self._unsupported("times", e)

    def _finish_path(self, dfd: int, name: str, st: os.stat_result) -> None:
        self._set_owner(dfd, name, st, follow=False)
        with contextlib.suppress(OSError):
            os.chmod(name, stat.S_IMODE(st.st_mode), dir_fd=dfd)
        with contextlib.suppress(OSError):
            os.utime(name, ns=(st.st_atime_ns, st.st_mtime_ns), dir_fd=dfd, follow_symlinks=False)

    def _set_owner(self, dfd: int, name: str, st: os.stat_result, *, follow: bool) -> None:
        try:
            os.chown(name, st.st_uid, st.st_gid, dir_fd=dfd, follow_symlinks=follow)
        except OSError as e:
            self._unsupported("owner", e)

    def _copy_xattrs(self, src_fd: int, dst_fd: int) -> None:
        try:
            names = os.listxattr(src_fd)
        except OSError:
            return  # the snapshot's filesystem has none
        for attr in names:
            if not attr.startswith(XATTR_PREFIXES):
                continue
            try:
                value = os.getxattr(src_fd, attr)
                os.setxattr(dst_fd, attr, value)
            except OSError as e:  # never fatal: the data matters more than an attribute
                reason = e.strerror or str(e)
                self._warn(f"xattr {attr}", f"extended attribute {attr} not restored ({reason})")

    def _unsupported(self, what: str, error: OSError) -> None:
        if error.errno not in UNSUPPORTED:
            raise error
        reason = "not root" if what == "owner" and not self.root_user else error.strerror
        self._warn(
            f"unsupported:{what}",
            f"{what} not restored where {self.result.dest} does not support it ({reason})",
        )

    # --- hardlinks and damage ---------------------------------------------------------------

    def _link(
        self, first: tuple[list[str], str], dfd: int, name: str, shown: str, dest_parts: list[str]
    ) -> bool:
        first_parts, first_name = first
        final = self._target_name(dfd, name, shown, dest_parts, is_dir=False)
        if final is None:
            return True
        # with --overwrite an existing name is replaced: link beside it, then rename over it
        temp = f".{name[:200]}.hourglass-{os.getpid()}" if self._exists(dfd, final) else final
        try:
            first_dir = paths.open_dir(self.dest_fd, first_parts)
        except HourglassError:
            return False
        try:
            os.link(first_name, temp, src_dir_fd=first_dir, dst_dir_fd=dfd, follow_symlinks=False)
        except OSError as e:
            self._unsupported("hardlinks", e)
            return False
        finally:
            os.close(first_dir)
        if temp != final:
            os.replace(temp, final, src_dir_fd=dfd, dst_dir_fd=dfd)
        self.result.restored += 1
        return True

    def _damaged_entry(self, shown: str, error: OSError, *, listing: bool = False) -> None:
        if error.errno != errno.EIO:
            raise HourglassError(
                f"Cannot read {printable(shown)} in the snapshot: {error.strerror}."
            )
        chunks = sorted({d.chunk for d in self.browser.session.damage()})
        if listing:
            reason = "its listing stops at an entry that cannot be read " + (
                "(damaged chunk)" if chunks else "(a damaged or invalid name)"
            )
        else:
            reason = "its metadata cannot be read (damaged chunk)"
        self.result.damaged.append(DamagedFile(shown, [], chunks, reason))

    def _warn(self, key: str, message: str) -> None:
        if key not in self._warned:
            self._warned.add(key)
            self.result.warnings.append(message)


def _write_at(fd: int, data: bytes, offset: int) -> None:
    view = memoryview(data)
    while view:
        written = os.pwrite(fd, view, offset)
        view = view[written:]
        offset += written


def _merge(ranges: list[tuple[int, int]]) -> list[tuple[int, int]]:
    merged: list[tuple[int, int]] = []
    for start, length in sorted(ranges):
        if merged and merged[-1][0] + merged[-1][1] >= start:
            last_start, last_length = merged[-1]
            merged[-1] = (last_start, max(last_length, start + length - last_start))
        else:
            merged.append((start, length))
    return merged
