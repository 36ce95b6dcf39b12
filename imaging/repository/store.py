"""The repository: its objects in a store, by default a directory on a mounted drive
(docs/FORMAT.md; imaging/repository/storage.py)."""

from __future__ import annotations

import contextlib
import errno
import json
import os
import secrets
import shutil
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

from imaging.coredumps import forbid_core_dumps
from imaging.errors import (
    FormatError,
    HourglassError,
    IntegrityError,
    RepositoryNotFound,
    RepositoryTooNew,
    SnapshotNotFound,
    UsageError,
    os_reason,
)
from imaging.repository import codec, keys, leases, redundant, seen, storage
from imaging.repository.fsutil import raise_no_space
from imaging.repository.records import ChunkIndex

# The snapshot types live in records; importing them from here keeps working.
from imaging.repository.records import DamagedSnapshot as DamagedSnapshot  # noqa: PLC0414
from imaging.repository.records import Snapshot as Snapshot  # noqa: PLC0414
from imaging.repository.records import SnapshotList as SnapshotList  # noqa: PLC0414
from imaging.repository.s3store import S3Options, S3Store, url_scheme
from imaging.repository.storage import Kind, LocalStore, Store
from imaging.units import binary_size, local_now

# 2: key slots (version 2) bind the repository id and the config's hash. Format 1
# repositories (version 1 slots) are read as before.
FORMAT_VERSION = 2
ENCRYPTIONS = ("aes-256-gcm", "none")
# zstd level 1: level 3 stores a little less and takes much longer on two cores, where
# compression bounds a first backup (bench/README.md); `hourglass init --compression-level`.
DEFAULT_LEVEL = 1
# Every kind a new repository gets (keys/ only when it is encrypted).
LAYOUT = (Kind.CHUNKS, Kind.SNAPSHOTS, Kind.INDEXES, Kind.LEASES, Kind.TRASH, Kind.VERIFY)

PassphraseSource = str | Callable[[], str] | None
Location = str | Path | Store
"""Where a repository is: a directory, an ``s3://BUCKET/PREFIX`` string, or a store."""


