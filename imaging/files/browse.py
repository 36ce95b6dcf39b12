"""Browsing one filesystem of one snapshot: what the app and ``hourglass files ls`` use."""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from datetime import UTC, datetime
from types import TracebackType
from typing import Any

from imaging.errors import HourglassError, IntegrityError
from imaging.files import paths
from imaging.files.images import image_for, resolve
from imaging.files.session import Mounted, Session
from imaging.repository.store import Repository, Snapshot

TYPES = {
    stat.S_IFREG: "file",
    stat.S_IFDIR: "dir",
    stat.S_IFLNK: "symlink",
    stat.S_IFCHR: "chardev",
    stat.S_IFBLK: "blockdev",
    stat.S_IFIFO: "fifo",
    stat.S_IFSOCK: "socket",
}


def printable(name: str) -> str:
    """A name for display and JSON: bytes that are not UTF-8 become U+FFFD."""
    return name.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


@dataclass(frozen=True)
class Entry:
    """One directory entry of a snapshot's filesystem (lstat: symlinks are not followed)."""

    name: str
    path: str
    type: str
    size: int
    mtime: datetime
    mode: int
    uid: int
    gid: int
    nlink: int
    target: str | None = None

    @classmethod
    def from_stat(cls, name: str, path: str, st: os.stat_result, target: str | None) -> Entry:
        return cls(
            name=name,
            path=path,
            type=TYPES.get(stat.S_IFMT(st.st_mode), "other"),
            size=st.st_size,
            mtime=datetime.fromtimestamp(st.st_mtime_ns / 1e9, UTC).astimezone(),
            mode=stat.S_IMODE(st.st_mode),
            uid=st.st_uid,
            gid=st.st_gid,
            nlink=st.st_nlink,
            target=target,
        )

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": printable(self.name),
            "path": printable(self.path),
            "type": self.type,
            "size": self.size,
            "mtime": self.mtime.isoformat(),
            "mode": f"{self.mode:04o}",
            "uid": self.uid,
            "gid": self.gid,
            "nlink": self.nlink,
            "target": None if self.target is None else printable(self.target),
        }


class SnapshotBrowser:
    """A context manager holding one partition of one snapshot mounted read-only.

    ``snapshot`` is a :class:`Snapshot` or a selector (``latest``, an id, a local time,
    optionally ending in ``:N``); ``partition`` may be None when the snapshot holds one
    filesystem.
    """

    def __init__(
        self,
        repo: Repository,
        snapshot: Snapshot | str,
        partition: int | None = None,
        *,
        session: Session | None = None,
    ) -> None:
        self.repo = repo
        if isinstance(snapshot, str):
            self.snapshot, self.image = resolve(repo, snapshot, partition)
        else:
            self.snapshot, self.image = snapshot, image_for(snapshot, partition)
        self._own_session = session is None
        self.session = session or Session(repo)
        self.mounted: Mounted | None = None

    def __enter__(self) -> SnapshotBrowser:
        self.open()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def open(self) -> None:
        try:
            if self._own_session:
                self.session.start()
            self.mounted = self.session.mount(self.snapshot, self.image)
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        if self.mounted is not None:
            self.session.unmount(self.mounted)
            self.mounted = None
        if self._own_session:
            self.session.close()

    @property
    def root(self) -> str:
        """Where the filesystem is mounted (read-only) while the browser is open."""
        assert self.mounted is not None, "the browser is not open"
        return str(self.mounted.path)

    @property
    def fstype(self) -> str:
        assert self.mounted is not None
        return self.mounted.fstype

    def stat(self, path: str) -> Entry | None:
        """The entry at ``path``, or None when it does not exist."""
        parts = paths.split(path)
        st = self._lstat(parts)
        if st is None:
            return None
        target = None
        if stat.S_ISLNK(st.st_mode):
            fd = paths.open_dir(self.root, parts[:-1])
            try:
                target = os.readlink(parts[-1], dir_fd=fd)
            finally:
                os.close(fd)
        return Entry.from_stat(parts[-1] if parts else "/", paths.display(parts), st, target)

    def _lstat(self, parts: list[str]) -> os.stat_result | None:
        try:
            return paths.lstat_in(self.root, parts)
        except OSError as e:
            raise self._damaged(paths.display(parts), e) from None

    def listdir(self, path: str = "/") -> list[Entry]:
        """The entries of directory ``path``, sorted by name (directories are not followed)."""
        parts = paths.split(path)
        try:
            fd = paths.open_dir(self.root, parts)
        except OSError as e:
            raise self._damaged(paths.display(parts), e) from None
        entries = []
        try:
            for dirent in os.scandir(fd):
                if not paths.safe_name(dirent.name):
                    # A crafted entry ("\0..." reads as ""): it names nothing that can be
                    # opened, so it is left out rather than failing the whole listing.
                    continue
                try:
                    st = dirent.stat(follow_symlinks=False)
                    target = os.readlink(dirent.name, dir_fd=fd) if dirent.is_symlink() else None
                except OSError as e:
                    raise self._damaged(paths.display([*parts, dirent.name]), e) from None
                entries.append(
                    Entry.from_stat(dirent.name, paths.display([*parts, dirent.name]), st, target)
                )
        except OSError as e:
            raise self._damaged(paths.display(parts), e) from None
        finally:
            os.close(fd)
        entries.sort(key=lambda e: e.name)
        return entries

    def search(self, name_substring: str, limit: int = 200) -> list[str]:
        """Paths whose last name contains ``name_substring`` (case-insensitive), up to ``limit``."""
        needle = name_substring.lower()
        found: list[str] = []
        root = self.root
        for directory, dirnames, filenames in os.walk(root, followlinks=False):
            dirnames.sort()
            for name in sorted(dirnames + filenames):
                if needle in name.lower():
                    rel = os.path.relpath(os.path.join(directory, name), root)
                    found.append("/" + rel)
                    if len(found) >= limit:
                        return found
        return found

    def _damaged(self, path: str, error: OSError) -> HourglassError:
        if error.errno == 5:  # EIO: a chunk under the metadata is damaged
            chunks = {d.chunk for d in self.session.damage()}
            return IntegrityError(
                f"{path} cannot be read from the snapshot: the data under it is damaged"
                + (f" (chunk {', '.join(sorted(chunks))})." if chunks else ".")
            )
        return HourglassError(f"{path} cannot be read from the snapshot: {error.strerror}.")
