"""verify, forget and gc."""

from __future__ import annotations

from dataclasses import dataclass, field

from imaging.errors import UsageError
from imaging.jobs.common import Confirm, choose_snapshot
from imaging.progress import ProgressCallback, no_progress
from imaging.repository import gc as _gc
from imaging.repository import s3gc, selectors
from imaging.repository import verify as _verify
from imaging.repository.gc import GcResult
from imaging.repository.retention import Policy, apply
from imaging.repository.s3store import S3Store
from imaging.repository.store import DamagedSnapshot, Location, Repository, Snapshot
from imaging.repository.verify import VerifyReport

__all__ = [
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
]


@dataclass(frozen=True)
class VerifyRequest:
    """``snapshot`` (a selector) or every snapshot; ``read_data`` reads every chunk;
    ``max_time`` (seconds) stops early and the next verify of the same scope continues."""

    snapshot: str | None = None
    source: str | None = None
    read_data: bool = False
    max_time: float | None = None


def verify(
    repo: Repository, request: VerifyRequest, *, progress: ProgressCallback = no_progress
) -> VerifyReport:
    """Check the repository under a reader lease: a forget and gc meanwhile cannot make a
    snapshot that was listed look damaged."""
    with repo.reader():
        selected = None
        scope = "*"
        warnings: list[str] = []
        if request.snapshot is not None or request.source:
            chosen = choose_snapshot(repo, request.snapshot or "latest", source=request.source)
            selected = [chosen.snapshot]
            scope = chosen.snapshot.id
            warnings = chosen.warnings
        report = _verify.verify(
            repo,
            selected,
            read_data=request.read_data,
            max_time=request.max_time,
            scope=scope,
            progress=progress,
        )
        report.warnings.extend(warnings)
        report.degraded = list(repo.store.degraded())
        return report


def verify_keyless(path: Location, *, progress: ProgressCallback = no_progress) -> VerifyReport:
    """The stored checksums of every file, without the key (bit rot, not tampering)."""
    return _verify.verify_keyless(path, progress=progress)


@dataclass(frozen=True)
class ForgetRequest:
    """Snapshots named by selector, or a retention ``policy``; ``source`` limits either."""

    snapshots: tuple[str, ...] = ()
    policy: Policy | None = None
    source: str | None = None
    dry_run: bool = False


@dataclass
class ForgetPlan:
    keep: list[tuple[Snapshot, list[str]]] = field(default_factory=list)
    remove: list[Snapshot] = field(default_factory=list)
    lost: list[DamagedSnapshot] = field(default_factory=list)
    """Damaged snapshots named to be forgotten."""
    untouched: list[DamagedSnapshot] = field(default_factory=list)
    """Damaged snapshots left alone (a policy never forgets what it cannot read)."""

    @property
    def count(self) -> int:
        return len(self.remove) + len(self.lost)


@dataclass
class ForgetResult:
    plan: ForgetPlan
    forgotten: int = 0


def plan_forget(repo: Repository, request: ForgetRequest) -> ForgetPlan:
    listed = repo.snapshots()
    wanted = [s for s in listed if not request.source or request.source in (s.source, s.source_id)]
    plan = ForgetPlan()
    if request.snapshots:
        for sel in request.snapshots:
            found = selectors.find(listed, sel, source=request.source)
            if isinstance(found, DamagedSnapshot):
                if found not in plan.lost:
                    plan.lost.append(found)
            elif found not in plan.remove:
                plan.remove.append(found)
        plan.keep = [(s, ["not named"]) for s in wanted if s not in plan.remove]
    else:
        if request.policy is None or request.policy.empty():
            raise UsageError(
                "forget needs a policy (--keep-last N, --keep-daily N, ...) or snapshot ids.",
                "Refusing to forget every snapshot.",
            )
        decision = apply(wanted, request.policy)
        plan.keep, plan.remove = decision.keep, decision.remove
    plan.untouched = [d for d in listed.damaged if d not in plan.lost]
    return plan


def forget(
    repo: Repository, request: ForgetRequest, *, confirm: Confirm[ForgetPlan]
) -> ForgetResult:
    """Forget what ``request`` names, after ``confirm`` (not asked for a dry run or when
    nothing goes). The space comes back with :func:`gc`."""
    plan = plan_forget(repo, request)
    result = ForgetResult(plan)
    if request.dry_run or not plan.count:
        return result
    confirm(plan)
    result.forgotten = apply_forget(repo, plan)
    return result


def apply_forget(repo: Repository, plan: ForgetPlan) -> int:
    """Forget exactly what ``plan`` (from :func:`plan_forget`, shown and confirmed) names;
    returns how many. For front ends that ask between planning and doing (the app)."""
    for s in plan.remove:
        repo.delete_snapshot(s.id)
    for d in plan.lost:
        repo.delete_snapshot(d.id)
    return plan.count


def gc(repo: Repository, progress: ProgressCallback = no_progress) -> GcResult:
    """Free the chunks no snapshot needs (imaging.repository.gc has the guarantees; an
    object store's gc, by whole packs, is imaging.repository.s3gc). ``progress``: the
    phases of a directory's gc (an object store's reports none yet)."""
    if isinstance(repo.store.unwrapped(), S3Store):
        return s3gc.collect(repo)
    return _gc.collect(repo, progress, object_store=s3gc.collect)
