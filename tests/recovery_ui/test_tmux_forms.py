"""Every form and dialog of the app on a serial console, typed into (issue 22, item 12).

The real `hourglass ui` runs in tmux at 120x40 with TERM=vt220 (a serial console: ASCII
borders, 16 colours) against loop disks only (HOURGLASS_DISKS). Keys go in one at a time,
with a pause between them, as a person types on a slow serial line; Tab moves between
fields. Each field is checked on the screen after typing (passwords by their mask), and what
the app did is checked on the disks with the engine (``hourglass snapshots`` with the
passphrase in the environment, a restored disk's files).

The report: in the New repository form, the passphrase typed after Tab into "Type it again"
never arrived, and "The two passphrases are not the same." came back.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from imaging.disks import mounts
from imaging.repository.store import Repository
from recovery_ui import text
from tests.conftest import PASSPHRASE
from tests.imaging.disks import helpers
from tests.recovery_ui.conftest import Part, disk, mounted, write_thesis
from tests.recovery_ui.tmux import HOURGLASS, START_TIMEOUT, Tmux
from tests.support import MiB

pytestmark = [pytest.mark.integration, pytest.mark.root]

COLUMNS, ROWS = 120, 40
NEW_PASSPHRASE = "lantern orchard 42 river"  # what the person chooses in the app
MISMATCH = "The two passphrases are not the same."
WORK_TIMEOUT = 180.0  # a backup or a restore of a small disk; not a speed limit
MASKS = "•*"  # what a password field shows for each character typed


@dataclass
class Lab:
    """The disks the app sees: the PC's disk, the backup drive, a blank disk."""

    folder: Path  # HOURGLASS_DISKS: the backing files are here
    source: str
    drive: str
    blank: str

    @property
    def drive_partition(self) -> str:
        return f"{self.drive}p1"


@pytest.fixture
def lab(tmp_path: Path) -> Iterator[Lab]:
    folder = tmp_path / "disks"
    folder.mkdir()
    with contextlib.ExitStack() as stack:
        source = stack.enter_context(disk(folder / "pc.img", [Part(1, "ext4", 64, "root")], 80))
        helpers.put_files(f"{source}p1", "ext4", tmp_path, 2 * MiB, 7)
        write_thesis(f"{source}p1", tmp_path / "mnt", "first draft")
        drive = stack.enter_context(
            disk(folder / "drive.img", [Part(1, "ext4", 200, "BACKUP")], 210)
        )
        blank_image = folder / "blank.img"
        helpers.garbage_file(blank_image, 80 * MiB)
        blank = stack.enter_context(helpers.attached(blank_image))
        yield Lab(folder, source, drive, blank)


@pytest.fixture
def app(tmux: Tmux, lab: Lab, tmp_path: Path) -> Iterator[Callable[[], Path]]:
    """Starts `hourglass ui` on a serial-like terminal (returns the file its exit code goes
    to); afterwards the app is gone before the disks are (it may hold their mounts)."""
    try:
        yield lambda: start(tmux, lab, tmp_path)
    finally:
        subprocess.run(["tmux", "-L", tmux.socket, "kill-server"], capture_output=True)
        time.sleep(0.5)  # the app's own unmounting, on its terminal's hangup


def start(tmux: Tmux, lab: Lab, tmp_path: Path) -> Path:
    status = tmp_path / "status"
    env = {
        "HOURGLASS_DISKS": str(lab.folder),
        "HOURGLASS_STATE_DIR": "none",
        "HOURGLASS_VENDOR_FILE": str(tmp_path / "no-vendor.toml"),
        "LANG": "C.UTF-8",
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
    }
    tmux(
        "new-session", "-d", "-s", "ui", "-x", str(COLUMNS), "-y", str(ROWS),
        *[arg for name, value in env.items() for arg in ("-e", f"{name}={value}")],
        f"env -u COLUMNS -u LINES TERM=vt220 {HOURGLASS} ui; echo $? > {status}; sleep 60",
    )  # fmt: skip
    tmux("set-option", "-s", "escape-time", "0")
    tmux.wait_for("Power off", timeout=START_TIMEOUT)
    tmux.press("7")  # the log says which kind of terminal the app took this for
    tmux.wait_for("Hourglass app started")
    assert "terminal serial (TERM=vt220)" in tmux.screen()
    tmux.press("Escape")
    tmux.wait_for("Power off")
    return status


