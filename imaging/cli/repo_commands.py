"""init, backup, snapshots, restore, verify, forget, gc, info, key."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from imaging import jobs, passphrase, selectors
from imaging.backup import describe_unreadable
from imaging.cli.main import print_json
from imaging.errors import Cancelled, IntegrityError, UsageError
from imaging.forget import Policy
from imaging.progress import reporter_for
from imaging.repository import codec, seen, stats
from imaging.repository import keys as key_module
from imaging.repository.store import (
    DEFAULT_LEVEL,
    DamagedSnapshot,
    Repository,
    Snapshot,
    SnapshotList,
)
from imaging.repository.verify import VerifyReport, summary_line
from imaging.restore import RestoreResult
from imaging.units import human_duration, human_size, parse_duration


def repo_path(args: argparse.Namespace) -> str:
    if not args.repo:
        raise UsageError("No repository given.", "Use --repo REPO or set HOURGLASS_REPO.")
    return str(args.repo)


def open_repo(args: argparse.Namespace) -> Repository:
    return Repository.open(repo_path(args), passphrase.source(args.passphrase_file))


def can_confirm(args: argparse.Namespace) -> None:
    """Refuse, before anything is shown or done, when a confirmation will be needed and there
    is no terminal to ask on (and no ``--yes``)."""
    if not getattr(args, "yes", False) and not sys.stdin.isatty():
        raise UsageError(
            "Confirmation needed, but there is no terminal to ask on.",
            "Add --yes to confirm on the command line.",
        )


def confirm(question: str, args: argparse.Namespace) -> None:
    """Ask for a typed ``yes`` unless ``--yes``; refuse when there is nobody to ask."""
    if getattr(args, "yes", False):
        return
    can_confirm(args)
    print(question, file=sys.stderr)
    answer = input("Type yes to continue: ").strip().lower()
    if answer != "yes":
        raise Cancelled("Cancelled: nothing was changed.")


def snapshot_row(s: Snapshot) -> str:
    when = s.time.strftime("%Y-%m-%d %H:%M:%S")
    return f"{s.id[:12]}  {when}  {human_size(s.size):>10}  {human_size(s.stored):>10}  {s.source}"


def damaged_row(d: DamagedSnapshot) -> str:
    """A damaged snapshot where its row would be: its time is lost, its file's is shown."""
    when = d.written.strftime("%Y-%m-%d %H:%M:%S")
    return f"{d.id[:12]}  {when}  {'DAMAGED':>10}  {'':>10}  {d.reason}"


def report_damaged(damaged: list[DamagedSnapshot]) -> None:
    """Name every damaged manifest on stderr, with what can be done about it."""
    for d in damaged:
        print(f"DAMAGED {d.describe()}", file=sys.stderr)
    if damaged:
        print(
            f"hourglass: error: {len(damaged)} snapshot manifest(s) cannot be read; the other "
            "snapshots are intact.",
            file=sys.stderr,
        )
        print(
            "hourglass: hint: `hourglass forget ID` removes a damaged snapshot (gc stops "
            "until then).",
            file=sys.stderr,
        )


# --- init -----------------------------------------------------------------------------------


def cmd_init(args: argparse.Namespace) -> int:
    path = args.path or repo_path(args)
    secret = None
    if args.encryption != "none":
        secret = passphrase.source(args.passphrase_file, confirm=True)
    repo = Repository.init(
        path,
        encryption=args.encryption,
        passphrase=secret,
        level=args.compression_level,
        block_size=args.block_size,
    )
    kind = "an encrypted" if repo.encrypted else "an unencrypted"
    print(f"Created {kind} repository at {repo.path} ({human_size(repo.block_size)} blocks).")
    if repo.encrypted:
        print(
            "Keep the passphrase safe: without it the backups cannot be read. "
            "`hourglass key add --recovery` prints a recovery key to store on paper."
        )
    return 0


# --- backup ---------------------------------------------------------------------------------


