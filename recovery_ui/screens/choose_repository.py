"""Choosing the repository to work with: one found on a drive, a folder on a partition, a
network share, a bucket of an object store (S3), or a new one (on a partition, or on a
blank drive formatted first); then its passphrase. The screen returns the opened
repository (and makes it the app's).

The vendor's repository (``[defaults] repository`` of the vendor file) is highlighted when it
is in the list: a found repository on the labelled filesystem, the path (offered on its own
when no other choice is it), or a share (Mount a network share..., with its server and
share filled in)."""

from __future__ import annotations

import contextlib
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from textual import work
from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical
from textual.widgets import ContentSwitcher, Input, OptionList
from textual.widgets.option_list import Option, OptionDoesNotExist
from textual.worker import Worker

from imaging.errors import HourglassError, UsageError
from imaging.jobs import locations, repositories
from imaging.jobs.disks import FoundRepository, blank_disks, repository_partitions
from imaging.jobs.locations import Bucket, Share, mounted_locations, repositories_in
from imaging.jobs.repositories import holds_repository, is_encrypted, is_repository
from recovery_ui import text
from recovery_ui.i18n import N_, _
from recovery_ui.screens.base import BaseScreen
from recovery_ui.screens.confirm import TypedConfirmation
from recovery_ui.screens.question import judge_new_passphrase
from recovery_ui.screens.share import ShareScreen
from recovery_ui.state import OpenedRepository
from recovery_ui.widgets.controls import (
    Button,
    Field,
    Label,
    Options,
    Secret,
    Static,
    checkbox,
    option,
)

if TYPE_CHECKING:
    from imaging.appliance.vendor import RepositoryHint
    from imaging.jobs.disks import Disk, FoundRepository, Partition
    from imaging.jobs.locations import Location, Share, Store

DEFAULT_FOLDER = "hourglass-backups"


@dataclass
class Target:
    """A repository directory made available (mounted), or a bucket reached; not yet
    opened."""

    path: str  # the directory, or s3://BUCKET/PREFIX
    label: str
    disk: str
    writable: bool
    location: Location | None
    encrypted: bool = True
    exists: bool = True
    store: Store | None = None  # an object store's, with the keys that reached it

    @property
    def where(self) -> str | Store:
        """What the repository functions take: the store when there is one."""
        return self.store if self.store is not None else self.path


def _inside(path: str, root: str) -> str:
    """``path`` as seen from the root of the filesystem (or share) mounted at ``root``."""
    relative = os.path.relpath(path, root)
    return "/" if relative == "." else "/" + relative


def _choice_path(choice: Any) -> str:
    """The repository path of a choice of the list (open, found or on a share)."""
    if isinstance(choice, tuple):
        return str(choice[1])
    return str(choice.path)


def _is_vendors(hint: RepositoryHint, choice: Any, disks: list[Disk]) -> bool:

    if hint.kind == "path":
        return _same(_choice_path(choice), hint.path)
    if hint.kind == "label" and isinstance(choice, FoundRepository):
        labels = {(d.device, p.number): p.label for d in disks for p in d.partitions if p.label}
        return (
            labels.get((choice.disk, choice.partition or 0)) == hint.where
            and _inside(choice.path, _mount_root(choice.path)) == hint.path
        )
    if hint.kind == "smb" and isinstance(choice, tuple):
        location, path = choice
        if location.kind != "smb":
            return False
        inside = _inside(path, location.mountpoint)
        source = str(location.source).rstrip("/") + ("" if inside == "/" else inside)
        return source.lower() == f"//{hint.where}/{hint.path}".lower()
    return False


def vendor_choice(hint: RepositoryHint | None, choices: dict[str, Any], disks: list[Disk]) -> str:
    """The key of the listed choice that is the vendor's repository; "" when none is."""
    if hint is None:
        return ""
    return next((key for key, choice in choices.items() if _is_vendors(hint, choice, disks)), "")


