"""Network: the interfaces and their addresses, DHCP or a fixed address, and network shares
mounted as places for repositories."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, ClassVar

from textual import work
from textual.app import ComposeResult
from textual.containers import Horizontal, VerticalScroll
from textual.widgets import DataTable, Input, OptionList

from imaging.appliance import network
from imaging.appliance.network import interfaces
from imaging.jobs.locations import mounted_locations, unmount
from recovery_ui.i18n import N_, _
from recovery_ui.screens.base import BaseScreen
from recovery_ui.screens.share import ShareScreen
from recovery_ui.widgets.controls import Button, Label, Options, Static, option

if TYPE_CHECKING:
    from imaging.appliance.network import Interface


class NetworkScreen(BaseScreen[None]):
    TITLE_TEXT = N_("Network")
    REBUILDABLE: ClassVar[bool] = True
    DEFAULT_CSS = """
    NetworkScreen #interfaces { height: auto; max-height: 6; margin: 0 1; }
    NetworkScreen #mode { height: auto; width: 40; margin: 0 1; }
    NetworkScreen .row { height: 1; }
    NetworkScreen .row Label { width: 30; padding: 0 1; }
    NetworkScreen .row Input { width: 34; }
    NetworkScreen #shares, NetworkScreen #applied { padding: 0 1; height: auto; }
    """

    def __init__(self) -> None:
        super().__init__()
        self.interfaces: list[Interface] = []

    def compose_body(self) -> ComposeResult:
        with VerticalScroll():
            yield Label(_("Network connections"), classes="section first")
            yield DataTable(id="interfaces", cursor_type="row")
            yield Label("", id="for", classes="section")
            yield Options(
                option(_("Automatic address (DHCP)"), id="dhcp"),
                option(_("Fixed address"), id="static"),
                id="mode",
                compact=True,
            )
            for field, label in (
                ("address", N_("Address, e.g. 192.168.1.20/24")),
                ("gateway", N_("Gateway (router)")),
                ("dns", N_("DNS servers")),
            ):
                with Horizontal(classes="row", id=f"row-{field}"):
                    yield Label(_(label))
                    yield Input(id=field, compact=True)
            with Horizontal(classes="buttons"):
                yield Button(_("Apply"), id="apply", compact=True, variant="primary")
            yield Static("", id="applied", markup=False)
            yield Label(_("Network shares for repositories"), classes="section")
            yield Static("", id="shares", markup=False)
            with Horizontal(classes="buttons"):
                yield Button(_("Mount a share..."), id="mount", compact=True)
                yield Button(_("Unmount the shares"), id="unmount", compact=True)

    def on_mount(self) -> None:
        table = self.query_one("#interfaces", DataTable)
        table.add_columns(_("Name"), _("Cable"), _("Addresses"), _("Gateway"))
        self.query_one("#mode", OptionList).highlighted = 0
        self._mode_changed("dhcp")
        self.load()
        self._show_shares()

    @work(thread=True, exclusive=True, exit_on_error=False, group="network")
    def load(self) -> None:

        found = interfaces(netns=self.hourglass.netns)
        self.app.call_from_thread(self._loaded, found)

    def _loaded(self, found: list[Interface]) -> None:
        chosen = self.chosen_interface
        self.interfaces = found
        table = self.query_one("#interfaces", DataTable)
        table.clear()
        for iface in found:
            table.add_row(
                iface.name,
                _("connected") if iface.carrier else _("no cable"),
                ", ".join(iface.addresses) or "-",
                iface.gateway or "-",
                key=iface.name,
            )
        if not found:
            self.query_one("#for", Label).update(_("No network interface was found."))
            return
        names = [i.name for i in found]
        row = names.index(chosen) if chosen in names else 0
        table.move_cursor(row=row)
        self._interface_changed(names[row])
        if not chosen:
            table.focus()

    def _interface_changed(self, name: str) -> None:
        """Show how the interface is set up now: a fixed address fills the fields."""
        self.query_one("#for", Label).update(_("Address of {name}").format(name=name))
        iface = next((i for i in self.interfaces if i.name == name), None)
        fixed = iface is not None and bool(iface.addresses) and not iface.dynamic
        self.query_one("#mode", OptionList).highlighted = 1 if fixed else 0
        if fixed and iface is not None:
            self.query_one("#address", Input).value = iface.addresses[0]
            self.query_one("#gateway", Input).value = iface.gateway

    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        if event.row_key.value is not None:
            self._interface_changed(str(event.row_key.value))

    def on_option_list_option_highlighted(self, event: OptionList.OptionHighlighted) -> None:
        self._mode_changed(event.option.id or "dhcp")

    def _mode_changed(self, mode: str) -> None:
        for field in ("address", "gateway", "dns"):
            self.query_one(f"#row-{field}").display = mode == "static"

    @property
    def chosen_interface(self) -> str:
        table = self.query_one("#interfaces", DataTable)
        if not self.interfaces:
            return ""
        return self.interfaces[min(table.cursor_row, len(self.interfaces) - 1)].name

    def on_button_pressed(self, event: Button.Pressed) -> None:
        button = event.button.id
        if button == "apply":
            self._apply()
        elif button == "mount":
            self.app.push_screen(ShareScreen(), self._mounted)
        elif button == "unmount":
            self.unmount_shares()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        self._apply()

    def _apply(self) -> None:
        name = self.chosen_interface
        if not name:
            return
        mode = "static" if self.query_one("#mode", OptionList).highlighted == 1 else "dhcp"
        values = {f: self.query_one(f"#{f}", Input).value for f in ("address", "gateway", "dns")}
        self.query_one("#applied", Static).update(_("Configuring {name}...").format(name=name))
        self.apply(name, mode, values)

    @work(thread=True, exclusive=True, exit_on_error=False, group="apply")
    def apply(self, name: str, mode: str, values: dict[str, str]) -> None:

        log = logging.getLogger("recovery_ui")
        netns = self.hourglass.netns
        if mode == "dhcp":
            how = network.use_dhcp(name, netns=netns)
            log.info("%s: DHCP (%s)", name, how)
            done = _("{name} asks for its address automatically.").format(name=name)
        else:
            static = network.set_static(
                name, values["address"], values["gateway"], values["dns"], netns=netns
            )
            log.info("%s: fixed address %s", name, static.address)
            done = _("{name} has the address {address}.").format(name=name, address=static.address)
        self.app.call_from_thread(self._applied, done)

    def _applied(self, done: str) -> None:
        self.query_one("#applied", Static).update(done)
        self.load()

    def work_failed(self, worker: object, error: BaseException) -> None:
        if getattr(worker, "name", "") == "apply":
            self.query_one("#applied", Static).update("")

    # --- shares -----------------------------------------------------------------------------

    def _mounted(self, location: object) -> None:
        self._show_shares()

    def _show_shares(self) -> None:

        shares = [loc for loc in mounted_locations() if loc.kind != "partition"]
        self.query_one("#shares", Static).update(
            "\n".join(f"{loc.source}  ({loc.kind})  -> {loc.mountpoint}" for loc in shares)
            or _("No share is mounted.")
        )

    @work(thread=True, exclusive=True, exit_on_error=False, group="apply")
    def unmount_shares(self) -> None:

        for location in mounted_locations():
            if location.kind != "partition":
                unmount(location)
        self.app.call_from_thread(self._show_shares)
