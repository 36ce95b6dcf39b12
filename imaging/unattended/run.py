"""Carry out unattended orders and report exactly one result line.

The orders are the kernel's ``hourglass.*`` parameters, over those of a ``hourglass.config=``
file, over the vendor's ``[unattended]`` defaults (``/etc/hourglass/vendor.toml``).

At the end exactly one line goes to standard output, the serial console and the kernel log:
``HOURGLASS-RESULT: OK <summary>`` or ``HOURGLASS-RESULT: FAILED <reason>``. Nothing that
failed ever prints OK: the line is decided only after the work and its checks returned.
"""

from __future__ import annotations

import contextlib
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from imaging import jobs
from imaging.appliance.vendor import VendorSettings, console_line, serial_line, vendor_settings
from imaging.disks.discover import list_disks
from imaging.errors import HourglassError, UsageError
from imaging.jobs.locations import S3Options, Store, object_store
from imaging.jobs.repositories import open_repository
from imaging.progress import Progress
from imaging.repository import selectors
from imaging.repository.store import Repository
from imaging.unattended.choose import choose_disk
from imaging.unattended.locations import Locations, Mounted
from imaging.unattended.orders import (
    Orders,
    orders_from,
    parse_cmdline,
    parse_config,
    parse_location,
)
from imaging.units import human_duration, human_size

RESULT = "HOURGLASS-RESULT:"


@dataclass
class Outcome:
    ok: bool
    line: str
    after: str


class LineProgress:
    """Progress as whole lines, every 10 % or 15 s: fit for a serial console and a log."""

    def __init__(self, write: Callable[[str], None]) -> None:
        self.write = write
        self.last_time = 0.0
        self.last_tenth = -1

    def __call__(self, event: Progress) -> None:
        tenth = int(event.fraction * 10)
        now = time.monotonic()
        if not event.finished and tenth == self.last_tenth and now - self.last_time < 15:
            return
        self.last_tenth, self.last_time = tenth, now
        eta = f", {human_duration(event.eta)} left" if event.eta is not None else ""
        self.write(
            f"{event.phase} {event.item} {event.fraction * 100:.0f}% "
            f"({human_size(event.done)} of {human_size(event.total)}, "
            f"{human_size(event.rate)}/s{eta})"
        )


def vendor_keys(vendor: VendorSettings) -> dict[str, str]:
    """The vendor's ``[unattended]`` defaults as order keys; none when its action is "none".

    The vendor's ``source`` names the disk to work on: the source of a backup or a verify,
    the target of a restore ("auto" or "": the engine's own choice, the only internal disk).
    Its "stay" is the engine's "ui"; its ``[defaults] repository`` is the repository.
    """
    if vendor.unattended_action == "none":
        return {}
    keys = {
        "run": vendor.unattended_action,
        "after": "ui" if vendor.unattended_after == "stay" else vendor.unattended_after,
    }
    disk = vendor.unattended_source.strip()
    if disk and disk != "auto":
        keys["target" if vendor.unattended_action == "restore" else "source"] = disk
    if vendor.repository.strip():
        hint = vendor.repository_hint()
        # A form the engine does not know is passed on as it is: the run then fails naming it.
        keys["repo"] = hint.as_location() if hint else vendor.repository.strip()
    return keys


def gather_keys(
    cmdline: str, locations: Locations, vendor: VendorSettings | None = None
) -> dict[str, str]:
    """The keys of the kernel command line, with those of ``hourglass.config=`` under them
    and the vendor's defaults (``vendor``, else the appliance's vendor file) under both.

    When the kernel or the config file orders another action than the vendor's, the
    vendor's disk is left out: it was named for the vendor's action.
    """
    keys = parse_cmdline(cmdline)
    if "config" in keys:
        text = locations.read_file(parse_location(keys["config"], key="config")).decode()
        keys = {**parse_config(text), **{k: v for k, v in keys.items() if k != "config"}}
    defaults = vendor_keys(vendor if vendor is not None else vendor_settings())
    if keys.get("run", defaults.get("run")) != defaults.get("run"):
        defaults = {k: v for k, v in defaults.items() if k not in ("source", "target")}
    return {**defaults, **keys}


def _repository_directory(locations: Locations, orders: Orders) -> Mounted:
    """The repository's directory, mounted. A restore takes its drive read-write where it
    can: its scratch copy for a smaller disk then goes beside the repository, on the drive,
    not into the appliance's RAM, and its reader lease keeps a gc off the snapshot;
    read-only where the drive will not mount so (a write-protected stick, a hibernated
    NTFS), and from a share, which a restore only reads."""
    assert orders.repo is not None
    if orders.run != "restore":
        return locations.directory(orders.repo, writable=True)
    if orders.repo.kind in ("label", "uuid", "partition"):
        with contextlib.suppress(HourglassError):
            return locations.directory(orders.repo, writable=True)
    return locations.directory(orders.repo, writable=False)


