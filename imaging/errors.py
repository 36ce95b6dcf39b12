"""Typed errors with a message written for the person at the console.

Every error the engine raises on purpose is an :class:`HourglassError`. The CLI prints its
message (and hint) on one line and exits with the error's code; the app shows them in a
dialog. A traceback is shown only with ``--debug``.
"""

from __future__ import annotations


class HourglassError(Exception):
    """Base class: ``message`` says what happened, ``hint`` what the person can do."""

    exit_code = 1

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message if not self.hint else f"{self.message} {self.hint}"


class UsageError(HourglassError):
    exit_code = 2


class RepositoryOnSource(UsageError):
    """The repository is on the disk to be backed up: the backup would read itself."""


class IntegrityError(HourglassError):
    """Stored data is damaged. The message names what is damaged."""

    exit_code = 3


class PassphraseError(HourglassError):
    """The passphrase or recovery key does not open any key slot."""

    exit_code = 4


# What a person who typed the passphrase wrong can check (the app says it in its language).
MISTYPED_HINT = (
    "Check Caps Lock and the keyboard layout (the console may use a US layout, which moves "
    "letters such as Z/Y and symbols), then type it again; or use the recovery key."
)


class NotFound(HourglassError):
    exit_code = 5


class RepositoryNotFound(NotFound):
    pass


class SnapshotNotFound(NotFound):
    pass


class TargetUnsuitable(HourglassError):
    """The restore target cannot take the image (too small, in use, holds the repository)."""

    exit_code = 6


class TargetTooSmall(TargetUnsuitable):
    pass


class NoSpace(HourglassError):
    exit_code = 7


class NoScratchSpace(NoSpace):
    """No place with room for the scratch copy a filesystem shrinks in."""


class Cancelled(HourglassError):
    exit_code = 8


class SourceError(HourglassError):
    """The source cannot be read (missing, mounted read-write, read errors)."""

    exit_code = 9


class RepositoryTooNew(HourglassError):
    exit_code = 10


class FormatError(IntegrityError):
    """A repository file does not parse. Raised by every parser for hostile input."""


class ToolMissing(HourglassError):
    """An external program is not installed."""

    exit_code = 11


class ToolFailed(HourglassError):
    """An external program exited with an error."""

    exit_code = 12


class Busy(HourglassError):
    """Another process holds what this operation needs (a gc lease, a mount)."""

    exit_code = 13


class NotFinished(HourglassError):
    """Work stopped cleanly with some left to do (a copy at the end of its ``--window``):
    what was done is kept, and running the same command again resumes."""

    exit_code = 14


class LocationLost(HourglassError):
    """The repository's drive or share went away while in use (a USB drive pulled, a FUSE
    driver gone, a share disconnected). Nothing half-done is recorded as done: a backup
    that stops so commits no snapshot, and the next one reuses what was stored."""

    exit_code = 15


def os_reason(error: OSError) -> str:
    """What went wrong, in words: ``strerror``, else the error's text (a timeout of a
    socket has no strerror), else its kind."""
    return error.strerror or str(error) or type(error).__name__