def cmd_backup(args: argparse.Namespace) -> int:
    repo = open_repo(args)
    request = jobs.BackupRequest(
        sources=tuple(args.sources),
        check=jobs.Check(args.check),
        rescue=args.rescue,
        force=args.force,
    )
    result = jobs.backup(repo, request, progress=reporter_for(args.progress))
    snapshot, report = result.snapshot, result.report
    if args.json:
        print_json(
            snapshot.summary()
            | {
                "stats": snapshot.record.stats.to_dict(),
                "warnings": result.warnings,
                "check": result.check.value,
                "check_ok": result.ok,
            }
        )
    else:
        st = snapshot.record.stats
        elapsed = st.elapsed or 1e-9
        checked = {
            jobs.Check.NONE: "not checked",
            jobs.Check.STRUCTURE: "structure checked",
            jobs.Check.DATA: "every chunk read back",
        }[result.check]
        print(
            f"Snapshot {snapshot.id[:12]} of {snapshot.source} at "
            f"{snapshot.time.strftime('%Y-%m-%d %H:%M:%S %z')}\n"
            f"  read {human_size(st.read)} in {human_duration(elapsed)} "
            f"({human_size(st.read / elapsed)}/s); "
            f"new {human_size(st.new_bytes)}, "
            f"already stored {human_size(st.dedup_bytes)}; "
            f"added {human_size(snapshot.stored)} to the repository; {checked}"
        )
        for line in result.warnings:
            print(f"  WARNING {line}")
    if report is not None and not report.ok:
        for damage in report.damage:
            print(f"DAMAGED {damage.describe()}", file=sys.stderr)
        print(
            f"hourglass: error: snapshot {snapshot.id[:12]} was recorded, but checking it "
            f"found {len(report.damage)} problem(s).",
            file=sys.stderr,
        )
        return IntegrityError.exit_code
    return 0


# --- snapshots ------------------------------------------------------------------------------


def cmd_snapshots(args: argparse.Namespace) -> int:
    """List the snapshots; damaged manifests are listed where they fall, marked, and make
    the command exit 3 (damage found) after the complete list (README.md)."""
    repo = open_repo(args)
    listed = repo.snapshots()
    rollback = seen.note_listing(repo, listed)
    if rollback:
        print(f"WARNING {rollback}", file=sys.stderr)
    snapshots = [s for s in listed if not args.source or args.source in (s.source, s.source_id)]
    # A damaged manifest's source is unknown: it is shown whatever --source says.
    shown = SnapshotList(snapshots, listed.damaged)
    rows = selectors.timeline(shown)
    if args.json:
        print_json(
            [
                item.summary()
                if isinstance(item, DamagedSnapshot)
                else item.summary() | {"damaged": False}
                for item in rows
            ]
        )
    elif not rows:
        print("No snapshots.")
    else:
        print(f"{'ID':<12}  {'TIME':<19}  {'SIZE':>10}  {'STORED':>10}  SOURCE")
        for item in rows:
            print(damaged_row(item) if isinstance(item, DamagedSnapshot) else snapshot_row(item))
    report_damaged(listed.damaged)
    return IntegrityError.exit_code if listed.damaged else 0


# --- restore --------------------------------------------------------------------------------


def report_restore(result: RestoreResult, args: argparse.Namespace) -> int:
    for damaged in result.damaged:
        print(f"DAMAGED {damaged.describe()}", file=sys.stderr)
    status = "verified" if result.verified else "not verified"
    print(
        f"Restored snapshot {result.snapshot.id[:12]} "
        f"({result.snapshot.time.strftime('%Y-%m-%d %H:%M:%S')}) to {result.target}: "
        f"{human_size(result.written)} written, {status}."
    )
    for line in describe_unreadable(result.snapshot):
        print(f"WARNING the source was unreadable there at backup: {line}", file=sys.stderr)
    if result.damaged:
        print(
            f"hourglass: error: {len(result.damaged)} damaged range(s) were filled with zeros.",
            file=sys.stderr,
        )
        return IntegrityError.exit_code
    return 0


