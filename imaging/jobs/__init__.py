"""The operations layer: every front end (the CLI, the app, unattended runs, later the host
agent) does its work through these functions and nothing below them.

Each operation takes a typed request and returns a typed result, and owns what must not
drift between front ends: which lease covers what, the check after a backup, the disks that
are never written or read into themselves, and which engine function a snapshot's kind needs.
A front end only asks (``confirm`` callbacks), shows (``progress`` callbacks, results) and
maps errors to its own words.

The operations of the maintenance and files modules are loaded on first use (PEP 562):
they pull in the file-level stack, which a backup or a restore from the command line does
not need and which cost each run ~0.05 s to import. ``backup``, ``check``, ``copy`` and ``restore``
load at once: they are also the names of their modules, which an import would put in their
place.
"""

import importlib
from typing import TYPE_CHECKING, Any

from imaging.jobs.backup import (
    BackupPlan,
    BackupPreview,
    BackupRequest,
    BackupResult,
    Check,
    backup,
    plan_backup,
)
from imaging.jobs.check import CheckReport, CheckRequest, LocationReport, check
from imaging.jobs.common import Chosen, choose_snapshot, no_confirm, select
from imaging.jobs.copy import CopyRequest, CopyResult, copy

if TYPE_CHECKING:
    from imaging.jobs.files import (
        FilesRestoreRequest,
        JournalVersion,
        files_restore,
        files_restore_at,
        journal_versions,
    )
    from imaging.jobs.maintenance import (
        ForgetPlan,
        ForgetRequest,
        ForgetResult,
        GcResult,
        Policy,
        VerifyReport,
        VerifyRequest,
        apply_forget,
        forget,
        gc,
        plan_forget,
        verify,
        verify_keyless,
    )
from imaging.jobs.restore import (
    DiskRestoreResult,
    GrowPlan,
    RestorePreview,
    RestoreRequest,
    RestoreResult,
    check_restore_target,
    grow_plan,
    replay_plan,
    resize_plan,
    restore,
)

__all__ = [
    "BackupPlan",
    "BackupPreview",
    "BackupRequest",
    "BackupResult",
    "Check",
    "CheckReport",
    "CheckRequest",
    "Chosen",
    "CopyRequest",
    "CopyResult",
    "DiskRestoreResult",
    "FilesRestoreRequest",
    "ForgetPlan",
    "ForgetRequest",
    "ForgetResult",
    "GcResult",
    "GrowPlan",
    "JournalVersion",
    "LocationReport",
    "Policy",
    "RestorePreview",
    "RestoreRequest",
    "RestoreResult",
    "VerifyReport",
    "VerifyRequest",
    "apply_forget",
    "backup",
    "check",
    "check_restore_target",
    "choose_snapshot",
    "copy",
    "files_restore",
    "files_restore_at",
    "forget",
    "gc",
    "grow_plan",
    "journal_versions",
    "no_confirm",
    "plan_backup",
    "plan_forget",
    "replay_plan",
    "resize_plan",
    "restore",
    "select",
    "verify",
    "verify_keyless",
]

_LATER = {
    "files": (
        "FilesRestoreRequest",
        "JournalVersion",
        "files_restore",
        "files_restore_at",
        "journal_versions",
    ),
    "maintenance": (
        "ForgetPlan",
        "ForgetRequest",
        "ForgetResult",
        "GcResult",
        "Policy",
        "VerifyReport",
        "VerifyRequest",
        "apply_forget",
        "forget",
        "gc",
        "plan_forget",
        "verify",
        "verify_keyless",
    ),
}
_MODULE_OF = {name: module for module, names in _LATER.items() for name in names}


def __getattr__(name: str) -> Any:
    module = _MODULE_OF.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value
