"""The FUSE server: every image of every snapshot as a read-only file, chunks on demand.

Run as ``python -m imaging.files.server --repo REPO --mountpoint DIR --damage-log FILE``
by :mod:`imaging.files.session`, which writes the master key to its stdin
(:mod:`imaging.files.keypipe`).

``DIR/<snapshot id>.<image>`` is resolved on first lookup (manifest and index are loaded and
authenticated then). All files share one :class:`ChunkCache`, so a chunk shared by several
snapshots is decoded once. A damaged chunk makes the read fail with EIO and is appended to
the damage log as a JSON line naming the view, the byte range and the chunk.

With ``--watch-stdin`` the server also treats the end of its stdin as the death of the
process that started it: it then tears down everything its session mounted on top of it
(recorded in ``--state``) and exits, so a killed ``hourglass files`` leaves nothing behind.
"""

from __future__ import annotations

import argparse
import errno
import json
import logging
import os
import re
import signal
import stat
import sys
import threading
from pathlib import Path
from typing import Any

from imaging.errors import HourglassError
from imaging.files.blockview import DEFAULT_CACHE_BYTES, ChunkCache, Damage, ImageView
from imaging.files.keypipe import read_master
from imaging.files.session import teardown_recorded
from imaging.repository.store import Repository

VIEW_NAME = re.compile(r"^([0-9a-f]{32})\.([A-Za-z0-9_-]{1,32})$")
TIMEOUT = 86400.0  # the files never change: the kernel may cache names and attributes


class Views:
    """The files this server serves, resolved lazily by name."""

    def __init__(self, repo: Repository, cache: ChunkCache, damage_log: Path) -> None:
        self.repo = repo
        self.cache = cache
        self.damage_log = damage_log
        self._views: dict[str, ImageView] = {}
        self._times: dict[str, float] = {}
        self._missing: set[str] = set()
        self._lock = threading.Lock()
        self._log_lock = threading.Lock()

    def get(self, name: str) -> ImageView | None:
        with self._lock:
            if name in self._views:
                return self._views[name]
            if name in self._missing:
                return None
        m = VIEW_NAME.match(name)
        if not m:
            return None
        try:
            snapshot = self.repo.load_snapshot(m.group(1))
            ids = self.repo.load_index(snapshot, m.group(2))
            size = snapshot.image(m.group(2)).size
        except HourglassError as e:
            logging.warning("cannot serve %s: %s", name, e.message)
            with self._lock:
                self._missing.add(name)
            return None
        view = ImageView(name, ids, size, self.repo.block_size, self.cache, self._record)
        with self._lock:
            self._views.setdefault(name, view)
            self._times[name] = snapshot.time.timestamp()
            return self._views[name]

    def names(self) -> list[str]:
        with self._lock:
            return sorted(self._views)

    def time(self, name: str) -> float:
        return self._times.get(name, 0.0)

    def _record(self, damage: Damage) -> None:
        line = json.dumps(damage.__dict__) + "\n"
        with self._log_lock, open(self.damage_log, "a") as f:
            f.write(line)
        logging.error(
            "damaged chunk %s under %s bytes %d-%d: %s",
            damage.chunk,
            damage.view,
            damage.offset,
            damage.offset + damage.length,
            damage.reason,
        )


def make_operations(views: Views) -> Any:
    """The mfusepy operations object."""
    # Late on purpose: importing mfusepy loads libfuse, which only the FUSE server process
    # needs (every `hourglass` command imports this module through its `files` command).
    import mfusepy  # noqa: PLC0415

    class BlockViews(mfusepy.Operations):  # type: ignore[misc]
        use_ns = True

        def getattr(self, path: str, fh: int | None = None) -> dict[str, Any]:
            if path == "/":
                return {"st_mode": stat.S_IFDIR | 0o555, "st_nlink": 2}
            name = path[1:]
            view = views.get(name)
            if view is None:
                raise mfusepy.FuseOSError(errno.ENOENT)
            when = int(views.time(name) * 1e9)
            return {
                "st_mode": stat.S_IFREG | 0o444,
                "st_nlink": 1,
                "st_size": view.size,
                "st_blocks": (view.size + 511) // 512,
                "st_mtime": when,
                "st_ctime": when,
                "st_atime": when,
            }

        def readdir(self, path: str, fh: int) -> list[str]:
            if path != "/":
                raise mfusepy.FuseOSError(errno.ENOTDIR)
            return [".", "..", *views.names()]

        def open(self, path: str, flags: int) -> int:
            if flags & (os.O_WRONLY | os.O_RDWR | os.O_TRUNC | os.O_APPEND):
                raise mfusepy.FuseOSError(errno.EROFS)
            if views.get(path[1:]) is None:
                raise mfusepy.FuseOSError(errno.ENOENT)
            return 0

        def read(self, path: str, size: int, offset: int, fh: int) -> bytes:
            view = views.get(path[1:])
            if view is None:
                raise mfusepy.FuseOSError(errno.ENOENT)
            return view.read(offset, size)  # DamagedRead is an OSError(EIO)

        def statfs(self, path: str) -> dict[str, int]:
            return {"f_bsize": 4096, "f_frsize": 4096, "f_namemax": 255}

    return BlockViews()


def watch_stdin(state: Path, mountpoint: str) -> None:
    """Tear the session down when the parent dies (its end of our stdin closes)."""
    while sys.stdin.buffer.read(65536):
        pass
    logging.warning("the parent process is gone: tearing the session down")
    teardown_recorded(state, unmount_server=False)
    os.kill(os.getpid(), signal.SIGTERM)  # libfuse unmounts and fuse_main returns


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="imaging.files.server")
    parser.add_argument("--repo", required=True)
    parser.add_argument("--mountpoint", required=True)
    parser.add_argument("--damage-log", required=True)
    parser.add_argument("--cache-bytes", type=int, default=DEFAULT_CACHE_BYTES)
    parser.add_argument("--state", help="session state file (with --watch-stdin)")
    parser.add_argument("--watch-stdin", action="store_true")
    args = parser.parse_args(argv)
    os.setsid()  # Ctrl-C at the terminal goes to the parent, which tears down in order
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    logging.basicConfig(
        level=logging.WARNING, format="%(asctime)s %(levelname)s %(message)s", stream=sys.stderr
    )
    master = read_master(sys.stdin.buffer)
    repo = Repository.open_with_master(args.repo, master)
    del master
    cache = ChunkCache(repo, args.cache_bytes, workers=max(2, os.cpu_count() or 2))
    views = Views(repo, cache, Path(args.damage_log))
    if args.watch_stdin and args.state:
        threading.Thread(
            target=watch_stdin, args=(Path(args.state), args.mountpoint), daemon=True
        ).start()
    import mfusepy  # noqa: PLC0415 (see make_operations)

    with repo.reader():
        mfusepy.FUSE(
            make_operations(views),
            args.mountpoint,
            foreground=True,
            ro=True,
            fsname="hourglass",
            subtype="hourglass",
            kernel_cache=True,
            attr_timeout=TIMEOUT,
            entry_timeout=TIMEOUT,
            negative_timeout=0,
        )
    cache.close()
    # Leave at once: the stdin watcher thread is blocked in a read, and a normal interpreter
    # shutdown would wait on it (a second, and a fatal error about the stdin lock).
    logging.shutdown()
    os._exit(0)


if __name__ == "__main__":
    sys.exit(main())
