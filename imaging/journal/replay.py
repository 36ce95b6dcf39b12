"""A whole system as of a second: the file journal replayed onto a restored disk image.

A disk image is a point in time; the host's agent recorded every saved file after it. To put
the system back as it was at a later second, the newest image at or before that second is
restored, then every path the journal changed between the image and that second is made as
the journal had it then (written, created, deleted, renamed), on the restored filesystem that
held it on the host. Which filesystem held a host path is read from the image itself: the
``/etc/fstab`` of its Linux root filesystem (mount points by UUID, PARTUUID or LABEL), and the
journal to replay is the host the image's ``/etc/hostname`` names.

The plan is made before the disk is touched (from the image, read through the file-level
view), shown in the confirmation, and applied after the image is written and read back.
"""

from __future__ import annotations

import bisect
import os
import posixpath
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from imaging.errors import HourglassError, UsageError
from imaging.files.images import file_images
from imaging.files.session import Session
from imaging.journal.records import Entry, Event, ftype_of
from imaging.journal.restore import as_of, set_meta, write_entry
from imaging.journal.segments import load_segments, ordered_events, replay
from imaging.mounts.drivers import Mode
from imaging.mounts.mount import mount, unmount
from imaging.repository.records import ImageRecord
from imaging.repository.store import Repository, Snapshot
from imaging.units import count, human_size

LINUX_ROOTS = ("ext2", "ext3", "ext4", "xfs", "btrfs")
"""Filesystems a Linux root (the one with /etc/fstab) is looked for on."""


@dataclass(frozen=True)
class MountPoint:
    """One line of the image's fstab that names a partition of the image."""

    path: str  # where the host mounted it: "/", "/home"
    partition: int
    fstype: str
    subvol: str = ""  # btrfs: the subvolume mounted there, relative to the top level


@dataclass(frozen=True)
class Change:
    """What the replay does to one host path."""

    path: str
    entry: Entry | None  # None: the path is removed

    @property
    def removes(self) -> bool:
        return self.entry is None


@dataclass
class ReplayPlan:
    host: str
    image_ns: int
    until_ns: int
    at: datetime
    mounts: list[MountPoint]
    changes: list[Change]
    outside: list[str] = field(default_factory=list)
    """Changed host paths on no partition of the image (another disk, a network share)."""
    gaps: list[Event] = field(default_factory=list)
    """Gaps of the journal between the image and ``at``: changes there may be missing."""

    @property
    def partitions(self) -> list[int]:
        used = {self.place(c.path)[0].partition for c in self.changes}
        return sorted(used)

    def place(self, host_path: str) -> tuple[MountPoint, str]:
        """The mount holding ``host_path`` and the path inside that filesystem."""
        found = _mount_of(self.mounts, host_path)
        assert found is not None, host_path
        return found

    def lines(self) -> list[str]:
        """The plan in words, for the confirmation and the result."""
        writes = [c for c in self.changes if not c.removes]
        removes = [c for c in self.changes if c.removes]
        size = sum(c.entry.meta.size for c in writes if c.entry and c.entry.meta.ftype == "file")
        at = self.at.strftime("%Y-%m-%d %H:%M:%S")
        numbers = self.partitions
        where = (
            f"on partition {numbers[0]}"
            if len(numbers) == 1
            else f"on partitions {', '.join(str(n) for n in numbers)}"
            if numbers
            else "on no partition"
        )
        out = [
            f"Then the file journal of {self.host} is replayed up to {at}: "
            f"{count(len(writes), 'path')} written ({human_size(size)}), "
            f"{count(len(removes), 'path')} removed, {where}."
        ]
        if self.outside:
            out.append(
                f"Not replayed: {count(len(self.outside), 'changed path')} on no partition of "
                f"this disk (first: {self.outside[0]})."
            )
        for gap in self.gaps:
            out.append(f"The journal has a gap: {describe_gap(gap)}.")
        return out


@dataclass
class ReplayResult:
    plan: ReplayPlan
    written: int = 0
    removed: int = 0
    unchanged: int = 0
    """Paths the journal lists as changed that the image already holds as they were (the
    agent's first rescan after the image records every file)."""
    bytes: int = 0

    def line(self) -> str:
        at = self.plan.at.strftime("%Y-%m-%d %H:%M:%S")
        return (
            f"Replayed the file journal of {self.plan.host} up to {at}: "
            f"{count(self.written, 'path')} written ({human_size(self.bytes)}), "
            f"{count(self.removed, 'path')} removed, {self.unchanged} already as they were."
        )


