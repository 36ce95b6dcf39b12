"""Versions of a host path in the journal, and files restored as of a second."""

from __future__ import annotations

import contextlib
import os
import posixpath
from dataclasses import dataclass, field
from datetime import datetime

from imaging.errors import IntegrityError, NotFound, UsageError
from imaging.journal.records import Entry, Event
from imaging.journal.segments import Segment, iter_paths, load_segments, ordered_events, replay
from imaging.repository.store import Repository


@dataclass(frozen=True)
class JournalVersion:
    """One event of the journal that concerns a path: a version, a rename, a delete, a gap."""

    event: Event

    @property
    def time(self) -> datetime:
        return datetime.fromtimestamp(self.event.ns / 1e9).astimezone()

    def as_dict(self) -> dict[str, object]:
        e = self.event
        out: dict[str, object] = {"time": self.time.isoformat(), "ns": e.ns, "type": e.type}
        out["path"] = e.path
        if e.meta is not None:
            out["size"] = e.meta.size
        if e.to:
            out["to"] = e.to
        if e.type == "write":
            out["new"] = e.new
        if e.type == "gap":
            out.update(from_ns=e.from_ns, to_ns=e.to_ns, reason=e.reason, detail=e.detail)
        return out


def _concerns(event: Event, path: str) -> bool:
    """A version of ``path`` itself, or a rename, delete or gap that reaches it."""

    def at_or_above(p: str | None) -> bool:
        return p is not None and (p == path or path.startswith(p.rstrip("/") + "/"))

    if event.type == "gap":
        return any(at_or_above(p) for p in event.paths)
    if event.type in ("rename", "delete"):
        return at_or_above(event.path) or at_or_above(event.to)
    return event.path == path


def host_segments(repo: Repository, source: str | None) -> list[Segment]:
    """The journal of one host: ``source`` (a host name or ``journal:HOST``), else the only
    one the repository holds."""
    segments = load_segments(repo)
    if source is not None:
        return [s for s in segments if source in (s.snapshot.source, s.snapshot.source_id)]
    hosts = sorted({s.snapshot.source for s in segments})
    if len(hosts) > 1:
        raise UsageError(
            f"The repository holds the file journals of {len(hosts)} hosts: say which with "
            "--source.",
            f"Hosts: {', '.join(hosts)}.",
        )
    return segments


def journal_versions(
    repo: Repository, path: str, source: str | None = None
) -> list[JournalVersion]:
    """Every journal event of ``path`` (absolute, as on the host), oldest first."""
    path = posixpath.normpath(path)
    events = ordered_events(host_segments(repo, source))
    return [JournalVersion(e) for e in events if _concerns(e, path)]


@dataclass
class JournalRestoreResult:
    at: datetime
    dest: str
    restored: int = 0
    bytes: int = 0
    paths: list[str] = field(default_factory=list)


def as_of(when: datetime) -> int:
    """The first nanosecond after the second ``when``: events before it are "as of" it."""
    return (int(when.timestamp()) + 1) * 1_000_000_000


def restore_at(
    repo: Repository,
    paths: list[str],
    when: datetime,
    dest: str,
    *,
    overwrite: bool = False,
    source: str | None = None,
) -> JournalRestoreResult:
    """Write ``paths`` (files or trees) as the journal had them at the second ``when`` into
    ``dest``: ``dest/<name of each path>/...``, as ``cp -a`` would."""
    repo_dir = repo.store.local_path
    real_dest = os.path.realpath(dest)
    if repo_dir is not None:
        root = os.path.realpath(repo_dir)
        if real_dest == root or real_dest.startswith(root + "/"):
            raise UsageError(f"{dest} is inside the repository: nothing is restored into it.")
    state = replay(ordered_events(host_segments(repo, source)), as_of(when))
    result = JournalRestoreResult(when, real_dest)
    plan: list[tuple[str, str, Entry]] = []
    for asked in paths:
        path = posixpath.normpath(asked)
        chosen = sorted(iter_paths(state, [path]))
        if not chosen:
            raise NotFound(
                f"{path} is not in the journal as of {when.strftime('%Y-%m-%d %H:%M:%S')}."
            )
        base = posixpath.dirname(path)
        for p in chosen:
            parts = p[len(base) :].strip("/").split("/")
            if any(part in ("", ".", "..") for part in parts):
                raise IntegrityError(f"The journal names a path that is not one: {p!r}.")
            plan.append((p, os.path.join(real_dest, *parts), state[p]))
    # Symlinks last, so that nothing is ever written through one the restore made.
    plan.sort(key=lambda item: item[2].meta.ftype == "symlink")
    if not overwrite:
        existing = [t for _, t, e in plan if os.path.lexists(t) and e.meta.ftype != "dir"]
        if existing:
            raise UsageError(
                f"{existing[0]} exists ({len(existing)} in all): nothing was restored.",
                "Choose an empty directory, or --overwrite.",
            )
    os.makedirs(dest, exist_ok=True)
    dirs = []
    for host_path, target, entry in plan:
        meta = entry.meta
        _refuse_links_above(target)
        os.makedirs(os.path.dirname(target), exist_ok=True)
        if meta.ftype == "dir":
            os.makedirs(target, exist_ok=True)
            dirs.append((target, entry))
            continue
        if os.path.lexists(target) and not os.path.isdir(target):
            os.unlink(target)
        if meta.ftype == "symlink":
            if os.path.isdir(target):
                raise IntegrityError(
                    f"The journal holds {host_path} as a symbolic link and entries below it."
                )
            os.symlink(meta.target or "", target)
        else:
            written = write_entry(repo, target, entry)
            result.bytes += written
        set_meta(target, entry)
        result.restored += 1
        result.paths.append(host_path)
    for target, entry in reversed(dirs):
        set_meta(target, entry)
        result.restored += 1
    return result


def _refuse_links_above(target: str) -> None:
    """Nothing is written through a symbolic link in DEST (one that was there, or one the
    journal holds where it also holds files below)."""
    above = os.path.dirname(target)
    while not os.path.lexists(above):
        above = os.path.dirname(above)
    if os.path.realpath(above) != above:
        raise UsageError(
            f"{above} leads elsewhere through a symbolic link: nothing is written through it.",
            "Restore into an empty directory.",
        )


def write_entry(repo: Repository, target: str, entry: Entry) -> int:
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
    written = 0
    with os.fdopen(fd, "wb") as f:
        for chunk_id in entry.chunks:
            data = repo.read_chunk(chunk_id)
            f.write(data)
            written += len(data)
        f.flush()
        os.fsync(f.fileno())
    if written != entry.meta.size:
        raise UsageError(
            f"{target}: the journal's chunks hold {written} bytes, not {entry.meta.size}."
        )
    return written


def set_meta(target: str, entry: Entry) -> None:
    meta = entry.meta
    link = meta.ftype == "symlink"
    with contextlib.suppress(OSError):
        os.chown(target, meta.uid, meta.gid, follow_symlinks=False)
    if not link:
        os.chmod(target, meta.mode & 0o7777)
        for name, value in meta.xattrs.items():
            with contextlib.suppress(OSError):
                os.setxattr(target, name, value)
    with contextlib.suppress(OSError, NotImplementedError):
        os.utime(
            target,
            ns=(meta.atime_ns or meta.mtime_ns, meta.mtime_ns),
            follow_symlinks=not link,
        )
