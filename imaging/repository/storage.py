"""Where a repository's objects live: named objects by kind, and the store that keeps them.

The :class:`~imaging.repository.store.Repository` never joins paths: it asks a
:class:`Store` for named objects (a :class:`Name` is a kind and a key: ``("chunks", hex)``,
``("snapshots", id)``, ``("indexes", "<snapshot>/<image>")``, ``("keys", slot)``, the config,
...). :class:`LocalStore` keeps them in a directory in the layout of docs/FORMAT.md, with
that document's durability rules.

What every store must do (an object store such as S3, or a store over several stores, can
give all of it; restic's backend interface and kopia's blob storage ask the same of theirs):

- ``put`` is atomic: a reader sees the old object or the whole new one, never a part
  (kopia requires this of every blob storage; restic's local backend writes a temporary
  file and renames it, as we do). ``if_absent`` never replaces an existing object (S3:
  ``If-None-Match: *``; kopia's ``DoNotRecreate``); a put returns once the object is durable.
- ``get``, ``get_range`` (restic's and kopia's loads take an offset and a length: packs of
  chunks are read with ranged GETs), ``stat`` (size and modification time: kopia's
  metadata has both, and gc and the damaged-manifest listing need the time), ``list`` by
  kind and key prefix, ``delete``, ``move``.
- ``groups`` and ``delete_group``: the first segment of keys (a snapshot's indexes, a trash
  batch), as S3 lists "common prefixes" with a delimiter.
- The chunk batch (``put_chunk``, ``flush_chunks``, ``discard_chunks``, ``sync_chunks``): a
  store may defer new chunks and make them durable together (a local filesystem: one syncfs
  for a batch of files; S3: one pack file and its pack index). A chunk is visible under its
  name only once durable, and a backup flushes before it writes an index that refers to it.
- A missing object raises :class:`FileNotFoundError`; any other failure an
  :class:`OSError` whose ``strerror`` can be shown. Listing a kind whose directory is gone
  raises too: an empty listing must never be mistaken for a repository that vanished (gc
  would set every chunk aside).

What is local-only, and why (a store answers ``local_path`` None when it has no directory):

- Leases (``LocalStore.leases_dir``): they rely on ``flock`` and on mtime heartbeats of
  files, which an object store has not; restic keeps its locks as objects with a time
  inside them and kopia leaves exclusivity to the client, so a remote store will need its
  own lease scheme (conditional puts).
- ``tmp/`` (``LocalStore.tmp_dir``): where files wait for their rename; an object store's
  puts are atomic without it.
- Chunks gc set aside in ``trash/`` are still read by restores (``get_set_aside``); moving
  them there is a rename here, a copy and a delete on an object store.
- The checks that need a directory: a restore target inside the repository, the FUSE and
  file-restore helpers, ``Repository.chunk_path`` / ``iter_chunk_files`` used by tests.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import functools
import os
import secrets
import shutil
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path, PurePosixPath
from typing import ParamSpec, TypeVar

from imaging.errors import HourglassError, LocationLost, UsageError
from imaging.repository import fsutil
from imaging.repository.fsutil import fsync_dir, raise_no_space, write_all, write_atomic
from imaging.repository.leases import LeaseHandle

# New chunks made durable together by one syncfs (put_chunk): what a power cut can cost
# a backup is at most this much work redone, and only until the snapshot is committed.
SYNC_BATCH_BYTES = 64 * 2**20
# ... and at most this many chunk files: compressible blocks make small chunks, and a FAT
# directory holds 65,536 entries of 32 bytes, where a temporary chunk's name (c-<16 hex>,
# 18 characters) takes three (two long-name entries and the 8.3 one): tmp/ would be full
# at 21,844 (docs/FORMAT.md, "FAT"). 4096 leaves room for several backups at once.
SYNC_BATCH_CHUNKS = 4096


# errno values that mean the filesystem itself went (a FUSE driver gone, a device removed),
# not one object: no need to look at the repository's directory to tell.
GONE_ERRNOS = frozenset(
    {errno.ENOTCONN, errno.ENODEV, errno.ENXIO, errno.ESHUTDOWN, errno.ECONNABORTED}
)

P = ParamSpec("P")
R = TypeVar("R")


def _raise_if_lost(store: object, error: OSError) -> None:
    assert isinstance(store, LocalStore)
    store.raise_if_lost(error)


def _guarded(method: Callable[P, R]) -> Callable[P, R]:
    """A LocalStore method whose OSError is :class:`LocationLost` when the repository's
    directory went (see :meth:`LocalStore.lost`)."""

    @functools.wraps(method)
    def guarded(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return method(*args, **kwargs)
        except OSError as e:
            _raise_if_lost(args[0], e)
            raise

    return guarded


def _guarded_iter(method: Callable[P, Iterator[R]]) -> Callable[P, Iterator[R]]:
    """:func:`_guarded` for a method that yields (the error comes while iterating)."""

    @functools.wraps(method)
    def guarded(*args: P.args, **kwargs: P.kwargs) -> Iterator[R]:
        try:
            yield from method(*args, **kwargs)
        except OSError as e:
            _raise_if_lost(args[0], e)
            raise

    return guarded


_Renames = list[tuple[Path, Path]]
"""Temporary chunk files and their final names (``list`` is a method of the stores)."""


class Kind(StrEnum):
    """The kinds of objects; each is a directory of the local layout."""

    CONFIG = "config"
    KEYS = "keys"
    CHUNKS = "chunks"
    INDEXES = "indexes"
    SNAPSHOTS = "snapshots"
    LEASES = "leases"
    TRASH = "trash"
    VERIFY = "verify"
    REDUNDANCY = "redundancy"
    """The set descriptor of a member of a redundant set (one object, ``redundancy.json``)."""


@dataclass(frozen=True, order=True)
class Name:
    """One object: its kind and its key within the kind ("" for the config)."""

    kind: Kind
    key: str = ""

    def __str__(self) -> str:
        return object_key(self)


CONFIG = Name(Kind.CONFIG)
VERIFY_STATE = Name(Kind.VERIFY, "state")
SEAL = "sealed.json"
"""In a trash batch: the names of the leases alive when its sweep finished (gc)."""


def chunk(chunk_id: bytes) -> Name:
    return Name(Kind.CHUNKS, chunk_id.hex())


def snapshot(snapshot_id: str) -> Name:
    return Name(Kind.SNAPSHOTS, snapshot_id)


def index(snapshot_id: str, image: str) -> Name:
    return Name(Kind.INDEXES, f"{snapshot_id}/{image}")


def key_slot(slot: str) -> Name:
    return Name(Kind.KEYS, slot)


def trashed(batch: str, chunk_hex: str) -> Name:
    """A chunk in trash batch ``batch``."""
    return Name(Kind.TRASH, f"{batch}/{chunk_hex}")


def _chunk_key(chunk_hex: str) -> str:
    return f"{chunk_hex[:2]}/{chunk_hex[2:4]}/{chunk_hex}"


def object_key(name: Name) -> str:
    """The object's path in the layout of docs/FORMAT.md, relative to the repository."""
    kind, key = name.kind, name.key
    if kind is Kind.CONFIG:
        return "config"
    if kind is Kind.REDUNDANCY:
        return "redundancy.json"
    if kind is Kind.CHUNKS:
        return f"chunks/{_chunk_key(key)}"
    if kind is Kind.SNAPSHOTS:
        return f"snapshots/{key}.snap"
    if kind is Kind.INDEXES:
        return f"indexes/{key}.idx"
    if kind is Kind.KEYS:
        return f"keys/{key}.key"
    if kind is Kind.VERIFY:
        return f"verify/{key}.json"
    if kind is Kind.TRASH:
        batch, _, rest = key.partition("/")
        return f"trash/{batch}/{_chunk_key(rest) if len(rest) == 64 else rest}"
    return f"{kind}/{key}"


