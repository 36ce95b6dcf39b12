"""Every distinct version of one path across the snapshots of one source.

One server process serves every snapshot, so a chunk shared by several snapshots is fetched
and decoded once. Snapshots are visited oldest first; each is mounted, the path is
``lstat``-ed and its content hashed (SHA-256), then it is unmounted. Two shortcuts keep 20
snapshots fast without ever trusting metadata alone:

- a snapshot whose index (the chunk ids of the whole partition) equals the previous one's
  holds the same bytes, so it holds the same version: it is not even mounted;
- on ext2/3/4 and xfs, where FIEMAP reports offsets within the partition, a file whose size,
  extents and the chunk ids of the blocks under those extents are unchanged has unchanged
  bytes (chunk ids are keyed hashes of the content), so its hash is reused without reading.

A version is a distinct (type, content hash, size, mtime). A deletion is not a version: the
snapshots in which the path is absent are listed in ``absent_after`` of the version that was
there before (or ``absent_before`` of the first one).
"""

from __future__ import annotations

import array
import errno
import fcntl
import hashlib
import os
import stat
import struct
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from imaging.errors import NotFound, SnapshotNotFound, UsageError
from imaging.files import paths
from imaging.files.browse import TYPES, printable
from imaging.files.images import image_for
from imaging.files.session import Session
from imaging.progress import Meter, ProgressCallback, no_progress
from imaging.repository.codec import UNUSED_ID, ZERO_ID
from imaging.repository.records import ChunkIndex
from imaging.repository.store import Repository, Snapshot

FS_IOC_FIEMAP = 0xC020660B
FIEMAP_EXTENT_LAST = 0x1
# Extents whose physical bytes do not simply hold the file's bytes, or are not yet known.
FIEMAP_UNSAFE = 0x2 | 0x4 | 0x8 | 0x80 | 0x100 | 0x200 | 0x400
FIEMAP_HEADER = struct.Struct("=QQIIII")
FIEMAP_EXTENT = struct.Struct("=QQQQQIIII")
FIEMAP_BATCH = 256
FIEMAP_FILESYSTEMS = {"ext2", "ext3", "ext4", "xfs"}  # physical = offset in the partition
READ_PIECE = 4 * 1024 * 1024


@dataclass(frozen=True)
class SnapshotRef:
    id: str
    time: datetime

    def as_dict(self) -> dict[str, str]:
        return {"id": self.id, "time": self.time.isoformat()}


@dataclass
class Version:
    """One distinct state of the path and the snapshots in which it appears."""

    path: str
    type: str
    hash: str | None
    size: int
    mtime: datetime
    mode: int
    uid: int
    gid: int
    damaged: bool = False
    target: str | None = None
    snapshots: list[SnapshotRef] = field(default_factory=list)
    absent_after: list[SnapshotRef] = field(default_factory=list)
    absent_before: list[SnapshotRef] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        result: dict[str, Any] = {
            "path": printable(self.path),
            "type": self.type,
            "hash": self.hash,
            "size": self.size,
            "mtime": self.mtime.isoformat(),
            "mode": f"{self.mode:04o}",
            "uid": self.uid,
            "gid": self.gid,
            "snapshots": [s.as_dict() for s in self.snapshots],
            "absent_after": [s.as_dict() for s in self.absent_after],
        }
        if self.absent_before:
            result["absent_before"] = [s.as_dict() for s in self.absent_before]
        if self.target is not None:
            result["target"] = printable(self.target)
        if self.damaged:
            result["damaged"] = True
        return result


@dataclass
class History:
    """What :func:`file_history` found: the versions, and per snapshot which one (or None)."""

    path: str
    source: str
    versions: list[Version]
    timeline: list[tuple[SnapshotRef, Version | None]]
    mounted: int = 0
    hashed: int = 0
    reused: int = 0


@dataclass(frozen=True)
class _Observation:
    type: str
    hash: str | None
    size: int
    mtime_ns: int
    mode: int
    uid: int
    gid: int
    damaged: bool
    target: str | None

    @property
    def identity(self) -> tuple[object, ...]:
        return (self.type, self.hash, self.size, self.mtime_ns, self.damaged)


