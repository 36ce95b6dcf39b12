"""`hourglass files`: ls, versions and restore (file-level restore, docs/FILES.md), and the
FUSE server's `_serve`."""

from __future__ import annotations

import argparse
import stat
import sys
from datetime import datetime
from typing import Any

from imaging import jobs
from imaging.cli.common import local_time, open_repo, print_json
from imaging.errors import HourglassError, IntegrityError, NotFound, UsageError
from imaging.files.browse import Entry, SnapshotBrowser, printable
from imaging.files.images import resolve
from imaging.files.server import main as serve
from imaging.files.versions import file_history
from imaging.progress import reporter_for
from imaging.repository.selectors import parse_time, split_partition
from imaging.units import count, human_size


def entry_line(entry: Entry) -> str:
    kind = {"dir": stat.S_IFDIR, "symlink": stat.S_IFLNK, "file": stat.S_IFREG}.get(
        entry.type, stat.S_IFREG
    )
    mode = stat.filemode(kind | entry.mode)
    name = printable(entry.name) + ("/" if entry.type == "dir" else "")
    if entry.target is not None:
        name += f" -> {printable(entry.target)}"
    when = entry.mtime.strftime("%Y-%m-%d %H:%M:%S")
    return f"{mode} {entry.uid:>5} {entry.gid:>5} {entry.size:>12} {when}  {name}"


def cmd_files_ls(args: argparse.Namespace) -> int:
    repo = open_repo(args)
    snapshot, _ = resolve(repo, args.snapshot, args.partition, source=args.source)
    with SnapshotBrowser(repo, snapshot, _partition(args)) as browser:
        entry = browser.stat(args.path)
        if entry is None:
            raise NotFound(f"{args.path} does not exist in snapshot {snapshot.id[:12]}.")
        entries = browser.listdir(args.path) if entry.type == "dir" else [entry]
    if args.json:
        print_json([e.as_dict() for e in entries])
    else:
        for e in entries:
            print(entry_line(e))
    return 0


def _partition(args: argparse.Namespace) -> int | None:
    """--partition N, else the SNAPSHOT@N suffix (resolve refused the two disagreeing)."""
    return args.partition if args.partition is not None else split_partition(args.snapshot)[1]


# --- files versions -------------------------------------------------------------------------


def _journal_lines(
    repo: Any, path: str, source: str | None, as_json: bool
) -> list[jobs.JournalVersion]:
    found: list[jobs.JournalVersion] = jobs.journal_versions(repo, path, source)
    if as_json or not found:
        return found
    print(f"{printable(path)} in the file journal:")
    for v in found:
        e = v.event
        when = local_time(v.time)
        if e.type == "write" and e.meta is not None:
            print(f"  {when}  version  {human_size(e.meta.size):>10}  ({e.cause})")
        elif e.type == "create" and e.meta is not None:
            print(f"  {when}  created  {e.meta.ftype}")
        elif e.type == "rename":
            print(f"  {when}  renamed  {printable(e.path)} -> {printable(e.to or '')}")
        elif e.type == "delete":
            print(f"  {when}  deleted  {printable(e.path)}")
        elif e.type == "gap":
            start = local_time(datetime.fromtimestamp((e.from_ns or 0) / 1e9))
            print(f"  {when}  GAP      changes from {start} may be missed ({e.reason})")
    return found


def cmd_files_versions(args: argparse.Namespace) -> int:
    repo = open_repo(args)
    journal = _journal_lines(repo, args.path, args.source, args.json)
    if journal and not any(s.kind != "journal" for s in repo.snapshots()):
        if args.json:
            print_json({"journal": [v.as_dict() for v in journal], "images": []})
        return 0
    try:
        history = file_history(
            repo,
            args.path,
            partition=args.partition,
            source=args.source,
            progress=reporter_for(args.progress),
        )
    except HourglassError:
        if not journal:
            raise
        if args.json:
            print_json({"journal": [v.as_dict() for v in journal], "images": []})
        return 0
    if args.json and journal:
        print_json(
            {
                "journal": [v.as_dict() for v in journal],
                "images": [v.as_dict() for v in history.versions],
            }
        )
    elif args.json:
        print_json([v.as_dict() for v in history.versions])
    else:
        numbers = {id(v): i + 1 for i, v in enumerate(history.versions)}
        print(
            f"{printable(history.path)} in {count(len(history.timeline), 'snapshot')} of "
            f"{history.source}:"
        )
        for ref, version in history.timeline:
            when = local_time(ref.time)
            if version is None:
                print(f"  {ref.id[:12]}  {when}  absent")
                continue
            detail = f"{human_size(version.size):>10}  modified {local_time(version.mtime)}"
            digest = "DAMAGED" if version.damaged else (version.hash or "")[:16]
            print(
                f"  {ref.id[:12]}  {when}  version {numbers[id(version)]}  {version.type:<7} "
                f"{detail}  sha256 {digest}"
            )
        print(f"{count(len(history.versions), 'distinct version')}.")
    if not history.versions and not journal:
        print(
            f"hourglass: error: {printable(history.path)} is in none of the "
            f"{count(len(history.timeline), 'snapshot')}.",
            file=sys.stderr,
        )
        return NotFound.exit_code
    return 0