class ObjectInfo:
    """An object a listing found: its name, size and modification time (seconds since the
    epoch). A local store looks the size and time up on first use (a listing of a million
    chunks must not stat each one); that raises FileNotFoundError if the object went
    meanwhile."""

    __slots__ = ("_entry", "_mtime", "_size", "name")

    def __init__(
        self,
        name: Name,
        size: int = 0,
        mtime: float = 0.0,
        entry: os.DirEntry[str] | None = None,
    ) -> None:
        self.name = name
        self._size = size
        self._mtime = mtime
        self._entry = entry

    @property
    def size(self) -> int:
        return self._entry.stat().st_size if self._entry is not None else self._size

    @property
    def mtime(self) -> float:
        return self._entry.stat().st_mtime if self._entry is not None else self._mtime


class Store(ABC):
    """Named objects of one repository; see the module docstring for what each operation
    guarantees."""

    # --- where ------------------------------------------------------------------------------

    @abstractmethod
    def describe(self, what: Name | Kind | None = None) -> str:
        """The store, a kind or an object, for messages (a local store: its path)."""

    @property
    def local_path(self) -> Path | None:
        """The directory holding the repository, for the callers that need one (module
        docstring); None for a store without one."""
        return None

    def unwrapped(self) -> Store:
        """The store that holds the objects, under any wrappers (a bandwidth limit:
        imaging.repository.throttle), for what only one kind of store does."""
        return self

    @property
    def local_paths(self) -> tuple[Path, ...]:
        """Every directory on this machine that holds part of the repository (a set's
        local members): what backups never read and restores never write."""
        return (self.local_path,) if self.local_path is not None else ()

    @abstractmethod
    def reachable(self) -> bool:
        """Whether the store's location exists at all (a local store: its directory)."""

    @abstractmethod
    def create(self, kinds: Iterable[Kind]) -> None:
        """Prepare an empty store to hold ``kinds`` (a local store makes their directories)."""

    def undo_create(self) -> None:  # noqa: B027 (a default that does nothing)
        """Take back what :meth:`create` and a failed init made (the store was empty before):
        an object store's objects and the bucket it made. A local store's directories are
        taken back by the init itself, which knows which of them existed."""

    @abstractmethod
    def has_kind(self, kind: Kind) -> bool:
        """Whether the store has (or had) objects of ``kind``: a local store's directory."""

    # --- objects ----------------------------------------------------------------------------

    @abstractmethod
    def put(self, name: Name, *parts: bytes | bytearray, if_absent: bool = False) -> bool:
        """Store ``parts``, one after the other, as ``name``, atomically and durably; False
        (and nothing written) when ``if_absent`` and the object exists."""

    @abstractmethod
    def get(self, name: Name) -> bytes:
        """The whole object."""

    @abstractmethod
    def get_range(self, name: Name, offset: int, length: int) -> bytes:
        """``length`` bytes from ``offset`` (fewer at the end of the object)."""

    @abstractmethod
    def stat(self, name: Name) -> ObjectInfo:
        """The object's size and modification time."""

    def size(self, name: Name) -> int:
        return self.stat(name).size

    def exists(self, name: Name) -> bool:
        try:
            self.stat(name)
        except FileNotFoundError:
            return False
        return True

    @abstractmethod
    def list(self, kind: Kind, prefix: str = "") -> Iterator[ObjectInfo]:
        """The objects of ``kind`` whose key starts with ``prefix``, in no order."""

    @abstractmethod
    def delete(self, name: Name, *, durable: bool = True) -> bool:
        """Remove the object; False if it was not there. ``durable``: the removal survives a
        power cut once this returns (False leaves that to the filesystem's next commit:
        for chunks gc deletes by the thousand)."""

    @abstractmethod
    def move(
        self, source: Name, dest: Name, *, if_absent: bool = False, durable: bool = False
    ) -> bool:
        """Give an object another name; False (source left) when ``if_absent`` and ``dest``
        exists. ``durable``: the new name survives a power cut once this returns (gc's
        moves into trash need not: a chunk lost from there was unreferenced)."""

    @abstractmethod
    def groups(self, kind: Kind) -> Iterator[ObjectInfo]:
        """The first segments of the keys of ``kind`` (a snapshot's indexes, a trash batch),
        as objects named by the segment, with the time the group last changed."""

    @abstractmethod
    def make_group(self, kind: Kind, group: str) -> None:
        """Make room for a group (a local store makes its directory, and says ENOSPC now
        rather than halfway through)."""

    @abstractmethod
    def delete_group(self, kind: Kind, group: str) -> None:
        """Remove every object of a group, and the group."""

    def lease(self, kind: str) -> contextlib.AbstractContextManager[LeaseHandle]:
        """A writer or reader lease held by the store itself (an object store, a set); a
        local store's leases are files (``leases.hold`` on :attr:`LocalStore.leases_dir`)."""
        raise UsageError(f"{self.describe()} keeps no leases of its own.")

    def degraded(self) -> Sequence[str]:
        """What reads found missing or damaged and read around (a set's members), one line
        each; a store of one location has nothing to read around."""
        return []

    def get_set_aside(self, name: Name) -> bytes:
        """An object gc set aside but has not deleted yet (still readable by restores that
        found it before). Stores whose gc sets nothing aside raise FileNotFoundError."""
        raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), self.describe(name))

    # --- the chunk batch --------------------------------------------------------------------

    @abstractmethod
    def put_chunk(self, chunk_id: bytes, data: bytes) -> bool:
        """Store an encoded chunk, perhaps later (:meth:`flush_chunks`); False if it was
        already there."""

    @abstractmethod
    def flush_chunks(self) -> None:
        """Make the chunks put so far durable and give them their names."""

    @abstractmethod
    def discard_chunks(self) -> None:
        """Drop the chunks put and not flushed (a backup that failed or was cancelled)."""

    @abstractmethod
    def sync_chunks(self) -> None:
        """Make the names given since the last call (flushed or moved chunks) durable."""