def quit_app(tmux: Tmux, status: Path) -> None:
    tmux.press("C-q")
    deadline = time.monotonic() + 30
    while not status.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert status.read_text().strip() == "0"


def shows(tmux: Tmux, what: str, timeout: float = 30) -> str:
    """Wait for ``what``, then until the screen is still (a person reads before typing)."""
    tmux.wait_for(what, timeout=timeout)
    return tmux.settled(quiet=0.5)


def field_below(screen: str, label: str) -> str:
    """What the field on the line under ``label`` shows (in the label's column)."""
    lines = screen.splitlines()
    row = next(i for i, line in enumerate(lines) if label in line)
    column = max(lines[row].index(label) - 1, 0)
    return re.split(r" {2,}", lines[row + 1][column:].strip())[0]


def field_beside(screen: str, label: str) -> str:
    """What the field to the right of ``label`` (on its line) shows."""
    line = next(line for line in screen.splitlines() if label in line)
    return line.split(label, 1)[1].strip()


def typed_word(screen: str) -> str:
    """What the field of the typed confirmation holds (the word to type stands beside it)."""
    line = next(line for line in screen.splitlines() if "<- type" in line)
    return line.split("<- type", 1)[0].strip(" |")


def masked(shown: str, secret: str) -> bool:
    """A password field showing one mask character for each character of ``secret``."""
    return len(shown) == len(secret) and all(c in MASKS for c in shown)


def clear_field(tmux: Tmux, length: int) -> None:
    """Delete what a field holds, as a person does: End, then Backspace."""
    tmux.press("End", *["BSpace"] * length)


def fill_in_and_check(tmux: Tmux, fields: dict[str, str], secret: str) -> None:
    """Type each value into its field, Tab between them, from the focused first one; then
    each field beside its label shows what was typed (the ``secret`` one masked)."""
    for value in fields.values():
        tmux.settled(quiet=0.3)
        tmux.type(value)
        tmux.press("Tab")
    screen = tmux.settled(quiet=0.5)
    for label, value in fields.items():
        shown = field_beside(screen, label)
        assert masked(shown, value) if label == secret else shown == value, (label, screen)


def choose_row(tmux: Tmux, words: str, tries: int = 8) -> None:
    """Move the focused list's highlight down to the row that holds ``words``."""
    for _ in range(tries):
        if any(words in row for row in tmux.focused_rows()):
            return
        tmux.press("Down")
        tmux.settled(quiet=0.3)
    raise AssertionError(f"no row with {words!r} in the list:\n{tmux.screen()}")


def mountpoint_of(partition: str) -> Path:
    """Where the app mounted ``partition``."""
    real = os.path.realpath(partition)
    for m in mounts.mounts():
        if os.path.realpath(m.source) == real:
            return Path(m.mountpoint)
    raise AssertionError(f"{partition} is not mounted")


def snapshots(repo: Path, passphrase: str) -> list[dict[str, object]]:
    """The repository's snapshots by the engine's command, the passphrase in its
    environment; a passphrase that does not open it fails the command."""
    env = {**os.environ, "HOURGLASS_PASSPHRASE": passphrase}
    result = subprocess.run(
        [str(HOURGLASS), "snapshots", "--repo", str(repo), "--json"],
        capture_output=True,
        text=True,
        env=env,
    )
    assert result.returncode == 0, result.stderr
    return list(json.loads(result.stdout))