class Repository:
    """An opened repository: configuration, keys, chunk store, snapshots."""

    def __init__(
        self,
        store: Store,
        config: dict[str, Any],
        key_set: keys.Keys,
        slot: str | None,
        config_hash: str | None = None,
    ):
        self.store = store
        self.config = config
        # The hash of the config file as it was opened: new key slots bind this one.
        self.config_hash = config_hash or keys.config_digest(store.get(storage.CONFIG))
        self.keys = key_set
        self.unlocked_slot = slot
        self.id: str = config["id"]
        self.level: int = int(config.get("compression_level", DEFAULT_LEVEL))
        self.block_size: int = int(config["block_size"])

    @property
    def path(self) -> Path:
        """The repository's directory (for the callers that need one: storage.py); of a
        set, its first member on this machine (which opens the set: the FUSE helpers)."""
        if not isinstance(self.store, LocalStore) and self.store.local_paths:
            return self.store.local_paths[0]
        return self.local_store.path

    @property
    def location(self) -> str:
        """Where the repository is, for messages and records (a directory or a URL)."""
        return self.store.describe()

    @property
    def local_store(self) -> LocalStore:
        """The store, for what only a local store does (leases, trash, chunk files)."""
        store = self.store.unwrapped()
        if not isinstance(store, LocalStore):
            raise UsageError(
                f"{self.store.describe()} is not a directory on this machine: this needs one.",
                "Object-store repositories take backups, restores, copies, verify, check and "
                "gc; file-level restore and mounting need a repository directory for now.",
            )
        return store

    # --- creation and opening ---------------------------------------------------------------

    @classmethod
    def init(
        cls,
        path: Location,
        *,
        encryption: str = "aes-256-gcm",
        passphrase: PassphraseSource = None,
        level: int = DEFAULT_LEVEL,
        block_size: int = codec.DEFAULT_BLOCK_SIZE,
    ) -> Repository:
        """Create a repository in ``path`` (which must be missing or empty)."""
        store = as_store(path)
        if encryption not in ENCRYPTIONS:
            raise UsageError(f"Unknown encryption {encryption!r}; choose one of {ENCRYPTIONS}.")
        if block_size not in codec.BLOCK_SIZES:
            sizes = ", ".join(binary_size(n) for n in codec.BLOCK_SIZES)
            raise UsageError(f"A block size of {block_size} bytes is not supported: {sizes}.")
        root = store.local_path
        if root is not None and root.exists() and (not root.is_dir() or any(root.iterdir())):
            if store.exists(storage.CONFIG):
                raise UsageError(f"{root} already holds a repository.")
            raise UsageError(f"{root} exists and is not an empty directory.")
        secret = _resolve(passphrase) if encryption != "none" else None
        if encryption != "none" and not secret:
            raise UsageError("An encrypted repository needs a passphrase.")
        made = _first_missing(root) if root is not None else None
        try:
            store.create(LAYOUT + ((Kind.KEYS,) if encryption != "none" else ()))
            repo_id = secrets.token_hex(16)
            config: dict[str, Any] = {
                "format": FORMAT_VERSION,
                "id": repo_id,
                "created": local_now().isoformat(),
                "encryption": encryption,
                "block_size": block_size,
                "compression": "zstd",
                "compression_level": level,
            }
            raw_config = json.dumps(config, indent=1).encode() + b"\n"
            config_hash = keys.config_digest(raw_config)
            master, slot = None, None
            if encryption != "none":
                assert secret is not None
                master = os.urandom(32)
                made_slot = keys.make_slot(master, secret, repo_id, "passphrase", config_hash)
                keys.write_slot(store, made_slot)
                slot = str(made_slot["slot"])  # opened by it: a passphrase change replaces it
            store.put(storage.CONFIG, raw_config)
        except BaseException as e:
            # A half-made repository would make the next init refuse.
            if root is not None:
                _undo_init(root, made)
            else:
                with contextlib.suppress(OSError, HourglassError):
                    store.undo_create()
            if isinstance(e, OSError):
                place = store.describe()  # a directory or a URL (not a path: s3://b, not s3:/b)
                if root is not None:
                    raise_no_space(e, root)
                raise HourglassError(f"Cannot create a repository in {place}: {e.strerror}.") from e
            raise
        return cls(store, config, keys.Keys(master), slot, config_hash)

    @classmethod
    def open(cls, path: Location, passphrase: PassphraseSource = None) -> Repository:
        """Open ``path``; ``passphrase`` (a string or a function asking for it) if encrypted."""
        store = as_store(path)
        config, config_hash = load_config(store)
        if config["encryption"] == "none":
            _refuse_downgrade(store, config)
            return cls(store, config, keys.Keys(None), None, config_hash)
        secret = _resolve(passphrase)
        if not secret:
            raise UsageError("This repository is encrypted: a passphrase is needed.")
        master, slot = keys.unlock(store, secret, config["id"], config_hash)
        repo = cls(store, config, keys.Keys(master), slot, config_hash)
        seen.note_open(repo)
        return repo

    @classmethod
    def open_with_master(cls, path: Location, master: bytes | None) -> Repository:
        """Open ``path`` with a master key already unlocked by another process.

        For helper processes (the file-level restore's FUSE server) that receive the key
        through a pipe: no passphrase, no key derivation. ``None`` for an unencrypted
        repository.
        """
        store = as_store(path)
        config, config_hash = load_config(store)
        if config["encryption"] == "none":
            _refuse_downgrade(store, config)
        if (config["encryption"] == "none") != (master is None):
            raise UsageError(
                f"The key given for {store.describe()} does not fit its encryption setting."
            )
        if master is not None:
            if len(master) != 32:
                raise UsageError("A master key is 32 bytes.")
            # The config may have changed since the parent opened it: check it again.
            keys.check_bindings(store, master, config["id"], config_hash)
        return cls(store, config, keys.Keys(master), None, config_hash)

    def at(self, path: Location) -> Repository:
        """This repository reached by another path (its filesystem mounted again elsewhere, or
        read-write where it was read-only), with the keys and the key slot already unlocked:
        no passphrase. Refused when what is at ``path`` is not this repository."""
        store = as_store(path)
        config, config_hash = load_config(store)
        if config.get("id") != self.id or config_hash != self.config_hash:
            raise UsageError(f"{store.describe()} is not the repository that was open.")
        if self.keys.master is not None:
            keys.check_bindings(store, self.keys.master, config["id"], config_hash)
        return type(self)(store, config, self.keys, self.unlocked_slot, config_hash)

    @property
    def encrypted(self) -> bool:
        return self.keys.encrypted

    # --- chunks -----------------------------------------------------------------------------

    def chunk_path(self, chunk_id: bytes) -> Path:
        """The chunk's file (local stores only: tests and the FUSE helpers)."""
        return self.local_store.path_of(storage.chunk(chunk_id))

    def has_chunk(self, chunk_id: bytes) -> bool:
        return self.store.exists(storage.chunk(chunk_id))

    def write_chunk(self, chunk_id: bytes, data: bytes) -> bool:
        """Store an encoded chunk; False if it was already there.

        The store may defer it to make a batch of chunks durable at once
        (:meth:`Store.put_chunk`): the caller must :meth:`commit_chunks` before it refers to
        the chunk in an index (the backup does, before it writes any).
        """
        return self.store.put_chunk(chunk_id, data)

    def commit_chunks(self) -> None:
        """Make the chunks written so far durable and give them their final names."""
        self.store.flush_chunks()

    def discard_chunks(self) -> None:
        """Remove chunks written and not committed (a backup that failed or was cancelled)."""
        self.store.discard_chunks()

    def sync_chunk_dirs(self) -> None:
        """Make the names of the chunks committed since the last call durable (a local
        store fsyncs the directories it renamed them into: the batched directory fsync of
        the write order)."""
        self.store.sync_chunks()

    def read_chunk_file(self, chunk_id: bytes) -> bytes:
        """The raw chunk file (from trash if gc set it aside); IntegrityError if missing."""
        name = storage.chunk(chunk_id)
        try:
            return self.store.get(name)
        except FileNotFoundError:
            with contextlib.suppress(FileNotFoundError):
                return self.store.get_set_aside(name)
            raise IntegrityError(
                f"Chunk {chunk_id.hex()} is missing from the repository."
            ) from None
        except OSError as e:
            raise IntegrityError(f"Chunk {chunk_id.hex()} cannot be read: {os_reason(e)}.") from e

    def read_chunk(self, chunk_id: bytes) -> bytes:
        """The plaintext of a chunk, authenticated."""
        return codec.decode_chunk(chunk_id, self.read_chunk_file(chunk_id), self.keys)

    def encode_chunk(self, chunk_id: bytes, plaintext: bytes | bytearray | memoryview) -> bytes:
        return codec.encode_chunk(chunk_id, plaintext, self.keys, self.level)

    def iter_chunk_files(self) -> Iterator[os.DirEntry[str]]:
        """Every chunk file under chunks/ (no order; local stores only: tests, tools)."""
        return self.local_store.chunk_files()

    # --- indexes ----------------------------------------------------------------------------

    def index_path(self, snapshot_id: str, image: str) -> Path:
        """The index's file (local stores only: tests)."""
        return self.local_store.path_of(storage.index(snapshot_id, image))

    def write_index(self, snapshot_id: str, image: str, index: ChunkIndex, size: int) -> str:
        """Store an image's index; returns its MAC for the manifest."""
        ids = index.raw
        header, tail = codec.index_frame(ids, size, self.block_size)
        self.store.put(storage.index(snapshot_id, image), header, ids, tail)
        return self.keys.mac(header, ids, tail).hex()

    def load_index(self, snapshot: Snapshot, image: str) -> ChunkIndex:
        """The chunk ids of one image, authenticated against the manifest."""
        meta = snapshot.image(image)
        stored = storage.index(snapshot.id, image)
        name = f"index of snapshot {snapshot.id[:12]} image {image}"
        # Read as three parts so that the ids, up to 64 MiB, are never copied.
        try:
            length = self.store.size(stored)
            header = self.store.get_range(stored, 0, codec.INDEX_HEADER.size)
            ids_length = max(0, length - codec.INDEX_HEADER.size - codec.TRAILER_SIZE)
            ids = self.store.get_range(stored, len(header), ids_length)
            tail = self.store.get_range(stored, len(header) + len(ids), length)
        except FileNotFoundError:
            raise IntegrityError(
                f"The {name} is missing ({self.store.describe(stored)})."
            ) from None
        except OSError as e:
            raise IntegrityError(f"The {name} cannot be read: {os_reason(e)}.") from e
        if self.keys.mac(header, ids, tail).hex() != meta.index_mac:
            raise IntegrityError(f"The {name} is damaged or altered (checksum mismatch).")
        block_size, size, ids = codec.decode_index_parts(header, ids, tail, name=name)
        if size != meta.size or block_size != self.block_size:
            raise IntegrityError(f"The {name} does not match its manifest.")
        return ChunkIndex(ids)

    # --- snapshots --------------------------------------------------------------------------

    def snapshot_ids(self) -> list[str]:
        try:
            names = [info.name.key for info in self.store.list(Kind.SNAPSHOTS)]
        except FileNotFoundError:
            raise RepositoryNotFound(
                f"{self.store.describe()} is not a repository any more."
            ) from None
        return sorted(n for n in names if len(n) == 32 and _is_hex(n))

    def load_snapshot(self, snapshot_id: str) -> Snapshot:
        try:
            data = self.store.get(storage.snapshot(snapshot_id))
        except FileNotFoundError:
            raise SnapshotNotFound(f"Snapshot {snapshot_id} does not exist.") from None
        except OSError as e:
            raise IntegrityError(
                f"snapshot {snapshot_id}: the manifest cannot be read ({os_reason(e)})."
            ) from e
        return Snapshot(codec.decode_manifest(data, self.keys, self.id, snapshot_id))

    def snapshots(
        self, *, on_damage: Callable[[str, HourglassError], None] | None = None
    ) -> SnapshotList:
        """Every intact snapshot, oldest first. A manifest that cannot be read is left out,
        named in the list's ``damaged`` and passed to ``on_damage`` when that is given: one
        flipped bit in one manifest must not lock every other snapshot away."""
        result = []
        damaged = []
        for snapshot_id in self.snapshot_ids():
            try:
                result.append(self.load_snapshot(snapshot_id))
            except SnapshotNotFound:
                continue  # forgotten while we listed
            except (FormatError, IntegrityError) as e:
                damaged.append(DamagedSnapshot(snapshot_id, e, self._written(snapshot_id)))
                if on_damage is not None:
                    on_damage(snapshot_id, e)
        result.sort(key=lambda s: s.order)
        damaged.sort(key=lambda d: (d.written, d.id))
        return SnapshotList(result, damaged)

    def _written(self, snapshot_id: str) -> datetime:
        try:
            mtime = self.store.stat(storage.snapshot(snapshot_id)).mtime
        except OSError:
            mtime = 0.0
        return datetime.fromtimestamp(mtime).astimezone()

    def commit_snapshot(self, manifest: dict[str, Any]) -> Snapshot:
        """Write the manifest: the commit point of a backup."""
        data = codec.encode_manifest(manifest, self.keys, self.id)
        self.store.put(storage.snapshot(manifest["id"]), data)
        snapshot = Snapshot(manifest)
        seen.note_commit(self, snapshot)
        return snapshot

    def delete_snapshot(self, snapshot_id: str) -> None:
        """Remove a snapshot's manifest (the commit point of a deletion). Its indexes stay
        until gc, which removes them when no restore or mount that may still read them runs."""
        self.store.delete(storage.snapshot(snapshot_id))
        seen.note_forget(self, snapshot_id)

    def new_snapshot_id(self) -> str:
        return secrets.token_hex(16)

    # --- leases -----------------------------------------------------------------------------

    def writer(self) -> contextlib.AbstractContextManager[leases.LeaseHandle]:
        """A writer lease; name the parent snapshot in it (``update(parent=...)``) before
        taking any of the parent's chunks as stored (gc relies on it)."""
        return self._lease("writer")

    def reader(self) -> contextlib.AbstractContextManager[leases.LeaseHandle]:
        return self._lease("reader")

    def _lease(self, kind: str) -> contextlib.AbstractContextManager[leases.LeaseHandle]:
        store = self.store.unwrapped()
        if isinstance(store, LocalStore):
            return _local_lease(store, kind)
        return store.lease(kind)

    # --- keys -------------------------------------------------------------------------------

    def add_key(self, secret: str, kind: str = "passphrase") -> str:
        """Add a key slot opened by ``secret``; returns the slot name."""
        if not self.encrypted or self.keys.master is None:
            raise UsageError("This repository is not encrypted: it has no keys.")
        others, _damaged = keys.read_slots(self.store)
        slot = keys.make_slot(
            self.keys.master,
            secret,
            self.id,
            kind,
            self.config_hash,
            share_with=[s for _name, s in others],
        )
        keys.write_slot(self.store, slot)
        return str(slot["slot"])

    def change_key(self, new_secret: str) -> str:
        """Replace the passphrase slot that opened the repository with one for ``new_secret``.

        Opened with a recovery key, the new passphrase is added and the recovery key stays:
        a recovery key is only ever removed on purpose.
        """
        old = self.unlocked_slot
        kinds = {slot["slot"]: slot["kind"] for slot in self.key_slots()}
        new = self.add_key(new_secret)
        if old is not None and kinds.get(old) == "passphrase":
            self.store.delete(storage.key_slot(old))
        self.unlocked_slot = new
        return new

    def key_slots(self) -> list[dict[str, Any]]:
        result = []
        try:
            names = sorted(info.name for info in self.store.list(Kind.KEYS))
        except FileNotFoundError:
            names = []
        for name in names:
            try:
                slot = keys.parse_slot(self.store.get(name))
            except FormatError:
                continue
            result.append({"slot": slot["slot"], "kind": slot["kind"]})
        return result


