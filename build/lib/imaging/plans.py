"""Turning what the person named on the command line into a backup plan."""

from __future__ import annotations

from imaging.backup import BackupPlan, plan_file
from imaging.errors import UsageError


def plan_for(sources: list[str], *, force: bool = False) -> BackupPlan:
    """A plan for SOURCE...: an image file or a block device, stored raw."""
    if len(sources) != 1:
        raise UsageError("Give exactly one source.")
    return plan_file(sources[0])
