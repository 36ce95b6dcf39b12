"""What the app holds between screens: the repository the person opened."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from imaging.appliance.settings import drive_root

if TYPE_CHECKING:
    from imaging.jobs.locations import Location
    from imaging.jobs.repositories import Repository


@dataclass
class OpenedRepository:
    """An unlocked repository. The passphrase is not kept: the opened repository holds the
    keys it unlocked, for as long as the app runs."""

    repo: Repository
    path: str  # the directory, or s3://BUCKET/PREFIX
    label: str  # how the person recognises it: "WD Elements (WX12), partition 1: /repo"
    disk: str = ""  # the disk holding it ("" for a network share)
    writable: bool = False
    location: Location | None = None  # a mount the app made for it

    @property
    def drive(self) -> Path | None:
        """Where settings and logs go: the filesystem the repository is on; None for a
        repository in an object store (no drive: the log stays in the Logs screen)."""

        if "://" in self.path:
            return None
        return drive_root(self.path)