def opens(repo: Path, passphrase: str) -> bool:
    env = {**os.environ, "HOURGLASS_PASSPHRASE": passphrase}
    argv = [str(HOURGLASS), "snapshots", "--repo", str(repo), "--json"]
    return subprocess.run(argv, capture_output=True, env=env).returncode == 0


def back_up_to_new_repository(tmux: Tmux, folder: str) -> None:
    """Home -> Back up -> the PC's disk -> Next -> Create a new repository... -> the backup
    drive's partition, ``folder`` typed as its folder -> the New repository form."""
    tmux.press("1")
    shows(tmux, "Which disk do you want to back up?")
    choose_row(tmux, "Loop device, 83")  # the PC's disk (the drive is 220 MB)
    assert '"root"' in tmux.screen()
    tmux.press("Tab", "Tab", "Enter")  # the partitions, Next
    shows(tmux, "Create a new repository...")
    choose_row(tmux, "Create a new repository...")
    tmux.press("Enter")
    screen = shows(tmux, "Where should the new repository be?")
    assert "BACKUP" in screen and '"root"' not in screen  # not the disk backed up
    tmux.press("Enter")  # the drive's partition: on to the folder
    tmux.settled(quiet=0.3)
    clear_field(tmux, len("hourglass-backups"))
    tmux.type(folder)
    screen = tmux.settled(quiet=0.5)
    assert field_below(screen, "Folder on that partition:") == folder
    tmux.press("Enter")
    shows(tmux, "Choose a passphrase:")


def test_new_repository_backup_recovery_key_and_passphrase(
    tmux: Tmux, lab: Lab, app: Callable[[], Path]
) -> None:
    status = app()
    back_up_to_new_repository(tmux, "pc-backups")

    # The New repository form, as reported: passphrase, Tab, the same again, Enter.
    tmux.type(NEW_PASSPHRASE)
    tmux.press("Tab")
    tmux.type(NEW_PASSPHRASE)
    screen = tmux.settled(quiet=0.5)
    assert masked(field_below(screen, "Choose a passphrase:"), NEW_PASSPHRASE), screen
    assert masked(field_below(screen, "Type it again:"), NEW_PASSPHRASE), screen
    tmux.press("Enter")
    screen = shows(tmux, "Check before the backup starts")
    assert MISMATCH not in screen
    repo = mountpoint_of(lab.drive_partition) / "pc-backups"
    assert snapshots(repo, NEW_PASSPHRASE) == []  # made, encrypted with what was typed
    assert not opens(repo, NEW_PASSPHRASE + "x")

    # The backup runs to its end.
    tmux.wait_for("Size of what is backed up", timeout=60)
    tmux.press("Enter")  # Start the backup (focused once the summary is there)
    screen = shows(tmux, "The backup is complete and checked.", timeout=WORK_TIMEOUT)
    assert "Snapshot of" in screen
    taken = snapshots(repo, NEW_PASSPHRASE)
    assert len(taken) == 1 and lab.source in json.dumps(taken[0])

    # Repository -> Recovery key: the key shown opens the repository.
    tmux.press("Enter")  # Done
    shows(tmux, "Power off")
    tmux.press("4")
    shows(tmux, "The open repository:")
    tmux.press("Enter")
    shows(tmux, "Stored on the drive")
    tmux.press(*["Tab"] * 5, "Enter")  # the tab buttons: Statistics ... Recovery key
    shows(tmux, "Passphrases: 1; recovery keys: 0.")
    tmux.press("Enter")  # Create a recovery key
    screen = shows(tmux, "Your recovery key")
    found = re.search(r"\b[A-Z0-9]+(?:-[A-Z2-7]{4}){13}\b", screen)
    assert found, screen
    assert opens(repo, found.group(0))
    tmux.press("Enter")  # I have written it down
    shows(tmux, "Passphrases: 1; recovery keys: 1.")

    # Repository -> Passphrase: a second passphrase that differs is refused and says so.
    changed = "copper kettle 7 meadow"
    tmux.press("BTab", "BTab", "Enter")  # from the button: Recovery key, Passphrase
    shows(tmux, "Change the passphrase")
    tmux.type(changed)
    tmux.press("Tab")
    tmux.type(changed[:-1])
    screen = tmux.settled(quiet=0.5)
    assert masked(field_below(screen, "New passphrase:"), changed), screen
    assert masked(field_below(screen, "Type it again:"), changed[:-1]), screen
    tmux.press("Tab", "Enter")  # Change
    screen = shows(tmux, MISMATCH)
    tmux.press("Enter")  # OK
    shows(tmux, "Change the passphrase")
    assert opens(repo, NEW_PASSPHRASE) and not opens(repo, changed)
    tmux.press("BTab")  # back in "Type it again", which the app emptied
    tmux.type(changed)
    screen = tmux.settled(quiet=0.5)
    assert masked(field_below(screen, "Type it again:"), changed), screen
    tmux.press("Tab", "Enter")
    screen = shows(tmux, "The passphrase is changed.")
    assert MISMATCH not in screen
    assert opens(repo, changed) and not opens(repo, NEW_PASSPHRASE)

    tmux.press("Escape")
    shows(tmux, "Power off")
    quit_app(tmux, status)


