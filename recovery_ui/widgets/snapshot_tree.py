"""The folders and files of one partition of a snapshot, loaded a folder at a time."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

from rich.text import Text
from textual.widgets import Tree
from textual.widgets.tree import TreeNode

from recovery_ui import text
from recovery_ui.console import glyphs_of
from recovery_ui.i18n import _

if TYPE_CHECKING:
    from imaging.jobs.files import Entry


LONG_PATH = 32


@dataclass
class Item:
    """What a node stands for: a path, and whether its children have been asked for."""

    path: str
    entry: Entry | None
    loaded: bool = False

    @property
    def is_dir(self) -> bool:
        return self.entry is None or self.entry.type == "dir"


class SnapshotTree(Tree[Item]):
    """Expanding a folder the first time asks the screen (Tree.NodeExpanded) to list it;
    :meth:`fill` adds what it found. ``space`` marks an entry for restoring."""

    DEFAULT_CSS = """
    SnapshotTree { height: 1fr; }
    """

    def __init__(self, label: str, *, id: str | None = None) -> None:
        super().__init__(label, Item("/", None), id=id)
        self.marked: set[str] = set()
        self.times_near: datetime | None = None
        """Set: files show their modification time too (only the time on this day)."""

    def on_mount(self) -> None:
        glyphs = glyphs_of(self.app)
        self.ICON_NODE = glyphs.node
        self.ICON_NODE_EXPANDED = glyphs.node_open
        self.LINES = {
            "default": glyphs.tree_lines,
            "bold": glyphs.tree_lines_bold,
            "double": glyphs.tree_lines_bold,
        }
        self.guide_depth = 2

    def label_for(self, item: Item) -> Text:
        entry = item.entry
        mark = "* " if item.path in self.marked else "  "
        label = Text(mark, style="bold")
        if entry is None:
            label.append("/")
            return label
        if entry.type == "dir":
            name = entry.name
            if "/" in name and len(name) > LONG_PATH:
                # A whole path (a protected folder of a file journal): its end says most.
                name = "..." + name[-(LONG_PATH - 3) :]
            label.append(name + "/", style="bold")
        elif entry.type == "symlink":
            label.append(f"{entry.name} -> {entry.target}", style="italic")
        else:
            label.append(entry.name)
            about = text.human_size(entry.size)
            if self.times_near is not None:
                stamp = text.when(entry.mtime)
                same_day = stamp[:10] == text.when(self.times_near)[:10]
                about += ", " + (stamp[11:] if same_day else stamp[:10])
            label.append(f" ({about})", style="dim")
        return label

    def fill(self, node: TreeNode[Item], entries: list[Entry]) -> None:
        """Put ``entries`` (a folder's listing) under ``node``."""
        assert node.data is not None
        node.data.loaded = True
        node.remove_children()
        if not entries:
            node.add_leaf(
                Text(_("  (empty folder)"), style="dim"), Item(node.data.path, None, True)
            )
        for entry in sorted(entries, key=lambda e: text.name_order(e.name)):
            item = Item(entry.path, entry)
            if item.is_dir:
                node.add(self.label_for(item), item)
            else:
                node.add_leaf(self.label_for(item), item)

    def toggle_mark(self, node: TreeNode[Item]) -> None:
        item = node.data
        if item is None or item.entry is None:
            return
        if item.path in self.marked:
            self.marked.discard(item.path)
        else:
            self.marked.add(item.path)
        node.set_label(self.label_for(item))

    def reveal(self, path: str) -> TreeNode[Item] | None:
        """The node of ``path`` if it is loaded (search results are revealed by loading)."""
        for node in self._tree_nodes.values():
            if node.data is not None and node.data.path == path and node.data.entry is not None:
                return node
        return None