def describe_gap(gap: Event) -> str:
    def t(ns: int | None) -> str:
        return datetime.fromtimestamp((ns or 0) / 1e9).astimezone().strftime("%H:%M:%S")

    paths = ", ".join(gap.paths) or "?"
    return f"{t(gap.from_ns)} to {t(gap.to_ns)} under {paths} ({gap.reason})"


def image_ns(snapshot: Snapshot) -> int:
    """When the image began: changes after it are replayed (those during it are replayed too:
    writing a file again as the journal has it is harmless)."""
    return snapshot.record.time_ns or int(snapshot.time.timestamp()) * 1_000_000_000


def parse_fstab(text: str) -> list[tuple[str, str, str, str]]:
    """(spec, mount point, fstype, options) of each line that mounts something."""
    out = []
    for raw in text.splitlines():
        line = raw.split("#", 1)[0].strip()
        fields = line.split()
        if len(fields) < 3:
            continue
        spec, where, fstype = (_unescape(f) for f in fields[:3])
        options = fields[3] if len(fields) > 3 else "defaults"
        if fstype in ("swap", "none") or not where.startswith("/"):
            continue
        out.append((spec, posixpath.normpath(where), fstype, options))
    return out


def _unescape(text: str) -> str:
    """fstab's octal escapes (``\\040`` for a space)."""
    return text.encode().decode("unicode_escape") if "\\" in text else text


def _image_of(spec: str, images: list[ImageRecord]) -> ImageRecord | None:
    key, _, value = spec.partition("=")
    by = {"UUID": "uuid", "PARTUUID": "partuuid", "LABEL": "label"}
    if spec.startswith("/dev/disk/by-uuid/"):
        key, value = "UUID", spec.rsplit("/", 1)[1]
    elif spec.startswith("/dev/disk/by-partuuid/"):
        key, value = "PARTUUID", spec.rsplit("/", 1)[1]
    elif spec.startswith("/dev/disk/by-label/"):
        key, value = "LABEL", spec.rsplit("/", 1)[1]
    attr = by.get(key.upper())
    if attr is None or not value:
        return None
    value = value.strip('"')
    for image in images:
        have = getattr(image, attr)
        if have and have.lower() == value.lower():
            return image
    return None


def _subvol(options: str) -> str:
    for option in options.split(","):
        if option.startswith("subvol="):
            return option[len("subvol=") :].strip("/")
    return ""


@dataclass(frozen=True)
class SystemFacts:
    """What the image says of the system it holds."""

    hostname: str | None
    mounts: list[MountPoint]
    unmapped: list[str]  # fstab mount points naming no partition of this image


def read_system(repo: Repository, snapshot: Snapshot) -> SystemFacts | None:
    """The host name and mount points of the Linux system in ``snapshot`` (read through the
    file-level view, nothing written); None when no partition holds ``/etc/fstab``."""
    images = [i for i in file_images(snapshot) if i.number is not None]
    with Session(repo) as session:
        for image in images:
            if (image.fstype or "") not in LINUX_ROOTS:
                continue
            mounted = session.mount(snapshot, image.name)
            try:
                for base in ("", "@", "@rootfs"):
                    root = Path(mounted.path, base) if base else Path(mounted.path)
                    fstab = root / "etc" / "fstab"
                    if fstab.is_file():
                        hostname = root / "etc" / "hostname"
                        name = hostname.read_text().strip() if hostname.is_file() else None
                        return _facts(fstab.read_text(), name, image, base, images)
            finally:
                session.unmount(mounted)
    return None


def _facts(
    text: str, hostname: str | None, root: ImageRecord, base: str, images: list[ImageRecord]
) -> SystemFacts:
    assert root.number is not None
    mounts = {"/": MountPoint("/", root.number, root.fstype or "", base)}
    unmapped = []
    for spec, where, fstype, options in parse_fstab(text):
        image = _image_of(spec, images)
        if image is None or image.number is None:
            if where != "/":
                unmapped.append(where)
            continue
        if where == "/" and image.number != root.number:
            continue  # the root we read the fstab from is the root
        mounts[where] = MountPoint(where, image.number, image.fstype or fstype, _subvol(options))
    return SystemFacts(hostname or None, sorted(mounts.values(), key=lambda m: m.path), unmapped)


