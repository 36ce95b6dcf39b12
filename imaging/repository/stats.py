"""Repository statistics for `hourglass info` and the app's Repository screen."""

from __future__ import annotations

from dataclasses import asdict, dataclass

from imaging.repository import codec
from imaging.repository.storage import Kind
from imaging.repository.store import Repository, Snapshot


@dataclass
class RepositoryInfo:
    path: str
    id: str
    encryption: str
    block_size: int
    snapshots: int
    sources: int
    logical_bytes: int  # sum of the sizes of every snapshot's images
    data_bytes: int  # bytes of non-zero, used blocks over all snapshots
    unique_bytes: int  # plaintext bytes of the distinct chunks they reference
    chunks: int  # chunk files in the store
    stored_bytes: int  # bytes of chunk files on the drive
    key_slots: int

    @property
    def dedup_ratio(self) -> float:
        return self.data_bytes / self.unique_bytes if self.unique_bytes else 1.0

    @property
    def compression_ratio(self) -> float:
        return self.unique_bytes / self.stored_bytes if self.stored_bytes else 1.0

    def as_dict(self) -> dict[str, object]:
        return {
            **asdict(self),
            "dedup_ratio": round(self.dedup_ratio, 3),
            "compression_ratio": round(self.compression_ratio, 3),
        }


def collect(repo: Repository) -> RepositoryInfo:
    snapshots = repo.snapshots()
    unique: dict[bytes, int] = {}
    data_bytes = logical = 0
    bs = repo.block_size
    for snapshot in snapshots:
        if snapshot.kind == "journal":
            logical += snapshot.size
            data_bytes += snapshot.size
            _journal_chunks(repo, snapshot, unique)
            continue
        for image in snapshot.images:
            size = image.size
            logical += size
            ids = repo.load_index(snapshot, image.name)
            for block, chunk_id in enumerate(ids):
                if chunk_id in codec.RESERVED_IDS:
                    continue
                length = min(bs, size - block * bs)
                data_bytes += length
                unique.setdefault(chunk_id, length)
    chunks = stored = 0
    for info in repo.store.list(Kind.CHUNKS):
        chunks += 1
        stored += info.size
    return RepositoryInfo(
        path=repo.store.describe(),
        id=repo.id,
        encryption=str(repo.config["encryption"]),
        block_size=repo.block_size,
        snapshots=len(snapshots),
        sources=len({s.source_id for s in snapshots}),
        logical_bytes=logical,
        data_bytes=data_bytes,
        unique_bytes=sum(unique.values()),
        chunks=chunks,
        stored_bytes=stored,
        key_slots=len(repo.key_slots()) if repo.encrypted else 0,
    )


def _journal_chunks(repo: Repository, snapshot: Snapshot, unique: dict[bytes, int]) -> None:
    """A journal segment's chunks (FORMAT.md, "File journal"). Its index lists chunk ids, not
    blocks, and records no chunk's length: each chunk of a version counts as the version's
    average, which is exact for the total of each version."""
    ids = list(repo.load_index(snapshot, snapshot.images[0].name)) if snapshot.images else []
    for event in (snapshot.record.journal or {}).get("events", []):
        chunks, size = event.get("chunks"), event.get("size")
        if event.get("type") != "write" or not isinstance(chunks, list) or len(chunks) != 2:
            continue
        start, count = chunks
        if not isinstance(size, int) or not count:
            continue
        for chunk_id in ids[start : start + count]:
            unique.setdefault(chunk_id, size // count)
