"""Opening, creating and describing repositories; keys; the list of snapshots with the
warnings that go with it."""

from __future__ import annotations

from dataclasses import dataclass

from imaging.errors import RepositoryNotFound
from imaging.passphrase import GOOD_LENGTH, MIN_LENGTH
from imaging.repository import seen
from imaging.repository.keys import new_recovery_key
from imaging.repository.stats import RepositoryInfo
from imaging.repository.stats import collect as _collect
from imaging.repository.store import (
    DEFAULT_LEVEL,
    DamagedSnapshot,
    Location,
    PassphraseSource,
    Repository,
    Snapshot,
    SnapshotList,
    is_repository,
    read_config,
)

__all__ = [
    "DEFAULT_LEVEL",
    "GOOD_LENGTH",
    "MIN_LENGTH",
    "DamagedSnapshot",
    "Listing",
    "Repository",
    "RepositoryInfo",
    "Snapshot",
    "SnapshotList",
    "create",
    "holds_repository",
    "info",
    "is_encrypted",
    "is_repository",
    "list_snapshots",
    "new_recovery_key",
    "open_repository",
]


def open_repository(path: Location, passphrase: PassphraseSource = None) -> Repository:
    """Open the repository at ``path`` (a directory, or the store of a bucket:
    :func:`imaging.jobs.locations.connect_object_store`); ``passphrase``: a string or a
    function asking."""
    return Repository.open(path, passphrase)


def create(
    path: Location,
    *,
    encryption: str = "aes-256-gcm",
    passphrase: PassphraseSource = None,
    level: int = DEFAULT_LEVEL,
    block_size: int | None = None,
) -> Repository:
    """Create a repository in ``path`` (a directory, missing or empty, or a store: an
    object store's bucket is made when it is missing)."""
    if block_size is None:
        return Repository.init(path, encryption=encryption, passphrase=passphrase, level=level)
    return Repository.init(
        path, encryption=encryption, passphrase=passphrase, level=level, block_size=block_size
    )


def holds_repository(location: Location) -> bool:
    """Whether ``location`` (a directory or a store) holds a repository. Unlike
    :func:`is_repository` a store that cannot be reached says why (an object store's keys,
    endpoint, certificate: :class:`~imaging.jobs.locations.S3Error`)."""
    try:
        read_config(location)
    except RepositoryNotFound:
        return False
    return True


def is_encrypted(path: Location) -> bool:
    """Whether the repository at ``path`` needs a passphrase (read from its config)."""
    return bool(read_config(path)["encryption"] != "none")


@dataclass(frozen=True)
class Listing:
    """Every snapshot (``snapshots.damaged`` names unreadable manifests) and, when the
    drive seems rolled back to an older state than this machine saw, the warning."""

    snapshots: SnapshotList
    rollback: str | None


def list_snapshots(repo: Repository) -> Listing:
    """The image snapshots, oldest first, checked against what this machine saw before
    (against every manifest, the file journal's segments included)."""
    listed = repo.snapshots()
    images = SnapshotList([s for s in listed if s.kind != "journal"], listed.damaged)
    return Listing(images, seen.note_listing(repo, listed))


def info(repo: Repository) -> RepositoryInfo:
    """Sizes, deduplication and compression (reads every index: seconds on big ones)."""
    return _collect(repo)
