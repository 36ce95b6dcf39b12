"""What this machine remembers of each repository: the newest snapshot seen, and whether
the repository was encrypted (docs/SECURITY.md, "Rollback and replay").

Someone who can write to the backup drive can delete the newest manifests or put back old
ones: every file they leave is authentic, so nothing on the drive can tell. What can tell is
a record kept elsewhere. This module keeps one small JSON file per repository id under the
user's state directory and says when the newest snapshot it remembers is gone with nothing
newer in its place. The record is a convenience, never a requirement: any failure to read
or write it is ignored, and ``HOURGLASS_STATE_DIR=none`` turns it off.

The appliance boots from read-only media: its state directory is in RAM, so it remembers
only within one session.
"""

from __future__ import annotations

import contextlib
import json
import os
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from imaging.errors import HourglassError
from imaging.repository.fsutil import write_atomic
from imaging.units import local_now

if TYPE_CHECKING:
    from imaging.repository.records import Snapshot

STATE_ENV = "HOURGLASS_STATE_DIR"
# Anything unexpected in a record (a hand edit, a full disk) must never stop a command.
_IGNORED = (
    OSError,
    HourglassError,
    ValueError,
    TypeError,
    KeyError,
    AttributeError,
    RecursionError,
)


class RepositoryIdentity(Protocol):
    """What a record needs of a repository. :class:`~imaging.repository.store.Repository`
    has it; the store calls this module, so this module does not import the store."""

    @property
    def id(self) -> str: ...

    @property
    def encrypted(self) -> bool: ...

    @property
    def location(self) -> str: ...


def state_dir() -> Path | None:
    """Where records live: ``$HOURGLASS_STATE_DIR`` (``none`` turns them off), else
    /var/lib/hourglass for root, else ``$XDG_STATE_HOME/hourglass`` (~/.local/state)."""
    configured = os.environ.get(STATE_ENV)
    if configured is not None:
        return None if configured.strip().lower() in ("", "none", "off") else Path(configured)
    if os.geteuid() == 0:
        return Path("/var/lib/hourglass")
    xdg = os.environ.get("XDG_STATE_HOME")
    base = Path(xdg) if xdg and os.path.isabs(xdg) else Path.home() / ".local" / "state"
    return base / "hourglass"


def _record_path(repo_id: str) -> Path | None:
    root = state_dir()
    if root is None or not repo_id.isalnum() or len(repo_id) > 128:
        return None
    return root / "repositories" / f"{repo_id}.json"


def load(repo_id: str) -> dict[str, Any] | None:
    """The record of repository ``repo_id``, or ``None`` (none kept, or unreadable)."""
    path = _record_path(repo_id)
    if path is None:
        return None
    with contextlib.suppress(*_IGNORED):
        record = json.loads(path.read_bytes())
        if isinstance(record, dict) and record.get("repository") == repo_id:
            return record
    return None


def _save(repo_id: str, record: dict[str, Any]) -> None:
    path = _record_path(repo_id)
    if path is None:
        return
    record = {**record, "repository": repo_id, "updated": local_now().isoformat()}
    with contextlib.suppress(*_IGNORED):
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        write_atomic(path, json.dumps(record, indent=1).encode() + b"\n", mode=0o600)


def _newest_of(record: dict[str, Any]) -> tuple[datetime, int, str] | None:
    newest = record.get("newest")
    if not isinstance(newest, dict):
        return None
    with contextlib.suppress(*_IGNORED):
        time_ns = newest.get("time_ns", 0)
        return (
            datetime.fromisoformat(newest["time"]),
            time_ns if isinstance(time_ns, int) else 0,
            str(newest["id"]),
        )
    return None


def _entry(snapshot: Snapshot) -> dict[str, Any]:
    return {
        "id": snapshot.id,
        "time": snapshot.time.isoformat(),
        "time_ns": snapshot.order[1],
        "source": snapshot.source,
    }


def was_encrypted(repo_id: str) -> bool:
    """True when this machine has opened repository ``repo_id`` with its keys before."""
    record = load(repo_id)
    return bool(record and record.get("encrypted") is True)


def note_open(repo: RepositoryIdentity) -> None:
    """Remember that ``repo`` is encrypted (written once: opening costs one small read)."""
    if not repo.encrypted:
        return
    record = load(repo.id) or {}
    if record.get("encrypted") is not True:
        _save(repo.id, {**record, "encrypted": True, "path": repo.location})


def note_commit(repo: RepositoryIdentity, snapshot: Snapshot) -> None:
    """A snapshot was committed here: it is the newest this machine has seen."""
    record = load(repo.id) or {}
    remembered = _newest_of(record)
    if remembered is None or snapshot.order > remembered:
        _save(
            repo.id,
            {**record, "encrypted": repo.encrypted, "newest": _entry(snapshot)},
        )


def note_forget(repo: RepositoryIdentity, snapshot_id: str) -> None:
    """A snapshot was forgotten here: if it was the newest remembered, forget that too, so
    the next listing takes the newest left as its reference and does not warn."""
    record = load(repo.id)
    remembered = _newest_of(record) if record is not None else None
    if record is not None and remembered is not None and remembered[2] == snapshot_id:
        _save(repo.id, {k: v for k, v in record.items() if k != "newest"})


def note_listing(repo: RepositoryIdentity, snapshots: list[Snapshot]) -> str | None:
    """Compare a full listing (oldest first) with the record; a warning when the newest
    snapshot remembered is gone and nothing newer is there (the drive rolled back), else
    ``None``. The record moves forward only: the warning stays until a newer snapshot is
    listed, made or the missing one is forgotten on this machine."""
    record = load(repo.id) or {}
    remembered = _newest_of(record)
    newest = snapshots[-1] if snapshots else None
    if (
        remembered is not None
        and remembered[2] not in _present(snapshots)
        and (newest is None or newest.order < remembered)
    ):
        return _rollback_warning(record, newest)
    if newest is not None and (remembered is None or newest.order > remembered):
        _save(repo.id, {**record, "encrypted": repo.encrypted, "newest": _entry(newest)})
    return None


def _present(snapshots: list[Snapshot]) -> set[str]:
    """Ids listed, damaged ones included (a damaged manifest is damage, not a rollback)."""
    damaged = getattr(snapshots, "damaged", [])
    return {s.id for s in snapshots} | {d.id for d in damaged}


def _rollback_warning(record: dict[str, Any], newest: Snapshot | None) -> str:
    gone = record["newest"]
    when = str(gone.get("time", "?"))[:19].replace("T", " ")
    now = (
        f"the newest now is {newest.id[:12]} ({newest.time.strftime('%Y-%m-%d %H:%M:%S')})"
        if newest is not None
        else "no snapshot is left"
    )
    return (
        f"Snapshot {str(gone.get('id', '?'))[:12]} of {when}, the newest this machine has "
        f"seen in this repository, is gone and {now}. If it was not forgotten on another "
        "machine, the backup drive has been rolled back: someone deleted snapshots."
    )
