"""Journal segments in a repository: reading them, replaying their events, writing one
(docs/FORMAT.md, "File journal", "Write order of a segment")."""

from __future__ import annotations

import contextlib
import os
import socket
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import BinaryIO

from imaging.journal.chunker import CHUNKER, chunks
from imaging.journal.records import JOURNAL_KIND, Entry, Event, Meta, source_id_of
from imaging.repository import leases
from imaging.repository.records import BackupStats, ChunkIndex, ImageRecord, Manifest
from imaging.repository.store import Repository, Snapshot
from imaging.units import local_now

INDEX_NAME = "chunks"


def is_journal(snapshot: Snapshot) -> bool:
    return snapshot.kind == JOURNAL_KIND


@dataclass(frozen=True)
class Segment:
    """A committed segment: its snapshot and its events (chunk ids resolved)."""

    snapshot: Snapshot
    events: tuple[Event, ...]

    @property
    def to_ns(self) -> int:
        journal = self.snapshot.record.journal or {}
        return int(journal.get("to_ns", 0))


def load_segments(
    repo: Repository, snapshots: Iterable[Snapshot] | None = None, *, source_id: str | None = None
) -> list[Segment]:
    """Every journal segment (of ``source_id``, when given), oldest first."""
    listed = repo.snapshots() if snapshots is None else snapshots
    result = []
    for snapshot in listed:
        if not is_journal(snapshot) or (source_id and snapshot.source_id != source_id):
            continue
        ids = list(repo.load_index(snapshot, INDEX_NAME))
        name = f"journal segment {snapshot.id[:12]}"
        raw = (snapshot.record.journal or {}).get("events", [])
        events = tuple(Event.from_dict(d, ids, name) for d in raw)
        result.append(Segment(snapshot, events))
    result.sort(
        key=lambda s: (int((s.snapshot.record.journal or {}).get("from_ns", 0)), s.snapshot.order)
    )
    return result


def ordered_events(segments: Iterable[Segment]) -> list[Event]:
    """The events of ``segments`` in the journal's order (by ``ns``; a stable sort keeps
    the segments' order for equal times)."""
    events = [e for s in segments for e in s.events]
    events.sort(key=lambda e: e.ns)
    return events


def _below(state: dict[str, Entry], path: str) -> list[str]:
    """The paths below ``path``: only a directory has any (a scan of the whole state, so
    it is not made for files: a burst of deletes stays linear)."""
    entry = state.get(path)
    if entry is None or entry.meta.ftype != "dir":
        return []
    prefix = path.rstrip("/") + "/"
    return [p for p in state if p.startswith(prefix)]


def apply(state: dict[str, Entry], event: Event) -> None:
    """Change ``state`` (path -> entry) by one event."""
    if event.type in ("write", "create"):
        assert event.meta is not None
        old = state.get(event.path)
        if old is not None and old.meta.ftype == "dir" and event.meta.ftype != "dir":
            for p in _below(state, event.path):
                del state[p]
        state[event.path] = Entry(meta=event.meta, chunks=event.chunks, ns=event.ns)
    elif event.type == "delete":
        for p in _below(state, event.path):
            del state[p]
        state.pop(event.path, None)
    elif event.type == "rename" and event.to is not None:
        moving = [event.path, *_below(state, event.path)]
        taken = {p: state.pop(p) for p in moving if p in state}
        for p in _below(state, event.to):
            del state[p]
        state.pop(event.to, None)
        for p, entry in taken.items():
            state[event.to + p[len(event.path) :]] = entry


def replay(events: Iterable[Event], until_ns: int | None = None) -> dict[str, Entry]:
    """The tree the journal records as of ``until_ns`` (exclusive; None: its end)."""
    state: dict[str, Entry] = {}
    for event in events:
        if until_ns is not None and event.ns >= until_ns:
            break
        apply(state, event)
    return state


def meta_of(
    st: os.stat_result, xattrs: dict[str, bytes], ftype: str, target: str | None = None
) -> Meta:
    return Meta(
        ftype=ftype,
        mode=st.st_mode,
        uid=st.st_uid,
        gid=st.st_gid,
        size=st.st_size if ftype == "file" else 0,
        mtime_ns=st.st_mtime_ns,
        ctime_ns=st.st_ctime_ns,
        atime_ns=st.st_atime_ns,
        ino=st.st_ino,
        dev=st.st_dev,
        xattrs=xattrs,
        target=target,
    )


