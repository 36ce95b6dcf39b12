"""The journal's records as types (docs/FORMAT.md, "File journal"): events, the state of a
path, and the segments of a repository."""

from __future__ import annotations

import base64
import stat
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from imaging.errors import FormatError

JOURNAL_KIND = "journal"
EVENT_TYPES = ("write", "create", "rename", "delete", "gap")


def source_id_of(hostname: str) -> str:
    return f"journal:{hostname}"


@dataclass(frozen=True, kw_only=True)
class Meta:
    """What ``lstat`` (and the xattrs) said of an entry."""

    ftype: str  # file, dir, symlink
    mode: int
    uid: int
    gid: int
    size: int = 0
    mtime_ns: int = 0
    ctime_ns: int = 0
    atime_ns: int = 0
    ino: int = 0
    dev: int = 0
    xattrs: Mapping[str, bytes] = field(default_factory=dict)
    target: str | None = None

    def same_as(self, other: Meta) -> bool:
        """The same entry, unchanged as far as the rescan can tell."""
        return (self.ftype, self.size, self.mtime_ns, self.ctime_ns, self.ino, self.dev) == (
            other.ftype,
            other.size,
            other.mtime_ns,
            other.ctime_ns,
            other.ino,
            other.dev,
        )


def ftype_of(mode: int) -> str | None:
    if stat.S_ISREG(mode):
        return "file"
    if stat.S_ISDIR(mode):
        return "dir"
    if stat.S_ISLNK(mode):
        return "symlink"
    return None


@dataclass(frozen=True, kw_only=True)
class Event:
    """One event of the journal. ``chunks`` are the ids themselves once read (the segment
    stores ``[start, count]`` into its index)."""

    ns: int
    type: str
    path: str
    cause: str | None = None
    meta: Meta | None = None
    chunks: tuple[bytes, ...] = ()
    new: int = 0
    to: str | None = None
    from_ns: int | None = None
    to_ns: int | None = None
    reason: str | None = None
    paths: tuple[str, ...] = ()
    detail: str | None = None

    def to_dict(self, start: int) -> dict[str, Any]:
        """The JSON object, its chunks at ``start`` in the segment's index."""
        out: dict[str, Any] = {"ns": self.ns, "type": self.type, "path": self.path}
        if self.cause:
            out["cause"] = self.cause
        m = self.meta
        if m is not None:
            out.update(ftype=m.ftype, mode=m.mode, uid=m.uid, gid=m.gid, mtime_ns=m.mtime_ns)
            if m.ftype == "file":
                out.update(
                    size=m.size, ctime_ns=m.ctime_ns, atime_ns=m.atime_ns, ino=m.ino, dev=m.dev
                )
            else:
                out.update(ino=m.ino, dev=m.dev)
            if m.xattrs:
                out["xattrs"] = {k: base64.b64encode(v).decode() for k, v in m.xattrs.items()}
            if m.target is not None:
                out["target"] = m.target
        if self.type == "write":
            out["chunks"] = [start, len(self.chunks)]
            out["new"] = self.new
        if self.to is not None:
            out["to"] = self.to
        if self.type == "gap":
            out.update(from_ns=self.from_ns, to_ns=self.to_ns, reason=self.reason)
            out["paths"] = list(self.paths)
        if self.detail:
            out["detail"] = self.detail
        return out

    @classmethod
    def from_dict(cls, d: Any, ids: list[bytes], name: str) -> Event:
        """The event of ``d``; ``ids`` is the segment's index. FormatError naming ``name``."""
        try:
            kind = d["type"]
            if kind not in EVENT_TYPES or not isinstance(d["path"], str):
                raise ValueError(kind)
            meta = None
            if "ftype" in d:
                meta = Meta(
                    ftype=str(d["ftype"]),
                    mode=int(d["mode"]),
                    uid=int(d["uid"]),
                    gid=int(d["gid"]),
                    size=int(d.get("size", 0)),
                    mtime_ns=int(d.get("mtime_ns", 0)),
                    ctime_ns=int(d.get("ctime_ns", 0)),
                    atime_ns=int(d.get("atime_ns", 0)),
                    ino=int(d.get("ino", 0)),
                    dev=int(d.get("dev", 0)),
                    xattrs={k: base64.b64decode(v) for k, v in d.get("xattrs", {}).items()},
                    target=d.get("target"),
                )
            chunks: tuple[bytes, ...] = ()
            if kind == "write":
                start, count = d["chunks"]
                if not (start >= 0 and count >= 0 and start + count <= len(ids)) or meta is None:
                    raise ValueError("chunks")
                chunks = tuple(ids[start : start + count])
            return cls(
                ns=int(d["ns"]),
                type=kind,
                path=d["path"],
                cause=d.get("cause"),
                meta=meta,
                chunks=chunks,
                new=int(d.get("new", 0)),
                to=d.get("to"),
                from_ns=d.get("from_ns"),
                to_ns=d.get("to_ns"),
                reason=d.get("reason"),
                paths=tuple(d.get("paths", ())),
                detail=d.get("detail"),
            )
        except (KeyError, TypeError, ValueError) as e:
            raise FormatError(f"{name}: a journal event cannot be read ({e!r}).") from None


@dataclass(frozen=True, kw_only=True)
class Entry:
    """A path's state in the journal: its newest metadata and, for a file, its chunks."""

    meta: Meta
    chunks: tuple[bytes, ...] = ()
    ns: int = 0
    """When this state became true (the event's ``ns``)."""

    def moved(self) -> Entry:
        return replace(self)