def _passphrase(orders: Orders, locations: Locations) -> str | None:
    if orders.passphrase_file is None:
        return None
    text = locations.read_file(orders.passphrase_file).decode().rstrip("\r\n")
    if not text:
        raise UsageError(f"The passphrase file {orders.passphrase_file.describe()} is empty.")
    return text


def _credentials(text: str) -> tuple[str, str]:
    """``username=`` and ``password=`` lines (the format of mount.cifs credential files)."""
    values = parse_config(text)
    return values.get("username", ""), values.get("password", "")


def _object_store(orders: Orders, locations: Locations) -> Store:
    """The store of an ``s3://`` repository: the endpoint, CA file and AWS credentials file
    of the orders (the files read where they are, by boto3; the keys go nowhere else)."""
    assert orders.repo is not None
    options = S3Options(
        endpoint=orders.s3_endpoint or None,
        ca_file=locations.file_path(orders.ca_file) if orders.ca_file else None,
        credentials_file=locations.file_path(orders.credentials) if orders.credentials else None,
    )
    return object_store(orders.repo.source, options)


def carry_out(orders: Orders, locations: Locations, say: Callable[[str], None]) -> str:
    """Do the work; returns the summary for the OK line, raises on any failure."""
    if orders.lab:
        return _lab_restore(orders, say)
    assert orders.repo is not None
    where: Path | Store
    if orders.repo.kind == "s3":
        where, disks = _object_store(orders, locations), set()
    else:
        if orders.credentials is not None:
            text = locations.read_file(orders.credentials).decode()
            locations.credentials = _credentials(text)
        repo_dir = _repository_directory(locations, orders)
        where, disks = repo_dir.directory, repo_dir.disks
    passphrase = _passphrase(orders, locations)
    repo = open_repository(where, passphrase)
    say(f"repository {orders.repo.describe()} opened")
    progress = LineProgress(say)
    exclude = {f"/dev/{name}" for name in disks}
    source = orders.source or None

    if orders.run == "backup":
        disk = choose_disk(list_disks(), orders.source, role="source", exclude=exclude)
        say(f"backing up {disk.device}: {disk.title()}")
        done = jobs.backup(repo, jobs.BackupRequest(sources=(disk.device,)), progress=progress)
        snapshot = done.snapshot
        if done.report is not None and not done.report.ok:
            raise HourglassError(
                f"the new snapshot does not verify: {done.report.damage[0].describe()}"
            )
        for warning in done.warnings:
            say(f"warning: {warning}")
        st = snapshot.record.stats
        return (
            f"backup {snapshot.id[:12]} of {disk.device} ({disk.title()}) at "
            f"{snapshot.time.strftime('%Y-%m-%d %H:%M:%S')}: read {human_size(st.read)}, "
            f"added {human_size(snapshot.stored)}, verified"
        )

    if orders.run == "verify":
        whole = orders.snapshot == "latest" and not source
        request = jobs.VerifyRequest(
            snapshot=None if whole else orders.snapshot, source=source, read_data=orders.read_data
        )
        report = jobs.verify(repo, request, progress=progress)
        if not report.ok:
            raise HourglassError(
                f"{len(report.damage)} damaged: {report.damage[0].describe().splitlines()[0]}"
            )
        kind = "data" if orders.read_data else "structure"
        return (
            f"verify ({kind}) of {report.snapshots} snapshot(s), {report.checked} chunks: no damage"
            + _read_around(report.degraded)
        )

    if orders.run == "restore":
        disk = choose_disk(list_disks(), orders.target, role="target", exclude=exclude)

        def announce(preview: jobs.RestorePreview) -> None:
            when = preview.snapshot.time.strftime("%Y-%m-%d %H:%M:%S")
            say(
                f"restoring snapshot {preview.snapshot.id[:12]} ({when}) to {disk.device}: "
                f"{disk.title()}"
            )

        at = _as_of(repo, orders.snapshot) if orders.partition is None else None
        order = jobs.RestoreRequest(
            snapshot="" if at else orders.snapshot,
            target=disk.device,
            source=source,
            partition=orders.partition,
            grow=orders.grow,
            new_ids=orders.new_ids,
            verify=True,
            at=at,
        )
        result = jobs.restore(repo, order, confirm=announce, progress=progress)
        if result.damaged or not result.verified:
            raise HourglassError(f"the restore to {disk.device} did not verify")
        when = result.snapshot.time.strftime("%Y-%m-%d %H:%M:%S")
        shrunk = result.shrunk if isinstance(result, jobs.DiskRestoreResult) else ""
        replayed = result.replayed if isinstance(result, jobs.DiskRestoreResult) else ""
        ids = ""
        if isinstance(result, jobs.DiskRestoreResult) and result.new_ids:
            ids = (
                f"; new ids: {len(result.new_ids)}, kept: {len(result.kept_ids)}, "
                f"references rewritten in {len(result.references)} files"
            )
        return (
            f"restore of {result.snapshot.id[:12]} ({when}) to {disk.device} ({disk.title()}): "
            f"{human_size(result.written)} written, verified"
            + (", grown" if orders.grow else "")
            + (f"; the disk is smaller: {shrunk}" if shrunk else "")
            + (f"; {replayed}" if replayed else "")
            + ids
            + _read_around(result.degraded)
        )

    # files-restore
    dest = locations.directory(parse_location(orders.to, key="to"), writable=True).directory
    files = jobs.files_restore(
        repo,
        jobs.FilesRestoreRequest(
            snapshot=orders.snapshot,
            paths=tuple(orders.paths),
            dest=str(dest),
            partition=orders.partition,
            source=source,
        ),
    )
    if not files.ok:
        names = ", ".join(d.path for d in files.damaged) or "see the log"
        raise HourglassError(f"files-restore: some files could not be restored ({names})")
    when = files.snapshot.time.strftime("%Y-%m-%d %H:%M:%S")
    return (
        f"files-restore of {len(orders.paths)} path(s) from {files.snapshot.id[:12]} ({when}) "
        f"to {orders.to}: {files.restored} item(s), {human_size(files.bytes)}"
    )