def read_xattrs(path: str | int) -> dict[str, bytes]:
    """The extended attributes of ``path`` (an fd for files), none where unsupported."""
    result: dict[str, bytes] = {}
    follow = not isinstance(path, int)
    try:
        names = os.listxattr(path, follow_symlinks=False) if follow else os.listxattr(path)
    except OSError:
        return result
    for name in names:
        with contextlib.suppress(OSError):
            result[name] = (
                os.getxattr(path, name, follow_symlinks=False)
                if follow
                else os.getxattr(path, name)
            )
    return result


@dataclass
class SegmentWriter:
    """One segment being written, under a writer lease from its first chunk to its commit."""

    repo: Repository
    paths: tuple[str, ...]
    exclude: tuple[str, ...]
    parent: str | None
    known: set[bytes]
    """Chunk ids committed segments refer to: taken as stored (the parent rule of gc)."""
    hostname: str = field(default_factory=socket.gethostname)
    events: list[Event] = field(default_factory=list)
    new_bytes: int = 0
    new_chunks: int = 0
    stored: int = 0
    read_bytes: int = 0
    _lease: contextlib.ExitStack = field(default_factory=contextlib.ExitStack)
    _handle: leases.LeaseHandle | None = None
    _started: float = field(default_factory=time.monotonic)
    _from_ns: int = field(default_factory=time.time_ns)

    def __enter__(self) -> SegmentWriter:
        self._handle = self._lease.enter_context(self.repo.writer())
        self._handle.update(parent=self.parent)
        return self

    def __exit__(self, *exc: object) -> None:
        # Chunks written and not committed are kept (the next segment finds them).
        with contextlib.suppress(Exception):
            self.repo.commit_chunks()
        self._lease.close()

    def store(self, f: BinaryIO) -> tuple[tuple[bytes, ...], int, int]:
        """Store the chunks of ``f``: their ids, the bytes read and the new bytes stored."""
        ids = []
        size = new = 0
        for view in chunks(f):
            chunk_id = self.repo.keys.chunk_id(view)
            ids.append(chunk_id)
            size += len(view)
            if chunk_id in self.known:
                continue
            if not self.repo.has_chunk(chunk_id):
                data = self.repo.encode_chunk(chunk_id, view)
                if self.repo.write_chunk(chunk_id, data):
                    new += len(view)
                    self.stored += len(data)
                    self.new_chunks += 1
            self.known.add(chunk_id)
        self.read_bytes += size
        self.new_bytes += new
        return tuple(ids), size, new

    def add(self, event: Event) -> None:
        self.events.append(event)

    def commit(self) -> Snapshot:
        """Commit the segment (chunks, index, manifest: the commit point)."""
        repo = self.repo
        repo.commit_chunks()
        repo.sync_chunk_dirs()
        events = sorted(self.events, key=lambda e: e.ns)
        flat: list[bytes] = []
        records = []
        size = 0
        for event in events:
            records.append(event.to_dict(len(flat)))
            flat.extend(event.chunks)
            if event.type == "write" and event.meta is not None:
                size += event.meta.size
        index = ChunkIndex(b"".join(flat))
        snapshot_id = repo.new_snapshot_id()
        mac = repo.write_index(snapshot_id, INDEX_NAME, index, len(index) * repo.block_size)
        when, when_ns = local_now(), time.time_ns()
        journal = {
            "version": 1,
            "from_ns": min([self._from_ns, *(e.ns for e in events)]),
            "to_ns": max([when_ns, *(e.ns for e in events)]),
            "paths": list(self.paths),
            "exclude": list(self.exclude),
            "chunker": dict(CHUNKER),
            "events": records,
        }
        manifest = Manifest.make(
            {},
            id=snapshot_id,
            time=when.isoformat(),
            time_ns=when_ns,
            hostname=self.hostname,
            source=self.hostname,
            source_id=source_id_of(self.hostname),
            kind=JOURNAL_KIND,
            size=size,
            parent=self.parent,
            images=(
                ImageRecord.make(
                    {},
                    name=INDEX_NAME,
                    offset=0,
                    size=len(index) * repo.block_size,
                    blocks=len(index),
                    method="journal",
                    index_mac=mac,
                ),
            ),
            journal=journal,
            stats=BackupStats(
                read=self.read_bytes,
                new_bytes=self.new_bytes,
                stored=self.stored,
                new_chunks=self.new_chunks,
                elapsed=round(time.monotonic() - self._started, 3),
            ),
        )
        return repo.commit_snapshot(manifest.to_dict())


def iter_paths(state: dict[str, Entry], roots: Iterable[str]) -> Iterator[str]:
    """The paths of ``state`` at or below one of ``roots``."""
    prefixes = [r.rstrip("/") for r in roots]
    for p in state:
        if any(p == r or p.startswith(r + "/") for r in prefixes):
            yield p
