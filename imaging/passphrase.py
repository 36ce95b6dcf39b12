"""Where the passphrase comes from: ``HOURGLASS_PASSPHRASE``, a file, or a prompt.

Never from a command-line value (other users can read argv). The environment variable is
removed from this process's environment once read, so no child process inherits it.
"""

from __future__ import annotations

import getpass
import os
import sys
from collections.abc import Callable
from pathlib import Path

from imaging.coredumps import forbid_core_dumps
from imaging.errors import Cancelled, UsageError
from imaging.units import count

ENV = "HOURGLASS_PASSPHRASE"
MIN_LENGTH = 4  # shorter is refused unless the person says so
GOOD_LENGTH = 8  # shorter is accepted with a warning


def check_new(secret: str, *, allow_short: bool = False) -> str:
    """Judge a new passphrase by its length: :class:`UsageError` under :data:`MIN_LENGTH`
    characters (unless ``allow_short``); a warning to show under :data:`GOOD_LENGTH`; ""
    when it is long enough."""
    length = len(secret)
    if length >= GOOD_LENGTH:
        return ""
    if length < MIN_LENGTH and not allow_short:
        raise UsageError(
            f"The passphrase has {count(length, 'character')}: at least {MIN_LENGTH} are needed.",
            f"Choose a longer one ({GOOD_LENGTH} or more, e.g. a few words), or give "
            "--allow-short-passphrase to use it anyway.",
        )
    return (
        f"The passphrase has only {count(length, 'character')}: {GOOD_LENGTH} or more (a few "
        "words) are much harder to guess."
    )


def read_passphrase_file(path: str | Path) -> str:
    try:
        text = Path(path).read_text()
    except OSError as e:
        raise UsageError(f"Cannot read the passphrase file {path}: {e.strerror}.") from e
    passphrase = text.rstrip("\r\n")
    if not passphrase:
        raise UsageError(f"The passphrase file {path} is empty.")
    return passphrase


def _prompt(confirm: bool, what: str) -> str:
    if not sys.stdin.isatty():
        raise UsageError(
            f"A {what} is needed and there is no terminal to ask on.",
            f"Set {ENV} or use --passphrase-file FILE.",
        )
    first = _ask(f"Enter {what}: ")
    if not first:
        raise UsageError(f"The {what} must not be empty.")
    if confirm and _ask(f"Enter {what} again: ") != first:
        raise UsageError(f"The two {what}s do not match.")
    return first


def _ask(prompt: str) -> str:
    """One hidden answer; Ctrl-C or Ctrl-D at the prompt cancels (nothing was done yet)."""
    try:
        return getpass.getpass(prompt)
    except (EOFError, KeyboardInterrupt):
        print(file=sys.stderr)
        raise Cancelled("Cancelled: nothing was changed.") from None


def source(passphrase_file: str | None = None, *, confirm: bool = False) -> Callable[[], str]:
    """A function that returns the passphrase when (and only when) it is needed."""
    forbid_core_dumps()  # the environment block has held the passphrase since exec
    env_value = os.environ.pop(ENV, None)

    def get() -> str:
        if env_value:
            return env_value
        if passphrase_file:
            return read_passphrase_file(passphrase_file)
        return _prompt(confirm, "passphrase")

    return get


def ask_new(what: str = "new passphrase", passphrase_file: str | None = None) -> str:
    """A new secret for `key add|change`: from ``--new-passphrase-file`` or asked twice."""
    forbid_core_dumps()
    if passphrase_file:
        return read_passphrase_file(passphrase_file)
    return _prompt(True, what)