class LocalStore(Store):
    """A repository directory on a mounted filesystem, in the layout of docs/FORMAT.md.

    Every object is written to a temporary file, fsynced and renamed; new chunks are made
    durable in batches by one syncfs on local filesystems, one fdatasync each on network
    and FUSE ones (which are not trusted to flush to the server on syncfs).
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._root: tuple[int, int] | None = _identity(path)
        self._batched: bool | None = None
        # Directories that got a chunk (or a new subdirectory) since the last sync_chunks.
        self._unsynced: set[Path] = set()
        self._unsynced_lock = threading.Lock()
        # Chunk files written to tmp/ and not yet durable, renamed in batches after one
        # syncfs (see put_chunk); not batched, each chunk gets its own fdatasync.
        self._pending: _Renames = []
        self._pending_bytes = 0
        self._pending_lock = threading.Lock()
        self._commit_lock = threading.Lock()

    def __repr__(self) -> str:
        return f"LocalStore({str(self.path)!r})"

    # --- where ------------------------------------------------------------------------------

    def describe(self, what: Name | Kind | None = None) -> str:
        if what is None:
            return str(self.path)
        return str(self.path_of(what) if isinstance(what, Name) else self.path / what)

    @property
    def local_path(self) -> Path:
        return self.path

    def path_of(self, name: Name) -> Path:
        """The file holding ``name`` (local-only)."""
        return self.path / object_key(name)

    @property
    def tmp_dir(self) -> Path:
        """Where files wait to be renamed into place (local-only)."""
        return self.path / "tmp"

    @property
    def leases_dir(self) -> Path:
        """The lease files (local-only: flock and mtime heartbeats, see leases.py)."""
        return self.path / Kind.LEASES

    @property
    def batched(self) -> bool:
        """Whether new chunks wait for one syncfs (a local filesystem) or get an fdatasync
        each (network, FUSE, unknown)."""
        if self._batched is None:
            self._batched = fsutil.filesystem_type(self.path) in fsutil.SYNCFS_FILESYSTEMS
        return self._batched

    def reachable(self) -> bool:
        return self.path.exists()

    def lost(self, error: OSError) -> bool:
        """True when ``error`` comes from the repository's directory having gone, rather
        than from one object: the filesystem's driver or device is gone (ENOTCONN, ENODEV,
        ...), or the directory is no longer there, no longer the same one (the drive
        unmounted, another mounted in its place), or on a device that was removed."""
        if error.errno in GONE_ERRNOS:
            return True
        if self._root is None:
            self._root = _identity(self.path)
            if self._root is None:
                return False  # never there: not found (a wrong path), not lost
        try:
            st = os.stat(self.path)
        except OSError:
            return True
        if self._root is not None and (st.st_dev, st.st_ino) != self._root:
            return True
        major, minor = os.major(st.st_dev), os.minor(st.st_dev)
        # A disk's partition (not FUSE, NFS or tmpfs: major 0): its device must still exist.
        return major != 0 and not os.path.exists(f"/sys/dev/block/{major}:{minor}")

    def raise_if_lost(self, error: OSError) -> None:
        """Raise :class:`LocationLost` (from ``error``) when the repository went."""
        if self.lost(error):
            raise LocationLost(
                f"The backup drive or share holding {self.path} was disconnected "
                f"({error.strerror or error}).",
                "Connect it again, then run the command again: nothing half-done was "
                "recorded, and what was stored is reused.",
            ) from error

    def create(self, kinds: Iterable[Kind]) -> None:
        self.path.mkdir(parents=True, exist_ok=True)
        for kind in kinds:
            if kind is Kind.CONFIG:
                continue
            # Key files are for root's eyes only (docs/SECURITY.md).
            (self.path / kind).mkdir(mode=0o700 if kind is Kind.KEYS else 0o777)
        self.tmp_dir.mkdir()
        self._root = _identity(self.path)

    def has_kind(self, kind: Kind) -> bool:
        return (self.path / kind).exists()

    # --- objects ----------------------------------------------------------------------------

    def _tmp_dir_for(self, name: Name) -> Path | None:
        # As FORMAT.md's write order has it: chunks, manifests and indexes wait in tmp/ (gc
        # cleans it); the config, key files and verify state next to where they go.
        waits = (Kind.CHUNKS, Kind.SNAPSHOTS, Kind.INDEXES)
        return self.tmp_dir if name.kind in waits else None

    @_guarded
    def put(self, name: Name, *parts: bytes | bytearray, if_absent: bool = False) -> bool:
        path = self.path_of(name)
        if name.kind in (Kind.INDEXES, Kind.VERIFY, Kind.TRASH, Kind.CHUNKS):
            path.parent.mkdir(parents=True, exist_ok=True)
        mode = 0o600 if name.kind is Kind.KEYS else 0o644
        if not if_absent:
            write_atomic(path, *parts, mode=mode, tmp_dir=self._tmp_dir_for(name))
            return True
        if path.exists():
            return False
        return write_atomic(
            path, *parts, mode=mode, tmp_dir=self._tmp_dir_for(name), rename=rename_noreplace
        )

    @_guarded
    def get(self, name: Name) -> bytes:
        return self.path_of(name).read_bytes()

    @_guarded
    def get_range(self, name: Name, offset: int, length: int) -> bytes:
        fd = os.open(self.path_of(name), os.O_RDONLY)
        try:
            parts = []
            while length > 0:
                part = os.pread(fd, length, offset)
                if not part:
                    break
                parts.append(part)
                offset += len(part)
                length -= len(part)
            return b"".join(parts)
        finally:
            os.close(fd)

    @_guarded
    def stat(self, name: Name) -> ObjectInfo:
        st = self.path_of(name).stat()
        return ObjectInfo(name, st.st_size, st.st_mtime)

    def exists(self, name: Name) -> bool:
        return os.path.exists(self.path_of(name))

    @_guarded_iter
    def list(self, kind: Kind, prefix: str = "") -> Iterator[ObjectInfo]:
        if kind is Kind.CHUNKS:
            for entry in self.chunk_files(prefix):
                yield ObjectInfo(Name(kind, entry.name), entry=entry)
        elif kind is Kind.CONFIG:
            with contextlib.suppress(FileNotFoundError):
                yield self.stat(CONFIG)
        elif kind in (Kind.INDEXES, Kind.TRASH):
            # Two levels: <group>/<file> (indexes), <batch>/[xx/yy/]<file> (trash).
            group, _, _ = prefix.partition("/")
            groups = [group] if "/" in prefix else self._dirs(self.path / kind, group)
            for name in groups:
                with contextlib.suppress(FileNotFoundError):
                    yield from self._list_group(kind, name, prefix)
        else:
            suffix = PurePosixPath(object_key(Name(kind, "x"))).suffix
            with os.scandir(self.path / kind) as entries:
                for entry in entries:
                    key = entry.name
                    if not key.endswith(suffix) or key.startswith(".tmp-"):
                        continue
                    key = key.removesuffix(suffix) if suffix else key
                    if key.startswith(prefix):
                        yield ObjectInfo(Name(kind, key), entry=entry)

    def _dirs(self, root: Path, prefix: str) -> Sequence[str]:
        with os.scandir(root) as entries:
            return [e.name for e in entries if e.name.startswith(prefix) and e.is_dir()]

    def _list_group(self, kind: Kind, group: str, prefix: str) -> Iterator[ObjectInfo]:
        suffix = ".idx" if kind is Kind.INDEXES else ""
        pending = [self.path / kind / group]
        while pending:  # trash batches nest their chunks as chunks/ does: xx/yy/<hex>
            with os.scandir(pending.pop()) as entries:
                for entry in entries:
                    if entry.is_dir(follow_symlinks=False):
                        pending.append(Path(entry.path))
                        continue
                    if not entry.name.endswith(suffix) or entry.name.startswith(".tmp-"):
                        continue
                    key = f"{group}/{entry.name.removesuffix(suffix) if suffix else entry.name}"
                    if key.startswith(prefix):
                        yield ObjectInfo(Name(kind, key), entry=entry)

    @_guarded_iter
    def chunk_files(self, prefix: str = "") -> Iterator[os.DirEntry[str]]:
        """Every chunk file under chunks/ whose name starts with ``prefix`` (no order;
        local-only: the listing :meth:`list` gives for chunks)."""
        root = self.path / "chunks"
        for top in os.scandir(root):
            if not top.is_dir() or not top.name.startswith(prefix[:2]):
                continue
            for sub in os.scandir(top.path):
                if not sub.is_dir() or not (top.name + sub.name).startswith(prefix[:4]):
                    continue
                for entry in os.scandir(sub.path):
                    if len(entry.name) == 64 and entry.name.startswith(prefix):
                        yield entry

    @_guarded
    def delete(self, name: Name, *, durable: bool = True) -> bool:
        path = self.path_of(name)
        try:
            path.unlink()
        except FileNotFoundError:
            gone = False
        else:
            gone = True
        if durable:
            fsync_dir(path.parent)
        return gone

    @_guarded
    def move(
        self, source: Name, dest: Name, *, if_absent: bool = False, durable: bool = False
    ) -> bool:
        src, dst = self.path_of(source), self.path_of(dest)
        dst.parent.mkdir(parents=True, exist_ok=True)
        if if_absent and dst.exists():
            return False
        os.rename(src, dst)
        if durable:
            fsync_dir(dst.parent)
            fsync_dir(dst.parent.parent)
        return True

    @_guarded_iter
    def groups(self, kind: Kind) -> Iterator[ObjectInfo]:
        with os.scandir(self.path / kind) as entries:
            for entry in entries:
                if entry.is_dir():
                    yield ObjectInfo(Name(kind, entry.name), entry=entry)

    @_guarded
    def make_group(self, kind: Kind, group: str) -> None:
        (self.path / kind).mkdir(exist_ok=True)
        (self.path / kind / group).mkdir()

    @_guarded
    def delete_group(self, kind: Kind, group: str) -> None:
        shutil.rmtree(self.path / kind / group, ignore_errors=True)

    def trash_batches(self) -> Sequence[str]:
        """The trash batches, oldest first (their names start with the gc's start time)."""
        try:
            return sorted(info.name.key for info in self.groups(Kind.TRASH))
        except FileNotFoundError:
            return []

    def get_set_aside(self, name: Name) -> bytes:
        if name.kind is Kind.CHUNKS:
            for batch in self.trash_batches():
                with contextlib.suppress(FileNotFoundError):
                    return self.get(trashed(batch, name.key))
        return super().get_set_aside(name)

    # --- the chunk batch --------------------------------------------------------------------

    @_guarded
    def put_chunk(self, chunk_id: bytes, data: bytes) -> bool:
        """Store an encoded chunk; False if it was already there.

        A chunk file gets its final name only once its content is durable. On a local
        filesystem the chunk waits in ``tmp/`` until ``SYNC_BATCH_BYTES`` of chunks (or
        ``SYNC_BATCH_CHUNKS`` files) do, then one syncfs makes them all durable and they
        are renamed: one journal commit per batch instead of one fdatasync per chunk (a
        first backup into 1 MiB blocks spent half its time in fdatasync).
        """
        final = self.path_of(chunk(chunk_id))
        if final.exists():
            return False
        tmp = self.tmp_dir / f"c-{secrets.token_hex(8)}"
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            try:
                write_all(fd, data)
                if not self.batched:
                    os.fdatasync(fd)
            finally:
                os.close(fd)
        except OSError as e:
            with contextlib.suppress(OSError):
                tmp.unlink()
            raise_no_space(e, final)
            self.raise_if_lost(e)
            raise HourglassError(f"Cannot write {final}: {e.strerror}.") from e
        if not self.batched:
            self._rename_chunks([(tmp, final)])
            return True
        with self._pending_lock:
            self._pending.append((tmp, final))
            self._pending_bytes += len(data)
            full = (
                self._pending_bytes >= SYNC_BATCH_BYTES or len(self._pending) >= SYNC_BATCH_CHUNKS
            )
        if full:
            self.flush_chunks()
        return True

    @_guarded
    def flush_chunks(self) -> None:
        with self._commit_lock:  # a batch is renamed only after its own syncfs
            with self._pending_lock:
                batch, self._pending, self._pending_bytes = self._pending, [], 0
            if not batch:
                return
            try:
                fd = os.open(self.tmp_dir, os.O_RDONLY | os.O_DIRECTORY)
                try:
                    fsutil.syncfs(fd)
                finally:
                    os.close(fd)
            except OSError as e:
                self._discard(batch)
                self.raise_if_lost(e)
                raise HourglassError(
                    f"Cannot make the new chunks in {self.path} durable: {e.strerror}.",
                    "The repository drive may have failed or been unplugged.",
                ) from e
            self._rename_chunks(batch)

    def discard_chunks(self) -> None:
        with self._commit_lock, self._pending_lock:
            batch, self._pending, self._pending_bytes = self._pending, [], 0
        self._discard(batch)

    @staticmethod
    def _discard(batch: _Renames) -> None:
        for tmp, _ in batch:
            with contextlib.suppress(OSError):
                tmp.unlink()

    def _rename_chunks(self, batch: _Renames) -> None:
        touched: set[Path] = set()
        try:
            for number, (tmp, final) in enumerate(batch):
                touched.add(final.parent)
                try:
                    try:
                        os.rename(tmp, final)
                    except FileNotFoundError:
                        final.parent.mkdir(parents=True, exist_ok=True)
                        os.rename(tmp, final)
                        # The new directories' entries must be durable too: fsync their parents.
                        touched.update((final.parent.parent, final.parent.parent.parent))
                except OSError as e:
                    self._discard(batch[number:])
                    raise_no_space(e, final)
                    self.raise_if_lost(e)
                    raise HourglassError(f"Cannot write {final}: {e.strerror}.") from e
        finally:
            with self._unsynced_lock:
                self._unsynced.update(touched)

    @_guarded
    def sync_chunks(self) -> None:
        """fsync the directories this process renamed chunks into since the last call (the
        batched directory fsync of the write order), deepest first. Only those: a
        repository has up to 65,536 chunk directories, and fsyncing each of them cost an
        incremental backup more time than its new chunks did."""
        with self._unsynced_lock:
            dirs, self._unsynced = self._unsynced, set()
        for directory in sorted(dirs, key=lambda p: len(p.parts), reverse=True):
            fsync_dir(directory)


def _identity(path: Path) -> tuple[int, int] | None:
    """(device, inode) of the directory, to tell it from another mounted in its place."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino


# renameat2(2)'s flag: fail with EEXIST rather than replace the target.
RENAME_NOREPLACE = 1
AT_FDCWD = -100


def rename_noreplace(source: Path, dest: Path) -> bool:
    """Rename ``source`` to ``dest`` unless ``dest`` exists (then False, ``source`` left).

    renameat2(RENAME_NOREPLACE) where the filesystem has it; a hard link where it has not
    (EINVAL); a look and a rename where it has neither (FAT has no hard links): that last
    one can replace an object made in between, which for content-addressed chunks writes
    the same bytes again.
    """
    libc = ctypes.CDLL(None, use_errno=True)
    renameat2 = getattr(libc, "renameat2", None)
    if renameat2 is not None:
        if renameat2(AT_FDCWD, bytes(source), AT_FDCWD, bytes(dest), RENAME_NOREPLACE) == 0:
            return True
        code = ctypes.get_errno()
        if code == errno.EEXIST:
            return False
        if code not in (errno.EINVAL, errno.ENOSYS, errno.ENOTSUP):
            raise OSError(code, os.strerror(code), str(dest))
    try:
        os.link(source, dest)
    except FileExistsError:
        return False
    except OSError as e:
        if e.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.ENOSYS):
            raise
        if dest.exists():
            return False
        os.rename(source, dest)
        return True
    source.unlink()
    return True