def cmd_restore(args: argparse.Namespace) -> int:
    repo = open_repo(args)

    def confirm_restore(preview: jobs.RestorePreview) -> None:
        for warning in preview.warnings:
            print(f"hourglass: warning: {warning}", file=sys.stderr)
        confirm(preview.question(), args)

    request = jobs.RestoreRequest(
        snapshot=args.snapshot,
        target=args.target,
        source=args.source,
        grow=args.grow,
        new_ids=args.new_ids,
        verify=not args.no_verify,
        ignore_damage=args.ignore_damage,
    )
    result = jobs.restore(
        repo, request, confirm=confirm_restore, progress=reporter_for(args.progress)
    )
    if isinstance(result, jobs.DiskRestoreResult):
        if result.table:
            print(f"Partition table ({result.table}) recreated on {args.target}.")
        if result.kernel:
            print(f"The kernel re-read the partition table ({result.kernel}).")
        if result.grown:
            print(f"Grown: {result.grown}.")
        for note in result.notes:
            print(f"Note: {note}", file=sys.stderr)
    return report_restore(result, args)


# --- verify ---------------------------------------------------------------------------------


def cmd_verify(args: argparse.Namespace) -> int:
    if args.keyless:
        report = jobs.verify_keyless(repo_path(args), progress=reporter_for(args.progress))
        print(f"Checked {report.checked} stored files without the key.")
        return _print_damage(report)
    repo = open_repo(args)
    request = jobs.VerifyRequest(
        snapshot=args.snapshot or None,
        read_data=args.read_data,
        max_time=parse_duration(args.max_time) if args.max_time else None,
    )
    report = jobs.verify(repo, request, progress=reporter_for(args.progress))
    if args.json:
        print_json(
            {
                "ok": report.ok,
                "complete": report.complete,
                "snapshots": report.snapshots,
                "chunks": report.chunks,
                "checked": report.checked,
                "damage": [
                    {"what": d.what, "reason": d.reason, "affects": d.affects}
                    for d in report.damage
                ],
            }
        )
    else:
        kind = "data" if args.read_data else "structure"
        print(f"Verified {kind}: {summary_line(report)}.")
        if report.resumed:
            print("Continued where the previous time-boxed verify stopped.")
        if not report.complete:
            print("Time is up; run the same command again to continue where this one stopped.")
    return _print_damage(report, quiet=args.json)


def _print_damage(report: VerifyReport, *, quiet: bool = False) -> int:
    if not quiet:
        for damage in report.damage:
            print(f"DAMAGED {damage.describe()}")
    if not report.ok:
        print(
            f"hourglass: error: the repository is damaged ({len(report.damage)} problem(s)).",
            file=sys.stderr,
        )
        return IntegrityError.exit_code
    return 0


# --- forget and gc --------------------------------------------------------------------------


def cmd_forget(args: argparse.Namespace) -> int:
    repo = open_repo(args)
    policy = None
    if not args.snapshots:
        policy = Policy(
            last=args.keep_last,
            hourly=args.keep_hourly,
            daily=args.keep_daily,
            weekly=args.keep_weekly,
            monthly=args.keep_monthly,
        )
    request = jobs.ForgetRequest(
        snapshots=tuple(args.snapshots), policy=policy, source=args.source, dry_run=args.dry_run
    )

    def show(plan: jobs.ForgetPlan) -> None:
        if args.json:
            print_json(
                {
                    "keep": [s.summary() | {"reasons": r} for s, r in plan.keep],
                    "remove": [s.summary() for s in plan.remove] + [d.summary() for d in plan.lost],
                    "damaged": [d.summary() for d in plan.untouched],
                    "dry_run": args.dry_run,
                }
            )
            return
        verb = "would forget" if args.dry_run else "forget"
        for s, reasons in sorted(plan.keep, key=lambda x: x[0].order):
            print(f"keep    {snapshot_row(s)}  ({', '.join(reasons)})")
        for s in sorted(plan.remove, key=lambda x: x.order):
            print(f"{verb}  {snapshot_row(s)}")
        for d in plan.lost:
            print(f"{verb}  {damaged_row(d)}")
        for d in plan.untouched:
            print(f"damaged {damaged_row(d)}  (forget it by id)")

    def confirm_forget(plan: jobs.ForgetPlan) -> None:
        can_confirm(args)  # before anything is shown
        show(plan)
        confirm(f"This will forget the {plan.count} snapshot(s) listed above.", args)

    result = jobs.forget(repo, request, confirm=confirm_forget)
    if not result.forgotten:
        show(result.plan)  # a dry run, or nothing to forget: nothing was asked
    elif not args.json:
        print(f"Forgot {result.forgotten} snapshot(s). Run `hourglass gc` to free their space.")
    return 0


