"""A host's file journal browsed as of a second: the hosts from the manifests, the tree at a
second (deleted files present before their delete, absent after), the events of a path."""

from __future__ import annotations

import io
import stat
import time
from datetime import datetime

from imaging.journal.browse import JournalBrowser, journal_hosts
from imaging.journal.records import Event, Meta
from imaging.journal.segments import SegmentWriter
from imaging.repository.store import Repository

SECOND = 10**9


def _meta(ftype: str, size: int = 0, mtime_ns: int = 0) -> Meta:
    mode = stat.S_IFREG | 0o644 if ftype == "file" else stat.S_IFDIR | 0o755
    return Meta(ftype=ftype, mode=mode, uid=0, gid=0, size=size, mtime_ns=mtime_ns)


def _write(w: SegmentWriter, ns: int, path: str, data: bytes) -> Event:
    ids, size, new = w.store(io.BytesIO(data))
    return Event(ns=ns, type="write", path=path, meta=_meta("file", size, ns), chunks=ids, new=new)


def _at(ns: int) -> datetime:
    return datetime.fromtimestamp(ns // SECOND).astimezone()


def test_tree_as_of_each_second_and_the_versions_of_a_path(repo: Repository) -> None:
    base = (time.time_ns() // SECOND - 100) * SECOND
    with SegmentWriter(repo, ("/h",), (), None, set(), hostname="pc") as w:
        w.add(Event(ns=base, type="create", path="/h", meta=_meta("dir")))
        w.add(Event(ns=base + 1, type="create", path="/h/d", meta=_meta("dir")))
        w.add(_write(w, base + 2, "/h/d/a.txt", b"one"))
        w.add(_write(w, base + 3, "/h/d/c.txt", b"to be deleted"))
        first = w.commit()
    later = base + 5 * SECOND
    with SegmentWriter(repo, ("/h",), (), first.id, set(), hostname="pc") as w:
        w.add(
            Event(
                ns=later,
                type="gap",
                path="/h",
                from_ns=base + 2 * SECOND,
                to_ns=later,
                reason="not running",
                paths=("/h",),
            )
        )
        w.add(_write(w, later + 1, "/h/d/a.txt", b"version two"))
        w.add(_write(w, later + 2, "/h/d/b.txt", b"new"))
        w.add(Event(ns=later + 3, type="delete", path="/h/d/c.txt"))
        w.commit()

    [host] = journal_hosts(repo.snapshots())
    assert host.host == "pc" and host.source_id == "journal:pc"
    assert host.first_ns == base
    assert host.newest_ns >= later
    assert [(g.from_ns, g.to_ns, g.reason) for g in host.gaps] == [
        (base + 2 * SECOND, later, "not running")
    ]

    browser = JournalBrowser(repo, "pc")
    before = browser.tree(_at(base))
    [root] = before.listdir("/")
    assert (root.name, root.path, root.type) == ("/h", "/h", "dir")
    listed = {e.name: (e.type, e.size) for e in before.listdir("/h/d")}
    assert listed == {"a.txt": ("file", 3), "c.txt": ("file", 13)}
    assert before.stat("/h/d/b.txt") is None

    after = browser.tree(_at(later))
    listed = {e.name: (e.type, e.size) for e in after.listdir("/h/d")}
    assert listed == {"a.txt": ("file", 11), "b.txt": ("file", 3)}
    assert after.search("TXT") == ["/h/d/a.txt", "/h/d/b.txt"]
    assert after.search("txt", limit=1) == ["/h/d/a.txt"]
    # The second before the journal's first event: nothing.
    assert browser.tree(_at(base - SECOND)).listdir("/") == []

    kinds = [(v.event.type, v.event.meta.size if v.event.meta else None) for v in
             browser.versions("/h/d/a.txt")]  # fmt: skip
    assert kinds == [("write", 3), ("gap", None), ("write", 11)]
    assert [v.event.type for v in browser.versions("/h/d/c.txt")] == ["write", "gap", "delete"]
