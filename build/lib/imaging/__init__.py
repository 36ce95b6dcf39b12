"""Hourglass imaging engine: repository, disks, backup, restore, verify and the CLI.

This package never imports ``textual`` or ``recovery_ui``: it is used from the CLI, from
scripts and from tests without a user interface installed.
"""

__version__ = "0.1.0"
