"""`hourglass lab`: a room of PCs back to one snapshot at once (docs/LAB.md).

``lab serve`` runs on the machine with the repository: network boot for the room (proxy
DHCP, TFTP and HTTP of the PXE bundle; the site's DHCP server stays as it is), and the
session's multicast and HTTP. ``lab receive`` is what each PC runs (the appliance does it
from the boot entry's ``hourglass.run=restore hourglass.lab=URL``).
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from imaging import jobs
from imaging.cli.common import confirm, open_repo
from imaging.errors import HourglassError, UsageError
from imaging.progress import reporter_for
from imaging.units import human_size

RESULT = "HOURGLASS-RESULT:"


def read_names(path: Path) -> dict[str, str]:
    """MAC to name, from a CSV of ``mac,name`` rows (a header row is allowed)."""
    names: dict[str, str] = {}
    try:
        with path.open(newline="") as f:
            for number, row in enumerate(csv.reader(f), 1):
                if not row or row[0].strip().startswith("#"):
                    continue
                mac = row[0].strip().lower().replace("-", ":")
                if len(row) < 2 or mac.count(":") != 5:
                    if number == 1:
                        continue  # a header
                    raise UsageError(f"{path}, line {number}: expected MAC,NAME.")
                names[mac] = row[1].strip()
    except OSError as e:
        raise UsageError(f"Cannot read {path}: {e.strerror}.") from e
    return names


def _rate(value: str) -> float:
    """``200M`` (bits per second, as network ports are sold) to bytes per second."""
    units = {"k": 1e3, "m": 1e6, "g": 1e9}
    text = value.strip().lower().removesuffix("bit").removesuffix("b")
    scale = units.get(text[-1:], 1.0)
    number = text[:-1] if text[-1:] in units else text
    try:
        bits = float(number) * scale
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a rate: {value} (e.g. 200M)") from None
    if bits <= 0:
        raise argparse.ArgumentTypeError(f"not a rate: {value}")
    return bits / 8


def cmd_lab_serve(args: argparse.Namespace) -> int:
    from imaging.lab.pxe import PxeBoot, find_bundle, lab_network  # noqa: PLC0415
    from imaging.lab.run import LabRun  # noqa: PLC0415
    from imaging.lab.server import LabServer  # noqa: PLC0415

    names = read_names(args.names) if args.names else {}
    network = lab_network(interface=args.interface, address=args.address)
    bundle = None if args.no_pxe else find_bundle(args.bundle)
    dashboard = _dashboard(args)
    repo = open_repo(args)
    snapshot = jobs.choose_snapshot(repo, args.snapshot).snapshot
    if snapshot.kind != "disk":
        raise UsageError(f"Snapshot {snapshot.id[:12]} is not a whole-disk image.")
    lock = threading.Lock()

    def say(line: str) -> None:
        with lock:
            print(f"{time.strftime('%H:%M:%S')} {line}", flush=True)

    server = LabServer(
        repo,
        snapshot,
        address=network.address,
        http_port=args.http_port,
        after=args.after,
        max_rate=args.max_rate,
    )
    boot = None
    if bundle is not None:
        boot = PxeBoot(
            bundle, network, server.url(), http_port=args.http_port + 1, after=args.after
        )
    session = LabRun(
        server,
        boot,
        clients=args.clients,
        start_after=args.start_after,
        names=names,
        say=(lambda _: None) if dashboard else say,
    )
    session.open()
    try:
        opening = (
            f"Serving snapshot {snapshot.id[:12]} ({human_size(snapshot.size)}) on "
            f"{network.interface} at {server.url()}"
            + (", network boot on" if boot else "")
            + ". "
            + session.rule()
        )
        if dashboard is not None:
            dashboard(session, opening)
        else:
            say(opening)
            while not session.poll():
                time.sleep(0.5)
    finally:
        session.close()
    if dashboard is None:
        print(session.summary(), end="", flush=True)
    else:
        print(session.result_line(), flush=True)
    return 0 if session.ok else 1


def _dashboard(args: argparse.Namespace) -> Callable[[Any, str], None] | None:
    """The app's lab dashboard (entry point ``hourglass.dashboards``: the engine never
    imports the app) when asked for, or by default on a terminal when the app is there."""
    if args.dashboard == "no" or (args.dashboard == "auto" and not sys.stdout.isatty()):
        return None
    from importlib.metadata import entry_points  # noqa: PLC0415

    for entry_point in entry_points(group="hourglass.dashboards", name="lab"):
        with contextlib.suppress(ImportError):
            run: Callable[[Any, str], None] = entry_point.load()
            return run
    if args.dashboard == "yes":
        raise UsageError("The lab dashboard needs the Hourglass app (recovery_ui) installed.")
    return None


def cmd_lab_receive(args: argparse.Namespace) -> int:
    from imaging.lab.receiver import receive  # noqa: PLC0415

    def confirm_restore(preview: jobs.RestorePreview) -> None:
        confirm(preview.question(), args)

    try:
        result = receive(
            args.server, args.target, confirm=confirm_restore, progress=reporter_for(args.progress)
        )
    except HourglassError as e:
        print(f"{RESULT} FAILED {e.message}", flush=True)
        raise
    c = result.counters
    detail = f"{c.by_multicast} chunks by multicast, {c.repaired} repaired, {c.by_http} by HTTP" + (
        f", {c.corrupt} damaged in transit and fetched again" if c.corrupt else ""
    )
    if result.ok and result.restore is not None:
        print(
            f"{RESULT} OK restored snapshot {result.restore.snapshot.id[:12]} to {args.target}, "
            f"{human_size(result.restore.written)} written and verified in "
            f"{result.seconds:.1f} s ({detail})",
            flush=True,
        )
        return 0
    print(f"{RESULT} FAILED {result.message} ({detail})", flush=True)
    return 1


def register(sub: Any, common: argparse.ArgumentParser, plain: argparse.ArgumentParser) -> None:
    p = sub.add_parser("lab", help="restore a room of PCs from one snapshot at once")
    lab = p.add_subparsers(dest="lab_command", metavar="ACTION", required=True)
    s = lab.add_parser(
        "serve", parents=[common], help="serve a snapshot to PCs that boot from the network"
    )
    s.add_argument("--snapshot", required=True, metavar="SEL", help="id, prefix, latest or time")
    s.add_argument("--interface", metavar="IF", help="the lab network's interface")
    s.add_argument("--address", metavar="A", help="this machine's address on the lab network")
    s.add_argument("--clients", type=int, metavar="N", help="start when N PCs have joined")
    s.add_argument(
        "--start-after", type=float, metavar="SECONDS", help="start this long after serving"
    )
    s.add_argument("--names", type=Path, metavar="FILE.csv", help="MAC,NAME rows")
    s.add_argument(
        "--after",
        choices=["poweroff", "reboot", "none"],
        default="poweroff",
        help="what each PC does when it is done (default: poweroff)",
    )
    s.add_argument("--bundle", metavar="DIR", help="the PXE bundle (default: the installed one)")
    s.add_argument(
        "--no-pxe", action="store_true", help="no network boot: PCs run `lab receive` themselves"
    )
    s.add_argument(
        "--dashboard",
        choices=["auto", "yes", "no"],
        default="auto",
        help="the PCs on a live screen (default: on a terminal); else a line per change",
    )
    s.add_argument(
        "--http-port",
        type=int,
        default=8470,
        help="the session's HTTP port (the network boot's files are on the next one)",
    )
    s.add_argument(
        "--max-rate",
        type=_rate,
        default=1e9 / 8,
        metavar="RATE",
        help="the multicast's top rate in bits/s (default 1G); it follows the room below it",
    )
    s.set_defaults(handler=cmd_lab_serve)
    r = lab.add_parser("receive", parents=[plain], help="join a lab session and restore")
    r.add_argument("--server", required=True, metavar="URL", help="http://HOST:PORT")
    r.add_argument("target", metavar="TARGET", help="the disk (or image file) to overwrite")
    r.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    r.set_defaults(handler=cmd_lab_receive)
