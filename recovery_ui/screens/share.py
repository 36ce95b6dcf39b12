"""Mounting a network share (SMB, NFS, or a folder over SSH) as a place for repositories, or
reaching a bucket of an object store (S3) with its keys."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from textual import work
from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical
from textual.widgets import Input, OptionList

from imaging.errors import UsageError
from imaging.jobs.locations import ObjectStore, Share, connect_object_store, mount_share
from recovery_ui.i18n import N_, _
from recovery_ui.screens.base import BaseScreen
from recovery_ui.widgets.controls import Button, Label, Options, Secret, Static, option

if TYPE_CHECKING:
    from imaging.jobs.locations import Bucket, Location, Share

KINDS = (
    ("smb", N_("Windows share or NAS (SMB)")),
    ("nfs", N_("NFS export")),
    ("ssh", N_("Folder on a server over SSH")),
    ("s3", N_("Object store (S3)")),
)
SHARE_FIELDS = ("host", "path", "user", "password", "port", "key")
S3_FIELDS = ("endpoint", "bucket", "prefix", "access", "secret", "ca")


class ShareScreen(BaseScreen["Location | Bucket | None"]):
    """Returns the mounted location, the bucket reached (its keys checked: only when
    ``object_store``, for a repository), or None."""

    TITLE_TEXT = N_("Network share")
    DEFAULT_CSS = """
    ShareScreen #kind { height: auto; margin: 0 1; }
    ShareScreen Input { width: 1fr; max-width: 50; }
    ShareScreen .row { height: auto; }
    ShareScreen .row Label { width: 27; padding: 0 1; }
    """

    def __init__(self, preset: Share | None = None, *, object_store: bool = False) -> None:
        """``preset``: a share to fill in (the vendor's repository); the person connects.
        ``object_store``: a bucket of an object store (S3) is offered too."""
        super().__init__()
        self.preset = preset
        self.kinds = KINDS if object_store else KINDS[:-1]

    def screen_title(self) -> str:
        if len(self.kinds) == len(KINDS):
            return _("Network share or object store")
        return _(self.TITLE_TEXT)

    def compose_body(self) -> ComposeResult:
        with Vertical():
            yield Label(_("Kind of share"), classes="section first")
            yield Options(
                *[option(_(label), id=kind) for kind, label in self.kinds],
                id="kind",
                compact=True,
            )
            yield Static("", id="example", classes="note")
            for field, label, password in (
                ("host", N_("Server (name or address)"), False),
                ("path", N_("Share or folder"), False),
                ("user", N_("User name (if needed)"), False),
                ("password", N_("Password (if needed)"), True),
                ("port", N_("SSH port (22 if empty)"), False),
                ("key", N_("SSH key file (if any)"), False),
                ("endpoint", N_("Endpoint (URL)"), False),
                ("bucket", N_("Bucket"), False),
                ("prefix", N_("Folder in the bucket"), False),
                ("access", N_("Access key"), False),
                ("secret", N_("Secret key"), True),
                ("ca", N_("CA file (optional)"), False),
            ):
                with Horizontal(classes="row", id=f"row-{field}"):
                    yield Label(_(label))
                    yield Secret(id=field, password=password, compact=True)
            with Horizontal(classes="buttons"):
                yield Button(_("Connect"), id="connect", compact=True, variant="primary")

    def on_mount(self) -> None:
        kind = self.query_one("#kind", OptionList)
        kind.highlighted = 0
        kind.focus()
        self._kind_changed("smb")
        if self.preset is not None:
            kind.highlighted = [k for k, _label in self.kinds].index(self.preset.kind)
            self.query_one("#host", Input).value = self.preset.host
            self.query_one("#path", Input).value = self.preset.path

    @property
    def kind(self) -> str:
        kind = self.query_one("#kind", OptionList)
        return self.kinds[kind.highlighted or 0][0]

    def on_option_list_option_highlighted(self, event: OptionList.OptionHighlighted) -> None:
        self._kind_changed(event.option.id or "smb")

    def on_option_list_option_selected(self, event: OptionList.OptionSelected) -> None:
        self.query_one("#endpoint" if self.kind == "s3" else "#host", Input).focus()

    def _kind_changed(self, kind: str) -> None:
        examples = {
            "smb": _("For example: server nas.local, share backups."),
            "nfs": _("For example: server 192.168.1.20, export /srv/backups."),
            "ssh": _("For example: server backup.example.org, folder /home/ann/backups."),
            "s3": _(
                "For example: endpoint https://s3.example.org, bucket backups, folder pc1. "
                "A missing bucket is made for a new repository."
            ),
        }
        self.query_one("#example", Static).update(examples[kind])
        for field in SHARE_FIELDS:
            self.query_one(f"#row-{field}").display = kind != "s3"
        for field in S3_FIELDS:
            self.query_one(f"#row-{field}").display = kind == "s3"
        if kind == "s3":
            return
        self.query_one("#row-port").display = kind == "ssh"
        self.query_one("#row-key").display = kind == "ssh"
        self.query_one("#row-password").display = kind != "nfs"
        self.query_one("#row-user").display = kind != "nfs"

    def on_input_submitted(self, event: Input.Submitted) -> None:
        self._connect()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        if event.button.id == "connect":
            self._connect()

    def _connect(self) -> None:

        if self.kind == "s3":
            self._connect_s3()
            return
        value = {
            f: self.query_one(f"#{f}", Input).value.strip()
            for f in ("host", "path", "user", "port", "key")
        }
        port_text = value["port"] if self.kind == "ssh" else ""
        if port_text and not port_text.isdigit():
            self.hourglass.report_error(UsageError(_("The port is a number, like 22.")))
            return
        share = Share(
            self.kind,
            value["host"],
            value["path"],
            username=value["user"] if self.kind != "nfs" else "",
            port=int(port_text or 0),
        )
        password = self.query_one("#password", Input).value
        key = value["key"] if self.kind == "ssh" else ""
        self.connect(share, password, key)

    @work(thread=True, exclusive=True, exit_on_error=False, group="share")
    def connect(self, share: object, password: str, key: str) -> None:

        assert isinstance(share, Share)
        logging.getLogger("recovery_ui").info("mounting %s (%s)", share.source(), share.kind)
        location = mount_share(share, password=password, identity_file=key)
        self.app.call_from_thread(self._mounted, location)

    def _mounted(self, location: Location | Bucket) -> None:
        self.query_one("#password", Input).value = ""
        self.query_one("#secret", Input).value = ""
        self.dismiss(location)

    def _connect_s3(self) -> None:

        value = {f: self.query_one(f"#{f}", Input).value.strip() for f in S3_FIELDS}
        if not value["bucket"]:
            self.hourglass.report_error(UsageError(_("Type the name of the bucket.")))
            return
        if not value["access"] or not value["secret"]:
            self.hourglass.report_error(
                UsageError(
                    _("The object store needs an access key and its secret key."),
                    _("The store's administrator gives both (an S3 key pair)."),
                )
            )
            return
        place = ObjectStore(
            value["endpoint"], value["bucket"], value["prefix"], value["access"], value["ca"]
        )
        # The secret as typed (spaces are part of it); it stays in the store's client only.
        self.connect_s3(place, self.query_one("#secret", Input).value)

    @work(thread=True, exclusive=True, exit_on_error=False, group="share")
    def connect_s3(self, place: object, secret: str) -> None:

        assert isinstance(place, ObjectStore)
        logging.getLogger("recovery_ui").info("connecting to the object store %s", place.describe())
        bucket = connect_object_store(place, secret=secret)
        self.app.call_from_thread(self._mounted, bucket)
