"""A repository in an S3 bucket: ``s3://BUCKET[/PREFIX]`` (docs/FORMAT.md, "Object stores").

Small objects (config, key slots, manifests, indexes, leases, verify state) are one object
each under the prefix, with the keys of the local layout. Chunks are not: a million PUTs per
TiB is what PBS's S3 backend is criticised for. New chunks are appended to a pack held in
memory; a pack of :data:`PACK_BYTES` (or the chunks a :meth:`S3Store.flush_chunks` finds) is
written as one immutable object ``packs/<hex>`` and then its pack index ``packs/<hex>.idx``
(restic and kopia do the same). A chunk is read with a ranged GET into its pack, found
through the pack indexes, which are loaded once per open and kept in memory (a restore joins
neighbours in one pack into one GET: :meth:`S3Store.chunk_place`, :meth:`S3Store.get_pack_run`).
gc (imaging/repository/s3gc.py) deletes and repacks whole packs; what it has superseded but
not deleted is still readable (:meth:`S3Store.get_set_aside`).

boto3 is imported on the first use of a bucket: it takes 0.2-0.4 s to import, more than the
whole CLI without it, and only object-store repositories need it.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import socket
import struct
import threading
import time
import uuid
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import blake3

from imaging.errors import Busy, HourglassError, UsageError
from imaging.repository import codec, leases
from imaging.repository.storage import (
    CONFIG,
    Kind,
    Name,
    ObjectInfo,
    Store,
    object_key,
)

SCHEME = "s3"
# A pack is written once it holds this much: 2 requests (pack and index) per 56 MiB is
# 37 per GiB of new chunks, under the 64 of the target with room for the rest of a backup;
# the largest pack is this plus one chunk (4 MiB blocks), under 64 MiB.
PACK_BYTES = 56 * 2**20
# The gc lease's key below leases/ (leases/gc).
GC_LEASE = "gc"
# Pack indexes read at once when a repository is opened.
INDEX_READERS = 16

PACK_INDEX_MAGIC = b"HGPI"
PACK_INDEX_VERSION = 1
# magic, version, 3 reserved, chunk count (u32), pack size (u64), BLAKE3 of the pack.
PACK_INDEX_HEADER = struct.Struct("<4sB3xIQ32s")
# chunk id, offset (u64), length (u32), BLAKE3 of the chunk's bytes.
PACK_INDEX_ENTRY = struct.Struct("<32sQI32s")
TRAILER_SIZE = 32

# An entry of the in-memory chunk map: pack number, offset and length in one int (a tuple
# of three costs three times the memory per chunk: docs/FORMAT.md, "Object stores").
_OFFSET_BITS = 32
_LENGTH_BITS = 32

_Entries = list[tuple[bytes, int, int, bytes]]
"""A pack's chunks: id, offset, length, BLAKE3 of the chunk (``list`` is a store method)."""
_Leases = list[leases.Lease]
_Pieces = list[bytes]
_Places = list[tuple[bytes, int, int]]
"""A pack's chunks as the chunk map keeps them: id, offset, length."""

_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
_URL = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")


class S3Error(HourglassError):
    """The object store refused or could not be reached (credentials, endpoint, bucket)."""


class _PastTheEnd(OSError):
    """A ranged GET that starts at or after the object's end (HTTP 416)."""


def url_scheme(location: str) -> str | None:
    """The scheme of a location that looks like a URL (``s3``, ``foo``), else None."""
    match = _URL.match(location)
    return match.group(1).lower() if match else None


def parse_url(url: str) -> tuple[str, str]:
    """``s3://BUCKET[/PREFIX]`` -> (bucket, prefix without slashes at either end)."""
    if url_scheme(url) != SCHEME:
        raise UsageError(f"{url} is not an s3:// location.")
    rest = url.split("://", 1)[1]
    bucket, _, prefix = rest.partition("/")
    if not _BUCKET.match(bucket):
        raise UsageError(
            f"{url}: {bucket!r} is not a bucket name.",
            "Bucket names are 3 to 63 lower-case letters, digits, dots and hyphens: "
            "s3://BUCKET/PREFIX.",
        )
    prefix = prefix.strip("/")
    if any(part in ("", ".", "..") for part in prefix.split("/")) and prefix:
        raise UsageError(f"{url}: the prefix {prefix!r} has an empty, '.' or '..' segment.")
    return bucket, prefix


def _boto3() -> Any:
    import boto3  # noqa: PLC0415 (module docstring: imported on first use)

    return boto3


def _botocore_config(**kwargs: Any) -> Any:
    from botocore.config import Config  # noqa: PLC0415 (module docstring)

    return Config(**kwargs)


def _exceptions() -> Any:
    import botocore.exceptions  # noqa: PLC0415 (module docstring)

    return botocore.exceptions


@dataclass(frozen=True)
class S3Options:
    """How to reach an object store, beyond the location itself: the endpoint (else
    ``AWS_ENDPOINT_URL``, else AWS), a CA bundle to trust instead of the system's, and the
    credentials: a file in the AWS shared-credentials format (``[default]``,
    ``aws_access_key_id``, ``aws_secret_access_key``) or keys typed in the app. Without
    either, boto3's usual chain (environment, ``~/.aws/credentials``). Never on a command
    line, and never shown (``repr`` leaves the secret out)."""

    endpoint: str | None = None
    ca_file: Path | None = None
    credentials_file: Path | None = None
    access_key: str | None = None
    secret_key: str | None = field(default=None, repr=False)

    def verify(self) -> bool | str:
        """What boto3's ``verify`` takes: the CA bundle's path, or True (system CAs)."""
        if self.ca_file is None:
            return True
        if not self.ca_file.is_file():
            raise UsageError(f"The CA file {self.ca_file} does not exist.")
        return str(self.ca_file)