def _mount_of(mounts: list[MountPoint], host_path: str) -> tuple[MountPoint, str] | None:
    best: MountPoint | None = None
    for m in mounts:
        inside = m.path in ("/", host_path) or host_path.startswith(m.path + "/")
        if inside and (best is None or len(m.path) > len(best.path)):
            best = m
    if best is None:
        return None
    rest = host_path[len(best.path) :].lstrip("/") if best.path != "/" else host_path.lstrip("/")
    inner = posixpath.join(best.subvol, rest) if best.subvol else rest
    return best, inner


def _touched(events: list[Event], image: int, until: int, state: dict[str, Entry]) -> set[str]:
    """Host paths an event between ``image`` and ``until`` changed, with everything below a
    directory deleted or renamed (from the state before each such event)."""
    touched: set[str] = set()
    prefixes: set[str] = set()
    for event in events:
        if event.ns >= until:
            break
        if event.ns > image and event.type != "gap":
            touched.add(event.path)
            if event.type in ("rename", "delete"):
                prefixes.add(event.path)
            if event.to:
                touched.add(event.to)
                prefixes.add(event.to)
    if not prefixes:
        return touched
    # Everything below each prefix: a range of the sorted paths ("/" sorts just before "0"),
    # so a journal of a million paths with thousands of deletes stays quick.
    paths = sorted(state)
    for q in prefixes:
        below = q.rstrip("/") + "/"
        start = bisect.bisect_left(paths, below)
        end = bisect.bisect_left(paths, below[:-1] + "0")
        touched.update(paths[start:end])
    return touched


def plan_replay(
    repo: Repository,
    snapshot: Snapshot,
    at: datetime,
    *,
    host: str | None = None,
    system: SystemFacts | None = None,
) -> ReplayPlan | None:
    """What replaying the journal onto ``snapshot`` up to the second ``at`` does; None when
    the repository holds no file journal. Refused (:class:`UsageError`) when the image holds
    no Linux system to map host paths onto, or no journal of its host."""
    segments_all = load_segments(repo)
    if not segments_all:
        if host:
            raise UsageError(f"The repository holds no file journal of the host {host}.")
        return None
    when = at.strftime("%Y-%m-%d %H:%M:%S")
    if system is None:
        system = read_system(repo, snapshot)
    if system is None:
        raise UsageError(
            f"Snapshot {snapshot.id[:12]} holds no Linux system (no /etc/fstab): the file "
            f"journal cannot be replayed onto it as of {when}.",
            "Restore the image alone (name it, without --at), or restore files with "
            '`hourglass files restore --at "TIME" PATH... --to DIR`.',
        )
    hosts = sorted({s.snapshot.source for s in segments_all})
    if host is not None and not any(
        host in (s.snapshot.source, s.snapshot.source_id) for s in segments_all
    ):
        raise UsageError(
            f"The repository holds no file journal of the host {host}.",
            f"It holds the file journal of {', '.join(hosts)}.",
        )
    if host is None:
        if system.hostname in hosts:
            host = system.hostname
        else:
            named = f"is named {system.hostname}" if system.hostname else "names no host"
            raise UsageError(
                f"The system in snapshot {snapshot.id[:12]} {named}, and the repository holds "
                f"the file journal of {', '.join(hosts)}: nothing is replayed onto another "
                "host's disk.",
                "Say which journal with --host HOST if it is this PC's under another name.",
            )
    assert host is not None
    segments = [s for s in segments_all if host in (s.snapshot.source, s.snapshot.source_id)]
    events = ordered_events(segments)
    start, until = image_ns(snapshot), as_of(at)
    if until <= start:
        raise UsageError(
            f"Snapshot {snapshot.id[:12]} was taken after {when}: nothing to replay onto it."
        )
    state_image = replay(events, start + 1)
    state_at = replay(events, until)
    touched = _touched(events, start, until, state_image) | _touched(events, start, until, state_at)
    changes, outside = [], []
    for path in sorted(touched):
        if _mount_of(system.mounts, path) is None or _mounted_elsewhere(system, path):
            outside.append(path)
            continue
        changes.append(Change(path, state_at.get(path)))
    gaps = [e for e in events if e.type == "gap" and start < (e.to_ns or 0) and e.ns < until]
    return ReplayPlan(host, start, until, at, system.mounts, changes, outside, gaps)


