"""The records a repository holds, as types: manifests, image records, chunk indexes.

A snapshot's manifest (docs/FORMAT.md, "Snapshots") is defined here, field by field: each
field of :class:`Manifest`, :class:`ImageRecord`, :class:`DiskRecord` and
:class:`BackupStats` is a key of the JSON object of the same name, with the check a value
must pass to be taken as that field. A new field is added here and in docs/FORMAT.md.

Reading keeps the JSON exactly: a key no field names, or a value that fails its field's
check (``"label": null``, an empty ``"warnings": []``), stays in the record's ``extra`` and
is written back as it was. Two fields are always written, as every backup has written them:
``parent`` (null for a first backup) and ``stats``.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator, Mapping
from dataclasses import MISSING, dataclass, field, fields
from datetime import datetime
from functools import cached_property
from typing import Any, TypeVar

from imaging.errors import HourglassError, SnapshotNotFound
from imaging.repository.codec import ID_SIZE, UNUSED_ID, ZERO_ID, validate_image, validate_manifest

Check = Callable[[Any], bool]
_R = TypeVar("_R", bound="_Record")


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v >= 0


def _is_str(v: Any) -> bool:
    return isinstance(v, str)


def _is_object(v: Any) -> bool:
    return isinstance(v, dict)


def _is_number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


def _is_str_or_null(v: Any) -> bool:
    return v is None or isinstance(v, str)


def _is_strs(v: Any) -> bool:
    return isinstance(v, list) and len(v) > 0 and all(isinstance(s, str) for s in v)


def _is_counts(v: Any) -> bool:
    return isinstance(v, list) and len(v) > 0 and all(_is_int(n) for n in v)


def _is_ranges(v: Any) -> bool:
    return (
        isinstance(v, list)
        and len(v) > 0
        and all(isinstance(r, list) and len(r) == 2 and all(_is_int(n) for n in r) for r in v)
    )


def _ranges(v: list[list[int]]) -> tuple[tuple[int, int], ...]:
    return tuple((start, length) for start, length in v)


def _json(
    check: Check,
    *,
    load: Callable[[Any], Any] | None = None,
    default: Any = MISSING,
    factory: Callable[[], Any] | None = None,
    always: bool = False,
) -> Any:
    """A record field read from the JSON key of its name when the value passes ``check``
    (``load`` converts it); written when it is set (not None, not empty) or ``always``.
    Without a ``default`` (or ``factory``) the field is required."""
    metadata = {"check": check, "load": load, "always": always}
    if factory is not None:
        return field(default_factory=factory, metadata=metadata)
    return field(default=default, metadata=metadata)


@dataclass(frozen=True, kw_only=True)
class _Record:
    extra: Mapping[str, Any] = field(default_factory=dict)
    """What the JSON held that no field takes, written back unchanged."""

    @classmethod
    def _split(cls, d: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
        """The field values ``d`` holds, and the rest of it."""
        known: dict[str, Any] = {}
        for f in fields(cls):
            if f.name == "extra" or f.name not in d or not f.metadata["check"](d[f.name]):
                continue
            load = f.metadata["load"]
            known[f.name] = load(d[f.name]) if load is not None else d[f.name]
        return known, {k: v for k, v in d.items() if k not in known}

    @classmethod
    def _load(cls: type[_R], d: Mapping[str, Any]) -> _R:
        """The record of ``d``, already validated as far as the format requires."""
        known, extra = cls._split(d)
        return cls(**known, extra=extra)

    @classmethod
    def _make(cls: type[_R], described: Mapping[str, Any], **values: Any) -> _R:
        """A new record of ``values``, with what a plan ``described`` taken as if read:
        ``values`` win, as ``{**described, **values}`` did when manifests were dicts."""
        known, extra = cls._split({k: v for k, v in described.items() if k not in values})
        return cls(**known, **values, extra=extra)

    def to_dict(self) -> dict[str, Any]:
        """The JSON object of this record, as the format writes it."""
        out: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name == "extra" or ((value is None or value == ()) and not f.metadata["always"]):
                continue
            out[f.name] = _to_json(value)
        out.update(copy.deepcopy(dict(self.extra)))
        return out


def _to_json(value: Any) -> Any:
    if isinstance(value, _Record):
        return value.to_dict()
    if isinstance(value, tuple):
        return [_to_json(v) for v in value]
    if isinstance(value, Mapping):
        return copy.deepcopy(dict(value))
    return value


# --- manifests ------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class ImageRecord(_Record):
    """One image of a snapshot: where it lies in the source and how it was stored."""

    name: str = _json(_is_str)
    offset: int = _json(_is_int)
    size: int = _json(_is_int)
    blocks: int = _json(_is_int)
    index_mac: str = _json(_is_str)
    method: str | None = _json(_is_str, default=None)
    number: int | None = _json(_is_int, default=None)
    fstype: str | None = _json(_is_str, default=None)
    label: str | None = _json(_is_str, default=None)
    uuid: str | None = _json(_is_str, default=None)
    used: int | None = _json(_is_int, default=None)
    note: str | None = _json(_is_str, default=None)
    # the partition table's entry of a disk's partition
    partuuid: str | None = _json(_is_str, default=None)
    type: str | None = _json(_is_str, default=None)
    type_name: str | None = _json(_is_str, default=None)
    role: str | None = _json(_is_str, default=None)
    # what a rescue backup could not read: [start, length] in the image, and the files hit
    unreadable: tuple[tuple[int, int], ...] = _json(_is_ranges, load=_ranges, default=())
    unreadable_files: tuple[str, ...] = _json(_is_strs, load=tuple, default=())

    @classmethod
    def from_dict(cls, d: Any, name: str) -> ImageRecord:
        """The image record of ``d``; :class:`FormatError` naming ``name`` (the snapshot)
        when a reader could not rely on it."""
        validate_image(d, name, set())
        return cls._load(d)

    @classmethod
    def make(cls, described: Mapping[str, Any], **values: Any) -> ImageRecord:
        """A new image record: ``values`` and what the plan ``described`` (filesystem,
        label, partition entry)."""
        return cls._make(described, **values)


@dataclass(frozen=True, kw_only=True)
class DiskRecord(_Record):
    """The disk a ``disk`` snapshot was taken of. ``table`` stays the JSON object
    :class:`imaging.disks.table.PartitionTable` reads."""

    model: str | None = _json(_is_str, default=None)
    serial: str | None = _json(_is_str, default=None)
    by_id: str | None = _json(_is_str, default=None)
    device: str | None = _json(_is_str, default=None)
    transport: str | None = _json(_is_str, default=None)
    size: int | None = _json(_is_int, default=None)
    logical_sector: int | None = _json(_is_int, default=None)
    physical_sector: int | None = _json(_is_int, default=None)
    table: Mapping[str, Any] | None = _json(_is_object, default=None)
    imaged: tuple[int, ...] = _json(_is_counts, load=tuple, default=())
    """The partition numbers imaged, when only some were."""


@dataclass(frozen=True, kw_only=True)
class BackupStats(_Record):
    """What a backup read and stored, in bytes (``new_chunks``: files; ``elapsed``: s)."""

    read: int = _json(_is_int, default=0)
    new_bytes: int = _json(_is_int, default=0)
    stored: int = _json(_is_int, default=0)
    """Bytes of chunk files the backup added to the repository."""
    new_chunks: int = _json(_is_int, default=0)
    dedup_bytes: int = _json(_is_int, default=0)
    zero_bytes: int = _json(_is_int, default=0)
    unused_bytes: int = _json(_is_int, default=0)
    elapsed: float = _json(_is_number, default=0.0)


def _images(v: list[dict[str, Any]]) -> tuple[ImageRecord, ...]:
    return tuple(ImageRecord._load(image) for image in v)


def _disk(v: dict[str, Any]) -> DiskRecord:
    return DiskRecord._load(v)


def _stats(v: dict[str, Any]) -> BackupStats:
    return BackupStats._load(v)


@dataclass(frozen=True, kw_only=True)
class Manifest(_Record):
    """A snapshot's manifest (docs/FORMAT.md, "Snapshots")."""

    version: int = _json(_is_int, default=1, always=True)
    id: str = _json(_is_str)
    time: str = _json(_is_str)
    """Local time of the start, to the second, ISO 8601 with its UTC offset."""
    time_ns: int | None = _json(_is_int, default=None)
    hostname: str | None = _json(_is_str, default=None)
    source: str = _json(_is_str)
    source_id: str = _json(_is_str)
    kind: str = _json(_is_str)
    size: int = _json(_is_int)
    parent: str | None = _json(_is_str_or_null, always=True, default=None)
    images: tuple[ImageRecord, ...] = _json(lambda v: isinstance(v, list), load=_images)
    # (_json returns a dataclasses.field: RUF009 cannot tell)
    disk: DiskRecord | None = _json(_is_object, load=_disk, default=None)  # noqa: RUF009
    partition: Mapping[str, Any] | None = _json(_is_object, default=None)
    """Where a single partition's snapshot came from (its disk, number, start, type)."""
    warnings: tuple[str, ...] = _json(_is_strs, load=tuple, default=())
    journal: Mapping[str, Any] | None = _json(_is_object, default=None)
    """A file journal segment's events (kind ``journal``: docs/FORMAT.md, "File journal")."""
    stats: BackupStats = _json(_is_object, load=_stats, factory=BackupStats, always=True)  # noqa: RUF009

    @classmethod
    def from_dict(cls, d: Any, name: str, snapshot_id: str) -> Manifest:
        """The manifest of ``d``, the JSON of snapshot ``snapshot_id``; :class:`FormatError`
        naming ``name`` when a reader could not rely on it
        (:func:`imaging.repository.codec.validate_manifest`)."""
        validate_manifest(d, name, snapshot_id)
        return cls._load(d)

    @classmethod
    def make(cls, described: Mapping[str, Any], **values: Any) -> Manifest:
        """A new manifest: ``values`` and what the plan ``described`` (disk, warnings)."""
        return cls._make(described, **values)


