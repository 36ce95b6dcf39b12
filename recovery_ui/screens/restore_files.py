"""Restore files: a snapshot and one of its partitions, browsed as a tree loaded a folder at
a time (or searched by name); every version of a file across the snapshots; the files
copied to a partition of a local disk or a USB stick, mounted read-write for it."""

from __future__ import annotations

import logging
import os
from datetime import datetime
from typing import TYPE_CHECKING, ClassVar

from textual import work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical
from textual.widgets import DataTable, Input, OptionList, Tree
from textual.worker import Worker

from imaging.errors import UsageError
from imaging.jobs import locations, select
from imaging.jobs.disks import repository_partitions
from imaging.jobs.files import (
    FilesRestoreRequest,
    SnapshotBrowser,
    file_images,
    file_versions,
    files_restore,
    restore_from,
)
from recovery_ui import text
from recovery_ui.i18n import N_, _, ngettext
from recovery_ui.messages import ProgressRelay
from recovery_ui.screens.base import failure_reason
from recovery_ui.screens.wizard import WizardScreen
from recovery_ui.widgets.controls import Button, Label, Options, Static, option
from recovery_ui.widgets.progress_panel import ProgressPanel
from recovery_ui.widgets.snapshot_tree import Item, SnapshotTree
from recovery_ui.widgets.timeline import Timeline

if TYPE_CHECKING:
    from textual.widgets.tree import TreeNode

    from imaging.jobs.disks import Disk, Partition
    from imaging.jobs.files import Entry, FileRestoreResult, SnapshotBrowser, Version
    from imaging.repository.records import ImageRecord, Snapshot
    from recovery_ui.state import OpenedRepository

SEARCH_LIMIT = 200


class FileTree(SnapshotTree):
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("space", "mark", N_("Mark for restoring")),
    ]

    def action_mark(self) -> None:
        node = self.cursor_node
        if node is not None:
            self.toggle_mark(node)
            screen = self.screen
            if isinstance(screen, RestoreFilesScreen):
                screen.marks_changed()


