"""``python -m build``: build the appliance, provision a backup drive, or run it in QEMU."""

from __future__ import annotations

import argparse
import logging
import os
import sys
import traceback
from collections.abc import Sequence
from pathlib import Path

from build.context import REPOSITORY, Context
from build.demo import run_appliance
from build.pipeline import build_image, retarget_pxe_bundle
from build.provision import provision
from build.vendor import load_vendor
from imaging import passphrase
from imaging.errors import HourglassError


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m build", description=__doc__)
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    sub = parser.add_subparsers(dest="command", required=True)

    image = sub.add_parser("image", help="build the ISO and the PXE bundle into dist/")
    image.add_argument("--vendor", type=Path, help="vendor file (default: image/vendor.toml)")
    image.add_argument(
        "--force", action="append", default=[], metavar="STEP", help="run STEP even if unchanged"
    )
    image.add_argument("--until", metavar="STEP", help="stop after STEP")

    provision = sub.add_parser(
        "provision", help="erase a disk and make it a bootable backup drive with a repository"
    )
    provision.add_argument("--disk", required=True, type=Path, help="disk (/dev/sdX) or image file")
    provision.add_argument("--fs", choices=["ext4", "exfat"], default="ext4", help="data partition")
    provision.add_argument(
        "--encryption",
        choices=["aes-256-gcm", "none"],
        default="aes-256-gcm",
        help="repository encryption; the passphrase comes from $HOURGLASS_PASSPHRASE or a prompt",
    )
    provision.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    provision.add_argument("--vendor", type=Path, help="vendor file (default: image/vendor.toml)")

    pxe = sub.add_parser("pxe-url", help="point a PXE bundle's boot configs at another address")
    pxe.add_argument(
        "--bundle", required=True, type=Path, help="the hourglass-<version>-pxe folder"
    )
    pxe.add_argument("--url", required=True, help="where the bundle is served over HTTP")
    pxe.add_argument("--vendor", type=Path, help="vendor file (default: image/vendor.toml)")

    run = sub.add_parser("run", help="boot the built appliance in QEMU with demo disks")
    run.add_argument("--vendor", type=Path, help="vendor file (default: image/vendor.toml)")
    return parser.parse_args(argv)


def default_vendor() -> Path:

    return REPOSITORY / "image" / "vendor.toml"


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    try:
        ctx = Context(vendor=load_vendor(args.vendor or default_vendor()))
        # MIRROR and SECURITY_MIRROR: a local Debian mirror (for labs without the internet).
        ctx.mirror = os.environ.get("MIRROR", ctx.mirror).rstrip("/")
        ctx.security_mirror = os.environ.get("SECURITY_MIRROR", ctx.security_mirror).rstrip("/")
        if args.command == "image":
            ctx.forced = frozenset(args.force)
            build_image(ctx, until=args.until)
        elif args.command == "provision":
            info = provision(
                ctx,
                args.disk,
                filesystem=args.fs,
                encryption=args.encryption,
                passphrase=passphrase.source(confirm=True),
                yes=args.yes,
            )
            print(f"{info.device} is now a {ctx.vendor.name} backup drive.")
        elif args.command == "pxe-url":
            retarget_pxe_bundle(ctx, args.bundle, args.url)
        elif args.command == "run":
            return run_appliance(ctx)
        return 0
    except HourglassError as e:
        if args.debug:
            traceback.print_exc()
        print(f"error: {e.message}", file=sys.stderr)
        if e.hint:
            print(f"hint: {e.hint}", file=sys.stderr)
        return e.exit_code


if __name__ == "__main__":
    sys.exit(main())