# --- chunk indexes --------------------------------------------------------------------------


class ChunkIndex:
    """The chunk ids of one image, one per block, over the index file's bytes (never
    copied: a 2 TiB image at 1 MiB blocks has 64 MiB of them). ``index[block]`` is the id
    of a block; one made by :meth:`empty` can be filled in with ``index[block] = id``."""

    __slots__ = ("_ids",)

    def __init__(self, ids: bytes | bytearray) -> None:
        if len(ids) % ID_SIZE:
            raise ValueError(f"a chunk index is a multiple of {ID_SIZE} bytes, not {len(ids)}")
        self._ids = ids

    @classmethod
    def empty(cls, blocks: int) -> ChunkIndex:
        """A mutable index of ``blocks`` blocks, all ZERO until set."""
        return cls(bytearray(ID_SIZE * blocks))

    @property
    def raw(self) -> bytes | bytearray:
        """The ids back to back, as the index file holds them."""
        return self._ids

    def __len__(self) -> int:
        return len(self._ids) // ID_SIZE

    def _offset(self, block: int) -> int:
        n = len(self)
        if block < 0:
            block += n
        if not 0 <= block < n:
            raise IndexError(f"block {block} is outside an index of {n} blocks")
        return block * ID_SIZE

    def __getitem__(self, block: int) -> bytes:
        start = self._offset(block)
        return bytes(self._ids[start : start + ID_SIZE])

    def __setitem__(self, block: int, chunk_id: bytes) -> None:
        if len(chunk_id) != ID_SIZE:
            raise ValueError(f"a chunk id has {ID_SIZE} bytes, not {len(chunk_id)}")
        start = self._offset(block)
        self._ids[start : start + ID_SIZE] = chunk_id  # type: ignore[index]

    def __iter__(self) -> Iterator[bytes]:
        ids = self._ids
        for start in range(0, len(ids), ID_SIZE):
            yield bytes(ids[start : start + ID_SIZE])

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, ChunkIndex):
            return NotImplemented
        return self._ids == other._ids

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"ChunkIndex({len(self)} blocks)"

    def count(self, chunk_id: bytes) -> int:
        """How many blocks are ``chunk_id``."""
        return sum(1 for block_id in self if block_id == chunk_id)

    def is_unused(self, block: int) -> bool:
        """True when the filesystem used no byte of ``block`` (the UNUSED id)."""
        return self[block] == UNUSED_ID

    def is_zero(self, block: int) -> bool:
        """True when ``block`` is all zeros (the ZERO id)."""
        return self[block] == ZERO_ID