def choose_source(snapshots: list[Snapshot], source: str | None) -> str:
    """The source_id to follow: ``source`` (a source or source id), else the only one."""
    ids = sorted({s.source_id for s in snapshots})
    if source is not None:
        for s in snapshots:
            if source in (s.source, s.source_id):
                return s.source_id
        raise SnapshotNotFound(f"No snapshot of the source {source}.")
    if not ids:
        raise SnapshotNotFound("The repository holds no snapshots yet.")
    if len(ids) > 1:
        names = "; ".join(
            f"{sid} ({next(s.source for s in snapshots if s.source_id == sid)})" for sid in ids
        )
        raise UsageError(
            f"The repository holds snapshots of {len(ids)} sources: say which with --source.",
            f"Sources: {names}.",
        )
    return ids[0]


def file_versions(
    repo: Repository,
    path: str,
    *,
    partition: int | None = None,
    source: str | None = None,
    progress: ProgressCallback = no_progress,
) -> list[Version]:
    """Every distinct version of ``path`` across the snapshots of one source, oldest first."""
    return file_history(repo, path, partition=partition, source=source, progress=progress).versions


def file_history(
    repo: Repository,
    path: str,
    *,
    partition: int | None = None,
    source: str | None = None,
    progress: ProgressCallback = no_progress,
) -> History:
    """:func:`file_versions` with the per-snapshot timeline the text output shows."""
    parts = paths.split(path)
    shown = paths.display(parts)
    all_snapshots = [s for s in repo.snapshots() if s.kind != "journal"]
    source_id = choose_source(all_snapshots, source)
    snapshots = [s for s in all_snapshots if s.source_id == source_id]
    meter = Meter("versions", len(snapshots), progress)
    history = History(shown, source_id, [], [])
    hashes: dict[bytes, str] = {}
    previous_ids: ChunkIndex | None = None
    previous: _Observation | None = None
    observations: list[tuple[SnapshotRef, _Observation | None]] = []
    with Session(repo) as session:
        for snapshot in snapshots:
            meter.set_item(snapshot.id[:12])
            image = image_for(snapshot, partition)
            ids = repo.load_index(snapshot, image)
            ref = SnapshotRef(snapshot.id, snapshot.time)
            if ids == previous_ids:
                observations.append((ref, previous))
                meter.add(1)
                continue
            mounted = session.mount(snapshot, image)
            history.mounted += 1
            try:
                observation = _observe(
                    str(mounted.path), parts, mounted.fstype, ids, repo.block_size, hashes, history
                )
            finally:
                session.unmount(mounted)
            observations.append((ref, observation))
            previous_ids, previous = ids, observation
            meter.add(1)
    meter.finish()
    _group(history, observations)
    return history


def _group(history: History, observations: list[tuple[SnapshotRef, _Observation | None]]) -> None:
    by_identity: dict[tuple[object, ...], Version] = {}
    last: Version | None = None
    leading_absent: list[SnapshotRef] = []
    for ref, observation in observations:
        if observation is None:
            if last is None:
                leading_absent.append(ref)
            else:
                last.absent_after.append(ref)
            history.timeline.append((ref, None))
            continue
        version = by_identity.get(observation.identity)
        if version is None:
            version = Version(
                path=history.path,
                type=observation.type,
                hash=observation.hash,
                size=observation.size,
                mtime=datetime.fromtimestamp(observation.mtime_ns / 1e9, UTC).astimezone(),
                mode=observation.mode,
                uid=observation.uid,
                gid=observation.gid,
                damaged=observation.damaged,
                target=observation.target,
            )
            by_identity[observation.identity] = version
            history.versions.append(version)
        version.snapshots.append(ref)
        history.timeline.append((ref, version))
        last = version
    if history.versions:
        history.versions[0].absent_before = leading_absent


