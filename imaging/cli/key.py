"""`hourglass key`: add or change passphrases and recovery keys, list the key slots."""

from __future__ import annotations

import argparse
from typing import Any

from imaging import passphrase
from imaging.cli.common import add_short_passphrase_option, checked_new, open_repo
from imaging.repository import keys as key_module


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
    secret = checked_new(
        lambda: passphrase.ask_new(passphrase_file=args.new_passphrase_file),
        args.allow_short_passphrase,
    )()
    if args.action == "add":
        slot = repo.add_key(secret)
        print(f"Added a passphrase (slot {slot}).")
    else:
        slot = repo.change_key(secret)
        print(f"Changed the passphrase (new slot {slot}); the old one no longer opens it.")
    return 0


def register(sub: Any, common: argparse.ArgumentParser, plain: argparse.ArgumentParser) -> None:
    p = sub.add_parser("key", parents=[common], help="add or change passphrases and recovery keys")
    p.add_argument("action", choices=["add", "change", "list"])
    p.add_argument("--recovery", action="store_true", help="add: a printable recovery key")
    p.add_argument(
        "--new-passphrase-file", metavar="FILE", help="read the new passphrase from FILE"
    )
    add_short_passphrase_option(p)
    p.set_defaults(handler=cmd_key)