def cmd_gc(args: argparse.Namespace) -> int:
    repo = open_repo(args)
    result = jobs.gc(repo)
    if args.json:
        print_json({**vars(result), "waited_for": sorted(result.waited_for)})
        return 0
    print(
        f"Referenced chunks: {result.referenced}. Freed {result.freed} chunk(s), "
        f"{human_size(result.freed_bytes)}."
    )
    if result.direct:
        print("The drive had no room for trash: unreferenced chunks were deleted directly.")
    if result.waiting_batches:
        print(
            f"{result.waiting_batches} batch(es) of unreferenced chunks wait in trash until the "
            "backups or restores running now have finished; the next gc frees them."
        )
    if result.restored:
        print(f"Moved {result.restored} chunk(s) back from trash: a new snapshot needs them.")
    return 0


# --- info -----------------------------------------------------------------------------------


def cmd_info(args: argparse.Namespace) -> int:
    repo = open_repo(args)
    info = stats.collect(repo)
    if args.json:
        print_json(info.as_dict())
        return 0
    print(
        f"Repository   {info.path}\n"
        f"Encryption   {info.encryption}"
        + (f" ({info.key_slots} key slot(s))" if info.key_slots else "")
        + f"\nBlock size   {human_size(info.block_size)}"
        + f"\nSnapshots    {info.snapshots} of {info.sources} source(s)\n"
        f"Logical size {human_size(info.logical_bytes)} ({human_size(info.data_bytes)} of data)\n"
        f"Unique data  {human_size(info.unique_bytes)} (deduplication {info.dedup_ratio:.2f}x)\n"
        f"Stored       {human_size(info.stored_bytes)} in {info.chunks} chunks "
        f"(compression {info.compression_ratio:.2f}x)"
    )
    return 0


# --- key ------------------------------------------------------------------------------------


def cmd_key(args: argparse.Namespace) -> int:
    repo = open_repo(args)
    if args.action == "list":
        for entry in repo.key_slots():
            mark = " (used now)" if entry["slot"] == repo.unlocked_slot else ""
            print(f"{entry['slot']}  {entry['kind']}{mark}")
        return 0
    if args.action == "add" and args.recovery:
        key = key_module.new_recovery_key()
        slot = repo.add_key(key, kind="recovery")
        print(
            "Recovery key (write it down and keep it apart from the backup drive; it is shown "
            f"only now):\n\n    {key}\n\nIt opens the repository like a passphrase (slot {slot})."
        )
        return 0
    secret = passphrase.ask_new(passphrase_file=args.new_passphrase_file)
    if args.action == "add":
        slot = repo.add_key(secret)
        print(f"Added a passphrase (slot {slot}).")
    else:
        slot = repo.change_key(secret)
        print(f"Changed the passphrase (new slot {slot}); the old one no longer opens it.")
    return 0


# --- registration ---------------------------------------------------------------------------


def _block_size(text: str) -> int:
    sizes = {human_block(n): n for n in codec.BLOCK_SIZES}
    key = text.strip().upper().removesuffix("IB").removesuffix("B")
    if key not in sizes:
        raise argparse.ArgumentTypeError(f"choose one of {', '.join(sizes)}")
    return sizes[key]


