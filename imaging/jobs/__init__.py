"""The operations layer: every front end (the CLI, the app, unattended runs, later the host
agent) does its work through these functions and nothing below them.

Each operation takes a typed request and returns a typed result, and owns what must not
drift between front ends: which lease covers what, the check after a backup, the disks that
are never written or read into themselves, and which engine function a snapshot's kind needs.
A front end only asks (``confirm`` callbacks), shows (``progress`` callbacks, results) and
maps errors to its own words.
"""

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
from imaging.jobs.files import FilesRestoreRequest, files_restore
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
    RestorePreview,
    RestoreRequest,
    RestoreResult,
    check_restore_target,
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
    "DiskRestoreResult",
    "FilesRestoreRequest",
    "ForgetPlan",
    "ForgetRequest",
    "ForgetResult",
    "GcResult",
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
    "files_restore",
    "forget",
    "gc",
    "no_confirm",
    "plan_backup",
    "plan_forget",
    "restore",
    "select",
    "verify",
    "verify_keyless",
]