# --- snapshots ------------------------------------------------------------------------------


@dataclass(frozen=True, init=False)
class Snapshot:
    """A committed snapshot: its manifest and what readers need most from it."""

    record: Manifest

    def __init__(self, manifest: Manifest | Mapping[str, Any]) -> None:
        """``manifest`` as read (validated again here) or as built."""
        if not isinstance(manifest, Manifest):
            snapshot_id = manifest.get("id")
            manifest = Manifest.from_dict(
                manifest,
                f"snapshot {snapshot_id}",
                snapshot_id if isinstance(snapshot_id, str) else "",
            )
        object.__setattr__(self, "record", manifest)

    @cached_property
    def manifest(self) -> dict[str, Any]:
        """The manifest as its JSON object (for readers of keys no field names)."""
        return self.record.to_dict()

    @property
    def id(self) -> str:
        return self.record.id

    @cached_property
    def time(self) -> datetime:
        return datetime.fromisoformat(self.record.time)

    @property
    def order(self) -> tuple[datetime, int, str]:
        """Oldest first: the time to the second, then the start in nanoseconds (two backups
        can start within one second: "latest" must be the later one), then the id."""
        return (self.time, self.record.time_ns or 0, self.id)

    @property
    def source(self) -> str:
        return self.record.source

    @property
    def source_id(self) -> str:
        return self.record.source_id

    @property
    def kind(self) -> str:
        return self.record.kind

    @property
    def size(self) -> int:
        return self.record.size

    @property
    def stored(self) -> int:
        return self.record.stats.stored

    @property
    def images(self) -> list[ImageRecord]:
        return list(self.record.images)

    def image(self, name: str) -> ImageRecord:
        for image in self.record.images:
            if image.name == name:
                return image
        raise SnapshotNotFound(f"Snapshot {self.id[:12]} has no image {name!r}.")

    def summary(self) -> dict[str, Any]:
        """The JSON object `hourglass snapshots --json` prints for this snapshot."""
        keys = ("name", "number", "offset", "size", "method", "fstype", "label", "used")
        return {
            "id": self.id,
            "time": self.time.isoformat(),
            "source": self.source,
            "source_id": self.source_id,
            "kind": self.kind,
            "hostname": self.manifest.get("hostname", ""),
            "size": self.size,
            "stored": self.stored,
            "images": [
                {k: image[k] for k in keys if k in image}
                for image in (i.to_dict() for i in self.images)
            ],
        }


@dataclass(frozen=True)
class DamagedSnapshot:
    """A manifest that cannot be read: which, why, and when its file was last written.

    Its own time, source and images are lost with it; ``written`` (the file's mtime, the
    moment the backup committed unless the file was copied since) is all there is to place
    it among the others.
    """

    id: str
    error: HourglassError
    written: datetime

    @property
    def reason(self) -> str:
        """What is wrong with the manifest, without the snapshot's name."""
        return self.error.message.removeprefix(f"snapshot {self.id}: ")

    def describe(self) -> str:
        return f"snapshot {self.id}: {self.reason}"

    def summary(self) -> dict[str, Any]:
        """The JSON object `hourglass snapshots --json` prints for a damaged snapshot."""
        return {
            "id": self.id,
            "damaged": True,
            "error": self.reason,
            "written": self.written.isoformat(),
        }


class SnapshotList(list[Snapshot]):
    """The intact snapshots, oldest first, and in ``damaged`` the manifests that could not
    be read (so that one damaged manifest never hides the others)."""

    def __init__(self, snapshots: list[Snapshot], damaged: list[DamagedSnapshot]) -> None:
        super().__init__(snapshots)
        self.damaged = damaged