def as_store(location: Location, *, s3: S3Options | None = None) -> Store:
    """The store of a repository given by its directory, its ``s3://BUCKET/PREFIX``
    (reached as ``s3`` says: endpoint, CA file, credentials), or already a store; the set
    when the location is a member of one (docs/FORMAT.md). A string
    that looks like a URL of another scheme is refused, never taken as a relative path."""
    if isinstance(location, Store):
        return location
    scheme = url_scheme(location) if isinstance(location, str) else None
    if isinstance(location, str) and scheme == "s3":
        store: Store = S3Store.from_url(location, s3)
    elif scheme is not None:
        raise UsageError(
            f"{location}: Hourglass does not know {scheme}:// repository locations.",
            "A repository is a directory (mount network shares first) or s3://BUCKET/PREFIX.",
        )
    else:
        store = LocalStore(Path(location))
    # A member of a set over several locations opens the whole set (redundant.py).
    return redundant.open_member(store, s3)


def read_config(path: Location) -> dict[str, Any]:
    """The repository's config; clear errors for a missing, foreign or newer repository."""
    return load_config(path)[0]


def load_config(location: Location) -> tuple[dict[str, Any], str]:
    """:func:`read_config` and the hash of the file's bytes (what key slots bind)."""
    store = as_store(location)
    path = store.describe()
    config_path = store.describe(storage.CONFIG)
    if not store.reachable():
        raise RepositoryNotFound(f"There is no repository at {path}: the path does not exist.")
    try:
        raw = store.get(storage.CONFIG)
    except FileNotFoundError:
        raise RepositoryNotFound(
            f"There is no repository at {path}.", "Create one with: hourglass init " + path
        ) from None
    except OSError as e:
        raise RepositoryNotFound(f"Cannot read {config_path}: {e.strerror}.") from e
    try:
        config = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise FormatError(f"{config_path} is damaged: not valid JSON.") from None
    if not isinstance(config, dict) or not isinstance(config.get("format"), int):
        raise FormatError(f"{config_path} is damaged: no format version.")
    if config["format"] > FORMAT_VERSION:
        raise RepositoryTooNew(
            f"The repository at {path} has format {config['format']}; this Hourglass reads "
            f"format {FORMAT_VERSION} and older.",
            "Use a newer Hourglass release.",
        )
    if config.get("encryption") not in ENCRYPTIONS:
        raise FormatError(f"{config_path} names an unknown encryption.")
    if not isinstance(config.get("id"), str) or not _is_hex(config["id"]):
        raise FormatError(f"{config_path} has no valid repository id.")
    if config.get("block_size") not in codec.BLOCK_SIZES:
        raise FormatError(
            f"{config_path} names an unsupported block size.",
            "A newer Hourglass may read it; otherwise the file is damaged.",
        )
    level = config.get("compression_level", DEFAULT_LEVEL)
    if not isinstance(level, int) or not -7 <= level <= 22:
        raise FormatError(f"{config_path} names an invalid compression level.")
    return config, keys.config_digest(raw)