def _lab_restore(orders: Orders, say: Callable[[str], None]) -> str:
    """One PC of a lab session: the session's snapshot onto this PC's disk."""
    from imaging.lab.receiver import receive  # noqa: PLC0415 (a lab PC's import only)

    disk = choose_disk(list_disks(), orders.target, role="target", exclude=set())

    def announce(preview: jobs.RestorePreview) -> None:
        when = preview.snapshot.time.strftime("%Y-%m-%d %H:%M:%S")
        say(
            f"lab {orders.lab}: restoring snapshot {preview.snapshot.id[:12]} ({when}) to "
            f"{disk.device}: {disk.title()}"
        )

    got = receive(orders.lab, disk.device, confirm=announce, progress=LineProgress(say))
    if not got.ok or got.restore is None:
        raise HourglassError(f"lab restore to {disk.device}: {got.message}")
    c = got.counters
    return (
        f"lab restore of {got.restore.snapshot.id[:12]} from {orders.lab} to {disk.device} "
        f"({disk.title()}): {human_size(got.restore.written)} written, verified "
        f"({c.by_multicast} chunks by multicast, {c.repaired} repaired, {c.by_http} by HTTP)"
    )


def run_unattended(cmdline: str, *, say: Callable[[str], None] | None = None) -> Outcome:
    """Read the orders from ``cmdline`` (and a config file, and the vendor's defaults), do
    them, report one line."""

    def default_say(text: str) -> None:
        print(f"hourglass: {text}", flush=True)
        serial_line(f"hourglass: {text}")  # the screen has stdout; a lab's log has the port

    say = say or default_say
    started = time.monotonic()
    after = "ui"
    try:
        with Locations() as locations:
            orders = orders_from(gather_keys(cmdline, locations))
            after = orders.after
            if orders.unknown:
                say(f"ignoring unknown keys: {', '.join(orders.unknown)}")
            summary = carry_out(orders, locations, say)
        line = f"{RESULT} OK {summary} in {human_duration(time.monotonic() - started)}"
        ok = True
    except HourglassError as e:
        line = f"{RESULT} FAILED {e.message}" + (f" ({e.hint})" if e.hint else "")
        ok = False
    except Exception as e:  # the one line must come out whatever happened
        traceback.print_exc(file=sys.stderr)
        line = f"{RESULT} FAILED internal error: {type(e).__name__}: {e}"
        ok = False
    line = " ".join(line.split())  # exactly one line
    print(line, flush=True)
    console_line(line)
    return Outcome(ok=ok, line=line, after=after)


def read_cmdline(path: str = "/proc/cmdline") -> str:
    return Path(path).read_text()


def _read_around(degraded: list[str]) -> str:
    """The members of a set that lacked or held damaged data, read around (a restore or
    verify that succeeded on the others): a lab must know a location needs `check --repair`."""
    if not degraded:
        return ""
    return "; read around " + "; ".join(degraded) + " (run `hourglass check --repair`)"


def _as_of(repo: Repository, selector: str) -> datetime | None:
    """``hourglass.snapshot=TIME`` to the second, in a repository with a file journal: the
    whole system as of that second (the image, then the journal replayed). Otherwise None:
    the selector chooses an image as it always has."""
    if not selectors.is_time_to_the_second(selector):
        return None
    if not any(s.kind == "journal" for s in repo.snapshots()):
        return None
    return selectors.parse_time(selector)