# --- files restore --------------------------------------------------------------------------


def cmd_files_restore(args: argparse.Namespace) -> int:
    if args.at is not None:
        return _restore_at(args)
    if not args.paths:
        raise UsageError("files restore needs a SNAPSHOT and at least one PATH (or --at TIME).")
    repo = open_repo(args)
    request = jobs.FilesRestoreRequest(
        snapshot=args.snapshot,
        paths=tuple(args.paths),
        dest=args.to,
        partition=args.partition,
        source=args.source,
        overwrite=args.overwrite,
    )
    result = jobs.files_restore(repo, request, progress=reporter_for(args.progress))
    snapshot = result.snapshot
    if args.json:
        print_json(
            {
                "snapshot": snapshot.id,
                "time": snapshot.time.isoformat(),
                "image": result.image,
                "dest": result.dest,
                "restored": result.restored,
                "bytes": result.bytes,
                "renamed": [{"path": printable(p), "as": printable(n)} for p, n in result.renamed],
                "damaged": [
                    {"path": printable(d.path), "ranges": d.ranges, "chunks": d.chunks}
                    for d in result.damaged
                ],
                "warnings": result.warnings,
            }
        )
    else:
        print(
            f"Restored {count(result.restored, 'item')}, {human_size(result.bytes)}, from snapshot "
            f"{snapshot.id[:12]} ({local_time(snapshot.time)}) to {result.dest}."
        )
        for path, name in result.renamed:
            print(f"  {printable(path)}: an existing entry was kept; restored as {printable(name)}")
        for warning in result.warnings:
            print(f"WARNING {warning}", file=sys.stderr)
    for damaged in result.damaged:
        print(f"DAMAGED {damaged.describe()}", file=sys.stderr)
    if result.damaged:
        print(
            f"hourglass: error: {count(len(result.damaged), 'file')} could not be restored "
            "completely.",
            file=sys.stderr,
        )
        return IntegrityError.exit_code
    return 0


def _restore_at(args: argparse.Namespace) -> int:
    """`files restore --at TIME PATH...`: from the file journal, as of that second."""
    paths = [p for p in (args.snapshot, *args.paths) if p is not None]
    if not paths:
        raise UsageError("files restore --at TIME needs at least one PATH.")
    when = parse_time(args.at)
    repo = open_repo(args)
    result = jobs.files_restore_at(
        repo, tuple(paths), when, args.to, overwrite=args.overwrite, source=args.source
    )
    if args.json:
        print_json(
            {
                "at": result.at.isoformat(),
                "dest": result.dest,
                "restored": result.restored,
                "bytes": result.bytes,
            }
        )
    else:
        print(
            f"Restored {count(result.restored, 'item')}, {human_size(result.bytes)}, as of "
            f"{local_time(result.at)} from the file journal to {result.dest}."
        )
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    """The FUSE server inside a frozen `hourglass` binary (no `python -m` there)."""
    argv = list(args.server_args)
    return serve(argv[1:] if argv[:1] == ["--"] else argv)


def register(sub: Any, common: argparse.ArgumentParser, plain: argparse.ArgumentParser) -> None:
    snapshot_help = "id, prefix, 'latest' or a local time; @N for partition N"
    partition_help = "partition N of a disk snapshot (the same as SNAPSHOT@N)"

    files = sub.add_parser("files", help="browse snapshots, list versions, restore files")
    fsub = files.add_subparsers(dest="files_command", metavar="ACTION", required=True)

    p = fsub.add_parser("ls", parents=[common], help="list a directory of a snapshot")
    p.add_argument("snapshot", metavar="SNAPSHOT[@N]", help=snapshot_help)
    p.add_argument("path", metavar="PATH", nargs="?", default="/")
    p.add_argument("--partition", type=int, metavar="N", help=partition_help)
    p.add_argument("--source", help="choose among snapshots of this source only")
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=cmd_files_ls)

    p = fsub.add_parser(
        "versions", parents=[common], help="every distinct version of a file across snapshots"
    )
    p.add_argument("path", metavar="PATH")
    p.add_argument("--partition", type=int, metavar="N", help="partition N of disk snapshots")
    p.add_argument("--source", help="the source whose snapshots to compare")
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=cmd_files_versions)

    p = fsub.add_parser("restore", parents=[common], help="restore files and directories")
    p.add_argument(
        "snapshot", metavar="SNAPSHOT[@N]", nargs="?", help=snapshot_help + " (not with --at)"
    )
    p.add_argument("paths", metavar="PATH", nargs="*")
    p.add_argument(
        "--at",
        metavar="TIME",
        help='"YYYY-MM-DD HH:MM:SS": host paths from the file journal as of that second',
    )
    p.add_argument("--partition", type=int, metavar="N", help=partition_help)
    p.add_argument("--to", required=True, metavar="DEST", help="directory to restore into")
    p.add_argument(
        "--overwrite", action="store_true", help="replace existing files instead of renaming"
    )
    p.add_argument("--source", help="choose among snapshots of this source only")
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=cmd_files_restore)

    p = fsub.add_parser("_serve", add_help=False)
    p.add_argument("server_args", nargs=argparse.REMAINDER)
    p.add_argument("--debug", action="store_true")
    p.set_defaults(handler=cmd_serve)