def _session(options: S3Options) -> Any:
    """A boto3 session with the credentials ``options`` name, else boto3's own chain."""
    boto3 = _boto3()
    if options.access_key or options.secret_key:
        if not (options.access_key and options.secret_key):
            raise UsageError("An access key needs its secret, and a secret its access key.")
        return boto3.session.Session(
            aws_access_key_id=options.access_key, aws_secret_access_key=options.secret_key
        )
    if options.credentials_file is not None:
        path = options.credentials_file
        if not path.is_file():
            raise UsageError(
                f"The credentials file {path} does not exist.",
                "It is an AWS credentials file: [default], aws_access_key_id = ..., "
                "aws_secret_access_key = ...",
            )
        import botocore.session  # noqa: PLC0415 (module docstring)

        core = botocore.session.Session()
        core.set_config_variable("credentials_file", str(path))
        # The shared config file may name another profile's keys; only this file counts.
        core.set_config_variable("config_file", os.devnull)
        return boto3.session.Session(botocore_session=core)
    return boto3.session.Session()


def make_client(options: S3Options | None = None) -> Any:
    """An S3 client: ``options``' endpoint (else ``AWS_ENDPOINT_URL``, which boto3 reads
    itself), credentials (:class:`S3Options`), path-style addressing (non-AWS endpoints have
    no bucket host names), TLS verified against the system CAs or ``options.ca_file``."""
    options = options or S3Options()
    config = _botocore_config(
        s3={"addressing_style": "path"},
        retries={"mode": "standard", "max_attempts": 4},
        max_pool_connections=INDEX_READERS + 8,
        connect_timeout=10,
        read_timeout=60,
        # boto3 otherwise sends PUT bodies over https as aws-chunked with a trailing
        # checksum, which radosgw 16 refuses (MissingContentLength); plain http never did.
        # Packs and stored objects carry their own BLAKE3 checksums (docs/FORMAT.md).
        request_checksum_calculation="when_required",
        response_checksum_validation="when_required",
    )
    session = _session(options)
    return session.client(
        "s3",
        endpoint_url=options.endpoint or None,
        region_name=session.region_name or "us-east-1",
        config=config,
        verify=options.verify(),
    )


def _error_code(error: Exception) -> tuple[str, int]:
    response = getattr(error, "response", None) or {}
    code = str(response.get("Error", {}).get("Code", ""))
    status = int(response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)
    return code, status


