"""check: every location of a repository compared without the key, and repaired."""

from __future__ import annotations

from dataclasses import dataclass, field

from imaging.progress import ProgressCallback, no_progress
from imaging.repository import check as _check
from imaging.repository.check import CheckReport, LocationReport
from imaging.repository.s3store import S3Options
from imaging.repository.store import Location, as_store

__all__ = ["CheckReport", "CheckRequest", "LocationReport", "check"]


@dataclass(frozen=True)
class CheckRequest:
    """``read_percent``: read and check this share of the objects (rolling: the next run
    continues after it); ``repair``: rebuild what is missing or damaged; ``replace``: member
    number -> an empty location that takes its place (with ``repair``)."""

    read_percent: float | None = None
    repair: bool = False
    replace: dict[int, str] = field(default_factory=dict)


def check(
    location: Location,
    request: CheckRequest,
    *,
    s3: S3Options | None = None,
    progress: ProgressCallback = no_progress,
) -> CheckReport:
    """Check (and repair) the repository at ``location``: a set over several locations or
    one location (imaging.repository.check). Needs no key."""
    return _check.check(
        as_store(location, s3=s3),
        read_percent=request.read_percent,
        repair=request.repair,
        replace=request.replace,
        s3=s3,
        progress=progress,
    )