def human_block(n: int) -> str:
    """``1048576`` -> ``"1M"``, the spelling --block-size takes."""
    return f"{n >> 20}M" if n >= 1 << 20 else f"{n >> 10}K"


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("init", parents=[common], help="create a repository")
    p.add_argument("path", nargs="?", metavar="REPO", help="directory to create (or --repo)")
    p.add_argument("--encryption", choices=["aes-256-gcm", "none"], default="aes-256-gcm")
    p.add_argument(
        "--compression-level",
        type=int,
        choices=range(1, 20),
        default=DEFAULT_LEVEL,
        metavar="1-19",
        help=f"zstd level for every chunk (default {DEFAULT_LEVEL}: fastest; 3 stores about 7 %% "
        "less and takes about 40 %% longer)",
    )
    p.add_argument(
        "--block-size",
        type=_block_size,
        default=codec.DEFAULT_BLOCK_SIZE,
        metavar="SIZE",
        help="unit of deduplication, fixed for the repository's life: 256K, 512K, 1M, 2M or 4M "
        "(default 1M; smaller stores less for small changes and needs more memory per TiB)",
    )
    p.set_defaults(handler=cmd_init)

    p = sub.add_parser(
        "backup", parents=[common], help="back up a disk, partitions or an image file"
    )
    p.add_argument("sources", nargs="+", metavar="SOURCE")
    p.add_argument(
        "--rescue", action="store_true", help="store zeros for unreadable ranges and go on"
    )
    p.add_argument(
        "--force", action="store_true", help="image a partition even if mounted read-write"
    )
    p.add_argument(
        "--check",
        choices=[c.value for c in jobs.Check],
        default=jobs.Check.STRUCTURE.value,
        help="once committed: structure (default: every chunk the snapshot names is "
        "stored), data (also read every chunk back), none",
    )
    p.add_argument("--json", action="store_true", help="print the snapshot as JSON")
    p.set_defaults(handler=cmd_backup)

    p = sub.add_parser("snapshots", parents=[common], help="list snapshots")
    p.add_argument("--json", action="store_true")
    p.add_argument("--source", help="only snapshots of this source")
    p.set_defaults(handler=cmd_snapshots)

    p = sub.add_parser("restore", parents=[common], help="restore a snapshot to a disk or file")
    p.add_argument("snapshot", metavar="SNAPSHOT", help="id, prefix, 'latest' or a local time")
    p.add_argument("target", metavar="TARGET", help="block device or file to overwrite")
    p.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    p.add_argument("--source", help="choose among snapshots of this source only")
    p.add_argument("--no-verify", action="store_true", help="do not read back what was written")
    p.add_argument(
        "--ignore-damage", action="store_true", help="write zeros for damaged chunks and go on"
    )
    p.add_argument("--grow", action="store_true", help="grow the last partition to fill the disk")
    p.add_argument("--new-ids", action="store_true", help="give the disk and partitions new GUIDs")
    p.set_defaults(handler=cmd_restore)

    p = sub.add_parser("verify", parents=[common], help="check the repository")
    p.add_argument("snapshot", nargs="?", metavar="SNAPSHOT")
    p.add_argument("--read-data", action="store_true", help="read and authenticate every chunk")
    p.add_argument("--max-time", metavar="DURATION", help="stop after this long; resume next time")
    p.add_argument(
        "--keyless", action="store_true", help="only check stored checksums (needs no passphrase)"
    )
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=cmd_verify)

    p = sub.add_parser("forget", parents=[common], help="forget snapshots by policy")
    p.add_argument("snapshots", nargs="*", metavar="SNAPSHOT", help="forget these snapshots")
    for name in ("last", "hourly", "daily", "weekly", "monthly"):
        p.add_argument(f"--keep-{name}", type=int, default=0, metavar="N")
    p.add_argument("--source", help="apply to snapshots of this source only")
    p.add_argument("--dry-run", action="store_true", help="show what would go")
    p.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=cmd_forget)

    p = sub.add_parser("gc", parents=[common], help="free the space of forgotten snapshots")
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=cmd_gc)

    p = sub.add_parser("info", parents=[common], help="repository statistics")
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=cmd_info)

    p = sub.add_parser("key", parents=[common], help="add or change passphrases and recovery keys")
    p.add_argument("action", choices=["add", "change", "list"])
    p.add_argument("--recovery", action="store_true", help="add: a printable recovery key")
    p.add_argument(
        "--new-passphrase-file", metavar="FILE", help="read the new passphrase from FILE"
    )
    p.set_defaults(handler=cmd_key)
