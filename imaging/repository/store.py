"""The repository: a directory on a mounted drive (docs/FORMAT.md)."""

from __future__ import annotations

import contextlib
import errno
import json
import os
import secrets
import shutil
import threading
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
)
from imaging.repository import codec, fsutil, keys, leases, seen
from imaging.repository.fsutil import fsync_dir, raise_no_space, write_all, write_atomic
from imaging.repository.records import ChunkIndex

# The snapshot types live in records; importing them from here keeps working.
from imaging.repository.records import DamagedSnapshot as DamagedSnapshot  # noqa: PLC0414
from imaging.repository.records import Snapshot as Snapshot  # noqa: PLC0414
from imaging.repository.records import SnapshotList as SnapshotList  # noqa: PLC0414
from imaging.units import human_size, local_now

# 2: key slots (version 2) bind the repository id and the config's hash. Format 1
# repositories (version 1 slots) are read as before.
FORMAT_VERSION = 2
ENCRYPTIONS = ("aes-256-gcm", "none")
# zstd level 1: on the benchmark data level 3 stored 7 % less but took 39 % longer (5.9 s
# against 4.2 s for 2 GiB on 2 cores, bench/README.md); `hourglass init --compression-level`.
DEFAULT_LEVEL = 1
# New chunks made durable together by one syncfs (write_chunk): what a power cut can cost
# a backup is at most this much work redone, and only until the snapshot is committed.
SYNC_BATCH_BYTES = 64 * 2**20
# ... and at most this many chunk files: compressible blocks make small chunks, and a FAT
# directory holds 65,536 entries of 32 bytes, where a temporary chunk's name (c-<16 hex>,
# 18 characters) takes three (two long-name entries and the 8.3 one): tmp/ would be full
# at 21,844 (docs/FORMAT.md, "FAT"). 4096 leaves room for several backups at once.
SYNC_BATCH_CHUNKS = 4096

PassphraseSource = str | Callable[[], str] | None


