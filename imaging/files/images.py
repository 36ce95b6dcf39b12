"""Which image of a snapshot holds the filesystem a person means (``SNAPSHOT[:N]``)."""

from __future__ import annotations

from imaging.errors import UsageError
from imaging.mounts.drivers import NOT_FILESYSTEMS
from imaging.repository import selectors
from imaging.repository.records import ImageRecord
from imaging.repository.store import Repository, Snapshot
from imaging.units import human_size


def file_images(snapshot: Snapshot) -> list[ImageRecord]:
    """Images that may hold a filesystem: not the area before the first partition, not swap,
    none of a file journal's segment (its index lists chunks: FORMAT.md, "File journal")."""
    if snapshot.kind == "journal":
        return []
    return [
        image
        for image in snapshot.images
        if image.name != "head" and image.fstype not in NOT_FILESYSTEMS
    ]


def describe_images(snapshot: Snapshot) -> str:
    parts = []
    for image in file_images(snapshot):
        label = f" {image.label!r}" if image.label else ""
        fstype = image.fstype or "unknown filesystem"
        size = human_size(image.size)
        parts.append(f"{image.number if image.number else image.name}: {fstype}{label}, {size}")
    return "; ".join(parts)


def image_for(snapshot: Snapshot, partition: int | None) -> str:
    """The name of the image holding partition ``partition`` (or the only filesystem)."""
    if partition is not None:
        for image in snapshot.images:
            if image.number == partition or image.name == f"p{partition}":
                return image.name
        if partition == 1 and [i.name for i in snapshot.images] == ["data"]:
            return "data"  # a partition snapshot: its one filesystem is partition 1 of itself
        raise UsageError(
            f"Snapshot {snapshot.id[:12]} has no partition {partition}.",
            f"Its partitions: {describe_images(snapshot)}.",
        )
    candidates = file_images(snapshot)
    if len(candidates) == 1:
        return candidates[0].name
    if not candidates:
        raise UsageError(f"Snapshot {snapshot.id[:12]} holds no filesystem.")
    raise UsageError(
        f"Snapshot {snapshot.id[:12]} holds {len(candidates)} partitions: say which one with "
        "--partition N (or SNAPSHOT@N where a snapshot is named).",
        f"Its partitions: {describe_images(snapshot)}.",
    )


def resolve(
    repo: Repository, selector: str, partition: int | None = None, *, source: str | None = None
) -> tuple[Snapshot, str]:
    """``"latest:2"`` or ``"2026-11-22 10:31:05"`` -> the snapshot and the image name."""
    text, from_selector = selectors.split_partition(selector)
    if partition is not None and from_selector is not None and partition != from_selector:
        raise UsageError(f"Two different partitions were named: {from_selector} and {partition}.")
    snapshot = selectors.select(repo.snapshots(), text, source=source)
    return snapshot, image_for(snapshot, partition if partition is not None else from_selector)