class ChooseRepository(BaseScreen["OpenedRepository | None"]):
    TITLE_TEXT = N_("Repository")
    DEFAULT_CSS = """
    ChooseRepository ContentSwitcher { height: 1fr; }
    ChooseRepository ContentSwitcher > Vertical { height: 1fr; }
    ChooseRepository #where, ChooseRepository #partitions { height: auto; max-height: 12;
                                                            margin: 0 1; }
    ChooseRepository Input { width: 60; }
    """

    def __init__(
        self,
        question: str,
        *,
        writable: bool = False,
        allow_create: bool = False,
        preselect: FoundRepository | None = None,
        source: str = "",
    ) -> None:
        super().__init__()
        self.question = question
        # The disk about to be backed up: neither its repositories nor its partitions are
        # offered (the backup would read itself; the refusal came after the passphrase).
        self.source = source
        self.writable = writable
        self.allow_create = allow_create
        self.preselect = preselect
        self.creating = False
        self.target: Target | None = None
        self.choices: dict[str, Any] = {}

    def screen_title(self) -> str:
        return self.question

    def compose_body(self) -> ComposeResult:
        with ContentSwitcher(initial="list"):
            with Vertical(id="list"):
                yield Label(_("Where is the repository?"), classes="section first")
                yield Options(id="where", compact=True)
                yield Static("", id="list-note", classes="note")
            with Vertical(id="partition"):
                yield Label("", id="partition-question", classes="section first")
                yield Options(id="partitions", compact=True)
                yield Label(_("Folder on that partition:"), classes="field-label")
                yield Input(DEFAULT_FOLDER, id="folder", compact=True)
                with Horizontal(classes="buttons"):
                    yield Button(_("Next"), id="partition-next", compact=True, variant="primary")
            with Vertical(id="unlock"):
                yield Label(_("Passphrase"), classes="section first")
                yield Static("", id="unlock-what", markup=False, classes="note")
                yield Label(
                    _("Type the repository's passphrase (or a recovery key):"),
                    classes="field-label",
                )
                yield Secret(password=True, id="passphrase", compact=True)
                with Horizontal(classes="buttons"):
                    yield Button(_("Open"), id="unlock-go", compact=True, variant="primary")
            with Vertical(id="create"):
                yield Label(_("New repository"), classes="section first")
                yield Static("", id="create-where", markup=False, classes="note")
                yield Label(_("Choose a passphrase:"), classes="field-label")
                yield Field(password=True, id="new1", compact=True)  # Enter: the next
                yield Label(_("Type it again:"), classes="field-label")
                yield Secret(password=True, id="new2", compact=True)
                yield checkbox(_("Encrypt the backups (AES-256)"), True, id="encrypt")
                yield Static(
                    _(
                        "Without the passphrase nobody can read the backups, not even you: "
                        "write it down. You can add a recovery key later (Repository): a "
                        "second way in, to write down or photograph."
                    ),
                    classes="note",
                )
                with Horizontal(classes="buttons"):
                    yield Button(_("Create"), id="create-go", compact=True, variant="primary")

    def on_mount(self) -> None:
        self._fill_list()
        self.hourglass.disks_changed.subscribe(self, self._disks_changed)
        if self.preselect is not None:
            self.prepare_found(self.preselect)
        else:
            self.query_one("#where", OptionList).focus()

    def on_unmount(self) -> None:
        self.hourglass.disks_changed.unsubscribe(self)
        self._drop_target()  # left without opening it (ctrl+q on the passphrase, say)

    def _disks_changed(self, _app: object) -> None:
        """A drive plugged in or pulled out: the list offers what is there now (the choice
        under the cursor stays where it is still offered)."""
        if self.query_one(ContentSwitcher).current != "list":
            return
        where = self.query_one("#where", OptionList)
        index = where.highlighted
        current = where.get_option_at_index(index).id if index is not None else None
        self._fill_list()
        if current is not None:
            with contextlib.suppress(OptionDoesNotExist):
                where.highlighted = where.get_option_index(current)

    def _show(self, pane: str) -> None:
        self.query_one(ContentSwitcher).current = pane
        focus = {
            "list": "#where",
            "partition": "#partitions",
            "unlock": "#passphrase",
            "create": "#new1",
        }[pane]
        self.query_one(focus).focus()

    def action_back(self) -> None:
        pane = self.query_one(ContentSwitcher).current
        self._drop_target()
        if pane == "list" or self.preselect is not None:
            self.dismiss(None)
        else:
            self._show("list")

    def _drop_target(self) -> None:
        """The place made ready and then left: what was mounted for it is unmounted (a
        partition, or a drive just formatted, stayed mounted read-write until power off)."""
        target, self.target = self.target, None
        if target is None or target.location is None:
            return
        opened = self.hourglass.opened
        if (
            opened is not None
            and opened.location is not None
            and opened.location.mountpoint == target.location.mountpoint
        ):
            return  # the open repository's: it stays
        try:
            locations.unmount(target.location)
        except HourglassError as e:
            logging.getLogger("recovery_ui").warning(
                "could not unmount %s: %s", target.location.mountpoint, e.message
            )

    # --- the list ---------------------------------------------------------------------------

    def _fill_list(self) -> None:

        app = self.hourglass
        where = self.query_one("#where", OptionList)
        self.choices = {}
        options = []
        opened = app.opened
        if opened is not None and self.source and opened.disk == self.source:
            opened = None
        if opened is not None and (
            opened.writable or not self.writable or self.hourglass.partition_of(opened) is not None
        ):
            # Open read-only and needed writable: its drive is mounted again read-write, with
            # the keys already unlocked (no passphrase asked again).
            self.choices["open"] = opened
            options.append(
                option(_("The open repository: {label}").format(label=opened.label), id="open")
            )
        by_device = {d.device: d for d in app.disks}
        for index, found in enumerate(app.found):
            if opened is not None and "open" in self.choices and _same(found.path, opened.path):
                continue  # offered above as the open repository
            if self.source and found.disk == self.source:
                continue  # on the disk to be backed up
            key = f"found-{index}"
            self.choices[key] = found
            options.append(option(text.found_repository(found, by_device.get(found.disk)), id=key))
        for location in mounted_locations():
            if location.kind == "partition":
                continue
            for index, path in enumerate(repositories_in(location.mountpoint)):
                key = f"share-{location.mountpoint}-{index}"
                self.choices[key] = (location, path)
                options.append(option(f"{path}  ({location.source})", id=key))
        hint = app.vendor.repository_hint()
        vendors = vendor_choice(hint, self.choices, app.disks)
        if not vendors and hint is not None and self._offer_vendor_path(hint):
            vendors = "vendor"
            self.choices[vendors] = hint.path
            options.insert(0, option(hint.path, id=vendors))
        if options:
            options.append(None)  # type: ignore[arg-type]
        options.append(option(_("A folder on a partition of a disk..."), id="folder"))
        if self.allow_create:
            options.append(option(_("Create a new repository..."), id="create"))
        options.append(
            option(_("A network share (SMB, NFS, SSH) or an object store (S3)..."), id="share")
        )
        if not vendors and hint is not None and hint.kind == "smb":
            vendors = "share"
        where.set_options(options)
        ids = [o.id if o is not None else None for o in options]
        where.highlighted = ids.index(vendors) if vendors else 0
        note = "" if app.found else _("No repository was found on the drives.")
        self.query_one("#list-note", Static).update(note)

    def _offer_vendor_path(self, hint: RepositoryHint) -> bool:
        """The vendor's path is offered when a repository is there, or (for a new one) when
        its folder can be made there."""

        if hint.kind != "path":
            return False
        try:
            if os.path.isdir(hint.path):
                return is_repository(Path(hint.path)) or (
                    self.allow_create and not os.listdir(hint.path)
                )
        except OSError:  # a path the app cannot look into is not offered
            return False
        return self.allow_create and os.path.isdir(os.path.dirname(hint.path))

    def on_option_list_option_selected(self, event: OptionList.OptionSelected) -> None:
        option_id = event.option.id or ""
        if event.option_list.id == "where":
            self._chosen(option_id)
        elif event.option_list.id == "partitions":
            self.query_one("#folder", Input).focus()

    def _chosen(self, option_id: str) -> None:
        if option_id == "open":
            opened = self.choices["open"]
            if self.writable and not opened.writable:
                self.reopen_writable(opened)
            else:
                self.dismiss(opened)
        elif option_id.startswith("found-"):
            self.prepare_found(self.choices[option_id])
        elif option_id.startswith("share-"):
            location, path = self.choices[option_id]
            self.prepare_path(path, location)
        elif option_id == "vendor":
            self.prepare_directory(self.choices[option_id])
        elif option_id in ("folder", "create"):
            self.creating = option_id == "create"
            self._fill_partitions()
            self._show("partition")
        elif option_id == "share":
            self.app.push_screen(
                ShareScreen(self._vendor_share(), object_store=True), self._share_mounted
            )

    def _vendor_share(self) -> Share | None:
        """The vendor's SMB share, to fill in the share screen."""

        hint = self.hourglass.vendor.repository_hint()
        return Share("smb", hint.where, hint.path) if hint and hint.kind == "smb" else None

    def _share_mounted(self, location: Location | Bucket | None) -> None:
        if location is None:
            return
        if isinstance(location, Bucket):
            self.prepare_bucket(location)
            return
        self._fill_list()

        found = repositories_in(location.mountpoint)
        if len(found) == 1:
            self.prepare_path(found[0], location)
        elif not found and self.allow_create:
            self.creating = True
            self._target_ready(
                Target(
                    os.path.join(location.mountpoint, DEFAULT_FOLDER),
                    f"{location.source}/{DEFAULT_FOLDER}",
                    "",
                    location.writable,
                    location,
                    exists=False,
                )
            )

    def _fill_partitions(self) -> None:
        question = (
            _("Where should the new repository be?")
            if self.creating
            else _("Which partition holds the repository?")
        )
        self.query_one("#partition-question", Label).update(question)
        options: list[Option | None] = []
        disks = self.hourglass.disks
        for disk, p in repository_partitions(disks, source=self.source):
            self.choices[f"part-{p.device}"] = (disk, p)
            options.append(
                option(
                    f"{p.device}  {text.partition_item(p)}\n  {text.disk_title(disk)}",
                    id=f"part-{p.device}",
                )
            )
        if self.creating:
            for disk in blank_disks(disks, source=self.source):
                self.choices[f"format-{disk.device}"] = disk
                options.append(
                    option(
                        _("Format {device} ({title}) as a new backup drive").format(
                            device=disk.device, title=text.disk_title(disk)
                        ),
                        id=f"format-{disk.device}",
                    )
                )
        partitions = self.query_one("#partitions", OptionList)
        partitions.set_options(options)
        if options:
            partitions.highlighted = 0
        else:
            partitions.set_options(
                [option(_("No partition with a usable filesystem."), disabled=True)]
            )

    def on_button_pressed(self, event: Button.Pressed) -> None:
        if event.button.id == "partition-next":
            self._partition_next()
        elif event.button.id == "unlock-go":
            self._unlock()
        elif event.button.id == "create-go":
            self._create()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        if event.input.id == "folder":
            self._partition_next()
        elif event.input.id == "passphrase":
            self._unlock()
        elif event.input.id == "new2":
            self._create()

    def _partition_next(self) -> None:
        partitions = self.query_one("#partitions", OptionList)
        if partitions.highlighted is None:
            return
        option_id = partitions.get_option_at_index(partitions.highlighted).id or ""
        folder = self.query_one("#folder", Input).value.strip().strip("/")
        if ".." in folder.split("/"):
            self.hourglass.report_error(UsageError(_("The folder name must not contain '..'.")))
            return
        if option_id.startswith("format-"):
            self._confirm_format(self.choices[option_id], folder)
        elif option_id.startswith("part-"):
            disk, partition = self.choices[option_id]
            self.prepare_partition(disk, partition, folder)

    def _confirm_format(self, disk: Disk, folder: str) -> None:

        word = os.path.basename(disk.device)

        def confirmed(yes: bool | None) -> None:
            if yes:
                self.format_and_prepare(disk, folder)

        self.app.push_screen(
            TypedConfirmation(
                _("Format this disk?"),
                text.erase_lines(disk),
                _("Everything on this disk will be erased. It becomes an empty backup drive."),
                word,
                _("Erase and format"),
            ),
            confirmed,
        )

    # --- making the repository's directory available ----------------------------------------

    @work(thread=True, exclusive=True, exit_on_error=False, group="choose")
    def prepare_found(self, found: FoundRepository) -> None:

        disk, partition = self.hourglass.found_on(found)
        path, location = found.path, None
        if self.writable and found.mounted_by_us and partition is not None:
            location, path = mounted_writable(partition, found.path)
        label = _label(disk, found.partition, path)
        target = Target(path, label, found.disk, self.writable, location)
        self.app.call_from_thread(self._target_ready, self._with_encryption(target))

    @work(thread=True, exclusive=True, exit_on_error=False, group="choose")
    def reopen_writable(self, opened: OpenedRepository) -> None:

        reopened = self.hourglass.reopened_writable(opened)
        self.app.call_from_thread(self._reopened, reopened)

    def _reopened(self, opened: OpenedRepository) -> None:
        self.hourglass.set_opened(opened)
        self.dismiss(self.hourglass.opened)

    @work(thread=True, exclusive=True, exit_on_error=False, group="choose")
    def prepare_partition(self, disk: Disk, partition: Partition, folder: str) -> None:

        location = locations.mount_partition(
            partition.device, partition.fstype, writable=self.writable or self.creating
        )
        path = os.path.join(location.mountpoint, folder) if folder else location.mountpoint
        target = Target(
            path,
            _label(disk, partition.number, path, location.mountpoint),
            disk.device,
            location.writable,
            location,
        )
        self._check_and_ready(target)

    @work(thread=True, exclusive=True, exit_on_error=False, group="choose")
    def format_and_prepare(self, disk: Disk, folder: str) -> None:

        logging.getLogger("recovery_ui").info("formatting %s (%s)", disk.device, disk.title())
        node = locations.format_drive(disk.device)
        location = locations.mount_partition(node, "ext4", writable=True)
        path = os.path.join(location.mountpoint, folder or DEFAULT_FOLDER)
        target = Target(
            path,
            _label(disk, 1, path, location.mountpoint),
            disk.device,
            True,
            location,
            exists=False,
        )
        self.app.call_from_thread(self._target_ready, target)
        self.app.call_from_thread(self.hourglass.refresh_disks)

    @work(thread=True, exclusive=True, exit_on_error=False, group="choose")
    def prepare_directory(self, path: str) -> None:
        """A directory that is there already (the vendor's path): nothing to mount."""
        writable = os.access(path if os.path.exists(path) else os.path.dirname(path), os.W_OK)
        self._check_and_ready(Target(path, path, "", writable, None))

    @work(thread=True, exclusive=True, exit_on_error=False, group="choose")
    def prepare_path(self, path: str, location: Location) -> None:
        target = Target(
            path,
            f"{location.source}: {os.path.relpath(path, location.mountpoint)}",
            "",
            location.writable,
            location,
        )
        self._check_and_ready(target)

    @work(thread=True, exclusive=True, exit_on_error=False, group="choose")
    def prepare_bucket(self, bucket: Bucket) -> None:
        """A bucket: its repository, or (when creating) a new one there."""
        target = Target(
            bucket.place.url, bucket.place.describe(), "", True, None, store=bucket.store
        )
        if holds_repository(bucket.store):
            self.app.call_from_thread(self._target_ready, self._with_encryption(target))
        elif self.allow_create:
            self.creating = True
            target.exists = False
            self.app.call_from_thread(self._target_ready, target)
        else:
            raise UsageError(
                _("There is no repository in {path}.").format(path=target.label),
                _("Check the bucket and the folder, or create a new repository (Back up)."),
            )

    def _check_and_ready(self, target: Target) -> None:
        """In a worker: a repository there, or (when creating) an empty or missing folder."""

        if is_repository(Path(target.path)):
            self.app.call_from_thread(self._target_ready, self._with_encryption(target))
            return
        empty = not os.path.exists(target.path) or (
            os.path.isdir(target.path) and not os.listdir(target.path)
        )
        if self.allow_create and empty:
            target.exists = False
            self.app.call_from_thread(self._target_ready, target)
            return
        raise UsageError(
            _("There is no repository in {path}.").format(path=target.label),
            _("Choose another folder, or create a new repository (Back up).")
            if not self.allow_create
            else _("Choose an empty folder to create a new repository in."),
        )

    @staticmethod
    def _with_encryption(target: Target) -> Target:

        target.encrypted = is_encrypted(target.where)
        return target

    def _target_ready(self, target: Target) -> None:
        self.target = target
        opened = self.hourglass.opened
        if (
            target.exists
            and opened is not None
            and (opened.writable or not self.writable)
            and _same_directory(target.path, opened.path)
        ):
            self.dismiss(opened)  # open already: its passphrase is not asked again
            return
        if not target.exists:
            # The label names the disk, the partition and the folder on it: never the
            # appliance's own mount point.
            where = _("The new repository will be created in {label}.").format(label=target.label)
            self.query_one("#create-where", Static).update(where)
            self._show("create")
        elif target.encrypted:
            self.query_one("#unlock-what", Static).update(target.label)
            self._show("unlock")
        else:
            self.open_target("")

    # --- opening and creating ---------------------------------------------------------------

    def _unlock(self) -> None:
        field = self.query_one("#passphrase", Input)
        secret = field.value
        if secret:
            self.open_target(secret)

    def _create(self) -> None:
        first = self.query_one("#new1", Input).value
        second = self.query_one("#new2", Input).value
        encrypt = self.query_one("#encrypt").value  # type: ignore[attr-defined]
        if encrypt and not first:
            self.hourglass.report_error(UsageError(_("Choose a passphrase.")))
            return
        if encrypt and first != second:
            self.query_one("#new2", Input).value = ""
            self.hourglass.report_error(
                UsageError(_("The two passphrases are not the same."), _("Type them again."))
            )
            return
        if not encrypt:
            self.create_target("", encrypt)
            return
        judge_new_passphrase(self, first, lambda: self.create_target(first, encrypt))

    @work(thread=True, exclusive=True, exit_on_error=False, group="choose")
    def open_target(self, secret: str) -> None:

        assert self.target is not None
        repo = repositories.open_repository(self.target.where, secret or None)
        self.app.call_from_thread(self._done, repo)

    @work(thread=True, exclusive=True, exit_on_error=False, group="choose")
    def create_target(self, secret: str, encrypt: bool) -> None:

        assert self.target is not None
        repo = repositories.create(
            self.target.where,
            encryption="aes-256-gcm" if encrypt else "none",
            passphrase=secret or None,
        )
        logging.getLogger("recovery_ui").info(
            "repository created at %s (%s)", repo.location, "encrypted" if encrypt else "plain"
        )
        self.app.call_from_thread(self._done, repo)

    def _done(self, repo: Any) -> None:
        assert self.target is not None
        for field in ("#passphrase", "#new1", "#new2"):
            self.query_one(field, Input).value = ""
        opened = OpenedRepository(
            repo=repo,
            path=self.target.path,
            label=self.target.label,
            disk=self.target.disk,
            writable=self.target.writable,
            location=self.target.location,
        )
        self.hourglass.set_opened(opened)
        self.target = None  # the open repository's now
        self.dismiss(opened)

    def work_failed(self, worker: Worker[object], error: BaseException) -> None:
        if worker.name == "open_target":
            field = self.query_one("#passphrase", Input)
            field.value = ""
            field.focus()