class Repository:
    """An opened repository: configuration, keys, chunk store, snapshots."""

    def __init__(
        self,
        path: Path,
        config: dict[str, Any],
        key_set: keys.Keys,
        slot: str | None,
        config_hash: str | None = None,
    ):
        self.path = path
        self.config = config
        # The hash of the config file as it was opened: new key slots bind this one.
        self.config_hash = config_hash or keys.config_digest((path / "config").read_bytes())
        self.keys = key_set
        self.unlocked_slot = slot
        self.id: str = config["id"]
        self.level: int = int(config.get("compression_level", DEFAULT_LEVEL))
        self.block_size: int = int(config["block_size"])
        # Directories that got a chunk (or a new subdirectory) since the last sync_chunk_dirs.
        self._unsynced: set[Path] = set()
        self._unsynced_lock = threading.Lock()
        # Chunk files written to tmp/ and not yet durable, renamed in batches after one
        # syncfs (see write_chunk); not batched, each chunk gets its own fdatasync.
        self._batched = fsutil.filesystem_type(path) in fsutil.SYNCFS_FILESYSTEMS
        self._pending: list[tuple[Path, Path]] = []
        self._pending_bytes = 0
        self._pending_lock = threading.Lock()
        self._commit_lock = threading.Lock()

    # --- creation and opening ---------------------------------------------------------------

    @classmethod
    def init(
        cls,
        path: str | Path,
        *,
        encryption: str = "aes-256-gcm",
        passphrase: PassphraseSource = None,
        level: int = DEFAULT_LEVEL,
        block_size: int = codec.DEFAULT_BLOCK_SIZE,
    ) -> Repository:
        """Create a repository in ``path`` (which must be missing or empty)."""
        path = Path(path)
        if encryption not in ENCRYPTIONS:
            raise UsageError(f"Unknown encryption {encryption!r}; choose one of {ENCRYPTIONS}.")
        if block_size not in codec.BLOCK_SIZES:
            sizes = ", ".join(human_size(n) for n in codec.BLOCK_SIZES)
            raise UsageError(f"A block size of {block_size} bytes is not supported: {sizes}.")
        if path.exists() and (not path.is_dir() or any(path.iterdir())):
            if (path / "config").exists():
                raise UsageError(f"{path} already holds a repository.")
            raise UsageError(f"{path} exists and is not an empty directory.")
        secret = _resolve(passphrase) if encryption != "none" else None
        if encryption != "none" and not secret:
            raise UsageError("An encrypted repository needs a passphrase.")
        made = _first_missing(path)
        try:
            path.mkdir(parents=True, exist_ok=True)
            for sub in ("chunks", "snapshots", "indexes", "leases", "tmp", "trash", "verify"):
                (path / sub).mkdir()
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
            master = None
            if encryption != "none":
                assert secret is not None
                (path / "keys").mkdir(mode=0o700)
                master = os.urandom(32)
                keys.write_slot(
                    path / "keys",
                    keys.make_slot(master, secret, repo_id, "passphrase", config_hash),
                )
            write_atomic(path / "config", raw_config)
        except BaseException as e:
            _undo_init(path, made)  # a half-made repository would make the next init refuse
            if isinstance(e, OSError):
                raise_no_space(e, path)
                raise HourglassError(f"Cannot create a repository in {path}: {e.strerror}.") from e
            raise
        return cls(path, config, keys.Keys(master), None, config_hash)

    @classmethod
    def open(cls, path: str | Path, passphrase: PassphraseSource = None) -> Repository:
        """Open ``path``; ``passphrase`` (a string or a function asking for it) if encrypted."""
        path = Path(path)
        config, config_hash = load_config(path)
        if config["encryption"] == "none":
            _refuse_downgrade(path, config)
            return cls(path, config, keys.Keys(None), None, config_hash)
        secret = _resolve(passphrase)
        if not secret:
            raise UsageError("This repository is encrypted: a passphrase is needed.")
        master, slot = keys.unlock(path / "keys", secret, config["id"], config_hash)
        repo = cls(path, config, keys.Keys(master), slot, config_hash)
        seen.note_open(repo)
        return repo

    @classmethod
    def open_with_master(cls, path: str | Path, master: bytes | None) -> Repository:
        """Open ``path`` with a master key already unlocked by another process.

        For helper processes (the file-level restore's FUSE server) that receive the key
        through a pipe: no passphrase, no key derivation. ``None`` for an unencrypted
        repository.
        """
        path = Path(path)
        config, config_hash = load_config(path)
        if config["encryption"] == "none":
            _refuse_downgrade(path, config)
        if (config["encryption"] == "none") != (master is None):
            raise UsageError(f"The key given for {path} does not fit its encryption setting.")
        if master is not None:
            if len(master) != 32:
                raise UsageError("A master key is 32 bytes.")
            # The config may have changed since the parent opened it: check it again.
            keys.check_bindings(path / "keys", master, config["id"], config_hash)
        return cls(path, config, keys.Keys(master), None, config_hash)

    @property
    def encrypted(self) -> bool:
        return self.keys.encrypted

    # --- chunks -----------------------------------------------------------------------------

    def chunk_path(self, chunk_id: bytes) -> Path:
        h = chunk_id.hex()
        return self.path / "chunks" / h[:2] / h[2:4] / h

    def has_chunk(self, chunk_id: bytes) -> bool:
        return os.path.exists(self.chunk_path(chunk_id))

    def write_chunk(self, chunk_id: bytes, data: bytes) -> bool:
        """Store an encoded chunk; False if it was already there.

        A chunk file gets its final name only once its content is durable. On a local
        filesystem the chunk waits in ``tmp/`` until ``SYNC_BATCH_BYTES`` of chunks (or
        ``SYNC_BATCH_CHUNKS`` files) do, then
        one syncfs makes them all durable and they are renamed: one journal commit per batch
        instead of one fdatasync per chunk (a first backup into 1 MiB blocks spent half its
        time in fdatasync). The caller must :meth:`commit_chunks` before it refers to the
        chunk in an index (the backup does, before it writes any).
        """
        final = self.chunk_path(chunk_id)
        if final.exists():
            return False
        tmp = self.path / "tmp" / f"c-{secrets.token_hex(8)}"
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            try:
                write_all(fd, data)
                if not self._batched:
                    os.fdatasync(fd)
            finally:
                os.close(fd)
        except OSError as e:
            with contextlib.suppress(OSError):
                tmp.unlink()
            raise_no_space(e, final)
            raise HourglassError(f"Cannot write {final}: {e.strerror}.") from e
        if not self._batched:
            self._rename_chunks([(tmp, final)])
            return True
        with self._pending_lock:
            self._pending.append((tmp, final))
            self._pending_bytes += len(data)
            full = (
                self._pending_bytes >= SYNC_BATCH_BYTES or len(self._pending) >= SYNC_BATCH_CHUNKS
            )
        if full:
            self.commit_chunks()
        return True

    def commit_chunks(self) -> None:
        """Make the chunks written so far durable and give them their final names."""
        with self._commit_lock:  # a batch is renamed only after its own syncfs
            with self._pending_lock:
                batch, self._pending, self._pending_bytes = self._pending, [], 0
            if not batch:
                return
            try:
                fd = os.open(self.path / "tmp", os.O_RDONLY | os.O_DIRECTORY)
                try:
                    fsutil.syncfs(fd)
                finally:
                    os.close(fd)
            except OSError as e:
                self._discard(batch)
                raise HourglassError(
                    f"Cannot make the new chunks in {self.path} durable: {e.strerror}.",
                    "The repository drive may have failed or been unplugged.",
                ) from e
            self._rename_chunks(batch)

    def discard_chunks(self) -> None:
        """Remove chunks written and not committed (a backup that failed or was cancelled)."""
        with self._commit_lock, self._pending_lock:
            batch, self._pending, self._pending_bytes = self._pending, [], 0
        self._discard(batch)

    @staticmethod
    def _discard(batch: list[tuple[Path, Path]]) -> None:
        for tmp, _ in batch:
            with contextlib.suppress(OSError):
                tmp.unlink()

    def _rename_chunks(self, batch: list[tuple[Path, Path]]) -> None:
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
                    raise HourglassError(f"Cannot write {final}: {e.strerror}.") from e
        finally:
            with self._unsynced_lock:
                self._unsynced.update(touched)

    def read_chunk_file(self, chunk_id: bytes) -> bytes:
        """The raw chunk file (from trash if gc set it aside); IntegrityError if missing."""
        path = self.chunk_path(chunk_id)
        try:
            return path.read_bytes()
        except FileNotFoundError:
            for batch in self._trash_batches():
                candidate = batch / path.relative_to(self.path / "chunks")
                with contextlib.suppress(FileNotFoundError):
                    return candidate.read_bytes()
            raise IntegrityError(
                f"Chunk {chunk_id.hex()} is missing from the repository."
            ) from None
        except OSError as e:
            raise IntegrityError(f"Chunk {chunk_id.hex()} cannot be read: {e.strerror}.") from e

    def read_chunk(self, chunk_id: bytes) -> bytes:
        """The plaintext of a chunk, authenticated."""
        return codec.decode_chunk(chunk_id, self.read_chunk_file(chunk_id), self.keys)

    def encode_chunk(self, chunk_id: bytes, plaintext: bytes | bytearray | memoryview) -> bytes:
        return codec.encode_chunk(chunk_id, plaintext, self.keys, self.level)

    def sync_chunk_dirs(self) -> None:
        """fsync the chunk directories this process wrote into since the last call (the
        batched directory fsync of the write order), deepest first. Only those: a repository
        has up to 65,536 chunk directories, and fsyncing each of them cost an incremental
        backup more time than its new chunks did."""
        with self._unsynced_lock:
            dirs, self._unsynced = self._unsynced, set()
        for directory in sorted(dirs, key=lambda p: len(p.parts), reverse=True):
            fsync_dir(directory)

    def iter_chunk_files(self) -> Iterator[os.DirEntry[str]]:
        """Every chunk file under chunks/ (no order)."""
        root = self.path / "chunks"
        for top in os.scandir(root):
            if not top.is_dir():
                continue
            for sub in os.scandir(top.path):
                if not sub.is_dir():
                    continue
                for entry in os.scandir(sub.path):
                    if len(entry.name) == 64:
                        yield entry

    def _trash_batches(self) -> list[Path]:
        trash = self.path / "trash"
        try:
            return sorted(p for p in trash.iterdir() if p.is_dir())
        except FileNotFoundError:
            return []

    # --- indexes ----------------------------------------------------------------------------

    def index_path(self, snapshot_id: str, image: str) -> Path:
        return self.path / "indexes" / snapshot_id / f"{image}.idx"

    def write_index(self, snapshot_id: str, image: str, index: ChunkIndex, size: int) -> str:
        """Store an image's index; returns its MAC for the manifest."""
        ids = index.raw
        header, tail = codec.index_frame(ids, size, self.block_size)
        path = self.index_path(snapshot_id, image)
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(path, header, ids, tail, tmp_dir=self.path / "tmp")
        return self.keys.mac(header, ids, tail).hex()

    def load_index(self, snapshot: Snapshot, image: str) -> ChunkIndex:
        """The chunk ids of one image, authenticated against the manifest."""
        meta = snapshot.image(image)
        path = self.index_path(snapshot.id, image)
        name = f"index of snapshot {snapshot.id[:12]} image {image}"
        # Read as three parts so that the ids, up to 64 MiB, are never copied.
        try:
            with open(path, "rb") as f:
                length = os.fstat(f.fileno()).st_size
                header = f.read(codec.INDEX_HEADER.size)
                ids = f.read(max(0, length - codec.INDEX_HEADER.size - codec.TRAILER_SIZE))
                tail = f.read()
        except FileNotFoundError:
            raise IntegrityError(f"The {name} is missing ({path}).") from None
        except OSError as e:
            raise IntegrityError(f"The {name} cannot be read: {e.strerror}.") from e
        if self.keys.mac(header, ids, tail).hex() != meta.index_mac:
            raise IntegrityError(f"The {name} is damaged or altered (checksum mismatch).")
        block_size, size, ids = codec.decode_index_parts(header, ids, tail, name=name)
        if size != meta.size or block_size != self.block_size:
            raise IntegrityError(f"The {name} does not match its manifest.")
        return ChunkIndex(ids)

    # --- snapshots --------------------------------------------------------------------------

    def snapshot_ids(self) -> list[str]:
        try:
            names = os.listdir(self.path / "snapshots")
        except FileNotFoundError:
            raise RepositoryNotFound(f"{self.path} is not a repository any more.") from None
        return sorted(
            n[:-5] for n in names if n.endswith(".snap") and len(n) == 37 and _is_hex(n[:-5])
        )

    def load_snapshot(self, snapshot_id: str) -> Snapshot:
        path = self.path / "snapshots" / f"{snapshot_id}.snap"
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            raise SnapshotNotFound(f"Snapshot {snapshot_id} does not exist.") from None
        except OSError as e:
            raise IntegrityError(
                f"snapshot {snapshot_id}: the manifest cannot be read ({e.strerror})."
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
        path = self.path / "snapshots" / f"{snapshot_id}.snap"
        try:
            mtime = path.stat().st_mtime
        except OSError:
            mtime = 0.0
        return datetime.fromtimestamp(mtime).astimezone()

    def commit_snapshot(self, manifest: dict[str, Any]) -> Snapshot:
        """Write the manifest: the commit point of a backup."""
        data = codec.encode_manifest(manifest, self.keys, self.id)
        path = self.path / "snapshots" / f"{manifest['id']}.snap"
        write_atomic(path, data, tmp_dir=self.path / "tmp")
        snapshot = Snapshot(manifest)
        seen.note_commit(self, snapshot)
        return snapshot

    def delete_snapshot(self, snapshot_id: str) -> None:
        """Remove a snapshot's manifest (the commit point of a deletion). Its indexes stay
        until gc, which removes them when no restore or mount that may still read them runs."""
        path = self.path / "snapshots" / f"{snapshot_id}.snap"
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
        fsync_dir(path.parent)
        seen.note_forget(self, snapshot_id)

    def new_snapshot_id(self) -> str:
        return secrets.token_hex(16)

    # --- leases -----------------------------------------------------------------------------

    def writer(self) -> contextlib.AbstractContextManager[leases.LeaseHandle]:
        """A writer lease; name the parent snapshot in it (``update(parent=...)``) before
        taking any of the parent's chunks as stored (gc relies on it)."""
        return leases.hold(self.path / "leases", "writer")

    def reader(self) -> contextlib.AbstractContextManager[leases.LeaseHandle]:
        return leases.hold(self.path / "leases", "reader")

    # --- keys -------------------------------------------------------------------------------

    def add_key(self, secret: str, kind: str = "passphrase") -> str:
        """Add a key slot opened by ``secret``; returns the slot name."""
        if not self.encrypted or self.keys.master is None:
            raise UsageError("This repository is not encrypted: it has no keys.")
        slot = keys.make_slot(self.keys.master, secret, self.id, kind, self.config_hash)
        keys.write_slot(self.path / "keys", slot)
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
            (self.path / "keys" / f"{old}.key").unlink(missing_ok=True)
            fsync_dir(self.path / "keys")
        self.unlocked_slot = new
        return new

    def key_slots(self) -> list[dict[str, Any]]:
        result = []
        for path in sorted((self.path / "keys").glob("*.key")):
            try:
                slot = keys.parse_slot(path.read_bytes())
            except FormatError:
                continue
            result.append({"slot": slot["slot"], "kind": slot["kind"]})
        return result


def read_config(path: Path) -> dict[str, Any]:
    """The repository's config; clear errors for a missing, foreign or newer repository."""
    return load_config(path)[0]


def load_config(path: Path) -> tuple[dict[str, Any], str]:
    """:func:`read_config` and the hash of the file's bytes (what key slots bind)."""
    config_path = path / "config"
    if not path.exists():
        raise RepositoryNotFound(f"There is no repository at {path}: the path does not exist.")
    try:
        raw = config_path.read_bytes()
    except FileNotFoundError:
        raise RepositoryNotFound(
            f"There is no repository at {path}.", "Create one with: hourglass init " + str(path)
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


def _refuse_downgrade(path: Path, config: dict[str, Any]) -> None:
    """An unencrypted config in a repository that has (or had) keys was altered: reading it
    as unencrypted would trust files anyone can write (docs/SECURITY.md)."""
    config_path = path / "config"
    if (path / "keys").exists():
        raise IntegrityError(
            f"{config_path} says the repository is not encrypted, but it has key files in "
            f"{path / 'keys'}: the config was altered.",
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
