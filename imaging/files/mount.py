"""``hourglass mount`` and ``hourglass umount``: a snapshot's partition left mounted."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from imaging.errors import Busy, NotFound, UsageError
from imaging.files.images import resolve
from imaging.files.session import Session, cleanup_stale, sessions, teardown_recorded
from imaging.mounts.mount import unmount
from imaging.mounts.mountinfo import is_mounted
from imaging.repository.store import Repository, Snapshot


@dataclass(frozen=True)
class MountInfo:
    snapshot: Snapshot
    image: str
    fstype: str
    mountpoint: Path
    driver: str
    cleaned: list[str]


def mount_snapshot(
    repo: Repository,
    selector: str,
    mountpoint: str | Path,
    *,
    partition: int | None = None,
    source: str | None = None,
) -> MountInfo:
    """Mount a snapshot's partition read-only at ``mountpoint`` until :func:`unmount_snapshot`."""
    cleaned = cleanup_stale()
    target = Path(os.path.abspath(mountpoint))
    if not target.exists():
        try:
            target.mkdir()
        except OSError as e:
            raise UsageError(f"Cannot create the mount point {target}: {e.strerror}.") from None
    if not target.is_dir():
        raise UsageError(f"{target} is not a directory.")
    target = target.resolve()
    if is_mounted(target):
        raise Busy(f"Something is already mounted at {target}.", f"hourglass umount {target}")
    snapshot, image = resolve(repo, selector, partition, source=source)
    session = Session(repo, persistent=True)
    session.start()
    try:
        mounted = session.mount(snapshot, image, target)
    except BaseException:
        session.close()
        raise
    session.detach()
    return MountInfo(snapshot, image, mounted.fstype, target, mounted.record.driver, cleaned)


def unmount_snapshot(mountpoint: str | Path) -> None:
    """Undo :func:`mount_snapshot`: the filesystem, the loop device, the server."""
    target = os.path.realpath(mountpoint)
    for state in sessions():
        if any(m.mountpoint == target for m in state.mounts):
            unmount(target, lazy=False)  # Busy when a program still uses it
            teardown_recorded(state.path)
            return
    cleaned = cleanup_stale()
    if target in cleaned:
        return
    raise NotFound(f"{target} is not a snapshot mounted by hourglass.")