def _observe(
    root: str,
    parts: list[str],
    fstype: str,
    ids: ChunkIndex,
    block_size: int,
    hashes: dict[bytes, str],
    history: History,
) -> _Observation | None:
    try:
        st = paths.lstat_in(root, parts)
    except NotFound:
        return None
    except OSError as e:
        if e.errno in (errno.ENOENT, errno.ENOTDIR):
            return None
        if e.errno == errno.EIO:
            return None
        raise
    if st is None:
        return None
    kind = TYPES.get(stat.S_IFMT(st.st_mode), "other")
    digest: str | None = None
    damaged = False
    target = None
    directory = paths.open_dir(root, parts[:-1]) if parts else os.open(root, paths.DIR_FLAGS)
    try:
        name = parts[-1] if parts else "."
        if kind == "symlink":
            target = os.readlink(name, dir_fd=directory)
            digest = hashlib.sha256(os.fsencode(target)).hexdigest()
        elif kind == "dir":
            fd = os.open(name, paths.DIR_FLAGS, dir_fd=directory)
            try:
                listing = sorted(os.fsencode(e.name) for e in os.scandir(fd))
            finally:
                os.close(fd)
            digest = hashlib.sha256(b"\0".join(listing)).hexdigest()
        elif kind == "file":
            fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=directory)
            try:
                key = (
                    _extent_key(fd, st.st_size, ids, block_size)
                    if fstype in FIEMAP_FILESYSTEMS
                    else None
                )
                if key is not None and key in hashes:
                    digest = hashes[key]
                    history.reused += 1
                else:
                    digest = _hash_file(fd)
                    history.hashed += 1
                    if digest is not None and key is not None:
                        hashes[key] = digest
                    damaged = digest is None
            finally:
                os.close(fd)
    finally:
        os.close(directory)
    return _Observation(
        type=kind,
        hash=digest,
        size=st.st_size,
        mtime_ns=st.st_mtime_ns,
        mode=stat.S_IMODE(st.st_mode),
        uid=st.st_uid,
        gid=st.st_gid,
        damaged=damaged,
        target=target,
    )


def _hash_file(fd: int) -> str | None:
    """SHA-256 of the file's content, or None when it cannot be read (damaged chunks)."""
    hasher = hashlib.sha256()
    offset = 0
    while True:
        try:
            data = os.pread(fd, READ_PIECE, offset)
        except OSError as e:
            if e.errno == errno.EIO:
                return None
            raise
        if not data:
            return hasher.hexdigest()
        hasher.update(data)
        offset += len(data)


def fiemap(fd: int, size: int) -> list[tuple[int, int, int, int]] | None:
    """(logical, physical, length, flags) of every extent of the file, or None if unknown."""
    extents: list[tuple[int, int, int, int]] = []
    start = 0
    while True:
        buf = array.array("B", bytes(FIEMAP_HEADER.size + FIEMAP_EXTENT.size * FIEMAP_BATCH))
        FIEMAP_HEADER.pack_into(buf, 0, start, max(size - start, 0) or 1, 0, 0, FIEMAP_BATCH, 0)
        try:
            fcntl.ioctl(fd, FS_IOC_FIEMAP, buf, True)
        except OSError:
            return None
        mapped = FIEMAP_HEADER.unpack_from(buf, 0)[3]
        if mapped == 0:
            return extents
        last = False
        for i in range(mapped):
            fields = FIEMAP_EXTENT.unpack_from(buf, FIEMAP_HEADER.size + i * FIEMAP_EXTENT.size)
            logical, physical, length, flags = fields[0], fields[1], fields[2], fields[5]
            if flags & FIEMAP_UNSAFE:
                return None
            extents.append((logical, physical, length, flags & ~FIEMAP_EXTENT_LAST))
            last = bool(flags & FIEMAP_EXTENT_LAST)
            start = logical + length
        if last or start >= size or len(extents) > 1_000_000:
            return extents if last or start >= size else None


def _extent_key(fd: int, size: int, ids: ChunkIndex, block_size: int) -> bytes | None:
    """A key equal for two files exactly when their bytes are provably equal, else None."""
    extents = fiemap(fd, size)
    if extents is None:
        return None
    hasher = hashlib.sha256(struct.pack("=Q", size))
    blocks = len(ids)
    for logical, physical, length, flags in extents:
        hasher.update(struct.pack("=QQQI", logical, physical, length, flags))
        first, last = physical // block_size, (physical + length - 1) // block_size
        if last >= blocks:
            return None
        for block in range(first, last + 1):
            chunk = ids[block]
            if chunk == UNUSED_ID:  # the filesystem said free: metadata must be out of date
                return None
            hasher.update(chunk if chunk != ZERO_ID else ZERO_ID)
    return hasher.digest()