def _refuse_downgrade(store: Store, config: dict[str, Any]) -> None:
    """An unencrypted config in a repository that has (or had) keys was altered: reading it
    as unencrypted would trust files anyone can write (docs/SECURITY.md)."""
    config_path = store.describe(storage.CONFIG)
    if store.has_kind(Kind.KEYS):
        raise IntegrityError(
            f"{config_path} says the repository is not encrypted, but it has key files in "
            f"{store.describe(Kind.KEYS)}: the config was altered.",
            "Hourglass will not read an encrypted repository as unencrypted. Put the "
            "original config back (from a copy of the drive).",
        )
    if seen.was_encrypted(config["id"]):
        raise IntegrityError(
            f"{config_path} says the repository is not encrypted, but this machine opened "
            f"repository {config['id']} with its keys before: the config was altered and "
            "the key files removed.",
            "Hourglass will not read an encrypted repository as unencrypted.",
        )


def _first_missing(path: Path) -> Path | None:
    """The outermost directory of ``path`` that does not exist yet (None: it all exists)."""
    missing = None
    for candidate in (path, *path.parents):
        if candidate.exists():
            break
        missing = candidate
    return missing


@contextlib.contextmanager
def _local_lease(store: LocalStore, kind: str) -> Iterator[leases.LeaseHandle]:
    """A lease in a local store: its files are written directly, not through the store, so
    a drive that went while one is taken, renewed or dropped is named here the same way
    (:class:`LocationLost`), not as an internal error."""
    try:
        with leases.hold(store.leases_dir, kind) as handle:
            yield handle
    except OSError as e:
        store.raise_if_lost(e)
        raise


def _undo_init(path: Path, made: Path | None) -> None:
    """Remove what a failed :meth:`Repository.init` created, and nothing else: the directories
    it made, or (``path`` existed, and was empty) everything now inside ``path``."""
    if made is not None:
        shutil.rmtree(made, ignore_errors=True)
        return
    with contextlib.suppress(OSError):
        for entry in path.iterdir():
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry, ignore_errors=True)
            else:
                entry.unlink(missing_ok=True)


def is_repository(path: Path) -> bool:
    """Cheap test used by discovery: does ``path`` look like a repository?"""
    try:
        read_config(path)
    except HourglassError:
        return False
    except OSError as e:
        if e.errno in (errno.EACCES, errno.EIO):
            return False
        raise
    return True


def _resolve(passphrase: PassphraseSource) -> str | None:
    secret = passphrase() if callable(passphrase) else passphrase
    if secret:
        forbid_core_dumps()  # whoever called (CLI, app, unattended) now holds a secret
    return secret


def _is_hex(text: str) -> bool:
    return all(c in "0123456789abcdef" for c in text) and len(text) > 0