DRAFTS = ("first draft", "second draft", "third draft")


def prepared_repository(lab: Lab, tmp_path: Path) -> tuple[list[str], list[str]]:
    """The backup drive holds hourglass-backups with a snapshot of the PC's disk for each of
    DRAFTS (the thesis changed between them): their times as the app shows them, their ids."""
    from imaging.image.backup import run_backup
    from imaging.image.plan import plan_for

    taken = []
    with mounted(lab.drive_partition, tmp_path / "drive") as root:
        repo = Repository.init(root / "hourglass-backups", passphrase=PASSPHRASE)
        for draft in DRAFTS:
            write_thesis(f"{lab.source}p1", tmp_path / "mnt", draft)
            taken.append(run_backup(repo, plan_for([lab.source])))
            time.sleep(1.1)  # snapshots are named to the second
    return [text.when(s.time) for s in taken], [s.id for s in taken]


def open_on_drive(tmux: Tmux, passphrase: str) -> None:
    """In the repository chooser: A folder on a partition -> the drive -> its folder (typed
    again) -> the passphrase, a wrong one first."""
    choose_row(tmux, "A folder on a partition of a disk...")
    tmux.press("Enter")
    shows(tmux, "Which partition holds the repository?")
    choose_row(tmux, '"BACKUP"')
    tmux.press("Enter")
    tmux.settled(quiet=0.3)
    clear_field(tmux, len("hourglass-backups"))
    tmux.type("hourglass-backups")
    assert field_below(tmux.settled(quiet=0.5), "Folder on that partition:") == "hourglass-backups"
    tmux.press("Enter")
    label = "Type the repository's passphrase"
    shows(tmux, label)
    tmux.type(passphrase + "!")
    assert masked(field_below(tmux.settled(quiet=0.5), label), passphrase + "!")
    tmux.press("Enter")
    shows(tmux, "That passphrase does not open this repository.")
    tmux.press("Enter")  # OK: back in the emptied field
    shows(tmux, label)
    tmux.type(passphrase)
    assert masked(field_below(tmux.settled(quiet=0.5), label), passphrase)
    tmux.press("Enter")


