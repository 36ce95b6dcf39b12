"""Restore files: a snapshot and one of its partitions, or a host's file journal as of a
second, browsed as a tree loaded a folder at a time (or searched by name); every version of
a file across the snapshots and in the journal; the files copied to a partition of a local
disk or a USB stick, mounted read-write for it."""

from __future__ import annotations

import logging
import os
import time
from datetime import datetime
from typing import TYPE_CHECKING, ClassVar

from textual import work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical
from textual.widgets import DataTable, Input, OptionList, Tree
from textual.worker import Worker

from imaging.errors import HourglassError, UsageError
from imaging.jobs import locations, select
from imaging.jobs.disks import repository_partitions
from imaging.jobs.files import (
    FilesRestoreRequest,
    JournalBrowser,
    JournalGap,
    SnapshotBrowser,
    file_images,
    file_versions,
    files_restore,
    files_restore_at,
    journal_hosts,
    parse_time,
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
    from imaging.jobs.files import (
        Entry,
        FileRestoreResult,
        JournalHost,
        JournalRestoreResult,
        JournalTree,
        JournalVersion,
        Version,
    )
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
    STEP_OF: ClassVar[dict[str, str]] = {"at": "when"}
    BACK: ClassVar[dict[str, tuple[str, str]]] = {
        "partition": ("when", "#timeline"),
        "at": ("when", "#timeline"),
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
    RestoreFilesScreen #at-time { width: 24; margin: 0 1; }
    RestoreFilesScreen #browse.journal #tree-side, RestoreFilesScreen #browse.journal #side {
        width: 1fr; }
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
        self.hosts: list[JournalHost] = []
        self.journal: JournalHost | None = None
        """The host whose file journal is browsed (None: a disk snapshot is)."""
        self.journals: dict[str, JournalBrowser] = {}
        """Each host's journal, read once: by source id."""
        self.journal_tree: JournalTree | None = None
        self.journal_rows: list[tuple[str, JournalVersion]] = []
        """The journal's rows of the versions table: (source id, event)."""
        self.made_folder = ""
        """The folder name the destination step made up (not one the person typed)."""
        self.restore_at: tuple[str, datetime] | None = None
        """What the destination step restores from the journal: (source id, second)."""

    def compose_steps(self) -> ComposeResult:
        with Vertical(id="repository"):
            yield Static(_("Choose the repository that holds the backups..."), classes="note")
        with Vertical(id="when"):
            yield Label(_("Files as they were when?"), classes="section first")
            yield Timeline(id="timeline")
            with Horizontal(classes="buttons"):
                yield Label(_("Or type a date and time:"))
                yield Input(placeholder="YYYY-MM-DD HH:MM:SS", id="typed", compact=True)
        with Vertical(id="at"):
            yield Label("", id="at-title", classes="section first")
            yield Static("", id="at-about", classes="note", markup=False)
            with Horizontal(classes="buttons"):
                yield Label(_("As of:"))
                yield Input(placeholder="YYYY-MM-DD HH:MM:SS", id="at-time", compact=True)
                yield Button(_("Browse"), id="at-go", compact=True, variant="primary")
            yield Static("", id="at-error", classes="error", markup=False)
            yield Static("", id="at-gaps", classes="note", markup=False)
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
            yield Static("", id="dest-note", classes="note")
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
        if self.pane == "browse" and self.journal is not None:
            self.step("at")
            self.query_one("#at-time").focus()
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
        listed = list(self.opened.repo.snapshots())
        snapshots = [s for s in listed if file_images(s)]
        self.app.call_from_thread(self._snapshots_loaded, snapshots, journal_hosts(listed))

    def _snapshots_loaded(self, snapshots: list[Snapshot], hosts: list[JournalHost]) -> None:
        self.hosts = hosts
        # Wider versions: journal rows say what happened (deleted, not watched), not a size.
        self.query_one("#browse").set_class(bool(hosts), "journal")
        timeline = self.query_one("#timeline", Timeline)
        timeline.show(snapshots, hosts)
        timeline.focus()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        if event.input.id == "typed" and event.value.strip():
            timeline = self.query_one("#timeline", Timeline)
            if not timeline.snapshots and len(self.hosts) == 1:
                # No disk snapshot to choose among: the time is one of the host's journal.
                self._journal_chosen(self.hosts[0])
                self.query_one("#at-time", Input).value = event.value.strip()
                self._browse_at(event.value.strip())
                return
            ordered = sorted(timeline.snapshots.values(), key=lambda s: s.order)
            self.choose_typed(ordered, event.value.strip())
        elif event.input.id == "search":
            self._search(event.value.strip())
        elif event.input.id == "dest-folder":
            self._restore_to_destination()
        elif event.input.id == "at-time":
            self._browse_at(event.value.strip())

    @work(thread=True, exclusive=True, exit_on_error=False, group="typed")
    def choose_typed(self, snapshots: list[Snapshot], typed: str) -> None:

        self.app.call_from_thread(self._snapshot_chosen, select(snapshots, typed))

    def on_option_list_option_selected(self, event: OptionList.OptionSelected) -> None:
        list_id = event.option_list.id
        if list_id == "timeline":
            timeline = self.query_one("#timeline", Timeline)
            journal = timeline.chosen_journal
            if journal is not None:
                self._journal_chosen(journal)
            elif timeline.chosen is not None:
                self._snapshot_chosen(timeline.chosen)
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
        self.skip_steps()
        self.step("partition")
        widget.focus()

    def _image_chosen(self, image: ImageRecord) -> None:
        self.skip_steps()
        self.image = image
        self.journal = self.journal_tree = None
        assert self.snapshot is not None
        self._start_browsing(text.when(self.snapshot.time), None, _("Backup"))
        self.query_one("#versions-of", Static).update(_("Opening the backup..."))
        self.open_browser(self.snapshot, self._partition_number(image))

    def _start_browsing(self, label: str, times_near: datetime | None, when: str) -> None:
        """The browsing step, its tree empty under ``label``, nothing marked."""
        self.step("browse")
        tree = self.query_one("#tree", FileTree)
        tree.clear()
        tree.marked.clear()
        tree.times_near = times_near
        tree.root.set_label(label)
        self.marks_changed()
        table = self.query_one("#versions", DataTable)
        table.clear(columns=True)
        table.add_columns(when, _("Size"))

    # --- a host's file journal as of a second -----------------------------------------------

    def _journal_chosen(self, host: JournalHost) -> None:
        """Ask for the second to browse, the newest recovery point offered."""
        self.journal = host
        self.query_one("#at-title", Label).update(
            _("The files of {host} as they were at which second?").format(host=host.host)
        )
        self.query_one("#at-about", Static).update(
            _(
                "The file journal holds every version saved from {first} to {newest} (the "
                "newest recovery point). Type a date and time to the second."
            ).format(
                first=text.when(text.moment(host.first_ns)),
                newest=text.when(text.moment(host.newest_ns)),
            )
        )
        if host.gaps:
            shown = [text.gap_line(g) for g in host.gaps[-4:]]
            if len(host.gaps) > 4:
                shown.insert(0, _("(the newest 4 of {count})").format(count=len(host.gaps)))
            gaps = _("Changes in these spans may be missed:") + "\n" + "\n".join(shown)
        else:
            gaps = _("No gaps: the agent watched all the time.")
        self.query_one("#at-gaps", Static).update(gaps)
        self.query_one("#at-error", Static).update("")
        field = self.query_one("#at-time", Input)
        field.value = text.when(text.moment(host.newest_ns))
        self.skip_steps("partition")  # a journal has no partitions to choose from
        self.step("at")
        field.focus()

    def _browse_at(self, typed: str) -> None:
        """Browse the journal as of the typed second; a time that cannot be read, or one
        before the journal begins, is said and nothing else happens."""
        host = self.journal
        assert host is not None
        error = self.query_one("#at-error", Static)
        try:
            when = parse_time(typed)
        except UsageError:
            error.update(
                _(
                    'Cannot read "{typed}" as a time: type it as YYYY-MM-DD HH:MM:SS (a date '
                    "alone is the end of that day)."
                ).format(typed=typed)
            )
            return
        if int(when.timestamp()) < host.first_ns // 10**9:
            error.update(
                _(
                    "The file history of {host} begins at {first}: nothing is recorded before."
                ).format(host=host.host, first=text.when(text.moment(host.first_ns)))
            )
            return
        error.update("")
        label = _("{host} as of {when}").format(host=host.host, when=text.when(when))
        self._start_browsing(label, when, _("When"))
        self.query_one("#versions-of", Static).update(_("Reading the file journal..."))
        self.open_journal(host, when)

    def _journal_browser(self, source_id: str) -> JournalBrowser:
        """The journal of a host (in a worker thread: it reads every segment once)."""
        browser = self.journals.get(source_id)
        if browser is None:
            assert self.opened is not None
            browser = self.journals[source_id] = JournalBrowser(self.opened.repo, source_id)
        return browser

    @work(thread=True, exclusive=True, exit_on_error=False, group="browser")
    def open_journal(self, host: JournalHost, when: datetime) -> None:
        self._close_browser()
        tree = self._journal_browser(host.source_id).tree(when)
        self.app.call_from_thread(self._journal_opened, tree, tree.listdir("/"))

    def _journal_opened(self, journal: JournalTree, entries: list[Entry]) -> None:
        self.journal_tree = journal
        self._opened(entries)
        # One protected folder: open it (what else would the person do first).
        tree = self.query_one("#tree", FileTree)
        if len(entries) == 1 and entries[0].type == "dir":
            node = tree.root.children[0]
            assert node.data is not None
            tree.fill(node, journal.listdir(node.data.path))
            node.expand()

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
        assert node.data is not None
        entries = self._lister().listdir(node.data.path)
        self.app.call_from_thread(self.query_one("#tree", FileTree).fill, node, entries)

    def _lister(self) -> SnapshotBrowser | JournalTree:
        """What the tree shows: the journal as of its second, or the snapshot mounted."""
        if self.journal is not None:
            assert self.journal_tree is not None
            return self.journal_tree
        assert self.browser is not None
        return self.browser

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
        found = self._lister().search(needle, SEARCH_LIMIT)
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
        if self.journal is not None:
            self.load_versions(path, None, None, [self.journal])
            return
        assert self.snapshot is not None and self.image is not None
        self.load_versions(
            path, self.snapshot.source_id, self._partition_number(self.image), self.hosts
        )

    @work(thread=True, exclusive=True, exit_on_error=False, group="versions")
    def load_versions(
        self, path: str, source: str | None, partition: int | None, hosts: list[JournalHost]
    ) -> None:
        """The versions of ``path`` in the disk snapshots of ``source`` (None: those of the
        only source, if there is one) and in the journals of ``hosts``."""
        assert self.opened is not None
        journal = [
            (host.source_id, version)
            for host in hosts
            for version in self._journal_browser(host.source_id).versions(path)
        ]
        if source is None:
            # Browsing a host's journal: disk images hold its paths where they hold one
            # filesystem of one source (as `hourglass files versions` finds them).
            try:
                versions = file_versions(self.opened.repo, path)
            except HourglassError:
                versions = []
        else:
            versions = file_versions(self.opened.repo, path, partition=partition, source=source)
        self.app.call_from_thread(self._versions_loaded, path, versions, journal)

    def _versions_loaded(
        self, path: str, versions: list[Version], journal: list[tuple[str, JournalVersion]]
    ) -> None:
        if path != self.versions_path:
            return
        self.versions = versions
        self.journal_rows = journal
        rows: list[tuple[float, str, tuple[str, str], int]] = []
        for index, version in enumerate(versions):
            # The first backup that holds this version: when it was there.
            size = text.human_size(version.size) if version.type == "file" else version.type
            first = version.snapshots[0].time
            rows.append((first.timestamp(), f"d{index}", (text.when(first), size), 1))
        for index, (_source, change) in enumerate(journal):
            cells, height = self._journal_cells(change)
            rows.append((change.event.ns / 1e9, f"j{index}", cells, height))
        table = self.query_one("#versions", DataTable)
        table.clear()
        for _when, key, cells, height in sorted(rows, key=lambda r: r[0], reverse=True):
            table.add_row(*cells, key=key, height=height)
        saved = sum(v.event.type in ("write", "create") for _, v in journal)
        if journal:
            note = _(
                "{path}: {journal} in the file journal, {images} in disk backups. Enter "
                "restores the one chosen."
            ).format(
                path=path,
                journal=ngettext("{count} version", "{count} versions", saved).format(count=saved),
                images=ngettext("{count} version", "{count} versions", len(versions)).format(
                    count=len(versions)
                ),
            )
        else:
            note = ngettext(
                "{path}: {count} version. Enter restores it.",
                "{path}: {count} versions. Enter restores the one chosen.",
                len(versions),
            ).format(path=path, count=len(versions))
        self.query_one("#versions-of", Static).update(note)

    @staticmethod
    def _journal_cells(version: JournalVersion) -> tuple[tuple[str, str], int]:
        """A journal event as a row of the versions table: its second and what happened;
        a gap on two lines, from and to."""
        event = version.event
        when = text.when(version.time)
        if event.type == "gap":
            gap = JournalGap.of(event)
            span = f"{text.when(text.moment(gap.from_ns))}\n{text.when(text.moment(gap.to_ns))}"
            return (span, _("not watched") + "\n" + text.gap_cause(gap)), 2
        if event.type == "delete":
            return (when, _("deleted")), 1
        if event.type == "rename":
            return (when, _("renamed")), 1
        meta = event.meta
        if meta is not None and meta.ftype == "file":
            return (when, text.human_size(meta.size)), 1
        return (when, _("folder") if meta is not None and meta.ftype == "dir" else _("link")), 1

    def _journal_note(self, source_id: str, version: JournalVersion) -> str:
        event = version.event
        when = text.when(version.time)
        if event.type == "gap":
            return text.gap_line(JournalGap.of(event))
        if event.type == "delete":
            return _("{when}: {path} was deleted.").format(when=when, path=event.path)
        if event.type == "rename":
            return _("{when}: {old} was renamed to {new}.").format(
                when=when, old=event.path, new=event.to or ""
            )
        host = next((h.host for h in self.hosts if h.source_id == source_id), source_id)
        return _("Saved {when} in the file journal of {host}. Enter restores it.").format(
            when=when, host=host
        )

    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        if event.data_table.id != "versions" or event.row_key.value is None:
            return
        key = str(event.row_key.value)
        if key.startswith("j"):
            source_id, entry = self.journal_rows[int(key[1:])]
            self.query_one("#versions-of", Static).update(self._journal_note(source_id, entry))
            return
        version = self.versions[int(key[1:])]
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
        key = str(event.row_key.value)
        if key.startswith("j"):
            source_id, entry = self.journal_rows[int(key[1:])]
            if entry.event.type not in ("write", "create"):
                self.query_one("#versions-of", Static).update(
                    _("Not a version: choose a version to restore.")
                )
                return
            second = datetime.fromtimestamp(entry.event.ns // 10**9).astimezone()
            self._go_destination([entry.event.path], at=(source_id, second))
            return
        version = self.versions[int(key[1:])]
        # The newest snapshot holding this version.
        snapshot_id = version.snapshots[-1].id
        assert self.opened is not None
        self.pick_version(version.path, snapshot_id)

    @work(thread=True, exclusive=True, exit_on_error=False, group="pick")
    def pick_version(self, path: str, snapshot_id: str) -> None:
        assert self.opened is not None
        snapshot = self.opened.repo.load_snapshot(snapshot_id)
        self.app.call_from_thread(self._go_destination, [path], snapshot)

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
        elif button == "at-go":
            self._browse_at(self.query_one("#at-time", Input).value.strip())
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
        if self.journal is not None:
            assert self.journal_tree is not None
            self._go_destination(marked, at=(self.journal.source_id, self.journal_tree.at))
            return
        assert self.snapshot is not None
        self._go_destination(marked, self.snapshot)

    def _go_destination(
        self,
        paths: list[str],
        snapshot: Snapshot | None = None,
        *,
        at: tuple[str, datetime] | None = None,
    ) -> None:
        """Ask where ``paths`` go: from ``snapshot``, or from the journal of a host (its
        source id) as of a second."""
        self.restore_snapshot = snapshot
        self.restore_at = at
        self.restore_paths = paths
        what = ngettext("{count} item", "{count} items", len(paths)).format(count=len(paths))
        listed = ", ".join(paths[:3]) + (" ..." if len(paths) > 3 else "")
        if at is not None:
            host = next((h.host for h in self.hosts if h.source_id == at[0]), at[0])
            line = _("{what} from the file history of {host} as of {when}: {paths}").format(
                what=what, host=host, when=text.when(at[1]), paths=listed
            )
        else:
            assert snapshot is not None
            line = _("{what} from the backup of {when}: {paths}").format(
                what=what, when=text.when(snapshot.time), paths=listed
            )
        self.query_one("#dest-what", Static).update(line)
        self.query_one("#dest-note", Static).update(
            _(
                "Nothing already there is replaced: if the folder holds a file of the same "
                "name, nothing is restored (choose another folder)."
            )
            if at is not None
            else _(
                "Files already there are kept: a restored file with the same name gets "
                "a new name with .restored-DATE before its extension."
            )
        )
        folder = self.query_one("#dest-folder", Input)
        if not folder.value or folder.value == self.made_folder:
            # A new folder each time, unless the person typed one.
            folder.value = self.made_folder = "restored-" + datetime.now().strftime("%Y%m%d-%H%M%S")
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
        self.query_one("#dest-go", Button).disabled = True
        panel = self.query_one("#dest-progress", ProgressPanel)
        panel.display = True
        panel.set_phase(_("Copying the files"))
        if self.restore_at is not None:
            source_id, when = self.restore_at
            self.restore_journal(source_id, when, list(self.restore_paths), disk, partition, folder)
            return
        assert self.restore_snapshot is not None and self.image is not None
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
        started = time.monotonic()
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
        taken = time.monotonic() - started
        self.app.call_from_thread(self._finished, result, disk, target, folder, unmounted, taken)

    @work(thread=True, exclusive=True, exit_on_error=False, group="engine")
    def restore_journal(
        self,
        source_id: str,
        when: datetime,
        paths: list[str],
        disk: Disk,
        target: Partition,
        folder: str,
    ) -> None:
        """Write ``paths`` as the journal of ``source_id`` had them at the second ``when``
        into ``folder`` on ``target``."""
        assert self.opened is not None
        started = time.monotonic()
        log = logging.getLogger("recovery_ui")
        location = locations.mount_partition(target.device, target.fstype, writable=True)
        dest = os.path.join(location.mountpoint, folder)
        log.info("restoring %d path(s) of %s as of %s to %s", len(paths), source_id, when, dest)
        try:
            # The engine refuses to replace a file; say so in the app's words for the one
            # clash a person makes most (the same file restored into the same folder again).
            for path in paths:
                there = os.path.join(dest, os.path.basename(path.rstrip("/")))
                if os.path.lexists(there) and not os.path.isdir(there):
                    raise UsageError(
                        _("{folder} already holds {name}: nothing was restored.").format(
                            folder=folder, name=os.path.basename(there)
                        ),
                        _("Type another folder name."),
                    )
            result = files_restore_at(self.opened.repo, tuple(paths), when, dest, source=source_id)
        finally:
            unmounted = False
            if location.mounted_by_us:
                locations.unmount(location)
                unmounted = True
        log.info("restored %d item(s), %d bytes to %s", result.restored, result.bytes, dest)
        taken = time.monotonic() - started
        self.app.call_from_thread(
            self._journal_finished, result, source_id, disk, target, folder, unmounted, taken
        )

    def _into(self, disk: Disk, target: Partition, folder: str) -> str:
        return _("Into: {device} ({disk}), folder {folder}").format(
            device=target.device, disk=text.disk_title(disk), folder=folder
        )

    def _journal_finished(
        self,
        result: JournalRestoreResult,
        source_id: str,
        disk: Disk,
        target: Partition,
        folder: str,
        unmounted: bool,
        taken: float,
    ) -> None:
        host = next((h.host for h in self.hosts if h.source_id == source_id), source_id)
        lines = [
            ngettext("{count} item restored", "{count} items restored", result.restored).format(
                count=result.restored
            )
            + ", "
            + text.human_size(result.bytes),
            _("As of {when}, from the file history of {host}").format(
                when=text.when(result.at), host=host
            ),
            self._into(disk, target, folder),
            text.time_taken(taken),
        ]
        if unmounted and (disk.transport == "usb" or disk.removable):
            lines += ["", _("You can remove the USB stick now.")]
        self._result(_("The files are restored."), "\n".join(lines), good=True)

    def _finished(
        self,
        result: FileRestoreResult,
        disk: Disk,
        target: Partition,
        folder: str,
        unmounted: bool,
        taken: float,
    ) -> None:
        lines = [
            ngettext("{count} item restored", "{count} items restored", result.restored).format(
                count=result.restored
            )
            + ", "
            + text.human_size(result.bytes),
            self._into(disk, target, folder),
            text.time_taken(taken),
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
        if worker.name in ("restore", "restore_journal"):
            self.query_one("#dest-go", Button).disabled = False
            self.query_one("#dest-progress", ProgressPanel).set_phase(
                _("The restore failed: {reason}").format(reason=failure_reason(error))
            )
        elif worker.name in ("open_browser", "open_journal", "load_versions"):
            self.query_one("#versions-of", Static).update(failure_reason(error))
        elif worker.name == "search":
            self.query_one("#results", OptionList).set_options(
                [option(failure_reason(error), disabled=True)]
            )
