"""The receiver's side of the lab server's HTTP: one kept-alive connection per thread, and
the repository's files (read-only) as a :class:`Store`, so a receiver opens the repository
with :meth:`Repository.open_with_master` and the session's key and runs the restore as it
is (docs/LAB.md)."""

from __future__ import annotations

import contextlib
import errno
import http.client
import json
import threading
import urllib.parse
from collections.abc import Iterable, Iterator
from typing import Any

from imaging.errors import HourglassError, UsageError
from imaging.repository.leases import LeaseHandle
from imaging.repository.storage import Kind, Name, ObjectInfo, Store

TIMEOUT = 10.0


class LabClient:
    """GET and POST to the lab server at ``url`` (``http://HOST:PORT``)."""

    def __init__(self, url: str) -> None:
        parts = urllib.parse.urlsplit(url)
        if parts.scheme != "http" or not parts.hostname:
            raise UsageError(f"{url} is not a lab server address (http://HOST:PORT).")
        self.url = url
        self.host = parts.hostname
        self.port = parts.port or 80
        self._local = threading.local()

    def _connection(self) -> http.client.HTTPConnection:
        conn: http.client.HTTPConnection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._local.conn = http.client.HTTPConnection(
                self.host, self.port, timeout=TIMEOUT
            )
        return conn

    def request(self, method: str, path: str, body: bytes | None = None) -> tuple[int, bytes]:
        """The status and body; OSError when the server cannot be reached (after one retry
        on a fresh connection: a kept-alive one may have been closed by the server)."""
        for attempt in (0, 1):
            conn = self._connection()
            try:
                conn.request(method, path, body=body)
                response = conn.getresponse()
                return response.status, response.read()
            except (OSError, http.client.HTTPException) as e:
                conn.close()
                self._local.conn = None
                if attempt:
                    if isinstance(e, OSError):
                        raise
                    raise OSError(errno.EIO, f"{self.url}{path}: {e}") from e
        raise AssertionError("unreachable")

    def get(self, path: str) -> bytes:
        status, body = self.request("GET", path)
        if status == 404:
            raise FileNotFoundError(errno.ENOENT, "not on the lab server", f"{self.url}{path}")
        if status != 200:
            raise OSError(errno.EIO, f"{self.url}{path}: HTTP {status}")
        return body

    def post(self, path: str, value: Any) -> bytes:
        status, body = self.request("POST", path, json.dumps(value).encode())
        if status == 404:
            raise FileNotFoundError(errno.ENOENT, "not on the lab server", f"{self.url}{path}")
        if status != 200:
            raise OSError(errno.EIO, f"{self.url}{path}: HTTP {status}")
        return body

    def post_json(self, path: str, value: Any) -> Any:
        return json.loads(self.post(path, value))


def repo_path(name: Name) -> str:
    """The URL path of a repository object on the lab server."""
    return f"/repo/{name.kind.value}/" + urllib.parse.quote(name.key, safe="")


class LabStore(Store):
    """The repository's files the lab server serves, read-only."""

    def __init__(self, client: LabClient) -> None:
        self.client = client
        self._cache: dict[Name, bytes] = {}  # indexes are read in three ranges
        self._lists: dict[Kind, list[object]] = {}

    def describe(self, what: Name | Kind | None = None) -> str:
        if what is None:
            return f"{self.client.url}/repo"
        return f"{self.client.url}/repo/{what if isinstance(what, Name) else what.value}"

    def reachable(self) -> bool:
        return True

    def _read_only(self) -> HourglassError:
        return UsageError(f"{self.describe()} is read-only: a lab receiver only restores.")

    def create(self, kinds: Iterable[Kind]) -> None:
        raise self._read_only()

    def has_kind(self, kind: Kind) -> bool:
        return kind in (Kind.CONFIG, Kind.KEYS, Kind.SNAPSHOTS, Kind.INDEXES, Kind.CHUNKS)

    def put(self, name: Name, *parts: bytes | bytearray, if_absent: bool = False) -> bool:
        raise self._read_only()

    def get(self, name: Name) -> bytes:
        if name.kind is Kind.CHUNKS:
            return self.client.get(f"/chunk/{name.key}")
        data = self._cache.get(name)
        if data is None:
            data = self._cache[name] = self.client.get(repo_path(name))
        return data

    def get_range(self, name: Name, offset: int, length: int) -> bytes:
        return self.get(name)[offset : offset + length]

    def stat(self, name: Name) -> ObjectInfo:
        return ObjectInfo(name, len(self.get(name)))

    def list(self, kind: Kind, prefix: str = "") -> Iterator[ObjectInfo]:
        if kind not in (Kind.KEYS, Kind.SNAPSHOTS):
            raise FileNotFoundError(errno.ENOENT, "not served", self.describe(kind))
        listed = self._lists.get(kind)
        if listed is None:  # the served repository does not change during a session
            listed = self._lists[kind] = json.loads(self.client.get(f"/repo/{kind.value}/"))
        for key in listed:
            if str(key).startswith(prefix):
                yield ObjectInfo(Name(kind, str(key)))

    def delete(self, name: Name, *, durable: bool = True) -> bool:
        raise self._read_only()

    @contextlib.contextmanager
    def lease(self, kind: str) -> Iterator[LeaseHandle]:
        """None of its own: the server holds a reader lease for the whole session."""
        yield None  # type: ignore[misc]

    def move(
        self, source: Name, dest: Name, *, if_absent: bool = False, durable: bool = False
    ) -> bool:
        raise self._read_only()

    def groups(self, kind: Kind) -> Iterator[ObjectInfo]:
        return iter(())

    def make_group(self, kind: Kind, group: str) -> None:
        raise self._read_only()

    def delete_group(self, kind: Kind, group: str) -> None:
        raise self._read_only()

    def put_chunk(self, chunk_id: bytes, data: bytes) -> bool:
        raise self._read_only()

    def flush_chunks(self) -> None:
        raise self._read_only()

    def discard_chunks(self) -> None:
        raise self._read_only()

    def sync_chunks(self) -> None:
        pass