class RestoreFilesScreen(WizardScreen):
    TITLE_TEXT = N_("Restore files")
    STEPS = (
        N_("Repository"),
        N_("When"),
        N_("Partition"),
        N_("Files"),
        N_("Destination"),
        N_("Result"),
    )
    PANES = ("repository", "when", "partition", "browse", "dest", "result")
    BACK: ClassVar[dict[str, tuple[str, str]]] = {
        "partition": ("when", "#timeline"),
        "browse": ("partition", "#images"),
        "dest": ("browse", "#tree"),
    }
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("slash", "search", N_("Search")),
        Binding("v", "versions", N_("Versions")),
        Binding("r", "restore", N_("Restore marked")),
    ]
    DEFAULT_CSS = """
    RestoreFilesScreen #when, RestoreFilesScreen #browse { height: 1fr; }
    RestoreFilesScreen #timeline, RestoreFilesScreen #images, RestoreFilesScreen #dests {
        margin: 0 1; }
    RestoreFilesScreen #images, RestoreFilesScreen #dests { height: auto; max-height: 10; }
    RestoreFilesScreen #tree-side { width: 3fr; height: 1fr; }
    RestoreFilesScreen #side { width: 2fr; height: 1fr; border-left: $hg-border $primary; }
    RestoreFilesScreen #search { margin: 0 0 0 0; }
    RestoreFilesScreen #results { height: 1fr; display: none; }
    RestoreFilesScreen #versions { height: 1fr; overflow-x: hidden; }
    RestoreFilesScreen #tree { overflow-x: hidden; }
    RestoreFilesScreen #marked { height: auto; padding: 0 1; }
    RestoreFilesScreen #dest-folder { width: 40; }
    """

    def __init__(self) -> None:
        super().__init__()
        self.snapshot: Snapshot | None = None
        self.image: ImageRecord | None = None
        self.browser: SnapshotBrowser | None = None
        self.versions: list[Version] = []
        self.versions_path = ""
        self.restore_snapshot: Snapshot | None = None
        self.restore_paths: list[str] = []
        self.destinations: list[tuple[Disk, Partition]] = []

    def compose_steps(self) -> ComposeResult:
        with Vertical(id="repository"):
            yield Static(_("Choose the repository that holds the backups..."), classes="note")
        with Vertical(id="when"):
            yield Label(_("Files as they were when?"), classes="section first")
            yield Timeline(id="timeline")
            with Horizontal(classes="buttons"):
                yield Label(_("Or type a date and time:"))
                yield Input(placeholder="YYYY-MM-DD HH:MM:SS", id="typed", compact=True)
        with Vertical(id="partition"):
            yield Label(_("Which partition held the files?"), classes="section first")
            yield Options(id="images", compact=True)
        with Horizontal(id="browse"):
            with Vertical(id="tree-side"):
                yield Input(placeholder=_("Search by name (Enter)"), id="search", compact=True)
                yield Options(id="results", compact=True)
                yield FileTree("/", id="tree")
            with Vertical(id="side"):
                yield Label(_("Marked for restoring"), classes="section first")
                yield Static(
                    _("Nothing yet: Space marks a file or folder."), id="marked", markup=False
                )
                yield Label(_("Versions"), classes="section")
                yield Static(
                    _("Enter on a file lists its versions."),
                    id="versions-of",
                    classes="note",
                    markup=False,
                )
                yield DataTable(id="versions", cursor_type="row", zebra_stripes=True)
                with Horizontal(classes="buttons"):
                    yield Button(
                        _("Restore..."), id="restore-marked", compact=True, variant="primary"
                    )
        with Vertical(id="dest"):
            yield Label(_("Where should the files go?"), classes="section first")
            yield Static("", id="dest-what", classes="note", markup=False)
            yield Options(id="dests", compact=True)
            yield Label(_("Into this folder on it:"), classes="field-label")
            yield Input(id="dest-folder", compact=True)
            yield Static(
                _(
                    "Files already there are kept: a restored file with the same name gets "
                    "a new name with .restored-DATE before its extension."
                ),
                classes="note",
            )
            with Horizontal(classes="buttons"):
                yield Button(_("Restore"), id="dest-go", compact=True, variant="primary")
            yield ProgressPanel(dedup=False, item=_("File"), id="dest-progress")

    def compose_result_buttons(self) -> ComposeResult:
        yield Button(_("Restore more files"), id="more", compact=True)
        yield from super().compose_result_buttons()

    def on_mount(self) -> None:
        self.query_one("#dest-progress").display = False
        table = self.query_one("#versions", DataTable)
        table.add_columns(_("Backup"), _("Size"))
        self.choose_repository(_("Which repository holds the backups?"), self._repository_chosen)

    def on_unmount(self) -> None:
        self._close_browser()

    def _close_browser(self) -> None:
        browser, self.browser = self.browser, None
        if browser is not None:
            browser.close()

    def action_back(self) -> None:
        if self.pane == "browse" and self.query_one("#results").display:
            self.query_one("#search", Input).value = ""
            self._search("")
            self.query_one("#tree").focus()
            return
        super().action_back()

    # --- repository, time, partition --------------------------------------------------------

    def _repository_chosen(self, opened: OpenedRepository) -> None:
        self.opened = opened
        self.step("when")
        self.load_snapshots()

    @work(thread=True, exclusive=True, exit_on_error=False, group="snapshots")
    def load_snapshots(self) -> None:
        assert self.opened is not None
        snapshots = [s for s in self.opened.repo.snapshots() if file_images(s)]
        self.app.call_from_thread(self._snapshots_loaded, snapshots)

    def _snapshots_loaded(self, snapshots: list[Snapshot]) -> None:
        timeline = self.query_one("#timeline", Timeline)
        timeline.show(snapshots)
        timeline.focus()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        if event.input.id == "typed" and event.value.strip():
            timeline = self.query_one("#timeline", Timeline)
            ordered = sorted(timeline.snapshots.values(), key=lambda s: s.order)
            self.choose_typed(ordered, event.value.strip())
        elif event.input.id == "search":
            self._search(event.value.strip())
        elif event.input.id == "dest-folder":
            self._restore_to_destination()

    @work(thread=True, exclusive=True, exit_on_error=False, group="typed")
    def choose_typed(self, snapshots: list[Snapshot], typed: str) -> None:

        self.app.call_from_thread(self._snapshot_chosen, select(snapshots, typed))

    def on_option_list_option_selected(self, event: OptionList.OptionSelected) -> None:
        list_id = event.option_list.id
        if list_id == "timeline":
            chosen = self.query_one("#timeline", Timeline).chosen
            if chosen is not None:
                self._snapshot_chosen(chosen)
        elif list_id == "images":
            assert self.snapshot is not None
            image = next(i for i in file_images(self.snapshot) if i.name == event.option.id)
            self._image_chosen(image)
        elif list_id == "results":
            self._result_chosen(str(event.option.id or ""))
        elif list_id == "dests":
            self.query_one("#dest-folder", Input).focus()

    def _snapshot_chosen(self, snapshot: Snapshot) -> None:
        self.snapshot = snapshot
        images = file_images(snapshot)
        if len(images) == 1:
            self._image_chosen(images[0])
            return
        options = [option(text.image_line(image), id=image.name) for image in images]
        widget = self.query_one("#images", OptionList)
        widget.set_options(options)
        widget.highlighted = 0
        self.step("partition")
        widget.focus()

    def _image_chosen(self, image: ImageRecord) -> None:
        self.image = image
        self.step("browse")
        tree = self.query_one("#tree", FileTree)
        tree.clear()
        tree.marked.clear()
        assert self.snapshot is not None
        tree.root.set_label(text.when(self.snapshot.time))
        self.marks_changed()
        self.query_one("#versions", DataTable).clear()
        self.query_one("#versions-of", Static).update(_("Opening the backup..."))
        self.open_browser(self.snapshot, self._partition_number(image))

    @staticmethod
    def _partition_number(image: ImageRecord) -> int | None:
        return image.number

    # --- browsing ---------------------------------------------------------------------------

    @work(thread=True, exclusive=True, exit_on_error=False, group="browser")
    def open_browser(self, snapshot: Snapshot, partition: int | None) -> None:

        assert self.opened is not None
        self._close_browser()
        browser = SnapshotBrowser(self.opened.repo, snapshot, partition)
        browser.open()
        self.browser = browser
        entries = browser.listdir("/")
        self.app.call_from_thread(self._opened, entries)

    def _opened(self, entries: list[Entry]) -> None:
        tree = self.query_one("#tree", FileTree)
        tree.fill(tree.root, entries)
        tree.root.expand()
        tree.focus()
        self.query_one("#versions-of", Static).update(_("Enter on a file lists its versions."))

    def on_tree_node_expanded(self, event: Tree.NodeExpanded[Item]) -> None:
        item = event.node.data
        if item is not None and item.entry is not None and item.is_dir and not item.loaded:
            self.list_folder(event.node)

    # Not exclusive: each folder opened is listed, however fast the person opens them.
    @work(thread=True, exit_on_error=False, group="list")
    def list_folder(self, node: TreeNode[Item]) -> None:
        assert self.browser is not None and node.data is not None
        entries = self.browser.listdir(node.data.path)
        self.app.call_from_thread(self.query_one("#tree", FileTree).fill, node, entries)

    def on_tree_node_selected(self, event: Tree.NodeSelected[Item]) -> None:
        item = event.node.data
        if item is not None and item.entry is not None and not item.is_dir:
            self.show_versions(item.path)

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        """Search, versions and restore belong to the browsing step."""
        if action in ("search", "versions", "restore"):
            return self.pane == "browse"
        return True

    def action_search(self) -> None:
        if self.pane == "browse":
            self.query_one("#search", Input).focus()

    def _search(self, needle: str) -> None:
        results = self.query_one("#results", OptionList)
        if not needle:
            results.display = False
            self.query_one("#tree").display = True
            return
        results.set_options([option(_("Searching..."), disabled=True)])
        results.display = True
        self.query_one("#tree").display = False
        self.search(needle)

    @work(thread=True, exclusive=True, exit_on_error=False, group="search")
    def search(self, needle: str) -> None:
        assert self.browser is not None
        found = self.browser.search(needle, SEARCH_LIMIT)
        self.app.call_from_thread(self._found, found)

    def _found(self, found: list[str]) -> None:
        results = self.query_one("#results", OptionList)
        if not found:
            results.set_options([option(_("Nothing found."), disabled=True)])
            return
        options = [option(path, id=path) for path in found]
        if len(found) >= SEARCH_LIMIT:
            options.append(
                option(
                    _("(only the first {count} are shown)").format(count=SEARCH_LIMIT),
                    disabled=True,
                )
            )
        results.set_options(options)
        results.highlighted = 0
        results.focus()

    def _result_chosen(self, path: str) -> None:
        """A search result: mark it and show its versions."""
        tree = self.query_one("#tree", FileTree)
        tree.marked.add(path)
        self.marks_changed()
        self.show_versions(path)

    def marks_changed(self) -> None:
        marked = sorted(self.query_one("#tree", FileTree).marked)
        if not marked:
            self.query_one("#marked", Static).update(
                _("Nothing yet: Space marks a file or folder.")
            )
            return
        shown = marked[:6] + (["..."] if len(marked) > 6 else [])
        self.query_one("#marked", Static).update("\n".join(shown))

    # --- versions ---------------------------------------------------------------------------

    def action_versions(self) -> None:
        node = self.query_one("#tree", FileTree).cursor_node
        if node is not None and node.data is not None and node.data.entry is not None:
            self.show_versions(node.data.path)

    def show_versions(self, path: str) -> None:
        self.versions_path = path
        self.query_one("#versions-of", Static).update(
            _("Looking for every version of {path}...").format(path=path)
        )
        self.query_one("#versions", DataTable).clear()
        assert self.snapshot is not None and self.image is not None
        self.load_versions(path, self.snapshot.source_id, self._partition_number(self.image))

    @work(thread=True, exclusive=True, exit_on_error=False, group="versions")
    def load_versions(self, path: str, source: str, partition: int | None) -> None:

        assert self.opened is not None
        versions = file_versions(self.opened.repo, path, partition=partition, source=source)
        self.app.call_from_thread(self._versions_loaded, path, versions)

    def _versions_loaded(self, path: str, versions: list[Version]) -> None:
        if path != self.versions_path:
            return
        self.versions = versions
        table = self.query_one("#versions", DataTable)
        table.clear()
        for index, version in enumerate(reversed(versions)):
            # The first backup that holds this version: when it was there.
            size = text.human_size(version.size) if version.type == "file" else version.type
            table.add_row(
                text.when(version.snapshots[0].time), size, key=str(len(versions) - 1 - index)
            )
        self.query_one("#versions-of", Static).update(
            ngettext(
                "{path}: {count} version. Enter restores it.",
                "{path}: {count} versions. Enter restores the one chosen.",
                len(versions),
            ).format(path=path, count=len(versions))
        )

    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        if event.data_table.id != "versions" or event.row_key.value is None:
            return
        version = self.versions[int(str(event.row_key.value))]
        # In one backup only: its time, not a span from that time to the same time.
        note = (
            _("Modified {mtime}; in the backup of {first}. Enter restores it.")
            if len(version.snapshots) == 1
            else ngettext(
                "Modified {mtime}; in {count} backup, {first} to {last}. Enter restores it.",
                "Modified {mtime}; in {count} backups, {first} to {last}. Enter restores it.",
                len(version.snapshots),
            )
        )
        self.query_one("#versions-of", Static).update(
            note.format(
                mtime=text.when(version.mtime),
                count=len(version.snapshots),
                first=text.when(version.snapshots[0].time),
                last=text.when(version.snapshots[-1].time),
            )
        )

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        version = self.versions[int(str(event.row_key.value))]
        # The newest snapshot holding this version.
        snapshot_id = version.snapshots[-1].id
        assert self.opened is not None
        self.pick_version(version.path, snapshot_id)

    @work(thread=True, exclusive=True, exit_on_error=False, group="pick")
    def pick_version(self, path: str, snapshot_id: str) -> None:
        assert self.opened is not None
        snapshot = self.opened.repo.load_snapshot(snapshot_id)
        self.app.call_from_thread(self._go_destination, snapshot, [path])

    # --- destination, restore, result -------------------------------------------------------

    def action_restore(self) -> None:
        if self.pane == "browse":
            self._restore_marked()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        button = event.button.id
        if button == "restore-marked":
            self._restore_marked()
        elif button == "dest-go":
            self._restore_to_destination()
        elif button == "more":
            self.step("browse")
            self.query_one("#tree").focus()

    def _restore_marked(self) -> None:
        marked = sorted(self.query_one("#tree", FileTree).marked)
        if not marked:
            self.hourglass.report_error(
                UsageError(_("Nothing is marked."), _("Mark files or folders with Space."))
            )
            return
        assert self.snapshot is not None
        self._go_destination(self.snapshot, marked)

    def _go_destination(self, snapshot: Snapshot, paths: list[str]) -> None:

        self.restore_snapshot = snapshot
        self.restore_paths = paths
        what = ngettext("{count} item", "{count} items", len(paths)).format(count=len(paths))
        self.query_one("#dest-what", Static).update(
            _("{what} from the backup of {when}: {paths}").format(
                what=what,
                when=text.when(snapshot.time),
                paths=", ".join(paths[:3]) + (" ..." if len(paths) > 3 else ""),
            )
        )
        folder = self.query_one("#dest-folder", Input)
        if not folder.value:
            folder.value = "restored-" + datetime.now().strftime("%Y%m%d-%H%M%S")
        dests = self.query_one("#dests", OptionList)
        self.destinations = repository_partitions(self.hourglass.disks)
        options = []
        for disk, p in self.destinations:
            mark = "  [USB]" if disk.transport == "usb" or disk.removable else ""
            options.append(
                option(
                    f"{p.device}  {text.partition_item(p)}{mark}\n  {text.disk_title(disk)}",
                    id=p.device,
                )
            )
        if not options:
            options = [option(_("No partition to write to: plug in a USB stick."), disabled=True)]
        dests.set_options(options)
        dests.highlighted = 0
        self.query_one("#dest-go", Button).disabled = False
        self.query_one("#dest-progress").display = False
        self.step("dest")
        dests.focus()

    def _restore_to_destination(self) -> None:
        dests = self.query_one("#dests", OptionList)
        if dests.highlighted is None or not self.destinations:
            return
        disk, partition = self.destinations[dests.highlighted]
        folder = self.query_one("#dest-folder", Input).value.strip().strip("/")
        if not folder or ".." in folder.split("/"):
            self.hourglass.report_error(UsageError(_("Type a folder name (without '..').")))
            return
        assert self.restore_snapshot is not None and self.image is not None
        self.query_one("#dest-go", Button).disabled = True
        panel = self.query_one("#dest-progress", ProgressPanel)
        panel.display = True
        panel.set_phase(_("Copying the files"))
        self.restore(
            self.restore_snapshot,
            self._partition_number(self.image),
            list(self.restore_paths),
            disk,
            partition,
            folder,
            ProgressRelay(self, "files"),
        )

    @work(thread=True, exclusive=True, exit_on_error=False, group="engine")
    def restore(
        self,
        snapshot: Snapshot,
        partition: int | None,
        paths: list[str],
        disk: Disk,
        target: Partition,
        folder: str,
        relay: ProgressRelay,
    ) -> None:

        assert self.opened is not None
        log = logging.getLogger("recovery_ui")
        location = locations.mount_partition(target.device, target.fstype, writable=True)
        dest = os.path.join(location.mountpoint, folder)
        log.info("restoring %d path(s) of snapshot %s to %s", len(paths), snapshot.id[:12], dest)
        try:
            browser = self.browser
            if browser is not None and browser.snapshot.id == snapshot.id:
                result = restore_from(browser, paths, dest, progress=relay)
            else:
                request = FilesRestoreRequest(
                    snapshot=snapshot.id, paths=tuple(paths), dest=dest, partition=partition
                )
                result = files_restore(self.opened.repo, request, progress=relay)
        finally:
            unmounted = False
            if location.mounted_by_us:
                locations.unmount(location)
                unmounted = True
        log.info("restored %d item(s), %d bytes to %s", result.restored, result.bytes, dest)
        self.app.call_from_thread(self._finished, result, disk, target, folder, unmounted)

    def _finished(
        self,
        result: FileRestoreResult,
        disk: Disk,
        target: Partition,
        folder: str,
        unmounted: bool,
    ) -> None:
        lines = [
            ngettext("{count} item restored", "{count} items restored", result.restored).format(
                count=result.restored
            )
            + ", "
            + text.human_size(result.bytes),
            _("Into: {device} ({disk}), folder {folder}").format(
                device=target.device, disk=text.disk_title(disk), folder=folder
            ),
        ]
        for old, new in result.renamed[:10]:
            lines.append(
                _("Kept the existing {old}; the restored one is {new}").format(old=old, new=new)
            )
        for damaged in result.damaged:
            lines.append(_("Damaged in the backup: {what}").format(what=damaged.describe()))
        lines.extend(_("Note: {warning}").format(warning=w) for w in result.warnings)
        if unmounted and (disk.transport == "usb" or disk.removable):
            lines += ["", _("You can remove the USB stick now.")]
        self._result(
            _("The files are restored.")
            if result.ok
            else _("Restored, but some files were damaged in the backup."),
            "\n".join(lines),
            good=result.ok,
        )

    def work_failed(self, worker: Worker[object], error: BaseException) -> None:
        if worker.name == "restore":
            self.query_one("#dest-go", Button).disabled = False
            self.query_one("#dest-progress", ProgressPanel).set_phase(
                _("The restore failed: {reason}").format(reason=failure_reason(error))
            )
        elif worker.name in ("open_browser", "load_versions"):
            self.query_one("#versions-of", Static).update(failure_reason(error))
        elif worker.name == "search":
            self.query_one("#results", OptionList).set_options(
                [option(failure_reason(error), disabled=True)]
            )