def _mounted_elsewhere(system: SystemFacts, path: str) -> bool:
    """Under an fstab mount point that names no partition of this image (another disk, a
    share), deeper than the image's mount that holds it."""
    found = _mount_of(system.mounts, path)
    assert found is not None
    depth = len(found[0].path)
    return any(
        len(where) > depth and (path == where or path.startswith(where + "/"))
        for where in system.unmapped
    )


def apply_replay(
    repo: Repository,
    plan: ReplayPlan,
    partition_device: Callable[[int], str],
    workdir: str,
) -> ReplayResult:
    """Make the restored filesystems hold what ``plan`` says, each mounted read-write under
    ``workdir`` (``partition_device(N)`` names partition N's block device)."""
    result = ReplayResult(plan)
    roots: dict[int, str] = {}
    workdir = os.path.realpath(workdir)  # the links check below compares real paths
    try:
        for number in plan.partitions:
            mp = next(m for m in plan.mounts if m.partition == number)
            where = os.path.join(workdir, f"p{number}")
            mount(partition_device(number), mp.fstype, where, Mode.READ_WRITE)
            roots[number] = where
        removes = [c for c in plan.changes if c.removes]
        puts = [c for c in plan.changes if not c.removes]
        # Deepest first, so a directory goes after what was below it.
        for change in sorted(removes, key=lambda c: c.path, reverse=True):
            target = _target(plan, roots, change.path)
            if os.path.lexists(target):
                if os.path.isdir(target) and not os.path.islink(target):
                    shutil.rmtree(target)
                else:
                    os.unlink(target)
                result.removed += 1
        # Directories (shallow first), then files, then symbolic links: nothing is written
        # through a link the replay made.
        order = {"dir": 0, "file": 1, "symlink": 2}
        puts.sort(key=lambda c: (order.get(c.entry.meta.ftype if c.entry else "", 3), c.path))
        dirs = []
        for change in puts:
            entry = change.entry
            assert entry is not None
            target = _target(plan, roots, change.path)
            if _as_it_was(target, entry):
                result.unchanged += 1
                if entry.meta.ftype == "dir":
                    dirs.append((target, entry))
                continue
            _no_links_above(target, roots)
            parent = os.path.dirname(target)
            os.makedirs(parent, exist_ok=True)
            ftype = entry.meta.ftype
            if ftype == "dir":
                if os.path.lexists(target) and not os.path.isdir(target):
                    os.unlink(target)
                os.makedirs(target, exist_ok=True)
                dirs.append((target, entry))
                result.written += 1
                continue
            if os.path.isdir(target) and not os.path.islink(target):
                shutil.rmtree(target)
            elif os.path.lexists(target):
                os.unlink(target)
            if ftype == "symlink":
                os.symlink(entry.meta.target or "", target)
            else:
                result.bytes += write_entry(repo, target, entry)
            set_meta(target, entry)
            result.written += 1
        for target, entry in reversed(dirs):
            set_meta(target, entry)
        for where in roots.values():
            fd = os.open(where, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
    finally:
        failed = []
        for where in roots.values():
            try:
                unmount(where, remove=True)
            except HourglassError as e:
                failed.append(e)
    if failed:
        raise failed[0]
    return result


def _target(plan: ReplayPlan, roots: dict[int, str], host_path: str) -> str:
    mp, inner = plan.place(host_path)
    parts = [p for p in inner.split("/") if p]
    if any(p in (".", "..") for p in parts):
        raise HourglassError(f"The journal names a path that is not one: {host_path!r}.")
    return os.path.join(roots[mp.partition], *parts)


def _as_it_was(target: str, entry: Entry) -> bool:
    """The image holds ``target`` as the journal has it (the quick check rsync makes: type,
    size and modification time; for a link its target)."""
    try:
        st = os.lstat(target)
    except OSError:
        return False
    meta = entry.meta
    if ftype_of(st.st_mode) != meta.ftype:
        return False
    if meta.ftype == "dir":
        return True  # its mode and times are set again after what is below it
    if meta.ftype == "symlink":
        return os.readlink(target) == (meta.target or "")
    return st.st_size == meta.size and st.st_mtime_ns == meta.mtime_ns


def _no_links_above(target: str, roots: dict[int, str]) -> None:
    """Nothing is written through a symbolic link on the restored filesystem."""
    above = os.path.dirname(target)
    while not os.path.lexists(above):
        above = os.path.dirname(above)
    if os.path.realpath(above) != above:
        raise HourglassError(
            f"{above} on the restored disk is a symbolic link where the journal holds a "
            "directory: nothing is written through it."
        )