def _same(a: str, b: str) -> bool:
    return os.path.realpath(a) == os.path.realpath(b)


def _same_directory(a: str, b: str) -> bool:
    """The same directory by any path: one filesystem mounted in two places too."""
    if _same(a, b):
        return True
    try:
        one, other = os.stat(a), os.stat(b)
    except OSError:
        return False
    return (one.st_dev, one.st_ino) == (other.st_dev, other.st_ino)


def mounted_writable(partition: Partition, path: str) -> tuple[Location, str]:
    """``partition`` mounted read-write (:func:`locations.mount_partition`), and ``path`` on
    it as seen there (a probe's mount is replaced by one elsewhere)."""
    old_root = _mount_root(path)
    location = locations.mount_partition(partition.device, partition.fstype, writable=True)
    return location, locations.moved_path(path, old_root, location.mountpoint)


def _mount_root(path: str) -> str:
    current = os.path.realpath(path)
    while not os.path.ismount(current) and current != "/":
        current = os.path.dirname(current)
    return current


def _label(disk: Disk | None, partition: int | None, path: str, root: str = "") -> str:
    """``WD Elements 25A2, partition 1: /hourglass-backups``."""
    where = (disk.model or disk.device) if disk else _("a drive")
    if partition is not None:
        where += ", " + _("partition {number}").format(number=partition)
    inside = "/" + os.path.relpath(path, root or _mount_root(path)).lstrip("./")
    return f"{where}: {inside}"
