"""Places a repository lives: partitions mounted for it, network shares, new drives, and
buckets of object stores."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from imaging.disks.repos import repositories_in
from imaging.errors import UsageError
from imaging.mounts.locations import (
    Location,
    Share,
    format_drive,
    mount_partition,
    mount_share,
    mounted_locations,
    moved_path,
    release_lost,
    unmount,
)
from imaging.repository.s3store import S3Error, S3Options, S3Store, parse_url
from imaging.repository.storage import Store
from imaging.repository.store import as_store

__all__ = [
    "Bucket",
    "Location",
    "ObjectStore",
    "S3Error",
    "S3Options",
    "Share",
    "Store",
    "connect_object_store",
    "format_drive",
    "mount_partition",
    "mount_share",
    "mounted_locations",
    "moved_path",
    "object_store",
    "release_lost",
    "repositories_in",
    "unmount",
]


@dataclass(frozen=True)
class ObjectStore:
    """A bucket of an object store as the person typed it. The secret is never part of it."""

    endpoint: str  # https://s3.example.org:7480; "" for Amazon S3
    bucket: str
    prefix: str = ""  # the folder inside the bucket; "" for the bucket's top
    access_key: str = ""
    ca_file: str = ""  # a CA certificate (PEM) to trust instead of the system's

    @property
    def url(self) -> str:
        """``s3://BUCKET[/PREFIX]``: the repository location (no endpoint, no keys)."""
        prefix = self.prefix.strip().strip("/")
        return f"s3://{self.bucket.strip()}" + (f"/{prefix}" if prefix else "")

    def describe(self) -> str:
        """``s3://backups/pc1 at s3.example.org:7480`` (how the person recognises it)."""
        host = self.endpoint.split("://", 1)[-1].rstrip("/")
        return f"{self.url} at {host}" if host else self.url

    def options(self, secret: str) -> S3Options:
        """How to reach it: the endpoint, the CA file and these keys, never the
        environment's (the app's keys are the ones typed)."""
        return S3Options(
            endpoint=self.endpoint.strip() or None,
            ca_file=Path(self.ca_file.strip()) if self.ca_file.strip() else None,
            access_key=self.access_key.strip() or None,
            secret_key=secret or None,
        )


@dataclass(frozen=True)
class Bucket:
    """An object store reached with the person's keys: the place and its checked store
    (which holds the keys for as long as the repository is open)."""

    place: ObjectStore
    store: Store


def object_store(url: str, options: S3Options) -> Store:
    """The store of the repository at ``url`` (``s3://BUCKET[/PREFIX]``), reached as
    ``options`` say (endpoint, CA file, credentials)."""
    return as_store(url, s3=options)


def connect_object_store(place: ObjectStore, *, secret: str) -> Bucket:
    """Reach ``place`` with its access key and ``secret`` and check that the endpoint
    answers, trusts us and is trusted: wrong keys, an unreachable endpoint or an untrusted
    certificate are an :class:`S3Error` now, not at the first backup. A missing bucket is
    not an error (a new repository makes it)."""
    endpoint = place.endpoint.strip()
    if endpoint and not endpoint.startswith(("http://", "https://")):
        raise UsageError(
            f"The endpoint {endpoint} is not a URL.",
            "Write it as https://host[:port] (or http://host:port on a trusted network).",
        )
    if not (place.access_key.strip() and secret):
        raise UsageError("The object store needs an access key and its secret.")
    parse_url(place.url)  # a bad bucket name or prefix, in the engine's words
    store = object_store(place.url, place.options(secret))
    assert isinstance(store, S3Store)
    store.reachable()  # raises S3Error for the keys, the endpoint, the certificate
    return Bucket(place, store)