def test_forget_and_restore_system(
    tmux: Tmux, lab: Lab, app: Callable[[], Path], tmp_path: Path
) -> None:
    times, ids = prepared_repository(lab, tmp_path)
    with open(lab.blank, "rb") as f:
        head_before = f.read(MiB)
    status = app()

    # Repository -> Forget old: keep the last two; the typed count, a wrong one first.
    tmux.press("4")
    shows(tmux, "Which repository?")
    open_on_drive(tmux, PASSPHRASE)
    shows(tmux, "Stored on the drive")
    tmux.press("Tab", "Tab", "Enter")  # the tab buttons: Statistics, Verify, Forget old
    shows(tmux, "Which backups to keep")
    for label, default, wanted in (
        ("The last backups", "3", "2"),
        ("One a day, for days", "7", "0"),
        ("One a week, for weeks", "4", "0"),
        ("One a month, for months", "12", "0"),
    ):
        clear_field(tmux, len(default))
        tmux.type(wanted)
        assert field_beside(tmux.settled(quiet=0.3), label) == wanted
        tmux.press("Tab")
    tmux.press("Enter")  # Show what would go
    shows(tmux, "2 kept, 1 would be forgotten.")
    tmux.press("Tab", "Enter")  # Forget...
    shows(tmux, "To go ahead, type 1 and press Enter.")
    tmux.type("2")
    assert typed_word(tmux.settled(quiet=0.5)) == "2"
    tmux.press("Enter")
    shows(tmux, "2 is not 1: type 1 exactly, then press Enter.")
    assert len(snapshots(mountpoint_of(lab.drive_partition) / "hourglass-backups", PASSPHRASE)) == 3
    clear_field(tmux, 1)
    tmux.type("1")
    tmux.press("Enter")
    shows(tmux, "Forgot 1 backup", timeout=WORK_TIMEOUT)
    left = snapshots(mountpoint_of(lab.drive_partition) / "hourglass-backups", PASSPHRASE)
    assert sorted(str(s["id"]) for s in left) == sorted(ids[1:])
    tmux.press("Escape")
    shows(tmux, "Power off")

    # Restore system: the open repository, the time typed to the second, the blank disk.
    tmux.press("2")
    shows(tmux, "The open repository:")
    tmux.press("Enter")
    shows(tmux, "Back to which point in time?")
    tmux.press("Tab")  # the typed time
    tmux.type(times[1])
    assert field_below(tmux.settled(quiet=0.5), "Or type a date and time:") == times[1]
    tmux.press("Enter")
    shows(tmux, "Chosen backup")
    screen = tmux.settled(quiet=0.5)
    assert field_below(screen, "Chosen backup") == times[1]  # not the newest: the one typed
    tmux.press("Enter")  # Next (focused once the typed time chose)
    shows(tmux, "Restore onto which disk?")
    choose_row(tmux, lab.blank)
    shows(tmux, "The backup fits on this disk.")
    assert f"{lab.blank}:" in tmux.screen()  # the erase side names the disk chosen
    tmux.press("Enter", "Enter")  # the disk; Restore...

    # The typed confirmation: a wrong word says why and writes nothing.
    word = os.path.basename(lab.blank)
    shows(tmux, f"To go ahead, type {word} and press Enter.")
    tmux.type("loop")
    assert typed_word(tmux.settled(quiet=0.5)) == "loop"
    tmux.press("Enter")
    shows(tmux, f"loop is not {word}: type {word} exactly, then press Enter.")
    with open(lab.blank, "rb") as f:
        assert f.read(MiB) == head_before
    clear_field(tmux, len("loop"))
    tmux.type(word)
    assert typed_word(tmux.settled(quiet=0.5)) == word
    tmux.press("Enter")
    screen = shows(tmux, "The system is restored.", timeout=WORK_TIMEOUT)
    assert "everything written was read back and matches" in screen
    tmux.press("Escape")
    shows(tmux, "Power off")
    quit_app(tmux, status)

    # The blank disk now holds the disk as it was at the time typed.
    subprocess.run(["partx", "--add", lab.blank], check=False, capture_output=True)
    with helpers.mounted_fs(f"{lab.blank}p1", "ext4", tmp_path / "restored", read_only=True) as r:
        assert (r / "home/ann/thesis.txt").read_text() == f"My thesis, {DRAFTS[1]}.\n"