_DENIED = {"AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "AllAccessDisabled"}
_MISSING = {"NoSuchKey", "404", "NotFound", "NoSuchBucket"}


class S3Store(Store):
    """A repository under ``s3://bucket/prefix`` (module docstring)."""

    def __init__(self, bucket: str, prefix: str = "", *, client: Any = None) -> None:
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.client = client if client is not None else make_client()
        self._made_bucket = False  # by create(): a failed init deletes it again
        # The chunk map: id -> pack number << 64 | offset << 32 | length; loaded on the
        # first chunk operation, then kept up to date by this process's own packs.
        self._chunks: dict[bytes, int] | None = None
        self._packs: list[tuple[str, float]] = []  # pack number -> (hex name, mtime)
        self._pack_numbers: dict[str, int] = {}
        self._pack_sizes: dict[str, int] = {}  # pack -> the size its index records
        self._map_lock = threading.Lock()
        self._load_lock = threading.RLock()  # one loader of pack indexes at a time
        self._loaded = False
        self._aside: dict[bytes, tuple[str, int, int]] | None = None  # get_set_aside
        # The pack being filled: its bytes and entries (id, offset, length, checksum).
        self._buffer = bytearray()
        self._entries: _Entries = []
        self._pending: set[bytes] = set()
        self._pack_lock = threading.Lock()
        # Packs being written by other threads: flush_chunks waits for them.
        self._writing = 0
        self._written = threading.Condition(self._pack_lock)
        self._write_error: BaseException | None = None

    @classmethod
    def from_url(cls, url: str, options: S3Options | None = None) -> S3Store:
        bucket, prefix = parse_url(url)
        return cls(bucket, prefix, client=make_client(options))

    def __repr__(self) -> str:
        return f"S3Store({self.url!r})"

    @property
    def url(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}" if self.prefix else f"s3://{self.bucket}"

    # --- keys and errors --------------------------------------------------------------------

    def _key(self, relative: str) -> str:
        return f"{self.prefix}/{relative}" if self.prefix else relative

    def _call(self, what: str, operation: str, **kwargs: Any) -> Any:
        """One request; errors as the Store interface has them (FileNotFoundError, OSError)
        or, for what the person must fix (credentials, endpoint), an :class:`S3Error`."""
        exceptions = _exceptions()
        try:
            return getattr(self.client, operation)(**kwargs)
        except exceptions.ClientError as e:
            code, status = _error_code(e)
            if code in _MISSING or status == 404:
                raise FileNotFoundError(errno.ENOENT, f"{what} does not exist", what) from None
            if code == "InvalidRange" or status == 416:
                raise _PastTheEnd(errno.EINVAL, f"{what}: range past the end", what) from None
            if code == "PreconditionFailed" or status == 412:
                raise FileExistsError(errno.EEXIST, f"{what} exists", what) from None
            if code in _DENIED or status == 403:
                raise S3Error(
                    f"The object store refused access to {self.url} ({code or status}).",
                    "Check the access key and secret (--credentials FILE, AWS_ACCESS_KEY_ID "
                    "and AWS_SECRET_ACCESS_KEY, or ~/.aws/credentials) and the bucket's policy.",
                ) from None
            raise OSError(errno.EIO, f"{operation} {what}: {code or status}", what) from e
        except exceptions.NoCredentialsError:
            raise S3Error(
                f"No credentials for {self.url}.",
                "Give --credentials FILE, set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or "
                "write ~/.aws/credentials.",
            ) from None
        except exceptions.EndpointConnectionError as e:
            raise S3Error(
                f"Cannot reach the object store for {self.url}: {e}.",
                "Check the endpoint (--s3-endpoint or AWS_ENDPOINT_URL) and the network.",
            ) from None
        except exceptions.SSLError as e:
            raise S3Error(
                f"The object store's TLS certificate for {self.url} is not trusted: {e}.",
                "If the store uses its own certificate authority, give its certificate with "
                "--ca-file FILE.",
            ) from None
        except exceptions.BotoCoreError as e:
            raise OSError(errno.EIO, f"{operation} {what}: {e}", what) from e

    # --- where ------------------------------------------------------------------------------

    def describe(self, what: Name | Kind | None = None) -> str:
        if what is None:
            return self.url
        if isinstance(what, Kind):
            return f"{self.url}/{what}/"
        if what.kind is Kind.CHUNKS:
            with contextlib.suppress(FileNotFoundError):
                pack, offset, _ = self._locate(bytes.fromhex(what.key))
                return f"{self.url}/packs/{pack} (chunk {what.key} at offset {offset})"
            return f"chunk {what.key} in {self.url}"
        return f"{self.url}/{object_key(what)}"

    def reachable(self) -> bool:
        try:
            self._call(self.url, "head_bucket", Bucket=self.bucket)
        except FileNotFoundError:
            return False
        return True

    def create(self, kinds: Iterable[Kind]) -> None:
        """Make the bucket if it is missing; refuse a prefix that holds anything."""
        if not self.reachable():
            region = self.client.meta.region_name
            where = (
                {"CreateBucketConfiguration": {"LocationConstraint": region}}
                if region and region != "us-east-1"
                else {}
            )
            self._call(self.url, "create_bucket", Bucket=self.bucket, **where)
            self._made_bucket = True
        listing = self._call(
            self.url, "list_objects_v2", Bucket=self.bucket, Prefix=self._key(""), MaxKeys=1
        )
        if listing.get("KeyCount", 0):
            if self.exists(CONFIG):
                raise UsageError(f"{self.url} already holds a repository.")
            raise UsageError(f"{self.url} is not empty.", "Choose another bucket or prefix.")

    def undo_create(self) -> None:
        """Delete what a failed init wrote under the prefix, and the bucket if init made it
        (a bucket left behind would hold the name and make the next try say "not empty")."""
        root = self._key("")
        keys = [item["Key"] for item in self._objects(root)]
        for start in range(0, len(keys), 1000):
            batch = [{"Key": key} for key in keys[start : start + 1000]]
            self._call(self.url, "delete_objects", Bucket=self.bucket, Delete={"Objects": batch})
        if self._made_bucket:
            self._call(self.url, "delete_bucket", Bucket=self.bucket)
            self._made_bucket = False

    def has_kind(self, kind: Kind) -> bool:
        listing = self._call(
            self.describe(kind),
            "list_objects_v2",
            Bucket=self.bucket,
            Prefix=self._key(f"{kind}/"),
            MaxKeys=1,
        )
        return bool(listing.get("KeyCount", 0))

    # --- objects ----------------------------------------------------------------------------

    def put(self, name: Name, *parts: bytes | bytearray, if_absent: bool = False) -> bool:
        if name.kind is Kind.CHUNKS:
            raise UsageError("Chunks go into packs: put_chunk, not put.")
        body = b"".join(parts)
        extra = {"IfNoneMatch": "*"} if if_absent else {}
        try:
            self._call(
                self.describe(name),
                "put_object",
                Bucket=self.bucket,
                Key=self._key(object_key(name)),
                Body=body,
                **extra,
            )
        except FileExistsError:
            if if_absent:
                return False
            raise
        return True

    def get(self, name: Name) -> bytes:
        if name.kind is Kind.CHUNKS:
            pack, offset, length = self._locate(bytes.fromhex(name.key))
            return self._get_pack_range(pack, offset, length)
        response = self._call(
            self.describe(name), "get_object", Bucket=self.bucket, Key=self._key(object_key(name))
        )
        return bytes(response["Body"].read())

    def get_range(self, name: Name, offset: int, length: int) -> bytes:
        if length <= 0:
            return b""
        if name.kind is Kind.CHUNKS:
            pack, start, size = self._locate(bytes.fromhex(name.key))
            length = max(0, min(length, size - offset))
            return self._get_pack_range(pack, start + offset, length) if length else b""
        # One request, no HEAD first: S3 cuts a range at the object's end (416 past it).
        try:
            return self._range(self.describe(name), self._key(object_key(name)), offset, length)
        except _PastTheEnd:
            self.stat(name)  # FileNotFoundError if it is not there at all
            return b""

    def _get_pack_range(self, pack: str, offset: int, length: int) -> bytes:
        return self._range(f"{self.url}/packs/{pack}", self._key(f"packs/{pack}"), offset, length)

    def _range(self, what: str, key: str, offset: int, length: int) -> bytes:
        response = self._call(
            what,
            "get_object",
            Bucket=self.bucket,
            Key=key,
            Range=f"bytes={offset}-{offset + length - 1}",
        )
        return bytes(response["Body"].read())

    def stat(self, name: Name) -> ObjectInfo:
        if name.kind is Kind.CHUNKS:
            chunk_id = bytes.fromhex(name.key)
            pack, _, length = self._locate(chunk_id)
            return ObjectInfo(name, length, self._packs[self._pack_numbers[pack]][1])
        response = self._call(
            self.describe(name), "head_object", Bucket=self.bucket, Key=self._key(object_key(name))
        )
        return ObjectInfo(
            name, int(response["ContentLength"]), response["LastModified"].timestamp()
        )

    def exists(self, name: Name) -> bool:
        if name.kind is Kind.CHUNKS:
            return bytes.fromhex(name.key) in self._chunk_map()
        return super().exists(name)

    def list(self, kind: Kind, prefix: str = "") -> Iterator[ObjectInfo]:
        if kind is Kind.CHUNKS:
            chunks = self._chunk_map()
            with self._map_lock:
                found = [(i, v) for i, v in chunks.items() if i.hex().startswith(prefix)]
            for chunk_id, value in found:
                mtime = self._packs[value >> (_OFFSET_BITS + _LENGTH_BITS)][1]
                length = value & ((1 << _LENGTH_BITS) - 1)
                yield ObjectInfo(Name(kind, chunk_id.hex()), length, mtime)
            return
        if kind is Kind.CONFIG:
            with contextlib.suppress(FileNotFoundError):
                yield self.stat(CONFIG)
            return
        suffix = PurePosixPath(object_key(Name(kind, "x"))).suffix
        root = self._key(f"{kind}/")
        for item in self._objects(root + prefix):
            key = item["Key"][len(root) :]
            if suffix:
                if not key.endswith(suffix):
                    continue
                key = key.removesuffix(suffix)
            yield ObjectInfo(Name(kind, key), int(item["Size"]), item["LastModified"].timestamp())

    def _objects(self, prefix: str) -> Iterator[dict[str, Any]]:
        token: dict[str, str] = {}
        while True:
            page = self._call(
                self.url, "list_objects_v2", Bucket=self.bucket, Prefix=prefix, **token
            )
            yield from page.get("Contents", [])
            if not page.get("IsTruncated"):
                return
            token = {"ContinuationToken": page["NextContinuationToken"]}

    def delete(self, name: Name, *, durable: bool = True) -> bool:
        if name.kind is Kind.CHUNKS:
            raise self._local_only("deleting chunks (gc)")
        if not self.exists(name):
            return False
        self._call(
            self.describe(name),
            "delete_object",
            Bucket=self.bucket,
            Key=self._key(object_key(name)),
        )
        return True

    def move(
        self, source: Name, dest: Name, *, if_absent: bool = False, durable: bool = False
    ) -> bool:
        raise self._local_only("moving objects (gc's trash)")

    def groups(self, kind: Kind) -> Iterator[ObjectInfo]:
        root = self._key(f"{kind}/")
        token: dict[str, str] = {}
        while True:
            page = self._call(
                self.describe(kind),
                "list_objects_v2",
                Bucket=self.bucket,
                Prefix=root,
                Delimiter="/",
                **token,
            )
            for common in page.get("CommonPrefixes", []):
                group = common["Prefix"][len(root) :].rstrip("/")
                yield ObjectInfo(Name(kind, group))
            if not page.get("IsTruncated"):
                return
            token = {"ContinuationToken": page["NextContinuationToken"]}

    def make_group(self, kind: Kind, group: str) -> None:
        """Nothing to make: an object store has no directories."""

    def delete_group(self, kind: Kind, group: str) -> None:
        """Delete every object under ``kind/group/`` (gc: a dead backup's indexes)."""
        if kind is Kind.CHUNKS:
            raise self._local_only("deleting chunks one by one")
        for key, _, _ in list(self.raw_objects(f"{kind}/{group}/")):
            self.raw_delete(key)

    def _local_only(self, what: str) -> UsageError:
        return UsageError(
            f"{self.url} is an object store: {what} is not supported there yet.",
            "Object-store repositories take backups, restores, verify, snapshots and gc; "
            "this needs a repository directory.",
        )

    # --- leases -----------------------------------------------------------------------------

    @contextlib.contextmanager
    def lease(self, kind: str) -> Iterator[leases.LeaseHandle]:
        """A writer or reader lease as an object ``leases/<uuid>.json`` (host, pid, times),
        its heartbeat rewritten every 30 s, removed at the end. gc keeps superseded packs
        until every lease alive when it superseded them has ended (s3gc.py)."""
        handle = ObjectLease(self, Name(Kind.LEASES, uuid.uuid4().hex), kind)
        handle.start()
        try:
            yield handle
        finally:
            handle.stop()

    def live_leases(self, kinds: tuple[str, ...] = ("writer", "reader")) -> _Leases:
        """The lease objects of processes still running (docs/FORMAT.md, "Leases"): one of
        a process gone from this host, or one whose heartbeat is older than
        :data:`leases.STALE_AFTER`, is stale and deleted. An unreadable one counts as a live
        writer of unknown parent until its object is that old."""
        now = time.time()
        found = []
        for key, _, mtime in list(self.raw_objects("leases/")):
            name = PurePosixPath(key).name
            try:
                lease = _parse_lease(name, self.raw_get(key))
            except FileNotFoundError:
                continue  # ended meanwhile
            if lease is None:
                if now - mtime > leases.STALE_AFTER:
                    with contextlib.suppress(FileNotFoundError):
                        self.raw_delete(key)
                    continue
                lease = leases.Lease(Path(name), leases.UNKNOWN, "", 0, "", mtime, mtime)
            elif lease.stale(now):
                with contextlib.suppress(FileNotFoundError):
                    self.raw_delete(key)
                continue
            if lease.kind in kinds or lease.kind == leases.UNKNOWN:
                found.append(lease)
        return found

    @contextlib.contextmanager
    def gc_lease(self) -> Iterator[leases.LeaseHandle]:
        """The one gc lease, ``leases/gc`` (put with ``If-None-Match: *``): :class:`Busy`
        while a live gc holds it; a stale one (leases.Lease.stale) is taken over."""
        name = Name(Kind.LEASES, GC_LEASE)
        for _ in range(2):
            handle = ObjectLease(self, name, "gc")
            handle.record["heartbeat"] = time.time()
            if self.put(name, json.dumps(handle.record).encode(), if_absent=True):
                break
            try:
                held = _parse_lease(GC_LEASE, self.get(name))
            except FileNotFoundError:
                continue
            if held is None or held.stale():
                with contextlib.suppress(FileNotFoundError):
                    self.delete(name)
                continue
            raise Busy(
                f"Garbage collection of {self.url} is already running "
                f"(host {held.host}, pid {held.pid}).",
                "Wait for it to finish.",
            )
        else:
            raise Busy(f"Could not take the garbage collection lease of {self.url}.")
        handle.start()
        try:
            yield handle
        finally:
            handle.stop()

    # --- the chunk map ----------------------------------------------------------------------

    def _chunk_map(self) -> dict[bytes, int]:
        chunks = self._chunks
        if chunks is not None and self._loaded:
            return chunks
        with self._load_lock:  # nobody sees the map before it is complete
            if self._chunks is None:
                self._load_new_packs(into={})
                self._loaded = True
            assert self._chunks is not None
            return self._chunks

    def _load_new_packs(self, into: dict[bytes, int] | None = None) -> None:
        """Read the pack indexes this process has not seen (the first chunk operation reads
        them all, INDEX_READERS at a time, ``into`` a new map)."""
        with self._load_lock:
            self._load_packs(into)

    def _load_packs(self, into: dict[bytes, int] | None) -> None:
        root = self._key("packs/")
        found = []
        for item in self._objects(root):
            key = item["Key"][len(root) :]
            if key.endswith(".idx") and key.removesuffix(".idx") not in self._pack_numbers:
                found.append((key.removesuffix(".idx"), item["LastModified"].timestamp()))
        loaded = []
        if found:
            with ThreadPoolExecutor(INDEX_READERS, thread_name_prefix="pack-index") as pool:
                loaded = list(pool.map(lambda f: self._read_pack_index(f[0]), found))
        if into is not None:
            self._chunks = into
        for (pack, mtime), entries in zip(found, loaded, strict=True):
            if entries is not None:
                self._add_pack(pack, mtime, entries)

    def _read_pack_index(self, pack: str) -> _Places | None:
        data = self.get_pack_index(pack)
        try:
            (size, _), entries = decode_pack_index(data, pack)
        except ValueError:
            return None  # a damaged index: its chunks are missing (verify names them)
        with self._map_lock:
            self._pack_sizes[pack] = size
        return [(i, o, n) for i, o, n, _ in entries]

    def get_pack_index(self, pack: str) -> bytes:
        """The raw pack index of pack ``pack`` (hex)."""
        what = f"{self.url}/packs/{pack}.idx"
        return bytes(
            self._call(what, "get_object", Bucket=self.bucket, Key=self._key(f"packs/{pack}.idx"))[
                "Body"
            ].read()
        )

    def _add_pack(self, pack: str, mtime: float, entries: _Places) -> None:
        assert self._chunks is not None
        with self._map_lock:
            number = self._pack_numbers.get(pack)
            if number is None:
                number = len(self._packs)
                self._packs.append((pack, mtime))
                self._pack_numbers[pack] = number
            high = number << (_OFFSET_BITS + _LENGTH_BITS)
            for chunk_id, offset, length in entries:
                self._chunks.setdefault(chunk_id, high | offset << _LENGTH_BITS | length)

    def _locate(self, chunk_id: bytes) -> tuple[str, int, int]:
        """(pack, offset, length) of a chunk; FileNotFoundError when no pack holds it."""
        chunks = self._chunk_map()
        value = chunks.get(chunk_id)
        if value is None:
            # Another process may have written it since the open.
            self._load_new_packs()
            value = chunks.get(chunk_id)
        if value is None:
            text = f"chunk {chunk_id.hex()} in {self.url}"
            raise FileNotFoundError(errno.ENOENT, f"{text} does not exist", text)
        pack = self._packs[value >> (_OFFSET_BITS + _LENGTH_BITS)][0]
        offset = (value >> _LENGTH_BITS) & ((1 << _OFFSET_BITS) - 1)
        return pack, offset, value & ((1 << _LENGTH_BITS) - 1)

    def pack_problems(self) -> dict[str, str]:
        """Packs whose object is missing from the listing or listed with another size than
        its pack index records (the keyless check without downloading: check.py)."""
        self._chunk_map()
        root = self._key("packs/")
        listed = {
            item["Key"][len(root) :]: int(item["Size"])
            for item in self._objects(root)
            if not item["Key"].endswith(".idx")
        }
        with self._map_lock:
            expected = dict(self._pack_sizes)
        problems = {}
        for pack, size in expected.items():
            if pack not in listed:
                problems[pack] = "is missing"
            elif listed[pack] != size:
                problems[pack] = f"is {listed[pack]} bytes, its index says {size}"
        return problems

    def chunks_in_packs(self, packs: Iterable[str]) -> set[bytes]:
        """The chunk ids the chunk map finds in ``packs``."""
        chunks = self._chunk_map()
        with self._map_lock:
            numbers = {self._pack_numbers[p] for p in packs if p in self._pack_numbers}
            shift = _OFFSET_BITS + _LENGTH_BITS
            return {i for i, v in chunks.items() if v >> shift in numbers}

    def drop_packs(self, packs: Iterable[str]) -> None:
        """Delete packs and their indexes (a repair that writes their chunks again), and
        forget the chunk map: the next chunk operation reads the pack indexes again."""
        for pack in packs:
            for key in (f"packs/{pack}.idx", f"packs/{pack}"):
                self._call(
                    f"{self.url}/{key}", "delete_object", Bucket=self.bucket, Key=self._key(key)
                )
        with self._load_lock, self._map_lock:
            self._chunks, self._loaded = None, False
            self._packs, self._pack_numbers, self._pack_sizes = [], {}, {}
            self._aside = None

    def chunk_place(self, chunk_id: bytes) -> tuple[str, int, int] | None:
        """(pack, offset, length) of a stored chunk, None if no pack holds it: lets a reader
        join neighbouring chunks of a pack into one GET (:meth:`get_pack_run`)."""
        try:
            return self._locate(chunk_id)
        except FileNotFoundError:
            return None

    def get_pack_run(self, pack: str, offset: int, lengths: Sequence[int]) -> _Pieces:
        """Chunks that lie end to end in ``pack`` from ``offset``, in one ranged GET."""
        data = self._get_pack_range(pack, offset, sum(lengths))
        pieces, at = [], 0
        for length in lengths:
            pieces.append(data[at : at + length])
            at += length
        return pieces

    def pack_names(self) -> tuple[str, ...]:
        """The packs the chunk map knows (hex names)."""
        self._chunk_map()
        with self._map_lock:
            return tuple(pack for pack, _ in self._packs)

    # --- the chunk batch --------------------------------------------------------------------

    def put_chunk(self, chunk_id: bytes, data: bytes) -> bool:
        """Append an encoded chunk to the pack being filled; the pack is written once it
        holds PACK_BYTES (by this thread, while the others fill the next one)."""
        if chunk_id in self._chunk_map():
            return False
        with self._pack_lock:
            if chunk_id in self._pending:
                return False
            self._pending.add(chunk_id)
            offset = len(self._buffer)
            self._buffer += data
            self._entries.append((chunk_id, offset, len(data), blake3.blake3(data).digest()))
            full = len(self._buffer) >= PACK_BYTES
            batch = self._take_batch() if full else None
        if batch is not None:
            self._write_batch(*batch)
        return True

    def _take_batch(self) -> tuple[bytes, _Entries] | None:
        """The pack being filled, handed to a writer (with ``_pack_lock`` held)."""
        if not self._entries:
            return None
        batch = bytes(self._buffer), self._entries
        self._buffer, self._entries = bytearray(), []
        self._writing += 1
        return batch

    def _write_batch(self, pack: bytes, entries: _Entries) -> None:
        """Write a pack, then its index (the index names only complete packs), then give its
        chunks their names in the chunk map."""
        try:
            digest = blake3.blake3(pack).digest()
            name = digest.hex()
            self._call(
                f"{self.url}/packs/{name}",
                "put_object",
                Bucket=self.bucket,
                Key=self._key(f"packs/{name}"),
                Body=pack,
            )
            index = encode_pack_index(len(pack), digest, entries)
            self._call(
                f"{self.url}/packs/{name}.idx",
                "put_object",
                Bucket=self.bucket,
                Key=self._key(f"packs/{name}.idx"),
                Body=index,
            )
            self._add_pack(name, time.time(), [(i, o, n) for i, o, n, _ in entries])
        except BaseException as e:
            with self._pack_lock:
                self._write_error = e
            raise
        finally:
            with self._pack_lock:
                self._pending.difference_update(i for i, _, _, _ in entries)
                self._writing -= 1
                self._written.notify_all()

    def flush_chunks(self) -> None:
        with self._pack_lock:
            batch = self._take_batch()
        if batch is not None:
            self._write_batch(*batch)
        with self._pack_lock:
            while self._writing:
                self._written.wait()
            error, self._write_error = self._write_error, None
        if error is not None:
            raise HourglassError(
                f"A pack of new chunks could not be written to {self.url}: {error}."
            ) from error

    def discard_chunks(self) -> None:
        with self._pack_lock:
            self._pending.difference_update(i for i, _, _, _ in self._entries)
            self._buffer, self._entries = bytearray(), []

    def sync_chunks(self) -> None:
        """Nothing to do: a pack is durable once its PUT returned."""

    # --- for gc (imaging/repository/s3gc.py) ------------------------------------------------

    def raw_objects(self, relative: str) -> Iterator[tuple[str, int, float]]:
        """(key below the prefix, size, mtime) of every object whose key starts with
        ``relative``."""
        root = self._key("")
        for item in self._objects(self._key(relative)):
            key = item["Key"][len(root) :] if root else item["Key"]
            yield key, int(item["Size"]), item["LastModified"].timestamp()

    def raw_get(self, relative: str) -> bytes:
        what = f"{self.url}/{relative}"
        return bytes(
            self._call(what, "get_object", Bucket=self.bucket, Key=self._key(relative))[
                "Body"
            ].read()
        )

    def raw_put(self, relative: str, data: bytes, *, if_absent: bool = False) -> bool:
        extra = {"IfNoneMatch": "*"} if if_absent else {}
        try:
            self._call(
                f"{self.url}/{relative}",
                "put_object",
                Bucket=self.bucket,
                Key=self._key(relative),
                Body=data,
                **extra,
            )
        except FileExistsError:
            if if_absent:
                return False
            raise
        return True

    def raw_stat(self, relative: str) -> float | None:
        """The mtime of an object, None if there is none."""
        try:
            response = self._call(
                f"{self.url}/{relative}", "head_object", Bucket=self.bucket, Key=self._key(relative)
            )
        except FileNotFoundError:
            return None
        return float(response["LastModified"].timestamp())

    def raw_delete(self, relative: str) -> None:
        self._call(
            f"{self.url}/{relative}", "delete_object", Bucket=self.bucket, Key=self._key(relative)
        )

    def pack_indexes(self) -> dict[str, tuple[float, _Entries | None]]:
        """Every pack index under ``packs/``, read now (INDEX_READERS at a time): pack ->
        (mtime, entries), entries None for a damaged index."""
        found = [
            (key.removeprefix("packs/").removesuffix(".idx"), mtime)
            for key, _, mtime in self.raw_objects("packs/")
            if key.endswith(".idx")
        ]

        def read(pack: str) -> _Entries | None:
            try:
                return decode_pack_index(self.get_pack_index(pack), pack)[1]
            except ValueError:
                return None
            except FileNotFoundError:
                return None

        with ThreadPoolExecutor(INDEX_READERS, thread_name_prefix="pack-index") as pool:
            loaded = list(pool.map(read, [pack for pack, _ in found]))
        return {pack: (mtime, e) for (pack, mtime), e in zip(found, loaded, strict=True)}

    def get_set_aside(self, name: Name) -> bytes:
        """A chunk of a pack gc superseded but has not deleted (its index in ``trash/``):
        a restore of a snapshot forgotten meanwhile still reads it, as from a local trash.
        The trashed indexes are read at the first call (a pack superseded later was in
        this process's chunk map already: its lease was in that gc's seal)."""
        if name.kind is Kind.CHUNKS:
            with self._load_lock:
                if self._aside is None:
                    self._aside = self._load_aside()
            place = self._aside.get(bytes.fromhex(name.key))
            if place is not None:
                return self._get_pack_range(*place)
        return super().get_set_aside(name)

    def _load_aside(self) -> dict[bytes, tuple[str, int, int]]:
        aside: dict[bytes, tuple[str, int, int]] = {}
        for key, _, _ in list(self.raw_objects("trash/")):
            if key.endswith(".idx"):
                pack = PurePosixPath(key).name.removesuffix(".idx")
                with contextlib.suppress(FileNotFoundError, ValueError):
                    for chunk_id, offset, length, _ in decode_pack_index(self.raw_get(key), pack)[
                        1
                    ]:
                        aside.setdefault(chunk_id, (pack, offset, length))
        return aside

    def check_packs(self) -> Iterator[tuple[str, str | None, int]]:
        """Keyless verify of every pack: (what, problem or None, bytes) per chunk, and a
        line for a pack or index that is damaged as a whole. Each pack is read once, whole,
        and checked against its BLAKE3 name, then each chunk against the index's BLAKE3
        and its own trailer (docs/FORMAT.md, "Object stores")."""
        packs = sorted(self.pack_indexes())

        def check(pack: str) -> list[tuple[str, str | None, int]]:
            where = f"{self.url}/packs/{pack}"
            try:
                entries = decode_pack_index(self.get_pack_index(pack), pack)[1]
            except ValueError as e:
                return [(f"{where}.idx", f"{e}; its chunks cannot be found", 0)]
            except FileNotFoundError:
                return []  # superseded by a gc meanwhile
            try:
                data = self.get_pack(pack)
            except FileNotFoundError:
                return [(where, "missing (its index names it)", 0)]
            found: list[tuple[str, str | None, int]] = []
            if blake3.blake3(data).hexdigest() != pack:
                found.append((where, "its BLAKE3 does not match its name (bit rot)", 0))
            for chunk_id, offset, length, digest in entries:
                body = data[offset : offset + length]
                what = f"{where}: chunk {chunk_id.hex()} at offset {offset}"
                problem = None
                if len(body) != length:
                    problem = "cut short: the pack ends before it"
                elif blake3.blake3(body).digest() != digest or not codec.trailer_ok(body):
                    problem = "its checksum does not match (bit rot)"
                found.append((what, problem, len(body)))
            return found

        with ThreadPoolExecutor(4, thread_name_prefix="verify-pack") as pool:
            for results in pool.map(check, packs):
                yield from results

    def write_pack(self, chunks: Iterable[tuple[bytes, bytes]]) -> str:
        """Write ``chunks`` (id, encoded bytes) as one new pack and its index, whether or
        not the chunk map knows them (gc's repack); returns the pack's name."""
        buffer = bytearray()
        entries: _Entries = []
        for chunk_id, data in chunks:
            entries.append((chunk_id, len(buffer), len(data), blake3.blake3(data).digest()))
            buffer += data
        pack = bytes(buffer)
        self._chunk_map()  # the new pack joins it
        with self._pack_lock:
            self._writing += 1
        self._write_batch(pack, entries)
        with self._pack_lock:
            error, self._write_error = self._write_error, None
        if error is not None:
            raise HourglassError(f"A new pack could not be written to {self.url}: {error}.")
        return blake3.blake3(pack).digest().hex()

    def get_pack(self, pack: str) -> bytes:
        """The whole pack ``pack`` (hex)."""
        return self.raw_get(f"packs/{pack}")


class ObjectLease(leases.LeaseHandle):
    """A lease kept as an object in the store, not as a file (S3Store.lease)."""

    def __init__(self, store: S3Store, name: Name, kind: str) -> None:
        # The path only gives the lease its name: the record is an object (_write, stop).
        super().__init__(Path(object_key(name)), _lease_record(kind))
        self.store = store
        self.object = name

    def _write(self) -> None:
        self.record["heartbeat"] = time.time()
        self.store.put(self.object, json.dumps(self.record).encode())

    def _run(self) -> None:
        while not self._stop.wait(leases.HEARTBEAT_EVERY):
            with contextlib.suppress(OSError, HourglassError), self._lock:
                self._write()  # a missed heartbeat is retried at the next one

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()
        with contextlib.suppress(OSError, HourglassError):
            self.store.delete(self.object)


def _parse_lease(name: str, data: bytes) -> leases.Lease | None:
    try:
        record = json.loads(data)
        parent = record.get("parent", leases.PENDING if record["kind"] == "writer" else None)
        return leases.Lease(
            path=Path(name),
            kind=str(record["kind"]),
            host=str(record["host"]),
            pid=int(record["pid"]),
            boot=str(record["boot_id"]),
            started=float(record["started"]),
            heartbeat=float(record["heartbeat"]),
            parent=None if parent is None else str(parent),
        )
    except (ValueError, KeyError, TypeError, AttributeError):
        return None


def _lease_record(kind: str) -> dict[str, object]:
    now = time.time()
    record: dict[str, object] = {
        "kind": kind,
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "boot_id": leases.boot_id(),
        "started": now,
        "heartbeat": now,
    }
    if kind == "writer":
        record["parent"] = leases.PENDING
    return record


# --- the pack index (docs/FORMAT.md, "Object stores") ---------------------------------------


def encode_pack_index(pack_size: int, pack_digest: bytes, entries: _Entries) -> bytes:
    header = PACK_INDEX_HEADER.pack(
        PACK_INDEX_MAGIC, PACK_INDEX_VERSION, len(entries), pack_size, pack_digest
    )
    body = b"".join(PACK_INDEX_ENTRY.pack(*entry) for entry in entries)
    return header + body + blake3.blake3(header + body).digest()


def decode_pack_index(data: bytes, pack: str) -> tuple[tuple[int, bytes], _Entries]:
    """((pack size, pack BLAKE3), [(chunk id, offset, length, chunk BLAKE3)]); ValueError
    for an index that is damaged or does not describe pack ``pack``."""
    if len(data) < PACK_INDEX_HEADER.size + TRAILER_SIZE:
        raise ValueError(f"the index of pack {pack} is truncated")
    if blake3.blake3(data[:-TRAILER_SIZE]).digest() != data[-TRAILER_SIZE:]:
        raise ValueError(f"the index of pack {pack} is damaged (checksum mismatch)")
    magic, version, count, size, digest = PACK_INDEX_HEADER.unpack_from(data)
    if magic != PACK_INDEX_MAGIC or version != PACK_INDEX_VERSION:
        raise ValueError(f"the index of pack {pack} is not a version 1 pack index")
    if len(data) != PACK_INDEX_HEADER.size + count * PACK_INDEX_ENTRY.size + TRAILER_SIZE:
        raise ValueError(f"the index of pack {pack} has the wrong length")
    if digest.hex() != pack:
        raise ValueError(f"the index of pack {pack} describes another pack")
    entries = [
        PACK_INDEX_ENTRY.unpack_from(data, PACK_INDEX_HEADER.size + n * PACK_INDEX_ENTRY.size)
        for n in range(count)
    ]
    for _, offset, length, _ in entries:
        if offset + length > size:
            raise ValueError(f"the index of pack {pack} points past the pack's end")
    return (size, digest), entries