def test_new_repository_mismatch_typed_fast_and_share_fields(
    tmux: Tmux, lab: Lab, app: Callable[[], Path]
) -> None:
    status = app()

    # The New repository form: a second passphrase that differs says so; nothing is made.
    back_up_to_new_repository(tmux, "hourglass-backups")
    tmux.type(NEW_PASSPHRASE)
    tmux.press("Tab")
    tmux.type(NEW_PASSPHRASE.upper())
    screen = tmux.settled(quiet=0.5)
    assert masked(field_below(screen, "Type it again:"), NEW_PASSPHRASE), screen
    tmux.press("Enter")
    shows(tmux, MISMATCH)
    assert not (mountpoint_of(lab.drive_partition) / "hourglass-backups" / "config").exists()
    tmux.press("Enter")  # OK
    screen = shows(tmux, "Type it again:")
    assert field_below(screen, "Type it again:") == ""  # emptied, to type again

    # Typed again, with what follows Tab arriving with it (a busy app on a slow machine
    # reads what was typed meanwhile in one go): each field gets its own characters.
    tmux.press("BTab")
    clear_field(tmux, len(NEW_PASSPHRASE))
    tmux("send-keys", "-t", "ui", "-l", f"{NEW_PASSPHRASE}\t{NEW_PASSPHRASE}")
    screen = tmux.settled(quiet=0.5)
    assert masked(field_below(screen, "Choose a passphrase:"), NEW_PASSPHRASE), screen
    assert masked(field_below(screen, "Type it again:"), NEW_PASSPHRASE), screen
    # The same with Enter, which moves on to the second field too.
    clear_field(tmux, len(NEW_PASSPHRASE))
    tmux.press("BTab")
    clear_field(tmux, len(NEW_PASSPHRASE))
    screen = tmux.settled(quiet=0.5)
    assert field_below(screen, "Choose a passphrase:") == ""
    assert field_below(screen, "Type it again:") == "", screen
    tmux("send-keys", "-t", "ui", "-l", f"{NEW_PASSPHRASE}\r{NEW_PASSPHRASE}")
    screen = tmux.settled(quiet=0.5)
    assert masked(field_below(screen, "Choose a passphrase:"), NEW_PASSPHRASE), screen
    assert masked(field_below(screen, "Type it again:"), NEW_PASSPHRASE), screen
    tmux.press("Enter")
    assert MISMATCH not in shows(tmux, "Check before the backup starts")
    repo = mountpoint_of(lab.drive_partition) / "hourglass-backups"
    assert snapshots(repo, NEW_PASSPHRASE) == []
    tmux.press("Escape")  # back to the disks
    shows(tmux, "Which disk do you want to back up?")
    tmux.press("Escape")
    shows(tmux, "Power off")

    # The Share screen: server, share, user, password; then the object store's fields.
    tmux.press("3")  # Restore files asks for the repository first
    shows(tmux, "Where is the repository?")
    choose_row(tmux, "A network share")
    tmux.press("Enter")
    shows(tmux, "Kind of share")
    tmux.press("Enter")  # SMB: on to the server
    typed = {  # each label whole on its line (the server's wrapped once)
        "Server (name or address)": "nas.local",
        "Share or folder": "backups",
        "User name (if needed)": "ann",
        "Password (if needed)": "s3cret pass",
    }
    fill_in_and_check(tmux, typed, secret="Password (if needed)")
    tmux.press(*["BTab"] * 5)  # from Connect back past the four fields to the kind
    choose_row(tmux, "Object store (S3)")
    tmux.press("Enter")  # on to the endpoint
    s3 = {  # the labels' first line
        "Endpoint (URL)": "https://s3.example.org",
        "Bucket": "backups",
        "Folder in the bucket": "pc1",
        "Access key": "AKIAEXAMPLE",
        "Secret key": "wJalr/EXAMPLE",
        "CA file (optional)": "/etc/ssl/lab-ca.pem",
    }
    fill_in_and_check(tmux, s3, secret="Secret key")
    tmux.press("Escape")
    shows(tmux, "Where is the repository?")
    tmux.press("Escape")
    shows(tmux, "Power off")
    quit_app(tmux, status)
